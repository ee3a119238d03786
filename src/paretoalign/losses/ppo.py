"""PPO pieces as pure tensor functions, with PAMA's Noon-PPO advantage clipping.

References:
    Schulman et al. 2017, "Proximal Policy Optimization Algorithms" (clipped surrogate);
    Schulman et al. 2016, "High-Dimensional Continuous Control Using GAE";
    He & Maghsudi 2025, "Pareto Multi-Objective Alignment for Language Models" (arXiv 2508.07768):
    Noon-PPO sets negative advantages to zero, A = max(A', 0).

Shapes: ``[N, T]`` per token (N sequences, T completion positions) with a ``mask`` of the same
shape (1 for real completion tokens); per-objective tensors carry a trailing ``K`` axis.
Surrogates are returned as objectives to *maximise*; losses negate them.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Mean of ``x`` over positions where ``mask`` is 1 (``mask`` broadcasts against ``x``)."""
    mask = mask.to(x.dtype)
    while mask.dim() < x.dim():
        mask = mask.unsqueeze(-1)
    if dim is None:
        return (x * mask).sum() / mask.expand_as(x).sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.expand_as(x).sum(dim).clamp(min=1.0)


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Standardise ``x [N, T, ...]`` over the masked (N, T) positions, separately per trailing index."""
    m = mask.to(x.dtype)
    while m.dim() < x.dim():
        m = m.unsqueeze(-1)
    count = m.sum(dim=(0, 1)).clamp(min=1.0)
    mean = (x * m).sum(dim=(0, 1)) / count
    var = (((x - mean) ** 2) * m).sum(dim=(0, 1)) / count
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def noon_clip(advantages: torch.Tensor) -> torch.Tensor:
    """Noon-PPO (He & Maghsudi 2025, Eq. for A_t): A = max(A', 0)."""
    return advantages.clamp(min=0.0)


def ppo_surrogate(logratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """Clipped surrogate min(u·A, clip(u, 1−ε, 1+ε)·A) with u = exp(logratio), elementwise.

    ``logratio`` is ``[N, T]``; ``advantages`` is ``[N, T]`` or ``[N, T, K]`` (one surrogate per
    objective, the ratio broadcast over K).
    """
    if advantages.dim() == logratio.dim() + 1:
        logratio = logratio.unsqueeze(-1)
    ratio = torch.exp(logratio)
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    return torch.minimum(ratio * advantages, clipped * advantages)


def surrogate_slope(logratio: torch.Tensor, advantages: torch.Tensor, clip_eps: float) -> torch.Tensor:
    """d/du of :func:`ppo_surrogate`: A where the unclipped branch is active, else 0.

    This is the scalar term I(A) PAMA minimises over (our reading of the paper, shared by a
    third-party reimplementation; see :mod:`paretoalign.trainers.online_trainer`).  For A ≥ 0 the
    unclipped branch is active while u ≤ 1+ε; for A < 0 while u ≥ 1−ε.  At u = 1 (first PPO
    epoch) the slope is exactly A.
    """
    if advantages.dim() == logratio.dim() + 1:
        logratio = logratio.unsqueeze(-1)
    ratio = torch.exp(logratio)
    active = torch.where(advantages >= 0, ratio <= 1.0 + clip_eps, ratio >= 1.0 - clip_eps)
    return advantages * active.to(advantages.dtype)


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over ``[N, T, ...]`` token rewards and values.

    Positions where ``mask`` is 0 (after the end of a completion) have value 0 and contribute
    nothing, so the last real token bootstraps from 0.  Returns ``(advantages, returns)``.
    """
    m = mask.to(values.dtype)
    while m.dim() < values.dim():
        m = m.unsqueeze(-1)
    values = values * m
    rewards = rewards * m
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(values[:, t])
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
    return adv, adv + values


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-objective token rewards ``[N, T, K]``: −β·KL_t everywhere, plus score_k on the last real token.

    The KL penalty is applied to every objective's reward (each critic then learns the value of a
    KL-regularised objective); by linearity a weighted sum of these rewards with weights summing
    to 1 is exactly the KL-regularised scalarised reward of MORLHF.
    """
    m = mask.to(kl.dtype)
    out = (-kl_coef * kl * m).unsqueeze(-1).expand(-1, -1, scores.shape[-1]).clone()
    lengths = m.sum(dim=1).long()
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(scores.shape[0], device=scores.device)
    has_tokens = (lengths > 0).to(scores.dtype).unsqueeze(-1)
    out[rows, last] += scores * has_tokens
    return out


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's unbiased, non-negative per-token KL estimator exp(r) − r − 1, r = ref − logp (GRPO)."""
    r = ref_logp - logp
    return torch.exp(r) - r - 1.0


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float | None
) -> torch.Tensor:
    """PPO's clipped value loss 0.5·max((V−R)², (V_clip−R)²), averaged over masked positions and summed over K."""
    err = (values - returns) ** 2
    if clip is not None:
        v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.maximum(err, (v_clip - returns) ** 2)
    per_head = masked_mean(0.5 * err, mask, dim=(0, 1)) if err.dim() == 3 else masked_mean(0.5 * err, mask)
    return per_head.sum()
