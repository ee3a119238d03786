"""Every combiner against a brute-force solve or a hand-computed value (to 1e-6)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import linprog, minimize

from paretoalign.combiners import (
    gram_matrix,
    group_normalize,
    linear_scalarize,
    min_norm_weights,
    min_norm_weights_from_gram,
    normalize_then_sum,
    pama_value,
    pama_weights,
    smooth_tchebycheff_scalarize,
    sum_then_normalize,
    tchebycheff_dual_update,
    tchebycheff_policy_weights,
    tchebycheff_scalarize,
    tchebycheff_weights,
)
from paretoalign.errors import ConfigError

D = torch.float64


def t(x):
    return torch.tensor(x, dtype=D)


# ---------------------------------------------------------------------------------------------
# linear scalarisation, group normalisation
# ---------------------------------------------------------------------------------------------


def test_linear_scalarize_hand_computed():
    r = t([[1.0, 2.0], [3.0, -1.0]])
    w = t([0.25, 0.75])
    assert torch.allclose(linear_scalarize(r, w), t([1.75, 0.0]), atol=1e-12)
    # batched leading axes
    r3 = torch.randn(4, 5, 3, dtype=D)
    w3 = t([0.2, 0.3, 0.5])
    ref = 0.2 * r3[..., 0] + 0.3 * r3[..., 1] + 0.5 * r3[..., 2]
    assert torch.allclose(linear_scalarize(r3, w3), ref, atol=1e-12)


def test_linear_scalarize_shape_mismatch():
    with pytest.raises(ValueError, match="3 objectives.*weights has 2"):
        linear_scalarize(torch.zeros(4, 3), torch.tensor([0.5, 0.5]))


def test_group_normalize_hand_computed():
    x = t([1.0, 2.0, 3.0, 4.0])
    # population std: sqrt(mean((x-2.5)^2)) = sqrt(1.25)
    ref = (x - 2.5) / np.sqrt(1.25)
    assert torch.allclose(group_normalize(x), ref, atol=1e-12)
    out = group_normalize(torch.randn(3, 7, dtype=D) * 5 + 2)
    assert torch.allclose(out.mean(-1), torch.zeros(3, dtype=D), atol=1e-12)
    assert torch.allclose(out.std(-1, unbiased=False), torch.ones(3, dtype=D), atol=1e-9)


@pytest.mark.parametrize("value", [0.0, 0.1, 1e4, -3.7e6])
def test_group_normalize_constant_group_gives_zeros(value):
    for dtype in (torch.float32, torch.float64):
        x = torch.full((2, 5), value, dtype=dtype)
        out = group_normalize(x)
        assert torch.equal(out, torch.zeros_like(out))
    single = group_normalize(torch.tensor([[3.0]]))  # a group of one
    assert torch.equal(single, torch.zeros(1, 1))


def test_group_normalize_tiny_spread_is_finite_and_small():
    x = torch.tensor([1.0, 1.0 + 1e-9, 1.0 - 1e-9], dtype=D)
    out = group_normalize(x, eps=1e-6)
    assert torch.isfinite(out).all() and out.abs().max() < 1e-2
    with pytest.raises(ConfigError, match="eps"):
        group_normalize(x, eps=0.0)


def test_normalize_then_sum_hand_computed():
    # one prompt, n=3 samples, K=2 objectives
    r = t([[1.0, 10.0], [2.0, 30.0], [3.0, 20.0]])
    w = t([0.5, 0.5])
    z0 = (t([1.0, 2.0, 3.0]) - 2.0) / np.sqrt(2.0 / 3.0)
    z1 = (t([10.0, 30.0, 20.0]) - 20.0) / np.sqrt(200.0 / 3.0)
    assert torch.allclose(normalize_then_sum(r, w), 0.5 * z0 + 0.5 * z1, atol=1e-12)


def test_sum_then_normalize_hand_computed():
    r = t([[1.0, 10.0], [2.0, 30.0], [3.0, 20.0]])
    w = t([0.5, 0.5])
    s = t([5.5, 16.0, 11.5])
    ref = (s - s.mean()) / s.std(unbiased=False)
    assert torch.allclose(sum_then_normalize(r, w), ref, atol=1e-12)


def test_normalize_then_sum_is_scale_invariant_per_objective():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4, 6, 3, generator=g, dtype=D)
    w = t([0.2, 0.5, 0.3])
    base = normalize_then_sum(r, w)
    scaled = r * t([1000.0, 1e-3, 7.0]) + t([5.0, -2.0, 100.0])  # per-objective affine maps
    assert torch.allclose(normalize_then_sum(scaled, w), base, atol=1e-9)
    # sum_then_normalize is NOT: the objective with the largest spread takes over
    s_scaled = sum_then_normalize(scaled, w)
    assert not torch.allclose(s_scaled, sum_then_normalize(r, w), atol=1e-3)
    assert torch.allclose(s_scaled, group_normalize(scaled[..., 0]), atol=5e-2)


def test_group_aggregations_with_constant_objective():
    r = t([[1.0, 5.0], [2.0, 5.0], [4.0, 5.0]])  # objective 1 constant in the group
    w = t([0.5, 0.5])
    out = normalize_then_sum(r, w)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, 0.5 * group_normalize(r[:, 0]), atol=1e-12)


# --- valid-sample statistics and TRL's scale_rewards -----------------------------------------
# 2 groups of 3, K = 2, w = (½, ½); the third sample of group 0 was not scored (NaN, invalid).
NAN = float("nan")
R_NAN = [[[1.0, 3.0], [3.0, 5.0], [NAN, NAN]], [[0.0, 2.0], [2.0, 2.0], [4.0, 6.0]]]
V_NAN = [[True, True, False], [True, True, True]]
# weighted sums: group 0 (2, 4, —), group 1 (1, 2, 5)
S26 = np.sqrt(26.0)  # group 1: mean 8/3, population std √26/3
G1_DEV = [-5 / 3, -2 / 3, 7 / 3]


def test_sum_then_normalize_group_stats_use_valid_samples_only_hand_computed():
    r, v, w = t(R_NAN), torch.tensor(V_NAN), t([0.5, 0.5])
    out = sum_then_normalize(r, w, valid=v)
    # group 0: (2, 4) -> mean 3, std 1; the unscored sample gets 0 and is not in the std
    want = t([[-1.0, 1.0, 0.0], [-5 / S26, -2 / S26, 7 / S26]])
    assert torch.allclose(out, want, atol=1e-12)
    # the old rule (unscored sample replaced by its group mean 3 and counted) shrinks the std to √(2/3)
    # and inflates the valid samples' advantages by √(3/2); TRL's nan-aware statistics do not
    filled = torch.where(v.unsqueeze(-1), r, t([[3.0, 3.0]]))
    old = sum_then_normalize(filled, w)
    assert torch.allclose(old[0], t([-1.0, 1.0, 0.0]) * np.sqrt(1.5), atol=1e-12)
    # the same as dropping the sample: group 0 as a group of two
    assert torch.allclose(out[0, :2], sum_then_normalize(r[0, :2], w), atol=1e-12)


@pytest.mark.parametrize("scale, want", [
    ("group", [[-1.0, 1.0, 0.0], [-5 / S26, -2 / S26, 7 / S26]]),
    # batch: std of the valid weighted sums (2, 4, 1, 2, 5): mean 2.8, variance 10.8 / 5 = 2.16
    ("batch", [[-1 / np.sqrt(2.16), 1 / np.sqrt(2.16), 0.0], [d / np.sqrt(2.16) for d in G1_DEV]]),
    ("none", [[-1.0, 1.0, 0.0], G1_DEV]),  # centred on the valid group mean only
])
def test_sum_then_normalize_scale_rewards_hand_computed_with_nan_samples(scale, want):
    out = sum_then_normalize(t(R_NAN), t([0.5, 0.5]), valid=torch.tensor(V_NAN), scale_rewards=scale)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, t(want), atol=1e-12)


def test_normalize_then_sum_valid_samples_only_hand_computed():
    out = normalize_then_sum(t(R_NAN), t([0.5, 0.5]), valid=torch.tensor(V_NAN))
    # group 0: each objective over its two valid samples -> (−1, 1); group 1: objective 0 (0, 2, 4):
    # std √(8/3); objective 1 (2, 2, 6): mean 10/3, std √32/3
    g1 = 0.5 * t([-2.0, 0.0, 2.0]) / np.sqrt(8 / 3) + 0.5 * t([-4.0, -4.0, 8.0]) / np.sqrt(32.0)
    assert torch.allclose(out, torch.stack([t([-1.0, 1.0, 0.0]), g1]), atol=1e-12)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_normalize_with_valid_mask_equals_dropping_the_invalid_samples(scale):
    """Brute force: per group, the statistics of the valid samples alone (batch: of all valid samples)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 6, generator=g, dtype=D) * 3 + 1
    v = torch.rand(5, 6, generator=g) > 0.35
    v[0] = False  # a group with no valid sample
    v[1] = torch.tensor([True] + [False] * 5)  # and one with a single valid sample
    x = torch.where(v, x, torch.full_like(x, NAN))  # what sits in an invalid slot must not matter
    out = group_normalize(x, valid=v, scale_rewards=scale)
    allv = x[v]
    batch_std = ((allv - allv.mean()) ** 2).mean().sqrt()
    for i in range(5):
        xi = x[i][v[i]]
        want = torch.zeros(6, dtype=D)
        if xi.numel() >= 2:
            dev = xi - xi.mean()
            scale_by = {"group": (dev ** 2).mean().sqrt(), "batch": batch_std, "none": torch.tensor(1.0, dtype=D)}[scale]
            want[v[i]] = dev / scale_by
        assert torch.allclose(out[i], want, atol=1e-12), (i, out[i], want)
    # objectives are normalised separately (batch: each objective's own batch std)
    r = torch.stack([x, 10 * x + 3], -1)
    from paretoalign.combiners import group_normalize_objectives

    per = group_normalize_objectives(r, valid=v, scale_rewards=scale)
    assert torch.allclose(per[..., 0], out, atol=1e-12)
    k = 1.0 if scale != "none" else 10.0  # standardising removes the x10 scale; centring keeps it
    assert torch.allclose(per[..., 1], k * out, atol=1e-9)


