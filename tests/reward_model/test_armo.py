"""ArmoRM's maths: exact ridge, missing labels, gating over the objective axis (the reference
script's bug would fail here), Bradley-Terry, Spearman, and debiasing that really decorrelates."""

import numpy as np
import pytest
import torch
from scipy import stats

from paretoalign.reward_model.armo import (
    GatingNetwork,
    bradley_terry_loss,
    debias,
    debias_lambdas,
    fit_ridge_heads,
    gating_weights,
    moe_score,
    ridge_solve,
    scale_ratings,
    spearman,
)


def test_ridge_solve_is_the_exact_penalised_least_squares_with_a_free_intercept():
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
    w, b = ridge_solve(X, y, 0.7)
    # brute force: the normal equations of [X 1] with the penalty on w only
    A = np.hstack([X.numpy(), np.ones((30, 1))])
    P = np.diag([0.7] * 5 + [0.0])
    sol = np.linalg.solve(A.T @ A + P, A.T @ y.numpy())
    np.testing.assert_allclose(w.numpy(), sol[:5], atol=1e-10)
    assert float(b) == pytest.approx(sol[5], abs=1e-10)
    # and the gradient of the objective vanishes there
    r = A @ sol - y.numpy()
    np.testing.assert_allclose(A.T @ r + P @ sol, 0, atol=1e-9)


def test_heads_ignore_missing_labels_and_recover_planted_weights():
    g = torch.Generator().manual_seed(1)
    X = torch.randn(200, 6, generator=g, dtype=torch.float64)
    W = torch.randn(3, 6, generator=g, dtype=torch.float64)
    Y = X @ W.T + torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    Y[::3, 1] = float("nan")  # objective 1 unlabelled on a third of the rows
    fit = fit_ridge_heads(X, Y)
    assert fit.counts.tolist() == [200, 133, 200]
    torch.testing.assert_close(fit.weight, W, atol=1e-2, rtol=0)
    torch.testing.assert_close(fit.bias, torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64), atol=1e-2, rtol=0)
    assert float(fit.alpha.max()) <= 1.0  # noiseless: validation picks a weak penalty
    # the labelled rows alone give the same head as the NaN-masked column
    rows = torch.isfinite(Y[:, 1])
    w1, b1 = ridge_solve(X[rows], Y[rows, 1], float(fit.alpha[1]))
    torch.testing.assert_close(fit.weight[1], w1)
    with pytest.raises(ValueError, match="at least 2"):
        fit_ridge_heads(X[:3], torch.tensor([[1.0], [float("nan")], [float("nan")]], dtype=torch.float64))


def test_validation_picks_a_strong_penalty_for_pure_noise():
    g = torch.Generator().manual_seed(2)
    X = torch.randn(80, 40, generator=g, dtype=torch.float64)
    y = torch.randn(80, 1, generator=g, dtype=torch.float64)  # no signal: the best predictor is the mean
    assert float(fit_ridge_heads(X, y).alpha[0]) >= 100


def test_scale_ratings():
    v = torch.tensor([0.0, 2.0, 4.0, float("nan")])
    out = scale_ratings(v, 0, 4)
    assert out[:3].tolist() == [0.0, 0.5, 1.0] and torch.isnan(out[3])
    with pytest.raises(ValueError, match="outside its range"):
        scale_ratings(torch.tensor([5.0]), 0, 4, name="helpfulness")
    with pytest.raises(ValueError, match="low < high"):
        scale_ratings(v, 3, 3)


def test_gates_are_a_softmax_over_objectives_for_every_sample():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    g = gating_weights(logits, temperature=2.0)
    torch.testing.assert_close(g.sum(-1), torch.ones(2))
    torch.testing.assert_close(g[0], torch.softmax(logits[0] / 2.0, 0))
    # the public script's input: chosen/rejected stacked as [B, 2, K]; refused, not normalised on axis 1
    with pytest.raises(ValueError, match=r"\[batch, objectives\]"):
        gating_weights(torch.randn(4, 2, 3))
    net = GatingNetwork(8, 5, hidden=16, layers=2, dropout=0.0)
    out = net(torch.randn(7, 8))
    assert out.shape == (7, 5)
    torch.testing.assert_close(out.sum(-1), torch.ones(7))
    assert float(net.logit_scale.detach()) == 1.0


