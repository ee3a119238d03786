"""ArmoRM's maths as small pure functions: ridge heads, the gating network, Bradley-Terry, debiasing.

Reference: Wang, Xiong, Xie, Zhao, Zhang 2024, "Interpretable Preferences via Multi-Objective Reward
Modeling and Mixture-of-Experts" (arXiv 2406.12845), and its public code (RLHF-Reward-Modeling,
``armo-rm/``).  With f(x, y) the frozen backbone's feature of a conversation and f(x) the prompt's:

- Stage 1 (multi-objective regression): r_j(x, y) = w_jᵀ f(x, y) + b_j, one ridge regression per
  objective j on ratings scaled to [0, 1]; a response without a rating for j is left out of j's
  fit; the ridge strength α_j is chosen per objective by validation MSE.
- Debiasing: r'_j = r_j − λ_j·r_v with r_v the verbosity objective and λ_j the smallest value on a
  grid that brings Spearman(r'_j, r_v) down to a threshold on a reference set (λ_v = 1: the
  verbosity objective itself leaves the score).
- Stage 2 (mixture of experts): gating g(x) = softmax(MLP(f(x)) / τ) over the **objective** axis
  (so Σ_j g_j(x) = 1 for every prompt), score R(x, y) = β·Σ_j g_j(x)·r'_j(x, y) with β a learnable
  scale, trained with Bradley-Terry −log σ(R(x, y_w) − R(x, y_l)) on preference pairs.

Documented choices where the reference code differs or is silent:

- Its stage-2 script applies the softmax to a [B, 2, K] tensor along dim 1, i.e. over the
  chosen/rejected axis, which makes the gate nearly constant (a known bug); :func:`gating_weights`
  always normalises over the last (objective) axis of a [B, K] tensor and refuses anything else.
- Its ridge has no intercept (the 4096-d features of an 8B model absorb it); ours fits an
  unpenalised intercept, since small backbones' features do not, and refits the chosen α on all
  labelled rows (train and validation).
- Its debiasing is computed in stage 2 but never applied or saved; ours is part of the saved model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from paretoalign.reward_model import RIDGE_ALPHAS  # the reference code's grid


def scale_ratings(values: torch.Tensor, low: float, high: float, name: str = "rating") -> torch.Tensor:
    """Ratings on [low, high] -> [0, 1]; NaN (missing) stays NaN; values outside the range are an error."""
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ValueError(f"{name}: rating range must have low < high; got [{low}, {high}]")
    v = values.double()
    bad = torch.isfinite(v) & ((v < low - 1e-9) | (v > high + 1e-9))
    if bad.any():
        raise ValueError(f"{name}: rating {float(v[bad][0]):g} is outside its range [{low:g}, {high:g}]")
    return (v - low) / (high - low)


@dataclass
class RidgeFit:
    """Stage 1's heads: ``weight [K, d]``, ``bias [K]``, the α chosen per objective, every α's
    validation MSE ``[K, len(alphas)]`` and how many labelled rows each objective had."""

    weight: torch.Tensor
    bias: torch.Tensor
    alpha: torch.Tensor
    val_mse: torch.Tensor
    counts: torch.Tensor


def ridge_solve(X: torch.Tensor, y: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """argmin_w,b ‖Xw + b − y‖² + α‖w‖² (intercept unpenalised), in float64: (w [d], b)."""
    X, y = X.double(), y.double()
    mx, my = X.mean(0), y.mean()
    Xc = X - mx
    A = Xc.T @ Xc + alpha * torch.eye(X.shape[1], dtype=X.dtype)
    w = torch.linalg.solve(A, Xc.T @ (y - my))
    return w, my - mx @ w


def fit_ridge_heads(X: torch.Tensor, Y: torch.Tensor, alphas=RIDGE_ALPHAS, val_fraction: float = 0.2,
                    seed: int = 0) -> RidgeFit:
    """One ridge regression per column of ``Y [N, K]`` (NaN = no label) on features ``X [N, d]``.

    Per objective: its labelled rows are split (``val_fraction`` held out, seeded), each α is fitted on
    the rest and scored by validation MSE, and the best α is refitted on all labelled rows.  An
    objective with fewer than 2 labelled rows is an error (nothing to fit)."""
    X = X.double()
    N, d = X.shape
    K = Y.shape[1]
    W, B = torch.zeros(K, d, dtype=torch.float64), torch.zeros(K, dtype=torch.float64)
    best, mse = torch.zeros(K, dtype=torch.float64), torch.full((K, len(alphas)), float("nan"), dtype=torch.float64)
    counts = torch.zeros(K, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    for k in range(K):
        rows = torch.isfinite(Y[:, k]).nonzero().flatten()
        counts[k] = len(rows)
        if len(rows) < 2:
            raise ValueError(f"objective {k}: {len(rows)} labelled response(s); a regression head needs at least 2")
        perm = rows[torch.randperm(len(rows), generator=g)]
        n_val = max(1, int(round(val_fraction * len(rows)))) if val_fraction > 0 and len(rows) >= 4 else 0
        val, tr = perm[:n_val], perm[n_val:]
        y = Y[:, k].double()
        if n_val:
            for i, a in enumerate(alphas):
                w, b = ridge_solve(X[tr], y[tr], a)
                mse[k, i] = ((X[val] @ w + b - y[val]) ** 2).mean()
            best[k] = alphas[int(torch.nan_to_num(mse[k], nan=float("inf")).argmin())]
        else:  # no validation (val_fraction 0, or under 4 rows): the middle of the grid
            best[k] = alphas[len(alphas) // 2]
        W[k], B[k] = ridge_solve(X[rows], y[rows], float(best[k]))
    return RidgeFit(W, B, best, mse, counts)


def gating_weights(logits: torch.Tensor, temperature: float = 10.0) -> torch.Tensor:
    """softmax(logits / τ) over the objective axis: ``[B, K] -> [B, K]``, rows sum to 1.

    Takes exactly a 2-D [B, K] tensor: the public ArmoRM script's bug was a softmax over the
    chosen/rejected axis of a [B, 2, K] tensor; a 3-D input here is refused, not silently reduced."""
    if logits.dim() != 2:
        raise ValueError(f"gating logits must be [batch, objectives]; got shape {tuple(logits.shape)}")
    return F.softmax(logits / temperature, dim=-1)


class GatingNetwork(nn.Module):
    """The prompt-conditioned gate: an MLP (``layers`` hidden layers of ``hidden`` units, ReLU,
    dropout) from prompt features to K logits, then :func:`gating_weights`; a learnable scale β
    (``logit_scale``, initialised to 1) multiplies the score, not the weights.  Reference code:
    3 × 1024, temperature 10, dropout 0.2."""

    def __init__(self, in_features: int, num_objectives: int, hidden: int = 1024, layers: int = 3,
                 temperature: float = 10.0, dropout: float = 0.2):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        mods, width = [], in_features
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        mods.append(nn.Linear(width, num_objectives))
        self.mlp = nn.Sequential(*mods)
        self.temperature = float(temperature)
        self.logit_scale = nn.Parameter(torch.ones(()))

    def forward(self, prompt_features: torch.Tensor) -> torch.Tensor:
        return gating_weights(self.mlp(prompt_features.to(self.mlp[0].weight.dtype)), self.temperature)


def moe_score(debiased_rewards: torch.Tensor, gates: torch.Tensor, scale: torch.Tensor | float = 1.0) -> torch.Tensor:
    """R = β·Σ_j g_j·r'_j: ``[B, K], [B, K] -> [B]``."""
    if debiased_rewards.shape != gates.shape:
        raise ValueError(f"rewards {tuple(debiased_rewards.shape)} and gates {tuple(gates.shape)} differ in shape")
    return scale * (gates * debiased_rewards).sum(-1)


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> torch.Tensor:
    """−log σ(R_w − R_l), per pair: [B]."""
    return -F.logsigmoid(chosen_scores - rejected_scores)