def test_scale_rewards_defaults_and_bad_value():
    r = t([[[1.0, 10.0], [2.0, 30.0], [3.0, 20.0]]])
    w = t([0.5, 0.5])
    assert torch.equal(sum_then_normalize(r, w), sum_then_normalize(r, w, valid=torch.ones(1, 3, dtype=torch.bool),
                                                                    scale_rewards="group"))
    with pytest.raises(ConfigError, match="scale_rewards"):
        sum_then_normalize(r, w, scale_rewards="global")
    # a constant group gives exact zeros whatever the scale, a constant batch too
    c = torch.full((2, 4), 0.1, dtype=D)
    for scale in ("group", "batch", "none"):
        assert torch.equal(group_normalize(c, scale_rewards=scale), torch.zeros_like(c))


# ---------------------------------------------------------------------------------------------
# Tchebycheff
# ---------------------------------------------------------------------------------------------


def test_tchebycheff_hand_computed():
    r = t([[1.0, 4.0], [3.0, 0.0]])
    w = t([0.5, 0.25])
    z = t([2.0, 2.0])
    # terms: [0.5*(1-2), 0.25*(4-2)] = [-0.5, 0.5] -> -0.5 ; [0.5, -0.5] -> -0.5
    assert torch.allclose(tchebycheff_scalarize(r, w, z), t([-0.5, -0.5]), atol=1e-12)
    r2 = t([2.0, 3.0])
    assert torch.allclose(tchebycheff_scalarize(r2, w, z), t(0.0), atol=1e-12)


