"""MODPO and DPO losses: values, errors, and the exact tabular optimum π_ref·exp(wᵀr/β)."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from paretoalign.errors import ConfigError
from paretoalign.losses.dpo import dpo_loss
from paretoalign.losses.modpo import modpo_loss


@pytest.fixture(autouse=True)
def _float64():
    """Exactness needs float64; restored afterwards so other tests keep float32."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _expected_pair_loss(logits, ref_logp, rewards_label, margins, weights, beta):
    """Exact expected MODPO loss over every pair of responses of one prompt, labels drawn from
    Bradley–Terry on the labelled objective: y_i is chosen over y_j with probability σ(r_i − r_j)."""
    logp = torch.log_softmax(logits, 0)
    n = logits.numel()
    i, j = zip(*itertools.combinations(range(n), 2))
    i, j = torch.tensor(i), torch.tensor(j)
    p_ij = torch.sigmoid(rewards_label[i] - rewards_label[j])
    fwd = modpo_loss(logp[i], logp[j], ref_logp[i], ref_logp[j], margins[i], margins[j], weights, beta)
    bwd = modpo_loss(logp[j], logp[i], ref_logp[j], ref_logp[i], margins[j], margins[i], weights, beta)
    return (p_ij * fwd + (1 - p_ij) * bwd).sum()


@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.8, 0.2), (0.2, 0.3, 0.5)])
def test_modpo_minimiser_is_the_morlhf_optimum(weights):
    g = torch.Generator().manual_seed(0)
    n, beta = 6, 0.5
    w = torch.tensor(weights)
    K = w.numel()
    R = torch.randn(n, K, generator=g)  # true reward vectors; column 0 labels the pairs
    ref_logp = torch.log_softmax(torch.randn(n, generator=g), 0)
    theta = torch.zeros(n, requires_grad=True)
    opt = torch.optim.LBFGS([theta], lr=1, max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = _expected_pair_loss(theta, ref_logp, R[:, 0], R[:, 1:], w, beta)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    got = torch.softmax(theta.detach(), 0)
    want = torch.softmax(ref_logp + R @ w / beta, 0)  # π_ref·exp(wᵀr/β) normalised
    assert torch.allclose(got, want, atol=1e-7), (got, want)


def test_modpo_with_no_margin_is_dpo_with_scaled_beta():
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(5, generator=g) for _ in range(4))
    empty = torch.zeros(5, 0)
    got = modpo_loss(pc, pr, rc, rr, empty, empty, torch.tensor([0.25]), beta=0.1)
    assert torch.allclose(got, dpo_loss(pc, pr, rc, rr, beta=0.4))


def test_modpo_value_by_hand():
    pc, pr = torch.tensor([-3.0]), torch.tensor([-4.0])
    rc, rr = torch.tensor([-3.5]), torch.tensor([-3.0])
    cm, rm = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, -1.0]])
    w = torch.tensor([0.5, 0.3, 0.2])
    beta = 0.2
    h_c = (beta * (pc - rc) - (0.3 * 1.0 + 0.2 * 2.0)) / 0.5
    h_r = (beta * (pr - rr) - (0.3 * 0.5 + 0.2 * -1.0)) / 0.5
    want = -F.logsigmoid(h_c - h_r)
    assert torch.allclose(modpo_loss(pc, pr, rc, rr, cm, rm, w, beta), want)
    # A larger margin on the chosen response lowers its implicit-reward need: loss goes up.
    assert modpo_loss(pc, pr, rc, rr, cm + 1, rm, w, beta) > want


def test_modpo_gradient_flows_only_through_policy_logps():
    pc = torch.tensor([-2.0], requires_grad=True)
    pr = torch.tensor([-2.0], requires_grad=True)
    cm = torch.tensor([[0.3]], requires_grad=True)
    modpo_loss(pc, pr, torch.tensor([-2.0]), torch.tensor([-2.0]), cm, torch.zeros(1, 1),
               torch.tensor([0.5, 0.5]), 0.1).sum().backward()
    assert pc.grad.item() < 0 < pr.grad.item()  # descending raises the chosen, lowers the rejected


@pytest.mark.parametrize(
    "weights, match",
    [
        ([0.0, 1.0], "labelled for .*w_k.*0"),
        ([0.5, 0.3], None),
        ([0.5], "one weight for the labelled objective plus one per margin"),
        ([0.5, 0.3, 0.2], "one weight for the labelled objective plus one per margin"),
        ([float("nan"), 1.0], "finite"),
        ([1.5, -0.5], ">= 0"),
    ],
)
def test_modpo_rejects_bad_weights(weights, match):
    x = torch.zeros(2)
    m = torch.zeros(2, 1)
    if match is None:
        modpo_loss(x, x, x, x, m, m, torch.tensor(weights), 0.1)  # weights need not sum to 1 here
        return
    with pytest.raises(ConfigError, match=match):
        modpo_loss(x, x, x, x, m, m, torch.tensor(weights), 0.1)


def test_modpo_rejects_bad_beta_and_shapes():
    x = torch.zeros(2)
    m = torch.zeros(2, 1)
    with pytest.raises(ConfigError, match="beta"):
        modpo_loss(x, x, x, x, m, m, torch.tensor([0.5, 0.5]), 0.0)
    with pytest.raises(ConfigError, match="margins"):
        modpo_loss(x, x, x, x, m, torch.zeros(2, 2), torch.tensor([0.5, 0.5]), 0.1)


def test_dpo_minimiser_is_the_kl_regularised_optimum_and_label_smoothing():
    g = torch.Generator().manual_seed(2)
    n, beta = 5, 0.3
    r = torch.randn(n, generator=g)
    ref = torch.log_softmax(torch.randn(n, generator=g), 0)
    theta = torch.zeros(n, requires_grad=True)
    i, j = zip(*itertools.combinations(range(n), 2))
    i, j = torch.tensor(i), torch.tensor(j)
    p = torch.sigmoid(r[i] - r[j])
    opt = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        lp = torch.log_softmax(theta, 0)
        loss = (p * dpo_loss(lp[i], lp[j], ref[i], ref[j], beta)
                + (1 - p) * dpo_loss(lp[j], lp[i], ref[j], ref[i], beta)).sum()
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    assert torch.allclose(torch.softmax(theta.detach(), 0), torch.softmax(ref + r / beta, 0), atol=1e-7)
    z = torch.tensor([0.0, 1.0])
    smooth = dpo_loss(z, -z, torch.zeros(2), torch.zeros(2), 1.0, label_smoothing=0.1)
    assert torch.allclose(smooth, 0.9 * -F.logsigmoid(2 * z) + 0.1 * -F.logsigmoid(-2 * z))


def test_public_api_has_the_required_signature():
    import inspect

    import paretoalign.losses as losses

    assert losses.modpo_loss is modpo_loss and losses.dpo_loss is dpo_loss
    params = list(inspect.signature(losses.modpo_loss).parameters)
    assert params[:8] == ["policy_chosen_logps", "policy_rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
                          "chosen_margins", "rejected_margins", "weights", "beta"]
    B, K = 3, 3
    out = losses.modpo_loss(torch.zeros(B), torch.zeros(B), torch.zeros(B), torch.zeros(B), torch.zeros(B, K - 1),
                            torch.zeros(B, K - 1), torch.tensor([0.5, 0.3, 0.2]), 0.1)
    assert out.shape == (B,) and torch.allclose(out, torch.full((B,), float(torch.log(torch.tensor(2.0)))))
