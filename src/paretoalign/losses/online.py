"""How each online method turns per-objective advantages into one policy loss.

The trainer computes, for every method alike, per-objective advantages ``A [N, T, K]`` (GAE from
K value heads, or group baselines), the log-ratio ``log π_θ/π_old [N, T]`` and the completion
mask.  The functions here are the only place the methods differ:

* :func:`morlhf_loss` — linear scalarisation with a fixed preference w (MORLHF; e.g. Rame et al.
  2023, "Rewarded soups", §2; Wu et al. 2023, "Fine-grained human feedback").
* :func:`pama_loss` — PAMA (He & Maghsudi, ECML/PKDD 2025, arXiv 2508.07768): Noon-PPO
  surrogates per objective, combined with the closed-form weights of Theorem 1.
* :func:`mgda_ub_loss` — MGDA-UB (Sener & Koltun, NeurIPS 2018): min-norm weights of the
  per-objective gradients taken w.r.t. the shared representation (the last hidden states).

Each returns ``(loss, weights)`` with ``weights [K]`` the (mean) combiner weights, for logging.
"""

from __future__ import annotations

from typing import Callable

import torch

from paretoalign.combiners import min_norm_weights_from_gram, pama_weights, preference_scales
from paretoalign.losses import masked_mean, noon_clip, ppo_surrogate, surrogate_slope