def test_smooth_tchebycheff_converges_to_hard():
    g = torch.Generator().manual_seed(1)
    r = torch.randn(10, 4, generator=g, dtype=D)
    w = t([0.1, 0.2, 0.3, 0.4])
    z = r.max(0).values + 0.5
    hard = tchebycheff_scalarize(r, w, z)
    prev = None
    for mu in (1.0, 0.1, 1e-2, 1e-4, 1e-8):
        smooth = smooth_tchebycheff_scalarize(r, w, z, mu)
        gap = hard - smooth
        assert (gap >= -1e-12).all() and (gap <= mu * np.log(4) + 1e-12).all()
        if prev is not None:
            assert (gap <= prev + 1e-12).all()
        prev = gap
    assert torch.allclose(smooth_tchebycheff_scalarize(r, w, z, 1e-9), hard, atol=1e-8)
    with pytest.raises(ConfigError, match="mu"):
        smooth_tchebycheff_scalarize(r, w, z, 0.0)


def test_tchebycheff_weights_are_the_gradient_of_the_smooth_version():
    g = torch.Generator().manual_seed(2)
    r = torch.randn(5, 3, generator=g, dtype=D)
    w = t([0.3, 0.3, 0.4])
    z = t([1.0, 0.5, 2.0])
    mu = 0.3
    terms = (w * (r - z)).requires_grad_(True)
    smooth = -mu * torch.logsumexp(-terms / mu, dim=-1)
    # same value as the library function
    assert torch.allclose(smooth, smooth_tchebycheff_scalarize(r, w, z, mu), atol=1e-12)
    (grad,) = torch.autograd.grad(smooth.sum(), terms)
    grad = grad / grad.sum(-1, keepdim=True)
    c = tchebycheff_weights(r, w, z, mu)
    assert torch.allclose(c, grad, atol=1e-12)
    assert torch.allclose(c.sum(-1), torch.ones(5, dtype=D), atol=1e-12) and (c >= 0).all()
    # and w.r.t. the rewards: ∂S/∂r_k = w_k c_k
    rr = r.clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(smooth_tchebycheff_scalarize(rr, w, z, mu).sum(), rr)
    assert torch.allclose(gr, w * c, atol=1e-12)


