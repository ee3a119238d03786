"""AMoPO pieces: length normalisation, the margin loss, adaptive weights (softmax over dimensions, detached),
the reduction over dimensions and the softmax scope, each against the reference code's formula."""

import pytest
import torch
import torch.nn.functional as F

from paretoalign.losses.amopo import (
    amopo_adaptive_weights,
    amopo_dimension_losses,
    amopo_loss,
    amopo_weight_softmax,
    average_logps,
    token_probability_stats,
)


def test_average_logps_is_length_normalised():
    lp = torch.tensor([[-1.0, -3.0, -5.0], [-2.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert torch.allclose(average_logps(lp, m), torch.tensor([-3.0, -2.0]))


def test_dimension_loss_value_and_margin():
    c, r = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-2.0, -1.0]])
    got = amopo_dimension_losses(c, r, beta=0.8, gamma=2.0)
    want = -F.logsigmoid(0.8 * (c - r) - 2.0)
    assert torch.allclose(got, want)
    # γ is a target margin: with equal rewards the loss is −log σ(−γ), not log 2
    assert torch.allclose(amopo_dimension_losses(c, c, 0.8, 2.0), -F.logsigmoid(torch.tensor(-2.0)).expand(1, 2))


def test_token_probability_stats():
    lp = torch.log(torch.tensor([[0.2, 0.4, 0.9]]))
    mu, s = token_probability_stats(lp, torch.tensor([[1, 1, 0]]))
    # unbiased, as the reference code's torch.std: sqrt((0.1² + 0.1²) / 1)
    assert torch.allclose(mu, torch.tensor([0.3])) and torch.allclose(s, torch.tensor([0.1 * 2 ** 0.5]))
    ref = torch.tensor([0.2, 0.4])
    assert torch.allclose(s, ref.std())
    mu1, s1 = token_probability_stats(lp[:, :1], torch.tensor([[1]]))
    assert torch.allclose(mu1, torch.tensor([0.2])) and float(s1) == 0.0


def test_adaptive_weights_softmax_over_dimensions_detached_and_masked():
    g = torch.Generator().manual_seed(0)
    B, D, T = 4, 3, 5
    lpc = torch.log(torch.rand(B, D, T, generator=g)).requires_grad_(True)
    lpr = torch.log(torch.rand(B, D, T, generator=g))
    m = torch.ones(B, D, T)
    valid = torch.tensor([[True, True, True], [True, False, True], [True, True, False], [False, True, False]])
    w = amopo_adaptive_weights(lpc, m, lpr, m, valid, generator=torch.Generator().manual_seed(1))
    assert w.shape == (B, D) and not w.requires_grad
    assert torch.allclose(w.sum(1), torch.ones(B))
    assert (w[~valid] == 0).all()
    # zero spread: the draw is the mean, so a sequence generated with higher probability weighs more
    sure = torch.log(torch.full((1, 2, T), 0.9))
    unsure = torch.log(torch.full((1, 2, T), 0.1))
    lp = torch.cat([sure[:, :1], unsure[:, 1:]], 1)
    w2 = amopo_adaptive_weights(lp, torch.ones(1, 2, T), lp, torch.ones(1, 2, T))
    assert torch.allclose(w2, torch.softmax(torch.tensor([[1.8, 0.2]]), 1))
    w3 = amopo_adaptive_weights(lp, torch.ones(1, 2, T), lp, torch.ones(1, 2, T), sign=-1.0)
    assert w3[0, 1] > w3[0, 0]


def test_amopo_loss_weights_and_sft_term():
    c = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    r = torch.tensor([[-2.0, -1.0]])
    w = torch.tensor([[0.25, 0.75]])
    L = amopo_dimension_losses(c, r)
    got = amopo_loss(c, r, w, sft_nll=torch.tensor([3.0]), sft_coef=0.1, reduction="sum")
    assert torch.allclose(got, (w * L).sum(1) + 0.3)
    # the default is the mean over the D dimension rows; the SFT term is added after it, not divided
    assert torch.allclose(amopo_loss(c, r, w, sft_nll=torch.tensor([3.0]), sft_coef=0.1), (w * L).sum(1) / 2 + 0.3)
    masked = amopo_loss(c, r, torch.tensor([[1.0, 0.0]]), valid=torch.tensor([[True, False]]), reduction="sum")
    assert torch.allclose(masked, L[:, 0])
    # an unlabelled dimension is a row with zero loss: the mean still divides by D
    masked_mean = amopo_loss(c, r, torch.tensor([[1.0, 0.0]]), valid=torch.tensor([[True, False]]))
    assert torch.allclose(masked_mean, L[:, 0] / 2)
    got.sum().backward()
    assert c.grad[0, 0] < 0  # descending raises the chosen response's likelihood


def _reference_rows(x):
    """[B, D] -> the reference code's row order: torch.cat of the per-dimension chunks, dimension-major."""
    return torch.cat([x[:, d] for d in range(x.shape[1])])


