"""MOPO pieces: win probabilities, closed-form ratio, the constrained optimum on a tabular problem,
the robust (KL-ball) win probability, and the collapse guard."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from paretoalign.losses.mopo import (
    dual_step,
    effective_sample_fraction,
    expected_under_target,
    mopo_log_ratio,
    mopo_policy_loss,
    mopo_weights,
    pairwise_win_probabilities,
    robust_chi_step,
    robust_win_probabilities,
    win_probabilities,
)


def test_win_probabilities_indicator_and_ties_and_missing():
    s = torch.tensor([[1.0, 2.0, 2.0, float("nan")]])
    mask = torch.tensor([[True, True, True, True]])
    pw = pairwise_win_probabilities(s, mask)
    P = win_probabilities(pw)
    # candidate 0 loses to both others; 1 and 2 beat 0 and tie each other; 3 has no score
    assert torch.allclose(P[0, :3], torch.tensor([0.0, 0.75, 0.75]))
    assert torch.isnan(P[0, 3])
    bt = win_probabilities(pairwise_win_probabilities(s, mask, "bradley_terry"))
    assert torch.allclose(bt[0, 0], torch.sigmoid(torch.tensor(-1.0)))


def test_closed_form_ratio():
    P = torch.tensor([[0.2, 0.8]])
    Q = torch.tensor([[[0.5], [0.1]]])
    lr = mopo_log_ratio(P, Q, torch.tensor([2.0]), tau=0.5)
    assert torch.allclose(lr, torch.tensor([[(0.2 + 1.0) / 0.5 - 1, (0.8 + 0.2) / 0.5 - 1]]))
    w = mopo_weights(lr, torch.tensor([[True, True]]))
    assert torch.allclose(w.sum(), torch.tensor(2.0))  # mean 1 over the pool
    assert torch.allclose(w[0, 0] / w[0, 1], torch.exp(lr[0, 0] - lr[0, 1]))


def _target(ref, P, Q, lam, tau):
    z = np.log(ref) + (P + lam * Q) / tau
    z = np.exp(z - z.max())
    return z / z.sum()


def test_constrained_optimum_on_a_tabular_problem():
    """One prompt, 6 responses, known π_ref: the primal-dual loop reaches the constrained optimum
    of max E[P] − τ KL(π‖π_ref) s.t. E[Q] ≥ b, computed independently with SLSQP."""
    rng = np.random.default_rng(0)
    n, tau, b = 6, 0.1, 0.7
    ref = rng.dirichlet(np.ones(n))
    p_score, q_score = rng.normal(size=n), rng.normal(size=n)
    q_score[np.argmax(p_score)] = q_score.min() - 1  # the primary's best response is the constraint's worst
    mask = torch.ones(1, n, dtype=torch.bool)
    P = win_probabilities(pairwise_win_probabilities(torch.tensor(p_score[None]), mask))
    Q = win_probabilities(pairwise_win_probabilities(torch.tensor(q_score[None]), mask))
    Pn, Qn = P[0].numpy().astype(float), Q[0].numpy().astype(float)
    assert (_target(ref, Pn, Qn, 0.0, tau) * Qn).sum() < b  # the constraint binds

    # independent solution of the constrained problem
    def neg(x):
        x = np.clip(x, 1e-12, None)
        return -(x @ Pn - tau * np.sum(x * np.log(x / ref)))

    cons = [{"type": "eq", "fun": lambda x: x.sum() - 1}, {"type": "ineq", "fun": lambda x: x @ Qn - b}]
    sol = minimize(neg, ref, bounds=[(1e-12, 1)] * n, constraints=cons, method="SLSQP",
                   options={"ftol": 1e-14, "maxiter": 1000})
    assert sol.success

    # MOPO: the pool is every response, weighted by how π_ref would sample it (log_prior vs uniform)
    log_prior = torch.tensor(np.log(ref) - np.log(1.0 / n), dtype=torch.float32).unsqueeze(0)
    theta = torch.zeros(1, n, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.1)
    lam = torch.zeros(1)
    for _ in range(3000):
        w = mopo_weights(mopo_log_ratio(P, Q.unsqueeze(-1), lam, tau), mask, log_prior)
        loss = mopo_policy_loss(torch.log_softmax(theta, 1), w, mask).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        lam = dual_step(lam, expected_under_target(Q.unsqueeze(-1), w, mask), torch.tensor([b]), lr=0.5)
    pi = torch.softmax(theta.detach(), 1)[0].double().numpy()
    assert pi @ Qn >= b - 2e-3  # the constraint is met
    np.testing.assert_allclose(pi, sol.x, atol=5e-3)  # at the constrained optimum
    assert abs(-neg(pi) - (-sol.fun)) < 2e-3  # primary objective at its constrained maximum
    assert lam.item() > 0


def test_robust_win_probability_limits_and_chi_ascent():
    s = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    pw = pairwise_win_probabilities(s, mask)
    plain = win_probabilities(pw)
    big = robust_win_probabilities(pw, chi=1e4, radius=0.0)
    assert torch.allclose(big, plain, atol=1e-3)  # χ → ∞: no adversary
    rob = robust_win_probabilities(pw, chi=0.5, radius=0.1)
    assert (rob <= plain + 1e-6).all()  # the worst case is never better
    # the worst case over a KL ball of radius ε, checked by brute force for candidate 3 (beats 0,1,2)
    f = pw[0, 1, [0, 2, 3]].numpy()  # candidate 1: loses to 2 and 3, beats 0
    eps = 0.1
    cons = [{"type": "eq", "fun": lambda q: q.sum() - 1},
            {"type": "ineq", "fun": lambda q: eps - np.sum(q * np.log(np.clip(q, 1e-12, None) * 3))}]
    worst = minimize(lambda q: q @ f, np.ones(3) / 3, bounds=[(0, 1)] * 3, constraints=cons, method="SLSQP").fun
    chi = torch.tensor([1.0])
    w = torch.zeros(1, 4)
    w[0, 1] = 4.0  # evaluate candidate 1 only
    for _ in range(400):
        chi = robust_chi_step(chi, pw.unsqueeze(-1), mask, w, eps, lr=0.5)
    got = robust_win_probabilities(pw, chi.item(), eps)[0, 1].item()
    assert got == pytest.approx(worst, abs=2e-3)


def test_collapse_guard_bounds_the_weights():
    """Two candidates and an unreachable constraint: λ would diverge and ρ go one-hot; the cap on λ and
    the truncation keep every weight bounded and the effective sample size away from 1/n."""
    mask = torch.ones(1, 2, dtype=torch.bool)
    P = torch.tensor([[1.0, 0.0]])
    Q = torch.tensor([[[0.0], [1.0]]])
    lam = torch.zeros(1)
    for _ in range(200):
        w = mopo_weights(mopo_log_ratio(P, Q, lam, 0.05), mask)
        lam = dual_step(lam, expected_under_target(Q, w, mask), torch.tensor([1.5]), lr=1.0, lam_max=10.0)
    assert lam.item() == pytest.approx(10.0)
    raw = mopo_weights(mopo_log_ratio(P, Q, lam, 0.05), mask)
    assert raw.max() > 1.999  # unguarded: one-hot
    assert effective_sample_fraction(raw, mask).item() < 0.51
    guarded = mopo_weights(mopo_log_ratio(P, Q, lam, 0.05), mask, max_weight=1.5)
    assert guarded.max() <= 1.5 + 1e-5 and guarded.sum().item() == pytest.approx(2.0)
    assert effective_sample_fraction(guarded, mask).item() > 0.8
    assert math.isfinite(mopo_policy_loss(torch.log(torch.tensor([[0.5, 0.5]])), guarded, mask).item())