def test_tchebycheff_weights_limits():
    r = t([0.0, 1.0, 2.0])
    w = t([1.0, 1.0, 1.0])
    z = t([3.0, 3.0, 3.0])
    assert torch.allclose(tchebycheff_weights(r, w, z, 1e-4), t([1.0, 0.0, 0.0]), atol=1e-12)
    assert torch.allclose(tchebycheff_weights(r, w, z, 1e6), torch.full((3,), 1 / 3, dtype=D), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# PAMA
# ---------------------------------------------------------------------------------------------


def brute_pama(I: np.ndarray) -> tuple[float, float]:
    """min_{c∈Δ} (Σ c I)² by a linear programme: min/max of s = c·I over the simplex, then the
    projection argument, checked against SLSQP.  Returns (optimal value, s*)."""
    K = len(I)
    lo = linprog(I, A_eq=np.ones((1, K)), b_eq=[1.0], bounds=[(0, None)] * K).fun
    hi = -linprog(-I, A_eq=np.ones((1, K)), b_eq=[1.0], bounds=[(0, None)] * K).fun
    s = min(max(0.0, lo), hi)
    res = minimize(
        lambda c: float(c @ I) ** 2,
        np.full(K, 1.0 / K),
        jac=lambda c: 2 * float(c @ I) * I,
        method="SLSQP",
        bounds=[(0, 1)] * K,
        constraints=[{"type": "eq", "fun": lambda c: c.sum() - 1.0}],
        options={"ftol": 1e-15, "maxiter": 500},
    )
    assert res.fun <= s * s + 1e-8  # SLSQP agrees with the LP argument
    assert res.fun >= s * s - 1e-12
    return s * s, s


def pama_cases():
    rng = np.random.default_rng(0)
    cases = [
        [3.0], [-2.0], [0.0],
        [0.0, 0.0], [0.0, 0.0, 0.0, 0.0],
        [1.0, 2.0], [-1.0, -2.0], [-1.0, 2.0], [2.0, -1.0],
        [1.0, 1.0, 3.0], [-3.0, -1.0, -1.0], [-1.0, -1.0, 2.0, 2.0, 0.5],
        [0.0, 1.0, 2.0], [0.0, 0.0, 5.0], [-1.0, 0.0], [-4.0, -1.0, 0.0, 0.0],
        [1e-30, 2e-30], [-1e30, 3e30], [-3e38, 3e38, 0.0], [1e-45, -1e-45],
    ]
    for K in range(1, 9):
        for kind in ("pos", "neg", "mixed", "ties", "zeros"):
            for _ in range(3):
                x = rng.normal(size=K)
                if kind == "pos":
                    x = np.abs(x) + 0.01
                elif kind == "neg":
                    x = -np.abs(x) - 0.01
                elif kind == "ties":
                    x = rng.integers(-2, 3, size=K).astype(float)
                elif kind == "zeros":
                    x[rng.random(K) < 0.5] = 0.0
                cases.append(list(x))
    return cases


def check_pama(I: np.ndarray, c: np.ndarray, s_value: float):
    K = len(I)
    assert c.shape == (K,)
    assert (c >= 0).all()
    assert abs(c.sum() - 1.0) <= 1e-6
    scale = max(1.0, np.abs(I).max())
    Is = I / scale  # compare on a unit scale (the huge/tiny cases)
    opt, s = brute_pama(Is)
    got = float(c @ Is)
    assert abs(got**2 - opt) <= 1e-6 * max(1.0, opt)
    assert abs(got - s) <= 1e-6
    assert abs(s_value / scale - s) <= 1e-12
    # the exact projection of 0 onto [min, max]
    assert s_value == min(max(0.0, I.min()), I.max())


@pytest.mark.parametrize("I", pama_cases())
def test_pama_weights_vs_brute_force(I):
    x = torch.tensor(I, dtype=D)
    check_pama(np.array(I), pama_weights(x).numpy(), float(pama_value(x)))


def test_pama_weights_degenerate_choices():
    assert torch.equal(pama_weights(t([0.0, 0.0, 0.0])), torch.full((3,), 1 / 3, dtype=D))
    assert torch.equal(pama_weights(t([2.0, 1.0, 1.0])), t([0.0, 0.5, 0.5]))
    assert torch.equal(pama_weights(t([-2.0, -1.0, -1.0])), t([0.0, 0.5, 0.5]))
    c = pama_weights(t([-1.0, 3.0, 3.0, 0.5]))  # c_max = 1/4 split over two, c_min = 3/4
    assert torch.allclose(c, t([0.75, 0.125, 0.125, 0.0]), atol=1e-15)
    assert torch.equal(pama_weights(t([0.0, 1.0, 0.0])), t([0.5, 0.0, 0.5]))
    assert torch.equal(pama_weights(t([7.0])), t([1.0]))


def test_pama_batched_matches_per_row():
    rng = np.random.default_rng(3)
    for K in (1, 2, 5, 8):
        x = rng.normal(size=(3, 5, K))
        x[0] = np.abs(x[0])
        x[1] = -np.abs(x[1])
        x[2, :2] = 0.0
        x[2, 3] = np.round(x[2, 3])
        xt = torch.tensor(x)
        c = pama_weights(xt)
        s = pama_value(xt)
        assert c.shape == (3, 5, K) and s.shape == (3, 5)
        for i, j in itertools.product(range(3), range(5)):
            assert torch.equal(c[i, j], pama_weights(xt[i, j]))
            check_pama(x[i, j], c[i, j].numpy(), float(s[i, j]))


def test_pama_float32_and_float16_stay_finite():
    g = torch.Generator().manual_seed(4)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x = (torch.randn(64, 6, generator=g) * 100).to(dtype)
        x[::3] = x[::3].abs()
        c = pama_weights(x)
        assert c.dtype == dtype and torch.isfinite(c).all() and (c >= 0).all()
        assert torch.allclose(c.double().sum(-1), torch.ones(64, dtype=D), atol=1e-2)
    big = torch.tensor([-3e38, 3e38], dtype=torch.float32)
    c = pama_weights(big)
    assert torch.allclose(c, torch.tensor([0.5, 0.5]), atol=1e-7)


def test_pama_rejects_nan_and_inf():
    with pytest.raises(ValueError, match="NaN"):
        pama_weights(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="inf"):
        pama_weights(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="NaN"):
        pama_value(torch.tensor([[float("nan")]]))


def test_pama_is_detached_and_int_input():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    assert not pama_weights(x).requires_grad
    assert torch.allclose(pama_weights(torch.tensor([1, -3])), torch.tensor([0.75, 0.25]))


# ---------------------------------------------------------------------------------------------
# MGDA: min-norm point
# ---------------------------------------------------------------------------------------------


def brute_min_norm(G: np.ndarray) -> float:
    """Enumerate every support S, solve the equality-constrained QP on S by its KKT system, keep
    the feasible (c ≥ 0) solutions, take the minimum of cᵀGc."""
    K = len(G)
    best = np.inf
    for m in range(1, K + 1):
        for S in itertools.combinations(range(K), m):
            S = list(S)
            A = np.zeros((m + 1, m + 1))
            A[:m, :m] = G[np.ix_(S, S)]
            A[:m, m] = 1.0
            A[m, :m] = 1.0
            b = np.zeros(m + 1)
            b[m] = 1.0
            try:
                sol = np.linalg.solve(A, b)
            except np.linalg.LinAlgError:
                continue
            a = sol[:m]
            if not np.isfinite(a).all() or (a < -1e-12).any():
                continue
            a = np.clip(a, 0, None)
            a /= a.sum()
            best = min(best, float(a @ G[np.ix_(S, S)] @ a))
    return best


def slsqp_min_norm(G: np.ndarray) -> float:
    K = len(G)
    res = minimize(
        lambda c: float(c @ G @ c),
        np.full(K, 1.0 / K),
        jac=lambda c: 2 * G @ c,
        method="SLSQP",
        bounds=[(0, 1)] * K,
        constraints=[{"type": "eq", "fun": lambda c: c.sum() - 1.0}],
        options={"ftol": 1e-16, "maxiter": 1000},
    )
    return float(res.fun)


def value(c: torch.Tensor, g: torch.Tensor) -> float:
    v = (c.double() @ g.double()).pow(2).sum()
    return float(v)


def check_simplex(c: torch.Tensor, K: int):
    assert c.shape == (K,)
    assert (c >= 0).all() and abs(float(c.sum()) - 1) <= 1e-9


def close(a: float, b: float, scale: float, rtol=1e-6):
    return abs(a - b) <= rtol * max(abs(b), 1e-9 * scale)


def mgda_cases():
    rng = np.random.default_rng(5)
    cases = []
    for K in range(1, 7):
        for d in (1, 2, 3, 5, 20):
            cases.append(rng.normal(size=(K, d)))
            # a common component: the min-norm point is away from 0
            cases.append(rng.normal(size=(K, d)) * 0.3 + rng.normal(size=d))
    e = np.eye(3)
    cases += [
        np.array([[1.0, 0.0], [1.0, 0.0]]),  # duplicates
        np.array([[1.0, 2.0], [2.0, 4.0], [-1.0, -2.0]]),  # collinear through 0
        np.array([[1.0, 2.0], [2.0, 4.0], [3.0, 6.0]]),  # collinear, same side
        np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, -1.0, 3.0]]),  # a zero vector
        np.array([e[0], e[1], e[2], e[0], (e[0] + e[1]) / 2]),  # duplicated + interior point
        np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.5], [2.0, 2.0], [1.0, 0.0]]),
        rng.normal(size=(6, 2)) @ np.diag([1.0, 1e-3]) + np.array([1.0, 0.0]),  # thin, d < K
        np.zeros((4, 3)),
    ]
    return cases


