"""The per-method combination of advantages, checked exactly on small tensors and a tabular bandit."""

import pytest
import torch

from paretoalign.combiners import linear_scalarize, min_norm_weights, pama_weights
from paretoalign.losses import gae, masked_mean, ppo_surrogate, surrogate_slope, token_rewards
from paretoalign.trainers.online_methods import mgda_ub_loss, morlhf_loss, pama_loss


def _batch(seed=0, N=4, T=5, K=3):
    g = torch.Generator().manual_seed(seed)
    logratio = 0.3 * torch.randn(N, T, generator=g)
    adv = torch.randn(N, T, K, generator=g)
    mask = torch.ones(N, T)
    mask[0, 3:] = 0
    return logratio, adv, mask


def test_pama_batch_granularity_is_theorem_one_on_masked_mean_slopes():
    logratio, adv, mask = _batch()
    loss, c = pama_loss(logratio, adv, mask, clip_eps=0.2, granularity="batch", noon=True)
    pos = adv.clamp(min=0)
    terms = masked_mean(surrogate_slope(logratio, pos, 0.2), mask, dim=(0, 1))
    torch.testing.assert_close(c, pama_weights(terms))
    assert (terms >= 0).all() and c[terms.argmin()] == pytest.approx(1.0)  # Noon: all weight on the smallest term
    want = -(c * masked_mean(ppo_surrogate(logratio, pos, 0.2), mask, dim=(0, 1))).sum()
    torch.testing.assert_close(loss, want)


@pytest.mark.parametrize("granularity", ["sequence", "token"])
def test_pama_finer_granularities_solve_per_sequence_or_token(granularity):
    logratio, adv, mask = _batch(1)
    loss, c = pama_loss(logratio, adv, mask, 0.2, granularity=granularity, noon=False)
    slope = surrogate_slope(logratio, adv, 0.2)
    sur = ppo_surrogate(logratio, adv, 0.2)
    if granularity == "sequence":
        cw = pama_weights(masked_mean(slope, mask, dim=1)).unsqueeze(1)
    else:
        cw = pama_weights(slope)
    want = -masked_mean((sur * cw).sum(-1), mask)
    torch.testing.assert_close(loss, want)
    assert c.shape == (3,) and c.sum().item() == pytest.approx(1.0, abs=1e-6)
    # without Noon the mixed-sign terms are combined to a zero slope wherever possible
    s = (slope * cw).sum(-1) if granularity == "token" else (masked_mean(slope, mask, dim=1) * cw.squeeze(1)).sum(-1)
    lo, hi = (slope.min(-1).values, slope.max(-1).values) if granularity == "token" else (
        masked_mean(slope, mask, dim=1).min(-1).values, masked_mean(slope, mask, dim=1).max(-1).values)
    torch.testing.assert_close(s, torch.clamp(torch.zeros_like(lo), lo, hi), atol=1e-6, rtol=0)


def test_pama_weights_carry_no_gradient_and_loss_does():
    logratio, adv, mask = _batch(2)
    logratio.requires_grad_(True)
    loss, c = pama_loss(logratio, adv, mask, 0.2)
    assert not c.requires_grad
    loss.backward()
    assert logratio.grad is not None and logratio.grad.abs().sum() > 0


def test_mgda_ub_weights_are_the_min_norm_point_of_gradients_wrt_the_shared_representation():
    torch.manual_seed(3)
    N, T, H, K = 3, 4, 6, 3
    shared = torch.randn(N, T, H, requires_grad=True)
    head = torch.randn(H)
    logratio = shared @ head * 0.1  # a differentiable function of the representation
    adv = torch.randn(N, T, K)
    mask = torch.ones(N, T)
    loss, c = mgda_ub_loss(logratio, adv, mask, 0.2, shared)
    grads = []
    for k in range(K):
        lk = -masked_mean(ppo_surrogate(logratio, adv[..., k], 0.2), mask)
        (g,) = torch.autograd.grad(lk, shared, retain_graph=True)
        grads.append(g.reshape(-1))
    want = min_norm_weights(torch.stack(grads))
    torch.testing.assert_close(c.double(), want.double(), atol=1e-6, rtol=0)
    losses = torch.stack([-masked_mean(ppo_surrogate(logratio, adv[..., k], 0.2), mask) for k in range(K)])
    torch.testing.assert_close(loss, (c * losses).sum())


def test_morlhf_reaches_the_kl_regularised_optimum_on_a_tabular_bandit():
    """Exact expected-gradient MORLHF on one prompt, M one-token responses with known reward
    vectors: the fixed point is π_ref·exp(w·r/β)/Z (DESIGN.md §4.1).  Exercises token_rewards,
    gae, linear_scalarize and ppo_surrogate exactly as the trainer composes them."""
    torch.manual_seed(4)
    M, K, beta = 6, 2, 0.5
    rewards = torch.randn(M, K, dtype=torch.float64)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    ref_logp = torch.log_softmax(torch.randn(M, dtype=torch.float64), 0)
    theta = ref_logp.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta], lr=2.0)
    mask = torch.ones(M, 1, dtype=torch.float64)
    for _ in range(4000):
        logp = torch.log_softmax(theta, 0)
        pi = logp.exp().detach()
        kl = (logp.detach() - ref_logp).unsqueeze(1)  # [M, T=1]
        r = token_rewards(rewards, kl, mask, beta)  # [M, 1, K]
        adv_k, _ = gae(r, torch.zeros_like(r), mask, 1.0, 1.0)
        adv = linear_scalarize(adv_k, w)  # [M, 1]
        adv = adv - (pi.unsqueeze(1) * adv).sum()  # exact baseline E_π[A]
        logratio = (logp - logp.detach()).unsqueeze(1)
        objective = (pi.unsqueeze(1) * ppo_surrogate(logratio, adv, 0.2)).sum()  # exact expectation over y
        opt.zero_grad()
        (-objective).backward()
        opt.step()
    got = torch.softmax(theta.detach(), 0)
    want = torch.softmax(ref_logp + rewards @ w / beta, 0)
    torch.testing.assert_close(got, want, atol=1e-8, rtol=1e-6)
    # and the MORLHF loss helper is the negated masked mean of the same surrogate
    lr_, a_ = torch.zeros(2, 3), torch.randn(2, 3)
    assert morlhf_loss(lr_, a_, torch.ones(2, 3), 0.2).item() == pytest.approx(-a_.mean().item(), abs=1e-6)
