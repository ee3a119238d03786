"""CGPO: calibrated reward identities, CODPO's pairs, CRRAFT's fallback, and CRPG on an exact tabular bandit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from paretoalign.losses.cgpo import (
    calibrated_reward,
    cgpo_metrics,
    codpo_loss,
    codpo_select,
    constrained_kl_optimum,
    crpg_advantages,
    crpg_loss,
    crraft_loss,
    crraft_select,
    kl_gate,
    missing_eos_penalty,
)


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


# --- calibrated reward and the KL gate ----------------------------------------------------------


def test_calibrated_reward_identities():
    g = torch.Generator().manual_seed(0)
    r = torch.randn(3, 4, generator=g)
    base = torch.randn(3, generator=g)
    c = calibrated_reward(r, base)
    assert torch.allclose(calibrated_reward(base, base), torch.full((3,), 0.5))
    assert ((c > 0) & (c < 1)).all()
    shift = torch.randn(3, generator=g)  # a per-prompt offset of the reward model changes nothing
    assert torch.allclose(calibrated_reward(r + shift[:, None], base + shift), c)
    order = r.argsort(-1)  # monotone in r
    assert torch.equal(c.argsort(-1), order)


def test_missing_eos_penalty_hits_sample_and_baseline_alike():
    r = torch.tensor([1.0, 2.0])
    assert missing_eos_penalty(r, torch.tensor([True, False]), 3.0).tolist() == [1.0, -1.0]
    assert missing_eos_penalty(r, torch.tensor([True, False]), None) is r


def test_kl_gate():
    kl = torch.tensor([-1.0, 0.0, 5.0, 10.0, 12.0])
    assert kl_gate(kl, 10.0, "hard").tolist() == [1, 1, 1, 1, 0]
    assert kl_gate(kl, 10.0, "soft").tolist() == pytest.approx([1.1, 1.0, 0.5, 0.0, 0.0])  # the PR's formula, >1 below 0
    assert kl_gate(kl, None).tolist() == [1.0] * 5
    with pytest.raises(ValueError):
        kl_gate(kl, 0.0)
    with pytest.raises(ValueError):
        kl_gate(kl, 1.0, "cosine")


# --- CODPO --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewards,passed,chosen,rejected,valid", [
    # mixed: best passing vs worst failing
    ([0.1, 0.9, 0.5, 0.3], [1, 0, 1, 0], 2, 3, True),
    # all pass: worst of all
    ([0.2, 0.8, 0.5, 0.1], [1, 1, 1, 1], 1, 3, True),
    # none pass: skipped
    ([0.2, 0.8, 0.5, 0.1], [0, 0, 0, 0], None, None, False),
    # one passes, it is the worst overall: still chosen; rejected = worst failing
    ([0.0, 0.8, 0.5, 0.6], [1, 0, 0, 0], 0, 2, True),
    # ties go to the lowest index
    ([0.5, 0.5, 0.2, 0.2], [1, 1, 0, 0], 0, 2, True),
    # all pass with equal rewards: y+ = y- (the DPO term is constant), as in the PR
    ([0.3, 0.3, 0.3, 0.3], [1, 1, 1, 1], 0, 0, True),
    # negative rewards: a product mask (the PR's) would pick index 1 as y+ and 0 as y-
    ([-1.0, -2.0, -0.5, -3.0], [1, 0, 1, 0], 2, 3, True),
])
def test_codpo_pair_selection(rewards, passed, chosen, rejected, valid):
    pairs = codpo_select(torch.tensor([rewards]), torch.tensor([passed]).bool())
    assert bool(pairs.valid[0]) is valid
    if valid:
        assert (int(pairs.chosen[0]), int(pairs.rejected[0])) == (chosen, rejected)


def test_codpo_selection_is_per_prompt():
    r = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.7]])
    p = torch.tensor([[1, 0, 1], [0, 0, 0]]).bool()
    pairs = codpo_select(r, p)
    assert pairs.chosen[0] == 2 and pairs.rejected[0] == 1 and pairs.valid.tolist() == [True, False]


def test_codpo_loss_by_hand():
    pc, pr = torch.tensor([-10.0, -4.0], requires_grad=True), torch.tensor([-12.0, -3.0], requires_grad=True)
    rc, rr = torch.tensor([-11.0, -4.5]), torch.tensor([-11.5, -3.5])
    n = torch.tensor([5, 2])
    beta, lamb = 0.1, 5.0
    loss = codpo_loss(pc, pr, rc, rr, n, beta, lamb)
    for i in range(2):
        z = beta * ((pc[i] - rc[i]) - (pr[i] - rr[i])).item()
        want = math.log1p(math.exp(-z)) - lamb * pc[i].item() / n[i].item()
        assert loss[i].item() == pytest.approx(want, abs=1e-12)
    loss.sum().backward()
    z = beta * ((pc - rc) - (pr - rr)).detach()
    assert torch.allclose(pc.grad, -beta * torch.sigmoid(-z) - lamb / n)
    assert torch.allclose(pr.grad, beta * torch.sigmoid(-z))


# --- CRRAFT -------------------------------------------------------------------------------------


def _crraft(cal, passed, kl, base_passed, base_kl, kl_max=1.0):
    return crraft_select(torch.tensor([cal]), torch.tensor([passed]).bool(), torch.tensor([kl]), kl_max,
                         torch.tensor([base_passed]), torch.tensor([base_kl]))


@pytest.mark.parametrize("cal,passed,kl,base_passed,base_kl,index,weight,baseline", [
    # the best feasible sample, weight R_calib
    ([0.6, 0.9, 0.7], [1, 0, 1], [0.0, 0.0, 0.0], True, 0.0, 2, 0.7, False),
    # the best sample is over the KL budget: the next feasible one
    ([0.6, 0.9, 0.7], [1, 1, 1], [0.0, 2.0, 0.0], True, 0.0, 2, 0.7, False),
    # none feasible, the baseline is: baseline with weight 0.5
    ([0.6, 0.9, 0.7], [0, 0, 1], [0.0, 0.0, 3.0], True, 0.5, -1, 0.5, True),
    # none feasible, the baseline fails a judge: skipped
    ([0.6, 0.9, 0.7], [0, 0, 0], [0.0, 0.0, 0.0], False, 0.0, -1, 0.0, False),
    # none feasible, the baseline is over the KL budget: skipped
    ([0.6, 0.9, 0.7], [0, 0, 0], [0.0, 0.0, 0.0], True, 1.5, -1, 0.0, False),
])
def test_crraft_fallback_table(cal, passed, kl, base_passed, base_kl, index, weight, baseline):
    s = _crraft(cal, passed, kl, base_passed, base_kl)
    assert int(s.index[0]) == index
    assert float(s.weight[0]) == pytest.approx(weight)
    assert bool(s.use_baseline[0]) is baseline
    assert bool(s.used[0]) is (weight > 0)


def test_crraft_without_baseline_or_budget():
    s = crraft_select(torch.tensor([[0.2, 0.4], [0.9, 0.8]]), torch.tensor([[1, 1], [0, 0]]).bool())
    assert s.index.tolist() == [1, -1] and s.weight.tolist() == pytest.approx([0.4, 0.0])
    with pytest.raises(ValueError, match="samples' log_ratio"):
        crraft_select(torch.tensor([[0.2]]), torch.tensor([[True]]), None, 1.0)
    with pytest.raises(ValueError, match="baseline_log_ratio"):
        crraft_select(torch.tensor([[0.2]]), torch.tensor([[True]]), torch.tensor([[0.0]]), 1.0, torch.tensor([True]))


def test_crraft_loss_and_gradient_match_numpy():
    logps = torch.tensor([-12.0, -7.5, -20.0], requires_grad=True)
    w = torch.tensor([0.7, 0.5, 0.91])
    n = torch.tensor([6, 3, 10])
    loss = crraft_loss(logps, w, n)
    ref = -(w.numpy() * logps.detach().numpy()).sum() / n.numpy().sum()
    assert loss.item() == pytest.approx(ref, abs=1e-12)
    loss.backward()
    assert np.allclose(logps.grad.numpy(), -w.numpy() / n.numpy().sum())
    empty = torch.zeros(0, requires_grad=True)
    assert crraft_loss(empty, torch.zeros(0), torch.zeros(0)).item() == 0.0


# --- CRPG on a tabular bandit with exact expectations ------------------------------------------

# One prompt, six actions: calibrated rewards, a feasibility mask (the two best rewards are infeasible).
R = torch.tensor([0.9, 0.7, 0.5, 0.3, 0.95, 0.2], dtype=torch.float64)
FEASIBLE = torch.tensor([False, True, True, True, False, True])
REF = torch.log_softmax(torch.tensor([0.3, -0.2, 0.1, 0.5, 0.0, -0.4], dtype=torch.float64), 0)


def _crpg_ascent(steps, lr, rewards=R, **signal):
    """Gradient steps on the exact expected CRPG loss Σ_y π(y)·(−A(y)·log π(y)), the policy a logit table."""
    theta = REF.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=lr)
    for _ in range(steps):
        logp = torch.log_softmax(theta, 0)
        log_ratio = (logp - REF).detach()
        gate = kl_gate(log_ratio, signal["kl_max"], signal["gate"]) if signal.get("gate") else None
        adv = crpg_advantages(rewards, FEASIBLE, gate, baseline=signal.get("baseline", "none"),
                              kl_coef=signal.get("kl_coef", 0.0), log_ratio=log_ratio)
        loss = crpg_loss(logp, adv, weights=logp.exp())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.softmax(theta.detach(), 0)


def test_baselines_leave_the_exact_gradient_unchanged():
    theta = torch.randn(6, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    grads = []
    for b in ("none", "batch_mean", "group_mean"):
        logp = torch.log_softmax(theta, 0)
        adv = crpg_advantages(R[None], FEASIBLE[None], baseline=b)[0]
        (g,) = torch.autograd.grad(crpg_loss(logp, adv, weights=logp.exp()), theta)
        grads.append(g)
    assert torch.allclose(grads[0], grads[1]) and torch.allclose(grads[0], grads[2])
    # and it is −Σ π(y) R_cr(y) ∇log π(y), written out for a softmax: −π ⊙ (R_cr − E_π R_cr)
    pi = torch.softmax(theta.detach(), 0)
    r_cr = R * FEASIBLE
    assert torch.allclose(grads[0], -pi * (r_cr - (pi * r_cr).sum()))


def test_crpg_without_kl_converges_to_the_best_feasible_action():
    pi = _crpg_ascent(2000, 50.0)
    best = int(torch.where(FEASIBLE, R, -math.inf).argmax())
    assert best == 1
    assert pi[best] > 0.999
    assert pi[~FEASIBLE].sum() < 1e-4


@pytest.mark.parametrize("kl_max", [0.6, 1.0, 1.5])
def test_crpg_with_kl_penalty_reaches_the_constrained_optimum(kl_max):
    target, eta = constrained_kl_optimum(REF, R, FEASIBLE, kl_max=kl_max)
    kl = float((target[FEASIBLE] * (target[FEASIBLE].log() - REF[FEASIBLE])).sum())
    assert kl == pytest.approx(kl_max, abs=1e-9)  # the bisection found the η of the budget
    assert torch.allclose(target, constrained_kl_optimum(REF, R, FEASIBLE, eta=eta)[0])
    # the condition of crpg_advantages' docstring: the regularised feasible value beats 0
    assert eta * math.log(float((REF.exp() * FEASIBLE * torch.exp(R / eta)).sum())) > 0
    pi = _crpg_ascent(1000, 2 / eta, kl_coef=eta)
    assert (pi - target).abs().max() < 1e-3


def test_crpg_with_kl_penalty_keeps_infeasible_mass_when_the_feasible_value_is_negative():
    low = R * 0.05  # tiny rewards: η·log Σ_Σ π_ref e^{R/η} < 0 at η = 1
    eta = 1.0
    assert math.log(float((REF.exp() * FEASIBLE * torch.exp(low / eta)).sum())) < 0
    pi = _crpg_ascent(1000, 2.0, rewards=low, kl_coef=eta)
    assert pi[~FEASIBLE].sum() > 0.1


def test_crpg_with_the_papers_hard_gate_stays_feasible_and_within_budget():
    """The paper's per-sample gate is not a penalty: plain CRPG is not guaranteed to reach the
    constrained optimum (spec §4.8.5 asks to report the gap rather than assert it).  It does keep
    the policy feasible and its KL within the budget, at a reward below the optimum's."""
    kl_max = 1.0
    target, _ = constrained_kl_optimum(REF, R, FEASIBLE, kl_max=kl_max)
    pi = _crpg_ascent(3000, 1.0, gate="hard", kl_max=kl_max)
    kl = float((pi * (pi.log() - REF)).sum())
    assert pi[~FEASIBLE].sum() < 5e-3
    assert kl <= kl_max
    assert float((pi * R).sum()) <= float((target * R).sum())