@pytest.mark.parametrize("g", mgda_cases())
def test_min_norm_weights_vs_brute_force(g):
    gt = torch.tensor(g)
    K = len(g)
    c = min_norm_weights(gt)
    check_simplex(c, K)
    G = g @ g.T
    scale = max(float(np.max(np.diag(G))), 1e-300)
    got = value(c, gt)
    assert close(got, brute_min_norm(G), scale)
    assert got <= slsqp_min_norm(G) + 1e-9 * scale
    c2 = min_norm_weights_from_gram(torch.tensor(G))
    assert close(value(c2, gt), brute_min_norm(G), scale)


def test_min_norm_k2_closed_form():
    g1, g2 = t([1.0, 0.0]), t([0.0, 2.0])
    # γ = (g2−g1)·g2 / ‖g1−g2‖² = 4/5
    c = min_norm_weights(torch.stack([g1, g2]))
    assert torch.allclose(c, t([0.8, 0.2]), atol=1e-12)
    # clamped to an endpoint when one vector lies "behind" the other
    c = min_norm_weights(t([[1.0, 0.0], [3.0, 0.1]]))
    assert torch.allclose(c, t([1.0, 0.0]), atol=1e-12)
    c = min_norm_weights(t([[3.0, 0.1], [1.0, 0.0]]))
    assert torch.allclose(c, t([0.0, 1.0]), atol=1e-12)
    # identical vectors: every γ is optimal, we return (1/2, 1/2)
    assert torch.allclose(min_norm_weights(t([[1.0, 2.0], [1.0, 2.0]])), t([0.5, 0.5]))
    # opposite vectors: 0 is in the hull
    c = min_norm_weights(t([[1.0, 1.0], [-3.0, -3.0]]))
    assert torch.allclose(c, t([0.75, 0.25]), atol=1e-12)