def _reference_total(c, r, scores, beta, gamma):
    """The reference code's loss, written as it computes it (trainer_multi_obj.py, get_batch_loss_metrics):
    per row SimPO losses, one softmax over all D·B row scores (dim=0), losses * softmax, then .mean()."""
    rows_c, rows_r, rows_s = _reference_rows(c), _reference_rows(r), _reference_rows(scores)
    losses = torch.stack([-F.logsigmoid(beta * (rows_c[i] - rows_r[i] - gamma / beta)) for i in range(len(rows_c))])
    return (losses * F.softmax(rows_s, dim=0)).mean()


@pytest.mark.parametrize("B, D", [(1, 4), (3, 4), (5, 2)])
def test_mean_reduction_with_batch_scope_is_the_reference_formula_and_sum_is_d_times_it(B, D):
    g = torch.Generator().manual_seed(B * 10 + D)
    c, r = -3 * torch.rand(B, D, generator=g, dtype=torch.float64), -3 * torch.rand(B, D, generator=g, dtype=torch.float64)
    scores = 2 * torch.rand(B, D, generator=g, dtype=torch.float64)
    want = _reference_total(c, r, scores, 0.8, 2.0)
    w = amopo_weight_softmax(scores, scope="batch")
    mean = amopo_loss(c, r, w, beta=0.8, gamma=2.0, reduction="mean").mean()  # the trainer's batch mean
    total = amopo_loss(c, r, w, beta=0.8, gamma=2.0, reduction="sum").mean()
    torch.testing.assert_close(mean, want)
    torch.testing.assert_close(total, D * want)
    # example scope agrees with the reference at B = 1 (its per-device batch size) only
    w_ex = amopo_weight_softmax(scores, scope="example")
    ex = amopo_loss(c, r, w_ex, beta=0.8, gamma=2.0).mean()
    if B == 1:
        torch.testing.assert_close(ex, want)
    else:
        assert not torch.allclose(ex, want)
        # per example: (1/D) Σ_d softmax_d(scores_b)·L_bd, averaged over the batch
        L = -F.logsigmoid(0.8 * (c - r) - 2.0)
        brute = sum(sum(torch.softmax(scores[b], 0)[d] * L[b, d] for d in range(D)) / D for b in range(B)) / B
        torch.testing.assert_close(ex, brute)


def test_weight_softmax_scopes_brute_force_with_masks():
    g = torch.Generator().manual_seed(3)
    B, D = 4, 3
    s = torch.randn(B, D, generator=g, dtype=torch.float64)
    valid = torch.tensor([[True, True, True], [True, False, True], [False, False, False], [False, True, False]])
    wb = amopo_weight_softmax(s, valid, scope="batch")
    we = amopo_weight_softmax(s, valid, scope="example")
    # batch: one softmax over all valid (example, dimension) entries of the D x B rows
    z = sum(float(torch.exp(s[b, d])) for b in range(B) for d in range(D) if valid[b, d])
    for b in range(B):
        for d in range(D):
            want_b = float(torch.exp(s[b, d])) / z if valid[b, d] else 0.0
            assert float(wb[b, d]) == pytest.approx(want_b, rel=1e-12, abs=1e-15)
            zb = sum(float(torch.exp(s[b, k])) for k in range(D) if valid[b, k])
            want_e = float(torch.exp(s[b, d])) / zb if valid[b, d] else 0.0
            assert float(we[b, d]) == pytest.approx(want_e, rel=1e-12, abs=1e-15)
    assert float(wb.sum()) == pytest.approx(1.0) and torch.allclose(we.sum(1), torch.tensor([1.0, 1, 0, 1], dtype=s.dtype))
    # per row, the batch weights renormalised are the example weights
    rows = wb.sum(1, keepdim=True)
    torch.testing.assert_close(torch.where(rows > 0, wb / rows.clamp(min=1e-300), wb), we)
    assert torch.equal(amopo_weight_softmax(s, torch.zeros(B, D, dtype=torch.bool), scope="batch"), torch.zeros(B, D))
    with pytest.raises(ValueError, match="scope"):
        amopo_weight_softmax(s, scope="dimension")
    with pytest.raises(ValueError, match="reduction"):
        amopo_loss(s, s, we, reduction="none")


@pytest.mark.parametrize("scope", ["example", "batch"])
def test_adaptive_weights_hand_computed_draw_for_each_scope(scope):
    """The Gaussian draws by hand (μ + s·ε per response, the same ε for both scopes), then the scope's softmax."""
    B, D, T = 3, 2, 4
    g = torch.Generator().manual_seed(5)
    lpc = torch.log(torch.rand(B, D, T, generator=g, dtype=torch.float64))
    lpr = torch.log(torch.rand(B, D, T, generator=g, dtype=torch.float64))
    m = torch.ones(B, D, T)
    m[0, 1, 2:] = 0
    w = amopo_adaptive_weights(lpc, m, lpr, m, generator=torch.Generator().manual_seed(9), scope=scope)
    eps = torch.randn((2, B, D), generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    draw = torch.zeros(B, D, dtype=torch.float64)
    for b in range(B):
        for d in range(D):
            for k, lp in enumerate((lpc, lpr)):
                p = lp[b, d][m[b, d].bool()].exp()
                draw[b, d] += p.mean() + p.std() * eps[k, b, d]  # unbiased std, as torch.std in the reference
    want = torch.softmax(draw.flatten(), 0).view(B, D) if scope == "batch" else torch.softmax(draw, 1)
    torch.testing.assert_close(w, want)
