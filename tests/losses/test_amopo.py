"""AMoPO pieces: length normalisation, the margin loss, adaptive weights (softmax over dimensions, detached)."""

import torch
import torch.nn.functional as F

from paretoalign.losses.amopo import (
    amopo_adaptive_weights,
    amopo_dimension_losses,
    amopo_loss,
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
    got = amopo_loss(c, r, w, sft_nll=torch.tensor([3.0]), sft_coef=0.1)
    assert torch.allclose(got, (w * L).sum(1) + 0.3)
    masked = amopo_loss(c, r, torch.tensor([[1.0, 0.0]]), valid=torch.tensor([[True, False]]))
    assert torch.allclose(masked, L[:, 0])
    got.sum().backward()
    assert c.grad[0, 0] < 0  # descending raises the chosen response's likelihood