def test_min_norm_trivial_cases():
    assert torch.equal(min_norm_weights(torch.randn(1, 10)), torch.ones(1))
    assert torch.equal(min_norm_weights_from_gram(torch.zeros(3, 3)), torch.full((3,), 1 / 3))
    c = min_norm_weights(t([[1.0, 1.0], [0.0, 0.0], [2.0, 5.0]]))
    assert value(c, t([[1.0, 1.0], [0.0, 0.0], [2.0, 5.0]])) == 0.0
    with pytest.raises(ValueError, match="square"):
        min_norm_weights_from_gram(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="NaN"):
        min_norm_weights_from_gram(t([[1.0, float("nan")], [float("nan"), 1.0]]))


@pytest.mark.parametrize("K", [7, 8, 10])
@pytest.mark.parametrize("d", [3, 50])
def test_min_norm_weights_large_k_vs_slsqp(K, d):
    rng = np.random.default_rng(K * 100 + d)
    for shift in (0.0, 1.0):
        g = rng.normal(size=(K, d)) + shift * rng.normal(size=d)
        c = min_norm_weights(torch.tensor(g))
        check_simplex(c, K)
        G = g @ g.T
        got, ref = value(c, torch.tensor(g)), slsqp_min_norm(G)
        assert got <= ref + 1e-9 * np.max(np.diag(G))
        assert close(got, ref, np.max(np.diag(G)), rtol=1e-5)  # SLSQP itself is only ~1e-8 accurate
        if K <= 8:
            assert close(got, brute_min_norm(G), np.max(np.diag(G)))