# A function that averages a tensor over data-parallel processes (identity on one process).
Reduce = Callable[[torch.Tensor], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _apply_preference(advantages: torch.Tensor, preference):
    """Scale the advantages of objectives with w_k > 0 by 1/(K⁺·w_k) and drop the others
    (:func:`paretoalign.combiners.preference_scales`); returns (advantages [..., K⁺], support [K] bool)."""
    if preference is None:
        return advantages, None
    scales = preference_scales(torch.as_tensor(preference, dtype=advantages.dtype, device=advantages.device))
    support = scales > 0
    return advantages[..., support] * scales[support], support


def _expand(c: torch.Tensor, support) -> torch.Tensor:
    """Solver weights over the support back to all K objectives (zeros for dropped ones)."""
    if support is None:
        return c
    full = torch.zeros(support.shape[0], dtype=c.dtype, device=c.device)
    full[support] = c
    return full


def morlhf_loss(logratio, advantages, mask, clip_eps: float):
    """PPO loss on an already-scalarised advantage ``[N, T]`` (the trainer applies w·A)."""
    surrogate = ppo_surrogate(logratio, advantages, clip_eps)
    return -masked_mean(surrogate, mask)


def pama_loss(
    logratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    granularity: str = "batch",
    noon: bool = True,
    reduce_mean: Reduce = _identity,
    preference: torch.Tensor | None = None,
):
    """PAMA's policy loss and weights.

    1. Noon-PPO: A_k ← max(A_k, 0) for every objective k (when ``noon``).
    2. Per-objective surrogates L_k = min(u·A_k, clip(u)·A_k).  The paper writes the ratio
       against the reference, u = π_θ/π_ref; the trainer passes that log-ratio by default
       (``pama_ratio="reference"``) or the usual π_θ/π_old (``"old"``).
    3. Scalar terms I_k = I(A_k) = A_k if u ≤ 1+ε else 0 (the paper's definition for the
       non-negative Noon advantages; :func:`paretoalign.losses.surrogate_slope`, which is ∂L_k/∂u
       and also covers negative A when ``noon=False``).  The paper bounds MGDA's
       ‖Σ c_k ∇L_k‖² by (Σ c_k I_k)²·‖∇π/π_ref‖² and minimises the first factor.
    4. c* = argmin_{c∈Δ} (Σ_k c_k I_k)² in closed form (Theorem 1, :func:`pama_weights`), solved
       at ``granularity``: ``"batch"`` (one c per step, the terms averaged over every completion
       token of every process — the analogue of MGDA's one weight vector per step, our default),
       ``"sequence"`` (one c per completion) or ``"token"``.  c is a constant (no gradient).
    5. Loss −mean(Σ_k c_k L_k) ("update the policy with the aggregated Noon-PPO objective").
       A third-party reimplementation instead applies s* = Σ c_k I_k as one scalar advantage on
       every token; we keep the per-token advantages, which is the aggregated objective itself.

    Note: with Noon clipping every I_k ≥ 0, so s* = min_k I_k and the weight goes to the objective
    whose surrogate currently has the smallest slope (an objective with I_k = 0 takes the weight
    and the step is zero).  See BENCHMARKS.md for what the granularities do in practice.

    ``preference`` (our extension, for front sweeps; None = the paper): each objective's
    advantages are scaled by 1/(K⁺·w_k) before steps 1-5 and zero-weight objectives are left out
    (:func:`paretoalign.combiners.preference_scales`), so the closed form weights the objective
    with the smallest I_k/w_k.  The returned weights are the solver's c over all K (0 for dropped
    objectives); the uniform preference reproduces the unscaled method exactly.
    """
    advantages, support = _apply_preference(advantages, preference)
    loss, c = _pama_loss(logratio, advantages, mask, clip_eps, granularity, noon, reduce_mean)
    return loss, _expand(c, support)


def _pama_loss(logratio, advantages, mask, clip_eps, granularity, noon, reduce_mean):
    if noon:
        advantages = noon_clip(advantages)
    surrogate = ppo_surrogate(logratio, advantages, clip_eps)  # [N, T, K]
    slope = surrogate_slope(logratio.detach(), advantages, clip_eps)
    m = mask.to(surrogate.dtype)
    if granularity == "batch":
        terms = reduce_mean(masked_mean(slope, m, dim=(0, 1)))  # [K]
        c = pama_weights(terms)
        loss = -(c * masked_mean(surrogate, m, dim=(0, 1))).sum()
        return loss, c
    if granularity == "sequence":
        terms = masked_mean(slope, m, dim=1)  # [N, K]
        c = pama_weights(terms)
        loss = -masked_mean((surrogate * c.unsqueeze(1)).sum(-1), m)
        seq_valid = (m.sum(1) > 0).to(c.dtype)
        return loss, (c * seq_valid.unsqueeze(-1)).sum(0) / seq_valid.sum().clamp(min=1)
    if granularity == "token":
        c = pama_weights(slope)  # [N, T, K]
        loss = -masked_mean((surrogate * c).sum(-1), m)
        return loss, masked_mean(c, m, dim=(0, 1))
    raise ValueError(f"unknown PAMA granularity {granularity!r}")


def mgda_gram_from_token_factors(slopes: torch.Tensor, token_sq_norms: torch.Tensor) -> torch.Tensor:
    """MGDA-UB's Gram matrix ``[K, K]`` (float64) from per-token factors, without per-objective gradients.

    ``slopes [..., K]`` holds a_{k,t} = ∂L_k/∂logratio_t and ``token_sq_norms [...]`` holds
    ‖v_t‖² with v_t = ∂logp_t/∂z_t (z_t the shared representation at token t, logp_t its token's
    log-probability).

    Derivation.  The language-model head, the temperature and the log-softmax act on each position
    separately, so z_t reaches the losses only through logp_t (hence through logratio_t = logp_t −
    a constant).  By the chain rule the per-objective gradient at token t is therefore
    g_{k,t} = ∂L_k/∂z_t = a_{k,t}·v_t, and
        G_ij = Σ_t ⟨g_{i,t}, g_{j,t}⟩ = Σ_t a_{i,t} a_{j,t} ‖v_t‖².
    All v_t come from ONE backward of Σ_t logp_t w.r.t. Z: its row t is Σ_s ∂logp_s/∂z_t = v_t,
    because z_t affects no other logp_s.  Any per-position map between Z and the logits
    (a final norm, a temperature, a soft cap) keeps this exact; anything that mixes positions
    (an attention layer after Z) would break it — use ``gram="per_objective"`` then.
    """
    a = slopes.reshape(-1, slopes.shape[-1]).double()
    w = token_sq_norms.reshape(-1).double()
    if w.shape[0] != a.shape[0]:
        raise ValueError(f"slopes {tuple(slopes.shape)} and token norms {tuple(token_sq_norms.shape)} disagree")
    return (a * w.unsqueeze(-1)).T @ a


def mgda_ub_loss(
    logratio: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float,
    shared: torch.Tensor,
    reduce_sum: Reduce = _identity,
    preference: torch.Tensor | None = None,
    gram: str = "factored",
):
    """MGDA-UB's policy loss and weights.

    Per-objective PPO losses L_k; their gradients g_k = ∂L_k/∂Z w.r.t. the shared representation
    Z (``shared``, the last hidden states at the completion positions ``[N, T, H]``, which must be
    part of the graph that produced ``logratio [N, T]``); Gram matrix G_ij = ⟨g_i, g_j⟩ (summed
    over processes, so every process solves the same problem); c = argmin_{c∈Δ} cᵀGc; loss Σ_k c_k L_k.

    ``gram`` says how G is computed:

    * ``"factored"`` (default): exactly, from ONE backward through the output layer —
      G_ij = Σ_t a_{i,t} a_{j,t} ‖v_t‖² with a_{k,t} = ∂L_k/∂logratio_t (autograd through the
      small surrogate graph only) and v_t = ∂logp_t/∂z_t (row t of ∂(Σ logratio)/∂Z); see
      :func:`mgda_gram_from_token_factors` for the derivation and its assumption (Z reaches
      logratio_t only through position t, true for the trainer's final hidden states).
    * ``"per_objective"``: the reference — K backward passes through the output layer and
      O(K²·|Z|) for G = flat·flatᵀ.

    ``preference`` (our extension, for front sweeps; None = the paper): the losses of objectives
    with w_k > 0 are scaled by 1/(K⁺·w_k) and the others dropped, so that at an interior
    min-norm solution the progress on objective k is proportional to w_k
    (:func:`paretoalign.combiners.preference_scales`).  The uniform preference changes nothing.
    """
    advantages, support = _apply_preference(advantages, preference)
    surrogate = ppo_surrogate(logratio, advantages, clip_eps)  # [N, T, K]
    losses = -masked_mean(surrogate, mask, dim=(0, 1))  # [K]
    K = losses.shape[0]
    if gram == "factored":
        # one representation vector (the last dim) per token, up to singleton dims ([N, T, H] vs [N, T] in
        # the trainer; e.g. [N, H] vs [N, 1] for one token per sample)
        if [d for d in shared.shape[:-1] if d != 1] != [d for d in logratio.shape if d != 1]:
            raise ValueError(f"the factored Gram needs one representation per token: shared {tuple(shared.shape)} "
                             f"vs logratio {tuple(logratio.shape)}; use gram='per_objective'")
        # a_{k,t}: the same surrogate ops on a detached copy of the log-ratio, one per objective,
        # so one backward through this small graph gives every ∂L_k/∂logratio_t.
        lr = logratio.detach().unsqueeze(-1).expand(*logratio.shape, K).clone().requires_grad_(True)
        (a,) = torch.autograd.grad(-masked_mean(ppo_surrogate(lr, advantages, clip_eps), mask, dim=(0, 1)).sum(), lr)
        # v_t: one backward through the output layer.  Not allow_unused: a representation the
        # log-ratio does not depend on is a wiring bug, and zero gradients would make every weight look optimal.
        (v,) = torch.autograd.grad(logratio.sum(), shared, retain_graph=True)
        G = mgda_gram_from_token_factors(a, v.double().pow(2).sum(-1))  # token norms in logratio's order
    elif gram == "per_objective":
        grads = []
        for k in range(K):
            (g,) = torch.autograd.grad(losses[k], shared, retain_graph=True)
            grads.append(g)
        flat = torch.stack([g.reshape(-1) for g in grads]).double()
        G = flat @ flat.T
    else:
        raise ValueError(f"unknown MGDA-UB gram {gram!r} (factored or per_objective)")
    c = min_norm_weights_from_gram(reduce_sum(G)).to(losses.dtype).detach()
    return (c * losses).sum(), _expand(c, support)