def ranks(x: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share the mean of their positions), 1-based, along the only axis."""
    x = x.double().flatten()
    order = torch.argsort(x, stable=True)
    r = torch.empty_like(x)
    r[order] = torch.arange(1, len(x) + 1, dtype=x.dtype)
    uniq, inv = torch.unique(x, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inv, r)
    cnt = torch.zeros(len(uniq), dtype=x.dtype).index_add_(0, inv, torch.ones_like(r))
    return (sums / cnt)[inv]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation (Pearson on average ranks); NaN when either side is constant."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra @ rb) / den) if den > 0 else float("nan")


def debias_lambdas(rewards: torch.Tensor, verbosity_index: int, threshold: float = 0.03, max_lambda: float = 1.0,
                   steps: int = 200) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """λ per objective so that Spearman(r_j − λ_j·r_v, r_v) ≤ ``threshold`` on the reference rewards
    ``[N, K]``: the smallest λ on an even grid of ``steps`` + 1 values in [0, ``max_lambda``]
    (the reference code: the first grid value under 0.03).  The verbosity objective gets λ = 1 (its
    debiased reward is 0).  An objective the grid cannot decorrelate gets ``max_lambda``; its
    correlation after stays above the threshold (the trainer reports and warns).
    Returns (λ [K], correlation before [K], correlation after [K]); the one-sided test
    keeps objectives that are already anti-correlated with verbosity untouched (λ = 0)."""
    N, K = rewards.shape
    if not 0 <= verbosity_index < K:
        raise ValueError(f"verbosity_index {verbosity_index} is not one of the {K} objectives")
    rv = rewards[:, verbosity_index].double()
    lam = torch.zeros(K, dtype=torch.float64)
    before = torch.full((K,), float("nan"), dtype=torch.float64)
    after = torch.full((K,), float("nan"), dtype=torch.float64)
    grid = torch.linspace(0.0, max_lambda, steps + 1, dtype=torch.float64)
    for j in range(K):
        rj = rewards[:, j].double()
        before[j] = spearman(rj, rv)
        if j == verbosity_index:
            lam[j], after[j] = 1.0, float("nan")
            continue
        for value in grid:
            rho = spearman(rj - value * rv, rv)
            if not rho > threshold:  # NaN (constant) counts as decorrelated
                lam[j], after[j] = value, rho
                break
        else:
            lam[j], after[j] = max_lambda, spearman(rj - max_lambda * rv, rv)
    return lam, before, after


def debias(rewards: torch.Tensor, lambdas: torch.Tensor, verbosity_index: int | None) -> torch.Tensor:
    """r'_j = r_j − λ_j·r_v: ``[B, K] -> [B, K]`` (unchanged when there is no verbosity objective)."""
    if verbosity_index is None:
        return rewards
    return rewards - lambdas.to(rewards) * rewards[:, verbosity_index : verbosity_index + 1]
