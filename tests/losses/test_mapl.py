"""MAPL: the Rc-BT optimum on a reward table, the DPO form's value and gradient, the normaliser effect and
its diagnostic, the anchors, and the inter-sample conflict rules."""

from __future__ import annotations

import math

import pytest
import torch

from paretoalign.losses.mapl import mapl_inter_loss, mapl_intra_loss, normaliser_diagnostic, rc_bt_loss


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _lbfgs(params, closure_loss, iters=200):
    opt = torch.optim.LBFGS(params, lr=1, max_iter=iters, tolerance_grad=1e-12, tolerance_change=1e-15,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = closure_loss()
        loss.backward()
        return loss

    opt.step(closure)


@pytest.mark.parametrize("p", [0.5, 0.7, 0.9, 0.15])
def test_rc_bt_optimum_on_a_reward_table_is_logit_p(p):
    # one (x_w, x_l, y) triple seen n times, labelled x_w ≻ x_l with frequency p; the reward a free table r[prompt]
    n = 20
    wins = round(p * n)
    r = torch.zeros(2, requires_grad=True)  # r(x_w, y), r(x_l, y)

    def loss():
        first = torch.tensor([0] * wins + [1] * (n - wins))
        return rc_bt_loss(r[first], r[1 - first]).mean()

    _lbfgs([r], loss)
    assert (r[0] - r[1]).item() == pytest.approx(math.log(wins / (n - wins)), abs=1e-6)


def test_intra_dpo_form_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    ref_w, ref_l = -torch.rand(5, generator=g) * 20, -torch.rand(5, generator=g) * 20
    # π = π_ref: log 2 whatever the normalisers
    assert torch.allclose(mapl_intra_loss(ref_w, ref_l, ref_w, ref_l, beta=0.1), torch.full((5,), math.log(2)))
    pw = (ref_w + torch.randn(5, generator=g)).requires_grad_(True)
    pl = (ref_l + torch.randn(5, generator=g)).requires_grad_(True)
    beta = 0.3
    loss = mapl_intra_loss(pw, pl, ref_w, ref_l, beta)
    z = beta * ((pw - ref_w) - (pl - ref_l))
    assert torch.allclose(loss, torch.log1p(torch.exp(-z)))
    loss.sum().backward()
    assert (pw.grad < 0).all() and (pl.grad > 0).all()  # descent raises log π(y|x_w), lowers log π(y|x_l)
    assert torch.allclose(pw.grad, -beta * torch.sigmoid(-z.detach()))


# --- the normaliser effect on a 2-prompt x 3-response table -------------------------------------

BETA = 0.5
REF_W = torch.log_softmax(torch.tensor([0.2, 0.5, -0.3], dtype=torch.float64), 0)  # π_ref(.|x_w)
REF_L = torch.log_softmax(torch.tensor([-0.1, 0.4, 0.0], dtype=torch.float64), 0)  # π_ref(.|x_l)
Y = 0  # the response of the triple (x_w, x_l, y)


def _intra(theta_w, theta_l, **anchor):
    lw, ll = torch.log_softmax(theta_w, 0), torch.log_softmax(theta_l, 0)
    return mapl_intra_loss(lw[Y:Y + 1], ll[Y:Y + 1], REF_W[Y:Y + 1], REF_L[Y:Y + 1], BETA, **anchor), lw, ll


def test_the_loss_falls_by_pushing_down_the_violated_prompt_and_the_diagnostic_sees_it():
    base, _, _ = _intra(REF_W.clone(), REF_L.clone())
    assert base.item() == pytest.approx(math.log(2))
    # policy A: learns nothing about x_w, only makes y unlikely under x_l (its mass goes to other responses)
    theta_l = REF_L.clone()
    theta_l[Y] -= 6.0
    loss_a, lw, ll = _intra(REF_W.clone(), theta_l)
    assert loss_a.item() < 0.1 < math.log(2)
    d = normaliser_diagnostic(lw[Y:Y + 1], ll[Y:Y + 1], REF_W[Y:Y + 1], REF_L[Y:Y + 1])
    assert d["mapl/down_share"] == 1.0 and d["mapl/delta_w"] == 0.0 and d["mapl/delta_l"] < -5
    # policy B: the same margin from raising π(y|x_w): no sign of the failure mode
    theta_w = REF_W.clone()
    theta_w[Y] += 6.0
    loss_b, lw, ll = _intra(theta_w, REF_L.clone())
    d = normaliser_diagnostic(lw[Y:Y + 1], ll[Y:Y + 1], REF_W[Y:Y + 1], REF_L[Y:Y + 1])
    assert d["mapl/down_share"] == 0.0 and d["mapl/delta_w"] > 0
    assert loss_b.item() < math.log(2)


def _descend(steps=300, lr=1.0, **anchor):
    theta_w, theta_l = REF_W.clone().requires_grad_(True), REF_L.clone().requires_grad_(True)
    opt = torch.optim.SGD([theta_w, theta_l], lr=lr)
    for _ in range(steps):
        loss, _, _ = _intra(theta_w, theta_l, **anchor)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
    loss, lw, ll = _intra(theta_w, theta_l, **anchor)
    return loss.item(), lw.detach(), ll.detach()


def test_plain_descent_drives_the_violated_side_down_and_the_drop_anchor_bounds_it():
    # log π(y|x_w) <= 0 caps the x_w side of the margin at −log π_ref(y|x_w); the x_l side has no cap
    cap_w = -REF_W[Y].item()
    loss, lw, ll = _descend()
    d = normaliser_diagnostic(lw[Y:Y + 1], ll[Y:Y + 1], REF_W[Y:Y + 1], REF_L[Y:Y + 1])
    assert loss < 0.01
    assert d["mapl/delta_w"] <= cap_w and d["mapl/delta_l"] < -5.0  # the loss fell through x_l
    assert d["mapl/down_share"] > 0.8
    loss_a, lw_a, ll_a = _descend(anchor="drop", anchor_coef=2.0, drop_margin=0.5)
    d = normaliser_diagnostic(lw_a[Y:Y + 1], ll_a[Y:Y + 1], REF_W[Y:Y + 1], REF_L[Y:Y + 1])
    assert d["mapl/delta_l"] > -0.5 - 0.05  # the hinge holds log π(y|x_l) near the reference
    assert d["mapl/delta_w"] > 0.95 * cap_w  # the margin now comes from x_w: π(y|x_w) near 1
    assert d["mapl/down_share"] < 0.2 and loss_a < math.log(2)


def test_bt_optimal_implicit_rewards_are_not_the_intra_dpo_optimum_when_normalisers_differ():
    """Spec §6.6.4: with true rewards r[x, y] and π* ∝ π_ref·exp(r/β) (the RLHF optimum), β·log π*/π_ref =
    r − β·log Z(x).  Labels follow BT on r, p = σ(r(x_w, y) − r(x_l, y)); the intra DPO logit at π* is
    logit(p) − β(log Z(x_w) − log Z(x_l)) ≠ logit(p), so π* does not minimise the expected intra loss."""
    r = torch.tensor([[1.0, 0.0, -0.5], [-0.2, 2.0, 0.3]], dtype=torch.float64)  # r[x_w], r[x_l]
    ref = torch.stack([REF_W, REF_L])
    log_z = torch.logsumexp(ref + r / BETA, 1)
    assert abs(log_z[0] - log_z[1]) > 0.5
    star = ref + r / BETA - log_z[:, None]  # log π*
    p = torch.sigmoid(r[0, Y] - r[1, Y])

    def expected_loss(lw, ll):
        fwd = mapl_intra_loss(lw, ll, REF_W[Y:Y + 1], REF_L[Y:Y + 1], BETA)
        bwd = mapl_intra_loss(ll, lw, REF_L[Y:Y + 1], REF_W[Y:Y + 1], BETA)
        return p * fwd + (1 - p) * bwd

    lw, ll = star[0, Y:Y + 1].clone().requires_grad_(True), star[1, Y:Y + 1].clone().requires_grad_(True)
    z = BETA * ((lw - REF_W[Y]) - (ll - REF_L[Y]))
    assert z.item() == pytest.approx((torch.logit(p) - BETA * (log_z[0] - log_z[1])).item(), abs=1e-12)
    loss = expected_loss(lw, ll)
    entropy = -(p * p.log() + (1 - p) * (1 - p).log())  # the minimum, reached where z = logit(p)
    assert loss.item() > entropy.item() + 1e-3
    loss.sum().backward()
    assert abs(lw.grad.item()) > 1e-3  # π* is not a stationary point of the intra loss
    # the reward-model form on the same labels recovers the true difference exactly (no normaliser)
    rw = torch.zeros(2, requires_grad=True)
    _lbfgs([rw], lambda: p * rc_bt_loss(rw[0], rw[1]) + (1 - p) * rc_bt_loss(rw[1], rw[0]))
    assert (rw[0] - rw[1]).item() == pytest.approx((r[0, Y] - r[1, Y]).item(), abs=1e-6)


def test_anchor_terms_by_hand():
    pw, pl = torch.tensor([-8.0]), torch.tensor([-15.0])
    rw, rl = torch.tensor([-9.0]), torch.tensor([-10.0])
    base = mapl_intra_loss(pw, pl, rw, rl, 0.1)
    sft = mapl_intra_loss(pw, pl, rw, rl, 0.1, anchor="sft", anchor_coef=2.0, length_w=torch.tensor([4]))
    assert (sft - base).item() == pytest.approx(-2.0 * -8.0 / 4)
    drop = mapl_intra_loss(pw, pl, rw, rl, 0.1, anchor="drop", anchor_coef=3.0, drop_margin=1.0)
    assert (drop - base).item() == pytest.approx(3.0 * (5.0 - 1.0))
    assert torch.equal(mapl_intra_loss(pw, pl, rw, rl, 0.1, anchor="drop", anchor_coef=0.0), base)
    with pytest.raises(ValueError, match="length_w"):
        mapl_intra_loss(pw, pl, rw, rl, 0.1, anchor="sft", anchor_coef=1.0)
    with pytest.raises(ValueError, match="unknown MAPL anchor"):
        mapl_intra_loss(pw, pl, rw, rl, 0.1, anchor="kl", anchor_coef=1.0)


def test_inter_conflict_rules():
    pc, pr = torch.tensor([-5.0, -5.0]), torch.tensor([-7.0, -7.0])
    rc, rr = torch.tensor([-6.0, -6.0]), torch.tensor([-6.0, -6.0])
    conflict = torch.tensor([False, True])
    fwd = torch.log1p(torch.exp(torch.tensor(-0.1 * 2.0)))
    bwd = torch.log1p(torch.exp(torch.tensor(0.1 * 2.0)))
    assert torch.allclose(mapl_inter_loss(pc, pr, rc, rr, 0.1, conflict, "compliance"), torch.stack([fwd, bwd]))
    assert torch.allclose(mapl_inter_loss(pc, pr, rc, rr, 0.1, conflict, "semantics"), torch.stack([fwd, fwd]))
    assert torch.allclose(mapl_inter_loss(pc, pr, rc, rr, 0.1, conflict, "drop"), torch.stack([fwd, torch.tensor(0.0)]))
    assert torch.allclose(mapl_inter_loss(pc, pr, rc, rr, 0.1), torch.stack([fwd, fwd]))
    with pytest.raises(ValueError, match="conflict rule"):
        mapl_inter_loss(pc, pr, rc, rr, 0.1, conflict, "vote")