def test_min_norm_weights_float32_chunked_and_gram():
    g = torch.randn(5, 1000, dtype=torch.float32)
    G = gram_matrix(g, chunk_size=37)
    assert G.dtype == torch.float64
    assert torch.allclose(G, g.double() @ g.double().T, atol=1e-9)
    c = min_norm_weights(g)
    assert c.dtype == torch.float32
    c_ref = min_norm_weights_from_gram(g.double() @ g.double().T)
    assert torch.allclose(c.double(), c_ref, atol=1e-6)
    # a [K, ...] tensor is flattened
    assert torch.allclose(gram_matrix(g.view(5, 10, 100)), G)


def test_min_norm_summed_gram_equals_full_gram():
    """Data parallel: summing per-shard Gram matrices gives the same weights as the full one."""
    g = torch.randn(4, 300, dtype=D)
    shards = g.split(100, dim=1)
    G = sum(gram_matrix(s) for s in shards)
    assert torch.allclose(min_norm_weights_from_gram(G), min_norm_weights(g), atol=1e-10)


def test_group_normalize_objectives_standardises_each_objective_per_group():
    from paretoalign.combiners import group_normalize_objectives

    torch.manual_seed(0)
    r = torch.randn(3, 5, 2) * torch.tensor([1.0, 100.0]) + torch.tensor([3.0, -7.0])
    out = group_normalize_objectives(r)
    assert out.shape == r.shape
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=1, unbiased=False), torch.ones(3, 2), atol=1e-4, rtol=0)
    w = torch.tensor([0.3, 0.7])
    torch.testing.assert_close((out * w).sum(-1), normalize_then_sum(r, w))


def test_preference_scales():
    from paretoalign.combiners import preference_scales

    torch.testing.assert_close(preference_scales(torch.full((4,), 0.25)), torch.ones(4))
    torch.testing.assert_close(preference_scales(torch.tensor([0.75, 0.25])), torch.tensor([2 / 3, 2.0]))
    torch.testing.assert_close(preference_scales(torch.tensor([0.5, 0.0, 0.5])), torch.tensor([1.0, 0.0, 1.0]))
    for bad in ([0.0, 0.0], [float("nan"), 1.0], [-0.1, 1.1]):
        with pytest.raises(ConfigError, match="preference must be finite, non-negative and not all zero"):
            preference_scales(torch.tensor(bad))


# ---------------------------------------------------------------------------------------------
# Tchebycheff with online mirror descent (HoE's router objective)
# ---------------------------------------------------------------------------------------------