def test_constrained_optimum_edge_cases():
    greedy, eta = constrained_kl_optimum(REF, R, FEASIBLE, kl_max=50.0)  # budget inactive
    assert eta == 0.0 and greedy[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="infeasible budget"):
        constrained_kl_optimum(REF, R, FEASIBLE, kl_max=0.1)  # below the cost of dropping infeasible mass
    with pytest.raises(ValueError, match="no feasible"):
        constrained_kl_optimum(REF, R, torch.zeros(6, dtype=torch.bool), kl_max=1.0)


def test_crpg_signal_and_errors():
    cal = torch.tensor([[0.8, 0.6], [0.4, 0.2]])
    passed = torch.tensor([[1, 0], [1, 1]]).bool()
    gate = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert torch.allclose(crpg_advantages(cal, passed, gate), torch.tensor([[0.8, 0.0], [0.0, 0.2]]))
    assert torch.allclose(crpg_advantages(cal, passed, gate, "group_mean"), torch.tensor([[0.4, -0.4], [-0.1, 0.1]]))
    assert crpg_advantages(cal, passed, gate, "batch_mean").sum().item() == pytest.approx(0.0)
    kl = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert torch.allclose(crpg_advantages(cal, passed, kl_coef=0.1, log_ratio=kl), torch.tensor([[0.7, 0.0], [0.1, -0.2]]))
    with pytest.raises(ValueError, match="log_ratio"):
        crpg_advantages(cal, passed, kl_coef=0.1)
    with pytest.raises(ValueError, match="k >= 2"):
        crpg_advantages(cal[:, :1], passed[:, :1], baseline="group_mean")
    with pytest.raises(ValueError, match="baseline"):
        crpg_advantages(cal, passed, baseline="median")
    logps = torch.tensor([[-3.0, -2.0], [-1.0, -4.0]])
    assert crpg_loss(logps, cal).item() == pytest.approx(-(cal * logps).mean().item())


def test_cgpo_metrics():
    cal = torch.tensor([[0.8, 0.6], [0.4, 0.2]])
    m = cgpo_metrics(cal, torch.tensor([[1, 0], [0, 0]]).bool(), torch.tensor([[1.0, 3.0], [0.0, 0.0]]), kl_max=2.0)
    assert m == pytest.approx({"cgpo/calibrated_reward": 0.5, "cgpo/pass_rate": 0.25, "cgpo/all_fail_fraction": 0.5,
                               "cgpo/kl": 1.0, "cgpo/kl_gated_fraction": 0.25})


def test_calibrated_reward_logit_form():
    r, b = torch.tensor([[2.0, -1.0]]), torch.tensor([0.5])
    assert torch.allclose(torch.logit(calibrated_reward(r, b)), r - b[:, None])
    assert torch.allclose(calibrated_reward(r, b), torch.exp(F.logsigmoid(r - b[:, None])))
