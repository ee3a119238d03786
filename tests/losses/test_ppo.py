import pytest
import torch

from paretoalign.losses import (
    gae,
    kl_k3,
    masked_mean,
    noon_clip,
    ppo_surrogate,
    surrogate_slope,
    token_rewards,
    value_loss,
    whiten,
)


def test_noon_clip_zeroes_negative_advantages_only():
    a = torch.tensor([-2.0, -0.0, 0.0, 0.5, 3.0])
    assert torch.equal(noon_clip(a), torch.tensor([0.0, 0.0, 0.0, 0.5, 3.0]))
    assert (noon_clip(torch.randn(4, 5, 3)) >= 0).all()


def test_ppo_surrogate_matches_definition_and_broadcasts_over_objectives():
    logratio = torch.log(torch.tensor([[0.5, 1.0, 1.1, 1.5]]))
    adv = torch.tensor([[1.0, -1.0, 2.0, -2.0]])
    eps = 0.2
    u = logratio.exp()
    expected = torch.minimum(u * adv, u.clamp(0.8, 1.2) * adv)
    torch.testing.assert_close(ppo_surrogate(logratio, adv, eps), expected)
    adv_k = torch.stack([adv, 2 * adv], dim=-1)  # [1, 4, 2]
    out = ppo_surrogate(logratio, adv_k, eps)
    assert out.shape == (1, 4, 2)
    torch.testing.assert_close(out[..., 1], 2 * expected)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_surrogate_slope_is_the_derivative_with_respect_to_the_ratio(sign):
    torch.manual_seed(0)
    u = torch.tensor([0.5, 0.79, 0.95, 1.0, 1.05, 1.19, 1.21, 2.0], dtype=torch.float64, requires_grad=True)
    adv = sign * torch.rand(8, dtype=torch.float64) + sign * 0.1
    sur = ppo_surrogate(u.log().unsqueeze(0), adv.unsqueeze(0), 0.2).sum()
    (grad,) = torch.autograd.grad(sur, u)
    slope = surrogate_slope(u.log().detach().unsqueeze(0), adv.unsqueeze(0), 0.2).squeeze(0)
    torch.testing.assert_close(slope, grad)
    if sign > 0:  # the paper's I(A) for A >= 0: A if u <= 1+eps else 0
        expected = torch.where(u.detach() <= 1.2, adv, torch.zeros_like(adv))
        torch.testing.assert_close(slope, expected)


def test_gae_matches_brute_force_sum_of_discounted_td_residuals():
    torch.manual_seed(1)
    N, T, K = 3, 6, 2
    rewards = torch.randn(N, T, K)
    values = torch.randn(N, T, K)
    mask = torch.ones(N, T)
    mask[1, 4:] = 0  # a shorter completion
    mask[2, 1:] = 0
    gamma, lam = 0.9, 0.8
    adv, ret = gae(rewards, values, mask, gamma, lam)
    for n in range(N):
        L = int(mask[n].sum())
        for k in range(K):
            v = torch.cat([values[n, :L, k], torch.zeros(1)])
            for t in range(L):
                deltas = [rewards[n, j, k] + gamma * v[j + 1] - v[j] for j in range(t, L)]
                want = sum((gamma * lam) ** (j - t) * d for j, d in enumerate(deltas, start=t))
                assert adv[n, t, k].item() == pytest.approx(float(want), abs=1e-5)
            assert torch.all(adv[n, L:, k] == 0)
    torch.testing.assert_close(ret * mask.unsqueeze(-1), (adv + values) * mask.unsqueeze(-1))


def test_token_rewards_put_score_on_last_token_and_kl_everywhere():
    scores = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    r = token_rewards(scores, kl, mask, kl_coef=0.5)
    assert r.shape == (2, 3, 2)
    torch.testing.assert_close(r[0, :, 0], torch.tensor([-0.05, -0.1 + 1.0, 0.0]))
    torch.testing.assert_close(r[0, :, 1], torch.tensor([-0.05, -0.1 + 2.0, 0.0]))
    torch.testing.assert_close(r[1, :, 1], torch.tensor([-0.25, -0.25, -0.25 + 4.0]))
    # weights summing to one recover the KL-regularised scalarised reward
    w = torch.tensor([0.25, 0.75])
    torch.testing.assert_close((r * w).sum(-1)[1], torch.tensor([-0.25, -0.25, -0.25 + 0.25 * 3 + 0.75 * 4]))


def test_whiten_standardises_each_objective_over_masked_positions():
    torch.manual_seed(2)
    x = torch.randn(4, 5, 3) * torch.tensor([1.0, 10.0, 100.0]) + 7
    mask = torch.ones(4, 5)
    mask[0, 3:] = 0
    w = whiten(x, mask)
    for k in range(3):
        vals = w[..., k][mask.bool()]
        assert vals.mean().abs() < 1e-5
        assert vals.std(unbiased=False) == pytest.approx(1.0, abs=1e-3)
    assert torch.all(w[0, 3:] == 0)


def test_masked_mean_ignores_masked_positions():
    x = torch.tensor([[1.0, 100.0], [3.0, 5.0]])
    m = torch.tensor([[1, 0], [1, 1]])
    assert masked_mean(x, m).item() == pytest.approx(3.0)
    torch.testing.assert_close(masked_mean(x, m, dim=1), torch.tensor([1.0, 4.0]))


def test_kl_k3_is_nonnegative_and_zero_at_equality():
    a = torch.randn(10)
    assert torch.all(kl_k3(a, a) == 0)
    assert torch.all(kl_k3(a, a + torch.randn(10)) >= 0)


def test_value_loss_clipping_takes_the_pessimistic_error_per_head():
    values = torch.tensor([[[2.0, 0.0]]])
    old = torch.tensor([[[0.0, 0.0]]])
    returns = torch.tensor([[[1.0, 1.0]]])
    mask = torch.ones(1, 1)
    # head 0: unclipped err (2-1)^2=1, clipped value 0.2 -> (0.2-1)^2=0.64, max=1 -> 0.5
    # head 1: err 1, clipped 0 -> 1 -> 0.5
    assert value_loss(values, old, returns, mask, clip=0.2).item() == pytest.approx(1.0)
    assert value_loss(values, old, returns, mask, clip=None).item() == pytest.approx(1.0)
    values2 = torch.tensor([[[0.5, 0.0]]])  # clipped to 0.2 -> (0.8)^2 > (0.5)^2
    assert value_loss(values2, old, returns, mask, clip=0.2).item() == pytest.approx(0.5 * 0.64 + 0.5)