def _gate_problem(n=256, seed=0):
    """Prompt type A (feature +1) prefers the pair ordering of objective 0, type B that of objective 1."""
    g = torch.Generator().manual_seed(seed)
    kind = torch.randint(0, 2, (n,), generator=g)
    prompt = torch.stack([kind * 2.0 - 1.0, torch.randn(n, generator=g) * 0.1], 1)
    rc, rr = torch.rand(n, 2, generator=g), torch.rand(n, 2, generator=g)
    # chosen better on the objective the prompt type cares about, worse on the other
    k = kind
    rc[torch.arange(n), k] = rr[torch.arange(n), k] + 0.3
    rc[torch.arange(n), 1 - k] = rr[torch.arange(n), 1 - k] - 0.3
    return prompt, rc, rr, kind


def test_trained_gate_follows_the_prompt_which_the_softmax_axis_bug_cannot():
    prompt, rc, rr, kind = _gate_problem()
    torch.manual_seed(0)
    net = GatingNetwork(2, 2, hidden=32, layers=2, temperature=1.0, dropout=0.0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(300):
        gates = net(prompt)
        loss = bradley_terry_loss(moe_score(rc, gates, net.logit_scale), moe_score(rr, gates, net.logit_scale)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        gates = net(prompt)
    assert float(gates[kind == 0, 0].mean()) > 0.9 and float(gates[kind == 1, 1].mean()) > 0.9
    # the reference script's softmax over the chosen/rejected axis: identical prompts on both sides
    # give 0.5 for every objective whatever the prompt, so it could never learn this
    stacked = torch.stack([net.mlp(prompt), net.mlp(prompt)], 1)  # [B, 2, K]
    buggy = torch.softmax(stacked / net.temperature, dim=1)[:, 0]
    torch.testing.assert_close(buggy, torch.full_like(buggy, 0.5))
    acc = (moe_score(rc, gates) > moe_score(rr, gates)).float().mean()
    assert float(acc) == 1.0


def test_bradley_terry_and_score_values():
    assert float(bradley_terry_loss(torch.tensor([1.0]), torch.tensor([1.0]))) == pytest.approx(np.log(2))
    r, g = torch.tensor([[1.0, 3.0]]), torch.tensor([[0.25, 0.75]])
    assert float(moe_score(r, g, 2.0)) == pytest.approx(2 * (0.25 + 2.25))
    with pytest.raises(ValueError, match="differ in shape"):
        moe_score(r, torch.ones(1, 3))


def test_spearman_matches_scipy_with_ties():
    a = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0, 5.0, 0.0])
    b = torch.tensor([0.3, 0.1, 0.2, 0.9, 0.5, 0.5, 0.0])
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)
    assert np.isnan(spearman(torch.ones(4), b[:4]))


def test_debiasing_removes_the_verbosity_correlation_it_claims_to():
    g = torch.Generator().manual_seed(3)
    n = 400
    verb = torch.rand(n, generator=g, dtype=torch.float64)
    quality = torch.rand(n, generator=g, dtype=torch.float64)
    rewards = torch.stack([
        quality + 0.8 * verb,        # verbosity-biased helpfulness
        quality - 0.5 * verb,        # already anti-correlated: left alone
        verb,                        # the verbosity objective itself
    ], 1)
    lam, before, after = debias_lambdas(rewards, 2, threshold=0.03, max_lambda=1.0, steps=200)
    assert before[0] > 0.4 and before[1] < 0
    assert lam[1] == 0 and lam[2] == 1
    d = debias(rewards, lam, 2)
    assert spearman(d[:, 0], verb) <= 0.03 and after[0] == pytest.approx(spearman(d[:, 0], verb))
    # smallest on the grid: one grid step less is still above the threshold
    assert spearman(rewards[:, 0] - (lam[0] - 1.0 / 200) * verb, verb) > 0.03
    assert torch.allclose(d[:, 2], torch.zeros(n, dtype=torch.float64))  # verbosity leaves the score
    # and the signal that is not verbosity survives
    assert spearman(d[:, 0], quality) > 0.7


def test_last_token_features_keep_the_end_of_a_truncated_conversation():
    from paretoalign.reward_model.features import FeatureExtractor

    ex = FeatureExtractor("tiny", "last", max_length=12, use_chat_template=False)
    long_prompt = "word " * 50
    f_long = ex.features([long_prompt], ["the answer"])
    f_short = ex.features(["word " * 8], ["the answer"])
    # both end with the same 12 tokens once the prompt's start is cut: the same last-token feature
    torch.testing.assert_close(f_long, f_short)
    # and the response is what the feature reads
    assert not torch.allclose(f_long, ex.features([long_prompt], ["another answer entirely"]))
    assert ex.encoder is False and ex.describe()["pooling"] == "last"
