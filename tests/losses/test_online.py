"""The per-method combination of advantages, checked exactly on small tensors and a tabular bandit."""

import pytest
import torch

from paretoalign.combiners import linear_scalarize, min_norm_weights, pama_weights
from paretoalign.losses import gae, masked_mean, ppo_surrogate, surrogate_slope, token_rewards
from paretoalign.losses.online import mgda_ub_loss, morlhf_loss, pama_loss


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


# ---- preference steering of PAMA / MGDA-UB (our extension for front sweeps) ---------------------


@pytest.mark.parametrize("granularity", ["batch", "sequence", "token"])
def test_uniform_preference_reproduces_the_unscaled_pama(granularity):
    logratio, adv, mask = _batch(4)
    plain = pama_loss(logratio, adv, mask, 0.2, granularity=granularity)
    pref = pama_loss(logratio, adv, mask, 0.2, granularity=granularity, preference=torch.full((3,), 1 / 3))
    torch.testing.assert_close(pref[0], plain[0])
    torch.testing.assert_close(pref[1], plain[1])


def test_pama_preference_puts_the_weight_on_the_smallest_term_per_unit_of_preference():
    logratio, adv, mask = _batch(5)
    w = torch.tensor([0.6, 0.3, 0.1])
    _, c = pama_loss(logratio, adv, mask, 0.2, granularity="batch", preference=w)
    terms = masked_mean(surrogate_slope(logratio, adv.clamp(min=0), 0.2), mask, dim=(0, 1))
    assert (terms > 0).all()
    assert c[torch.argmin(terms / w)] == pytest.approx(1.0)


def test_pama_preference_drops_zero_weight_objectives_instead_of_stalling():
    logratio, adv, mask = _batch(6)
    adv[..., 2] = 0.0  # an objective with no signal: unscaled PAMA puts all weight on it (zero step)
    loss0, c0 = pama_loss(logratio, adv, mask, 0.2)
    assert c0[2] == pytest.approx(1.0) and float(loss0) == 0.0
    loss, c = pama_loss(logratio, adv, mask, 0.2, preference=torch.tensor([0.5, 0.5, 0.0]))
    assert c[2] == 0.0 and c.sum() == pytest.approx(1.0) and float(loss) != 0.0
    # the same as PAMA on the two remaining objectives (uniform over them = scale 1)
    loss2, c2 = pama_loss(logratio, adv[..., :2], mask, 0.2)
    torch.testing.assert_close(loss, loss2)
    torch.testing.assert_close(c[:2], c2)


def test_mgda_ub_preference_makes_first_order_progress_proportional_to_the_weights():
    # Interior min-norm solution of the scaled gradients s_k g_k with s_k = 1/(K w_k):
    # the KKT conditions give g_k·d = K w_k ||d||^2, d = the negative update direction.
    torch.manual_seed(7)
    N, T, H, K = 2, 3, 8, 2
    shared = torch.randn(N, T, H, requires_grad=True)
    logratio = shared @ torch.randn(H) * 0.05
    adv = torch.randn(N, T, K)
    mask = torch.ones(N, T)
    w = torch.tensor([0.7, 0.3])
    loss, c = mgda_ub_loss(logratio, adv, mask, 0.2, shared, preference=w)
    assert (c > 0).all(), "this instance must have an interior solution"
    (d,) = torch.autograd.grad(loss, shared, retain_graph=True)
    gk = []
    for k in range(K):
        lk = -masked_mean(ppo_surrogate(logratio, adv[..., k], 0.2), mask)
        (g,) = torch.autograd.grad(lk, shared, retain_graph=True)
        gk.append(g.reshape(-1))
    d = d.reshape(-1)
    progress = torch.stack([g @ d for g in gk]).double()
    torch.testing.assert_close(progress / progress.sum(), w.double(), atol=1e-5, rtol=0)
    # without a preference the min-norm direction makes equal progress on both
    loss_u, _ = mgda_ub_loss(logratio, adv, mask, 0.2, shared)
    (du,) = torch.autograd.grad(loss_u, shared)
    pu = torch.stack([g @ du.reshape(-1) for g in gk])
    torch.testing.assert_close(pu[0], pu[1], atol=1e-6, rtol=1e-4)


# ---- MGDA-UB's Gram matrix from one backward pass (exact for a per-position output layer) --------