def test_tchebycheff_dual_update_hand_computed():
    u, J, a, z = t([0.5, 0.5]), t([1.0, 3.0]), t([0.5, 0.5]), t([0.0, 0.0])
    # terms a (J - z) = [0.5, 1.5]; u_k ∝ 0.5 exp(-0.5 * term_k)
    e = np.exp(-0.5 * np.array([0.5, 1.5]))
    assert torch.allclose(tchebycheff_dual_update(u, J, a, z, eta=0.5), t(e / e.sum()), atol=1e-12)
    # the worst objective (smallest weighted gain) gains weight; a zero anchor weight leaves its ratio alone
    new = tchebycheff_dual_update(t([0.2, 0.3, 0.5]), t([5.0, -1.0, 7.0]), t([1.0, 1.0, 0.0]), t([0.0, 0.0, 0.0]), 0.1)
    assert new[1] / new[2] > 0.3 / 0.5 and new[0] / new[2] < 0.2 / 0.5
    assert torch.allclose(tchebycheff_policy_weights(t([0.2, 0.8]), t([0.5, 0.5])), t([0.2, 0.8]), atol=1e-12)
    assert torch.allclose(tchebycheff_policy_weights(t([0.9, 0.1]), t([1.0, 0.0])), t([1.0, 0.0]), atol=1e-12)
    with pytest.raises(ConfigError, match="eta"):
        tchebycheff_dual_update(u, J, a, z, eta=0.0)
    with pytest.raises(ValueError, match="positive"):
        tchebycheff_dual_update(t([1.0, 0.0]), J, a, z, eta=0.1)
    with pytest.raises(ValueError, match="share no objective"):
        tchebycheff_policy_weights(t([1.0, 0.0]), t([0.0, 1.0]))


def test_omd_tchebycheff_reaches_the_equal_weighted_gain_point_of_a_concave_front():
    """Tabular two-objective problem: J_k(pi) = E_pi[r_k] - beta KL(pi || pi_ref), pi a logit table.  Its front is
    concave and is traced by pi*_w ∝ pi_ref exp(w.r / beta); the Tchebycheff optimum of anchor a is the front
    point where a_1 (J_1 - z_1) = a_2 (J_2 - z_2) (found by bisection over w).  Exact-gradient policy ascent on
    sum_k u_k a_k J_k with the mirror-descent dual must converge to it."""
    g = torch.Generator().manual_seed(0)
    n, beta = 6, 0.5
    ref = torch.softmax(torch.randn(n, generator=g, dtype=D), 0)
    r = torch.rand(n, 2, generator=g, dtype=D)
    r[:, 1] = 1 - r[:, 0] + 0.3 * torch.rand(n, generator=g, dtype=D)  # conflicting objectives

    def J(pi):
        return pi @ r - beta * (pi * (pi / ref).log()).sum()

    def front(w1):
        return J(torch.softmax(ref.log() + r @ t([w1, 1 - w1]) / beta, 0))

    z = J(ref) - 0.1
    for a in (t([0.3, 0.7]), t([0.45, 0.55]), t([0.6, 0.4])):
        def gap(w1, a=a):
            Jw = front(w1)
            return float(a[0] * (Jw[0] - z[0]) - a[1] * (Jw[1] - z[1]))

        lo, hi = 0.0, 1.0
        assert gap(lo) < 0 < gap(hi)
        for _ in range(80):  # gap is increasing in w1 (J_1 grows, J_2 falls along the front)
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if gap(mid) < 0 else (lo, mid)
        target = front(lo)
        theta = ref.log().clone().requires_grad_(True)
        u = t([0.5, 0.5])
        for _ in range(2500):
            Jc = J(torch.softmax(theta, 0))
            c = tchebycheff_policy_weights(u, a)
            (grad,) = torch.autograd.grad((c * Jc).sum(), theta)
            with torch.no_grad():
                theta += 2.0 * grad
            u = tchebycheff_dual_update(u, Jc.detach(), a, z, eta=1.0)
        got = J(torch.softmax(theta, 0)).detach()
        assert torch.allclose(got, target, atol=1e-3), (a, got, target)
        terms = a * (got - z)
        assert abs(float(terms[0] - terms[1])) < 1e-3