def _tiny_policy_batch(K, seed=0, dtype=torch.float64, temperature=0.7):
    """Real hidden states of the tiny random Llama (the trainer's `shared`: the final, normed hidden
    states the LM head reads), log-ratios of the completion tokens, padded masks, advantages [N, T, K]."""
    from paretoalign.models import PolicyWithValueHeads, build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    model = PolicyWithValueHeads(build_tiny_model(tok, seed=seed).to(dtype), K, with_values=False)
    g = torch.Generator().manual_seed(seed)
    N, P, T = 4, 5, 6
    ids = torch.randint(3, len(tok), (N, P + T), generator=g)
    attn = torch.ones(N, P + T, dtype=torch.long)
    attn[1, :2] = 0  # left-padded prompt
    logits, shared, _ = model(ids, attn, P)
    if dtype == torch.float32:  # exactly the trainer's log-probs (which compute in float32)
        from paretoalign.rollout import token_logprobs

        logp = token_logprobs(logits, ids[:, P:], temperature)
    else:
        logp = torch.log_softmax(logits / temperature, -1).gather(2, ids[:, P:].unsqueeze(-1)).squeeze(-1)
    old = logp.detach() + 0.2 * torch.randn(N, T, generator=g, dtype=dtype)  # some ratios clipped
    mask = torch.ones(N, T, dtype=dtype)
    mask[0, 4:] = 0  # completions that ended early
    mask[2, 2:] = 0
    adv = torch.randn(N, T, K, generator=g, dtype=dtype)
    return logp - old, adv, mask, shared


def _mgda_with_gram(monkeypatch, *args, **kw):
    import paretoalign.losses.online as om

    seen = []
    real = om.min_norm_weights_from_gram
    monkeypatch.setattr(om, "min_norm_weights_from_gram", lambda G: seen.append(G.clone()) or real(G))
    loss, c = mgda_ub_loss(*args, **kw)
    return loss, c, seen[-1]


@pytest.mark.parametrize("K", [2, 3, 8])
@pytest.mark.parametrize("with_preference", [False, True])
def test_mgda_ub_one_backward_gram_equals_the_per_objective_gram_on_real_hidden_states(monkeypatch, K, with_preference):
    logratio, adv, mask, shared = _tiny_policy_batch(K, seed=K)
    pref = None
    if with_preference:
        pref = torch.linspace(1.0, 2.0, K, dtype=torch.float64)
        pref[-1] = 0.0  # a dropped objective too
        pref = pref / pref.sum()
    ref_loss, ref_c, ref_G = _mgda_with_gram(monkeypatch, logratio, adv, mask, 0.2, shared,
                                             preference=pref, gram="per_objective")
    loss, c, G = _mgda_with_gram(monkeypatch, logratio, adv, mask, 0.2, shared, preference=pref)  # default: factored
    assert G.dtype == torch.float64 and G.shape == ref_G.shape == ((K - 1, K - 1) if with_preference else (K, K))
    assert torch.all(torch.diagonal(ref_G) > 0)
    assert float((G - ref_G).abs().max() / ref_G.abs().max()) < 1e-6, (G, ref_G)
    torch.testing.assert_close(c, ref_c, atol=1e-6, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=1e-9, rtol=1e-6)
    if with_preference:
        assert c[-1] == 0.0


def test_mgda_ub_factored_gram_in_float32_with_the_trainers_log_probs(monkeypatch):
    logratio, adv, mask, shared = _tiny_policy_batch(3, seed=5, dtype=torch.float32)
    loss, c, G = _mgda_with_gram(monkeypatch, logratio, adv, mask, 0.2, shared)
    ref_loss, ref_c, R = _mgda_with_gram(monkeypatch, logratio, adv, mask, 0.2, shared, gram="per_objective")
    assert float((G - R).abs().max() / R.abs().max()) < 1e-5
    torch.testing.assert_close(c, ref_c, atol=1e-4, rtol=0)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-4)


def test_mgda_ub_factored_gram_rejects_a_representation_not_per_token():
    logratio, adv, mask = _batch()
    shared = torch.randn(4 * 5 * 2, requires_grad=True)
    with pytest.raises(ValueError, match="per_objective"):
        mgda_ub_loss(shared[:20].reshape(4, 5) * 0.1, adv, mask, 0.2, shared)
    with pytest.raises(ValueError, match="unknown MGDA-UB gram"):
        mgda_ub_loss(logratio, adv, mask, 0.2, shared, gram="nope")


def test_mgda_ub_factored_gram_with_one_token_per_sample(monkeypatch):
    """bench/exact_front.py's layout: one representation row [N, H] per sample, log-ratio [N, 1]."""
    torch.manual_seed(11)
    rows = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 5, (6,))
    logp = torch.log_softmax(rows, -1).gather(1, y[:, None]).squeeze(1)
    logratio = (logp - logp.detach() + 0.1)[:, None]
    adv, mask = torch.randn(6, 1, 3, dtype=torch.float64), torch.ones(6, 1, dtype=torch.float64)
    loss, c, G = _mgda_with_gram(monkeypatch, logratio, adv, mask, 0.2, rows)
    ref_loss, ref_c, R = _mgda_with_gram(monkeypatch, logratio, adv, mask, 0.2, rows, gram="per_objective")
    torch.testing.assert_close(G, R, atol=0, rtol=1e-12)
    torch.testing.assert_close(c, ref_c, atol=1e-12, rtol=0)
