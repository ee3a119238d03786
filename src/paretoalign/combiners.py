"""Combiners: functions from per-objective signals (rewards, advantages, gradients) to one update.

Every function here is a pure tensor function (tensors in, tensors out, no state), so each can be
tested exactly against a brute-force solve.  Shapes use ``K`` for the number of objectives and
``n`` for the size of a group (the completions sampled for one prompt).

========================================  =======================================================
:func:`linear_scalarize`                  Σ_k w_k r_k  (MORLHF)
:func:`group_normalize`                   standardise along the last axis (GRPO's group baseline;
                                          valid-sample statistics, TRL's ``scale_rewards``)
:func:`normalize_then_sum`                standardise each objective in its group, then Σ_k w_k·
                                          (GDPO)
:func:`sum_then_normalize`                Σ_k w_k r_k, then standardise in the group (TRL's
                                          ``GRPOTrainer`` with ``reward_weights``)
:func:`tchebycheff_scalarize`             min_k w_k (r_k − z*_k)
:func:`smooth_tchebycheff_scalarize`      −μ·logsumexp_k(w_k (z*_k − r_k)/μ)
:func:`tchebycheff_weights`               its gradient w.r.t. the per-objective terms (softmax)
:func:`tchebycheff_dual_update`           one mirror-descent step on Tchebycheff's dual weights u
                                          (HoE's routers): u_k ∝ u_k·exp(−η w_k (J_k − z_k))
:func:`tchebycheff_policy_weights`        the policy step's linear weights u_k w_k / Σ_j u_j w_j
:func:`pama_weights`, :func:`pama_value`  PAMA's closed form, argmin_{c∈Δ} (Σ_k c_k I_k)²
:func:`gram_matrix`                       G = g gᵀ in float64, chunked over the parameter axis
:func:`min_norm_weights`,                 MGDA's min-norm point, argmin_{c∈Δ} ‖Σ_k c_k g_k‖²
:func:`min_norm_weights_from_gram`
:func:`preference_scales`                 1/(K⁺·w_k): a preference for PAMA / MGDA-UB (steering)
========================================  =======================================================
"""

from __future__ import annotations

import numpy as np
import torch

from paretoalign.errors import ConfigError

__all__ = [
    "linear_scalarize",
    "group_normalize",
    "normalize_then_sum",
    "group_normalize_objectives",
    "sum_then_normalize",
    "SCALE_REWARDS",
    "tchebycheff_scalarize",
    "smooth_tchebycheff_scalarize",
    "tchebycheff_weights",
    "tchebycheff_dual_update",
    "tchebycheff_policy_weights",
    "pama_weights",
    "preference_scales",
    "pama_value",
    "gram_matrix",
    "min_norm_weights",
    "min_norm_weights_from_gram",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _as_float(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def _as_group(rewards) -> torch.Tensor:
    """``rewards`` as a float tensor of shape ``[..., n, K]`` (a group axis and an objective axis)."""
    rewards = _as_float(rewards)
    if rewards.dim() < 2:
        raise ValueError(f"rewards must have shape [..., n, K], got {tuple(rewards.shape)}")
    return rewards


def _check_k(x: torch.Tensor, weights: torch.Tensor, what: str) -> None:
    if weights.dim() != 1:
        raise ValueError(f"weights must be a 1-D tensor [K], got shape {tuple(weights.shape)}")
    if x.dim() < 1 or x.shape[-1] != weights.shape[0]:
        raise ValueError(
            f"{what} has {x.shape[-1] if x.dim() else 0} objectives on its last axis "
            f"(shape {tuple(x.shape)}) but weights has {weights.shape[0]}"
        )


def _check_positive(name: str, value: float) -> None:
    if not (value > 0) or value != value or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")


SCALE_REWARDS = ("group", "batch", "none")  # TRL GRPOConfig.scale_rewards (default "group")


def _check_scale(scale_rewards: str) -> None:
    if scale_rewards not in SCALE_REWARDS:
        raise ConfigError(f"scale_rewards must be one of {', '.join(SCALE_REWARDS)}; got {scale_rewards!r}")


def _valid_mask(valid, like: torch.Tensor) -> torch.Tensor:
    """``valid`` ([..., n], or None: all valid) as a bool tensor broadcast to ``like``'s shape."""
    if valid is None:
        return torch.ones(like.shape, dtype=torch.bool, device=like.device)
    v = torch.as_tensor(valid, device=like.device).bool()
    try:
        return v.expand(like.shape)
    except RuntimeError:
        raise ValueError(f"valid has shape {tuple(v.shape)}, expected {tuple(like.shape)}") from None


# --------------------------------------------------------------------------------------------
# linear scalarisation and group normalisation
# --------------------------------------------------------------------------------------------


def linear_scalarize(rewards: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear scalarisation r_w = Σ_k w_k r_k (MORLHF).

    The classic multi-objective RLHF baseline: fix a preference w ∈ Δ^K and train any RL method
    on the scalar reward (e.g. Wu et al. 2023, "Fine-Grained Human Feedback Gives Better Rewards
    for Language Model Training"; Rame et al. 2023, "Rewarded soups", §2, which calls it MORLHF).
    With a KL-regularised objective its optimum is π*_w ∝ π_ref · exp(r_w/β).

    Args:
        rewards: ``[..., K]``.
        weights: ``[K]`` (not checked to lie on the simplex; see
            :func:`paretoalign.preferences.validate_weights`).

    Returns:
        ``[...]``, in the promoted dtype of the inputs.
    """
    rewards = _as_float(rewards)
    weights = torch.as_tensor(weights, device=rewards.device)
    _check_k(rewards, weights, "rewards")
    return (rewards * weights.to(rewards.dtype)).sum(-1)


def group_normalize(x: torch.Tensor, eps: float = 1e-6, valid: torch.Tensor | None = None,
                    scale_rewards: str = "group") -> torch.Tensor:
    """Standardise along the last axis: (x − mean) / std, the group baseline of GRPO.

    (Shao et al. 2024, "DeepSeekMath", §4.1.2: the advantage of each of the n completions of a
    prompt is its reward standardised within the group.)

    Choices, all deliberate:

    * ``std`` is the *population* standard deviation (``unbiased=False``, divide by n), so a group
      of one is defined (it gives 0) and the output has exactly mean 0 and std 1.  TRL's
      ``GRPOTrainer`` uses the unbiased std; the two differ by the constant factor √((n−1)/n).
    * The divisor is ``max(std, eps)``, not ``std + eps``: for a spread above ``eps`` the result is
      exactly invariant to the scale of ``x``; below it the output shrinks continuously to 0.
    * A group whose entries are all equal (max == min, tested exactly) gives exact zeros — never
      NaN, and never rounding noise blown up by a small divisor.

    ``valid`` (bool, ``[..., n]``; default all valid) marks the samples that were scored: the mean
    and std are taken over the valid samples of each group only, and invalid entries give exactly
    0 (whatever ``x`` holds there, NaN included).  This is TRL's ``GRPOTrainer`` (``grpo_trainer.py``,
    ``_generate_and_score_completions``): an unscorable completion's reward is NaN, the group
    statistics are ``torch.nanmean`` / ``nanstd`` (so it is not counted, in the mean or the std),
    and its advantage is set to 0 by ``nan_to_num``.  A group with fewer than two valid samples
    gives zeros (TRL: a NaN std, then 0).

    ``scale_rewards`` is TRL's ``GRPOConfig.scale_rewards`` (default ``"group"``): always centre on
    the valid-sample group mean, then divide by

    * ``"group"``: the group's std (the GRPO paper);
    * ``"batch"``: the std of *all* valid entries of ``x`` (every group: all leading axes, so pass
      the whole batch; TRL gathers it from every process first) — PPO-Lite's recommendation;
    * ``"none"``: nothing (Dr. GRPO: scaling by the std biases towards easy/hard prompts).

    Args:
        x: ``[..., n]``.
        eps: floor of the divisor, > 0.
        valid: optional bool ``[..., n]``.
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"``.

    Returns:
        ``[..., n]``, same dtype as ``x``.
    """
    _check_positive("eps", eps)
    _check_scale(scale_rewards)
    x = _as_float(x)
    v = _valid_mask(valid, x)
    xv = torch.where(v, x, torch.zeros_like(x))  # invalid entries (possibly NaN) never reach a statistic
    vf = v.to(x.dtype)
    count = vf.sum(-1, keepdim=True)
    mean = xv.sum(-1, keepdim=True) / count.clamp(min=1)
    centered = torch.where(v, xv - mean, torch.zeros_like(x))
    if scale_rewards == "group":
        std = (centered.pow(2).sum(-1, keepdim=True) / count.clamp(min=1)).sqrt()
        out = centered / std.clamp(min=eps)
    elif scale_rewards == "batch":
        n_all = vf.sum()
        dev = torch.where(v, xv - xv.sum() / n_all.clamp(min=1), torch.zeros_like(x))
        out = centered / (dev.pow(2).sum() / n_all.clamp(min=1)).sqrt().clamp(min=eps)
    else:
        out = centered
    hi = torch.where(v, xv, torch.full_like(x, -float("inf"))).amax(-1, keepdim=True)
    lo = torch.where(v, xv, torch.full_like(x, float("inf"))).amin(-1, keepdim=True)
    constant = hi <= lo  # all valid entries equal, or fewer than two valid entries
    return torch.where(constant | ~v, torch.zeros_like(out), out)


def normalize_then_sum(rewards: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """Standardise each objective within its group, then take the weighted sum (GDPO).

    A_i = Σ_k w_k · (r_ik − mean_j r_jk) / std_j r_jk, the group statistics taken over the n
    completions of one prompt (axis −2), separately for each objective, with
    :func:`group_normalize`'s conventions.  Because each objective is standardised on its own,
    rescaling one objective's reward (r_·k → a·r_·k, a > 0) leaves the result unchanged, so no
    objective's scale drowns the others; summing first (:func:`sum_then_normalize`) lets the
    objective with the largest spread dominate.

    Reference: Liu et al. 2026, "GDPO: Group reward-Decoupled Normalization Policy Optimization for
    Multi-reward RL Optimization" (arXiv 2601.05242).  GDPO then standardises the summed advantage
    over the whole batch; that step is the trainer's advantage whitening, not part of this function.
    TRL's ``normalize_then_sum`` ignores ``scale_rewards``, and so does this function.

    Args:
        rewards: ``[..., n, K]``.
        weights: ``[K]``.
        eps: see :func:`group_normalize`.
        valid: optional bool ``[..., n]``: a sample's validity (all its objectives scored); the
            group statistics use the valid samples only and invalid samples give 0 (see
            :func:`group_normalize`).  TRL decides per reward function (``nanmean`` per column);
            a sample here is valid or not as a whole.

    Returns:
        ``[..., n]``.
    """
    return linear_scalarize(group_normalize_objectives(rewards, eps, valid), weights)


def group_normalize_objectives(rewards: torch.Tensor, eps: float = 1e-6, valid: torch.Tensor | None = None,
                               scale_rewards: str = "group") -> torch.Tensor:
    """Standardise each objective within its group: ``[..., n, K] -> [..., n, K]`` (per-objective
    group baselines, the first half of :func:`normalize_then_sum`).  ``valid`` (``[..., n]``) and
    ``scale_rewards`` as in :func:`group_normalize`, applied to each objective separately
    (``"batch"``: each objective's std over the whole batch)."""
    rewards = _as_group(rewards)
    v = None if valid is None else torch.as_tensor(valid, device=rewards.device).bool()
    cols = [group_normalize(rewards[..., k], eps, v, scale_rewards) for k in range(rewards.shape[-1])]
    return torch.stack(cols, -1)


def sum_then_normalize(rewards: torch.Tensor, weights: torch.Tensor, eps: float = 1e-6,
                       valid: torch.Tensor | None = None, scale_rewards: str = "group") -> torch.Tensor:
    """Weighted sum first, then standardise within the group: group_normalize(Σ_k w_k r_k).

    What TRL's ``GRPOTrainer`` does with ``reward_weights`` (multi-reward GRPO; Shao et al. 2024
    for the group baseline; ``multi_objective_aggregation="sum_then_normalize"``, its default), up
    to the population-vs-unbiased std and ``max(std, eps)`` vs ``std + 1e-4`` (see
    :func:`group_normalize`), including ``scale_rewards`` (``"group"``, ``"batch"``, ``"none"``)
    and valid-only group statistics (``valid [..., n]``; invalid samples give 0).

    Args:
        rewards: ``[..., n, K]``.
        weights: ``[K]``.
        eps: see :func:`group_normalize`.
        valid: optional bool ``[..., n]``.
        scale_rewards: see :func:`group_normalize`.

    Returns:
        ``[..., n]``.
    """
    rewards = _as_group(rewards)
    if valid is not None:
        v = torch.as_tensor(valid, device=rewards.device).bool().unsqueeze(-1)
        rewards = torch.where(v, rewards, torch.zeros_like(rewards))
    return group_normalize(linear_scalarize(rewards, weights), eps, valid, scale_rewards)


# --------------------------------------------------------------------------------------------
# Tchebycheff
# --------------------------------------------------------------------------------------------


def _tchebycheff_terms(rewards, weights, ideal):
    rewards = _as_float(rewards)
    weights = torch.as_tensor(weights, device=rewards.device).to(rewards.dtype)
    ideal = torch.as_tensor(ideal, device=rewards.device).to(rewards.dtype)
    _check_k(rewards, weights, "rewards")
    if ideal.shape != weights.shape:
        raise ValueError(f"ideal must have shape {tuple(weights.shape)}, got {tuple(ideal.shape)}")
    return weights * (rewards - ideal)  # t_k = w_k (r_k − z*_k)


def tchebycheff_scalarize(rewards: torch.Tensor, weights: torch.Tensor, ideal: torch.Tensor) -> torch.Tensor:
    """Weighted Tchebycheff scalarisation, to be maximised: min_k w_k (r_k − z*_k).

    Equivalently −max_k w_k (z*_k − r_k), the weighted L∞ distance to the ideal point z*
    (Miettinen 1999, "Nonlinear Multiobjective Optimization", §3.4; Zhang & Li 2007, MOEA/D).
    Unlike the linear sum, every Pareto-optimal point is the maximiser for some w, including
    points on non-convex parts of the front.

    Args:
        rewards: ``[..., K]``; weights, ideal: ``[K]``.

    Returns:
        ``[...]``.
    """
    return _tchebycheff_terms(rewards, weights, ideal).amin(-1)


def smooth_tchebycheff_scalarize(
    rewards: torch.Tensor, weights: torch.Tensor, ideal: torch.Tensor, mu: float
) -> torch.Tensor:
    """Smooth Tchebycheff: −μ · logsumexp_k( w_k (z*_k − r_k) / μ ).

    The log-sum-exp smoothing of the max (Lin et al. 2024, "Smooth Tchebycheff Scalarization for
    Multi-Objective Optimization", ICML).  It is a lower bound of the hard version and
    hard − μ·log K ≤ smooth ≤ hard, so it converges to :func:`tchebycheff_scalarize` as μ → 0.

    Args:
        rewards: ``[..., K]``; weights, ideal: ``[K]``; mu: temperature > 0.

    Returns:
        ``[...]``.
    """
    _check_positive("mu", mu)
    terms = _tchebycheff_terms(rewards, weights, ideal)
    return -mu * torch.logsumexp(-terms / mu, dim=-1)


def tchebycheff_weights(
    rewards: torch.Tensor, weights: torch.Tensor, ideal: torch.Tensor, mu: float
) -> torch.Tensor:
    """Simplex weights of the smooth Tchebycheff: softmax_k( w_k (z*_k − r_k) / μ ).

    With per-objective terms t_k = w_k (r_k − z*_k) and S(t) = −μ·logsumexp(−t/μ),
    ∂S/∂t_k = softmax(−t/μ)_k: a point on the simplex that puts most weight on the objective
    furthest (in weighted terms) from its ideal value.  This is the "mirror-descent weights" form
    of Tchebycheff (an exponentiated-gradient / softmax update, as in HoE's routers): a combiner
    from per-objective signals to weights, whose weighted sum Σ_k c_k ∇t_k is the gradient of S.
    As μ → 0 it tends to the indicator of argmin_k t_k; as μ → ∞ to uniform.

    Args:
        rewards: ``[..., K]``; weights, ideal: ``[K]``; mu: temperature > 0.

    Returns:
        ``[..., K]``, non-negative, summing to 1 along the last axis.
    """
    _check_positive("mu", mu)
    terms = _tchebycheff_terms(rewards, weights, ideal)
    return torch.softmax(-terms / mu, dim=-1)


def tchebycheff_dual_update(dual: torch.Tensor, values: torch.Tensor, weights: torch.Tensor, ideal: torch.Tensor,
                            eta: float, floor: float = 1e-12) -> torch.Tensor:
    """One online-mirror-descent (exponentiated-gradient) step on the dual weights of the Tchebycheff
    max-min problem ``max_θ min_k w_k (J_k(θ) − z_k) = max_θ min_{u∈Δ} Σ_k u_k w_k (J_k(θ) − z_k)``:

        u_k ← u_k · exp(−η · w_k (J_k − z_k)) / Σ_j u_j · exp(−η · w_j (J_j − z_j)).

    The objective furthest behind (smallest weighted gain over the reference point z) gains weight, as in
    HoE's router training (Li et al. 2025, arXiv 2505.20925; the update is the paper's as secondary
    summaries report it, the step size and floor are ours).  The dual is the entropic mirror-descent
    iterate on the simplex, so its fixed points are where the weighted gains w_k (J_k − z_k) are equal
    (on a concave front: the Tchebycheff optimum); the policy then ascends Σ_k u_k w_k J_k
    (:func:`tchebycheff_policy_weights`).

    Args:
        dual: ``[K]``, the current u (positive, on the simplex).
        values: ``[K]``, the objectives' current values J (e.g. a batch's mean rewards, oriented so that
            larger is better).
        weights: ``[K]``, the anchor's preference w (≥ 0).  An objective with w_k = 0 keeps its ratio to
            the others' (its term is 0).
        ideal: ``[K]``, the reference point z.
        eta: the step size η > 0.
        floor: every u_k stays ≥ ``floor`` (then renormalised), so an objective that was far ahead for
            long can still come back (and u never underflows to an exact 0).

    Returns:
        ``[K]``, the new u on the simplex (computed in log space).
    """
    _check_positive("eta", eta)
    dual = _as_float(dual)
    if dual.dim() != 1 or not torch.isfinite(dual).all() or bool((dual <= 0).any()):
        raise ValueError(f"dual must be a 1-D tensor of positive weights, got {dual.tolist()}")
    terms = _tchebycheff_terms(values, weights, ideal)
    if terms.shape != dual.shape:
        raise ValueError(f"dual has shape {tuple(dual.shape)}, values {tuple(terms.shape)}")
    new = torch.softmax(torch.log(dual / dual.sum()).to(terms.dtype) - eta * terms, dim=-1)
    new = new.clamp_min(floor)
    return new / new.sum()


def tchebycheff_policy_weights(dual: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The linear weights of the policy step against dual weights u: c_k = u_k w_k / Σ_j u_j w_j, so that the
    policy ascends Σ_k u_k w_k J_k (up to the positive factor Σ u w, which the advantage normalisation and
    the learning rate absorb).  ``[K]`` each; on the simplex."""
    dual, weights = _as_float(dual), torch.as_tensor(weights, device=_as_float(dual).device).to(_as_float(dual).dtype)
    c = dual * weights
    total = c.sum()
    if not bool(total > 0):
        raise ValueError(f"the dual weights {dual.tolist()} and the anchor {weights.tolist()} share no objective")
    return c / total


# --------------------------------------------------------------------------------------------
# PAMA
# --------------------------------------------------------------------------------------------


def _terms_minmax(terms: torch.Tensor):
    """Detached float terms and their min and max over the last axis (keepdim), checked finite."""
    terms = _as_float(terms).detach()
    if terms.dim() < 1 or terms.shape[-1] < 1:
        raise ValueError(f"terms must have shape [..., K] with K ≥ 1, got {tuple(terms.shape)}")
    mn, mx = torch.aminmax(terms, dim=-1, keepdim=True)  # both propagate NaN
    if not bool(torch.isfinite(torch.cat([mn, mx], -1)).all()):
        what = "NaN" if bool(torch.isnan(terms).any()) else "±inf"
        raise ValueError(f"PAMA terms contain {what} (check the advantages / rewards that produced them)")
    return terms, mn, mx


def pama_value(terms: torch.Tensor) -> torch.Tensor:
    """s* = Σ_k c*_k I_k for PAMA's optimal weights: the projection of 0 onto [min_k I_k, max_k I_k].

    He & Maghsudi, "Pareto Multi-Objective Alignment for Language Models" (PAMA), ECML/PKDD 2025,
    arXiv 2508.07768, Theorem 1: s* = min I if all I > 0, max I if all I < 0, else 0.
    Computed as max(min I, 0) + min(max I, 0).

    Args:
        terms: ``[..., K]``, finite.

    Returns:
        ``[...]``.

    Raises:
        ValueError: if ``terms`` contains NaN or ±inf.
    """
    _, mn, mx = _terms_minmax(terms)
    return (mn.clamp(min=0) + mx.clamp(max=0)).squeeze(-1)


def pama_weights(terms: torch.Tensor) -> torch.Tensor:
    """PAMA's weights c* = argmin_{c∈Δ} (Σ_k c_k I_k)², in closed form, O(K), batched.

    He & Maghsudi, "Pareto Multi-Objective Alignment for Language Models" (PAMA), ECML/PKDD 2025,
    arXiv 2508.07768, Theorem 1.  PAMA bounds MGDA's ‖Σ_k c_k ∇L_k‖² by (Σ_k c_k I_k)² times a
    factor independent of c, and minimises the first factor.  As c ranges over the simplex,
    s = Σ_k c_k I_k ranges over [min I, max I], so the optimal s* is the projection of 0 onto
    that interval (:func:`pama_value`), and c* is any point of the simplex that attains it.  The
    minimiser is not unique in general; this function returns the mixture
    c = a·u_max + (1 − a)·u_min of u_min (uniform over the indices attaining min I) and u_max
    (uniform over those attaining max I), with a = clip(−min I / (max I − min I), 0, 1):

    * all I > 0 (s* = min I): a = 0, the weight on the argmin; tied minima share it equally.
    * all I < 0 (s* = max I): a = 1, the weight on the argmax; tied maxima share it equally.
    * min I ≤ 0 ≤ max I and min < max (s* = 0): the two-point mixture
      c_max = −min I / (max I − min I), c_min = max I / (max I − min I), each split equally among
      its tied indices, so Σ c I = 0 up to rounding.  Special cases: if min I = 0 the weight sits
      (split) on the zeros; if max I = 0 likewise.
    * all I equal (in particular all 0, where every c is optimal): u_min = u_max = uniform 1/K.
    * K = 1: c = [1].

    Entries strictly between the extremes never get weight (the paper's choice of the extreme
    points; any other optimum is a mixture with the same s*).  The ratio a is computed after
    dividing min and max by max(|min I|, |max I|) (floored at the dtype's smallest normal
    number), so it neither overflows nor divides by zero for any finite input.

    The input is detached: the weights are constants of the update, as in MGDA.  Integer input is
    cast to the default float dtype; otherwise the output has the input's dtype and device.

    Args:
        terms: ``[..., K]`` per-objective scalar terms I_k (e.g. the slope of the Noon-PPO
            surrogate times the advantage; see :func:`paretoalign.losses.online.pama_loss`).

    Returns:
        ``[..., K]``: non-negative, summing to 1 along the last axis.

    Raises:
        ValueError: if ``terms`` contains NaN or ±inf, or has no objective axis.
    """
    terms, mn, mx = _terms_minmax(terms)
    is_min = (terms == mn).to(terms.dtype)
    is_max = (terms == mx).to(terms.dtype)
    u_min = is_min / is_min.sum(-1, keepdim=True)  # at least one index attains the min
    u_max = is_max / is_max.sum(-1, keepdim=True)
    tiny = torch.finfo(terms.dtype).tiny
    scale = torch.maximum(mn.abs(), mx.abs()).clamp(min=tiny)
    mn_s, mx_s = mn / scale, mx / scale  # in [-1, 1]: the span below cannot overflow
    # mixed signs: span ≥ 1; same sign: the ratio's sign is right and the clip gives 0 or 1;
    # all equal: the span is floored, a is finite, and u_min = u_max makes a irrelevant.
    a = (-mn_s / (mx_s - mn_s).clamp(min=tiny)).clamp(0, 1)
    return torch.lerp(u_min, u_max, a)


# --------------------------------------------------------------------------------------------
# MGDA: min-norm point of a convex hull
# --------------------------------------------------------------------------------------------


def gram_matrix(grads: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """G_ij = ⟨g_i, g_j⟩ in float64, accumulated over chunks of the parameter axis.

    Only a ``[K, chunk]`` float64 copy exists at any time (by default about 64 MiB), so the
    gradients themselves can stay in float32/bfloat16.  Under data parallelism each process
    computes the Gram matrix of its local gradient shards and the matrices are summed
    (all-reduce), then :func:`min_norm_weights_from_gram` solves on the sum.

    Args:
        grads: ``[K, d]`` (any ``[K, ...]`` is flattened).
        chunk_size: columns per chunk; default ⌈8 Mi / K⌉ (64 MiB of float64).

    Returns:
        ``[K, K]`` float64 on the device of ``grads``.
    """
    grads = torch.as_tensor(grads).detach()
    if grads.dim() < 1:
        raise ValueError("grads must have shape [K, d]")
    K = grads.shape[0]
    flat = grads.reshape(K, -1)
    d = flat.shape[1]
    if chunk_size is None:
        chunk_size = max(1, (8 * 1024 * 1024) // max(K, 1))
    gram = torch.zeros(K, K, dtype=torch.float64, device=flat.device)
    if flat.dtype == torch.float64:
        return gram.addmm_(flat, flat.T) if d else gram
    for start in range(0, d, chunk_size):
        block = flat[:, start : start + chunk_size].to(torch.float64)
        gram.addmm_(block, block.T)
    return gram


def min_norm_weights(grads: torch.Tensor) -> torch.Tensor:
    """MGDA's weights c = argmin_{c∈Δ} ‖Σ_k c_k g_k‖² for K gradient vectors.

    Désidéri 2012, "Multiple-gradient descent algorithm (MGDA) for multiobjective optimization";
    Sener & Koltun, NeurIPS 2018, "Multi-Task Learning as Multi-Objective Optimization" (MGDA-UB,
    which passes gradients w.r.t. a shared representation instead of all parameters).  Σ c_k g_k
    is the min-norm point of the convex hull of the g_k; it is zero iff the point is Pareto
    stationary, and otherwise its negative is a descent direction for every objective.

    Computes :func:`gram_matrix` (float64, chunked) and solves with
    :func:`min_norm_weights_from_gram`.

    Args:
        grads: ``[K, d]`` (any ``[K, ...]`` is flattened).

    Returns:
        ``[K]``, in the dtype of ``grads`` (float64 for non-float input), on its device.
    """
    grads = torch.as_tensor(grads)
    out = min_norm_weights_from_gram(gram_matrix(grads))
    return out.to(grads.dtype if grads.is_floating_point() else torch.float64)


def min_norm_weights_from_gram(gram: torch.Tensor) -> torch.Tensor:
    """MGDA's weights c = argmin_{c∈Δ} cᵀ G c from the Gram matrix G_ij = ⟨g_i, g_j⟩.

    Same problem as :func:`min_norm_weights` (Désidéri 2012; Sener & Koltun 2018), stated on
    the K×K Gram matrix, so that data-parallel processes can sum their local Gram matrices and
    all solve the same problem.  Solved exactly (no iterative approximation):

    * K = 1: c = [1].
    * K = 2: Sener & Koltun's line search, γ = (G₂₂ − G₁₂)/(G₁₁ + G₂₂ − 2G₁₂) clipped to
      [0, 1], c = (γ, 1 − γ); when g₁ = g₂ (zero denominator) every γ is optimal: c = (½, ½).
    * K > 2: Wolfe's min-norm-point algorithm (Wolfe 1976, "Finding the nearest point in a
      polytope"), written in terms of inner products only: an active-set method whose minor cycles
      solve the affine min-norm problem on the current support exactly (a (|S|+1)-dimensional KKT
      linear system) and whose major cycles stop when no vertex improves the Frank–Wolfe gap
      ‖x‖² − min_i ⟨x, g_i⟩ by more than 1e-12·max_i ‖g_i‖².  It terminates in finitely many
      steps, and handles duplicated or collinear vectors, zero vectors, rank-deficient G and
      d < K (the support never exceeds rank + 1 points).
    * G = 0 (all vectors zero): every c is optimal; uniform weights.

    The solve runs in float64 NumPy (K is small); G is symmetrised first.

    Args:
        gram: ``[K, K]`` symmetric positive semi-definite, finite.

    Returns:
        ``[K]``, non-negative, summing to 1, in the dtype of ``gram`` (float64 for non-float
        input), on its device.
    """
    gram_t = torch.as_tensor(gram)
    if gram_t.dim() != 2 or gram_t.shape[0] != gram_t.shape[1] or gram_t.shape[0] < 1:
        raise ValueError(f"gram must be a square [K, K] matrix with K ≥ 1, got {tuple(gram_t.shape)}")
    out_dtype = gram_t.dtype if gram_t.is_floating_point() else torch.float64
    G = gram_t.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(G).all():
        raise ValueError("gram contains NaN or ±inf (check the gradients that produced it)")
    G = 0.5 * (G + G.T)
    c = _min_norm_simplex(G)
    return torch.from_numpy(c).to(device=gram_t.device, dtype=out_dtype)


def _min_norm_simplex(G: np.ndarray) -> np.ndarray:
    K = G.shape[0]
    if K == 1:
        return np.ones(1)
    scale = float(np.max(np.diag(G)))
    if scale <= 0.0:
        return np.full(K, 1.0 / K)
    G = G / scale  # max ‖g_i‖² = 1, so the tolerances below are relative
    if K == 2:
        den = G[0, 0] + G[1, 1] - 2.0 * G[0, 1]
        if den <= 1e-15:
            return np.array([0.5, 0.5])
        gamma = min(1.0, max(0.0, (G[1, 1] - G[0, 1]) / den))
        return np.array([gamma, 1.0 - gamma])
    return _wolfe(G)


def _affine_min_norm(G: np.ndarray, S: list[int]) -> np.ndarray:
    """Weights α (Σα = 1, any sign) of the min-norm point of the affine hull of the points S."""
    m = len(S)
    A = np.zeros((m + 1, m + 1))
    A[:m, :m] = G[np.ix_(S, S)]
    A[:m, m] = 1.0
    A[m, :m] = 1.0
    b = np.zeros(m + 1)
    b[m] = 1.0
    try:
        sol = np.linalg.solve(A, b)
        if not np.isfinite(sol).all():
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        sol = np.linalg.lstsq(A, b, rcond=None)[0]
    alpha = sol[:m]
    return alpha / alpha.sum() if abs(alpha.sum()) > 1e-300 else np.full(m, 1.0 / m)


def _wolfe(G: np.ndarray, tol: float = 1e-12, pos_tol: float = 1e-14) -> np.ndarray:
    """Wolfe's min-norm-point algorithm on the simplex, from a Gram matrix scaled to max diag 1."""
    K = G.shape[0]
    j = int(np.argmin(np.diag(G)))
    S = [j]
    lam = np.zeros(K)
    lam[j] = 1.0
    best = lam.copy()
    best_val = float(G[j, j])
    for _ in range(10 * K + 50):  # finite in exact arithmetic; the cap guards rounding loops
        Gl = G @ lam
        xx = float(lam @ Gl)
        j = int(np.argmin(Gl))
        if xx - Gl[j] <= tol or j in S:
            break
        S.append(j)
        while True:  # minor cycles
            alpha = _affine_min_norm(G, S)
            lam_S = lam[S]
            if np.all(alpha > pos_tol):
                lam = np.zeros(K)
                lam[S] = alpha
                break
            # move from lam towards alpha until the first weight hits zero, then drop it
            neg = alpha <= pos_tol
            ratios = np.where(neg, lam_S / np.maximum(lam_S - alpha, 1e-300), np.inf)
            i_hit = int(np.argmin(ratios))
            theta = float(np.clip(ratios[i_hit], 0.0, 1.0))
            new = lam_S + theta * (alpha - lam_S)
            new[i_hit] = 0.0
            keep = [s for s, v in zip(S, new) if v > pos_tol]
            lam = np.zeros(K)
            if not keep:  # cannot happen in exact arithmetic; restart from the best vertex
                keep = [int(np.argmin(np.diag(G)))]
                lam[keep[0]] = 1.0
            else:
                lam[keep] = new[[S.index(s) for s in keep]]
                lam /= lam.sum()
            S = keep
            if len(S) == 1:
                break
        val = float(lam @ G @ lam)
        if val < best_val:
            best, best_val = lam.copy(), val
        else:  # no progress (rounding): keep the best iterate found
            break
    best = np.clip(best, 0.0, None)
    return best / best.sum()


def preference_scales(preference: torch.Tensor) -> torch.Tensor:
    """Scales s_k = 1/(K⁺·w_k) that give a preference w to a min-norm-type combiner (0 where w_k = 0).

    PAMA and MGDA(-UB) have no preference in their papers: they converge to *some* Pareto-stationary
    point.  To sweep a front with them we solve their weight problem on per-objective signals
    scaled by s_k (terms I_k, or losses L_k and hence gradients g_k), where K⁺ is the number of
    objectives with w_k > 0; objectives with w_k = 0 are left out of the solve (the caller drops
    them; s_k = 0 marks them).  Why 1/w and not w: for an interior min-norm solution d = Σ c_k s_k g_k
    of scaled gradients, the KKT conditions give (s_k g_k)·d = ‖d‖² for every k, so the first-order
    progress on objective k is g_k·d = ‖d‖²/s_k = K⁺·w_k·‖d‖², proportional to w_k (the
    "exact Pareto optimal" reading of Mahapatra & Rajan 2020).  Scaling by w instead would favour
    the objectives with the *smallest* weights.  For PAMA with Noon-clipped (non-negative) terms the
    closed form puts the weight on argmin_k I_k/w_k: the objective whose progress lags most
    relative to its preference.  The uniform preference gives s = 1, i.e. the paper's method.

    Args:
        preference: ``[K]`` non-negative weights summing to 1 (validated by the caller).

    Returns:
        ``[K]`` scales, same dtype as the input (float), 0 for zero-weight objectives.
    """
    w = _as_float(torch.as_tensor(preference))
    if w.dim() != 1:
        raise ConfigError(f"preference must be a vector [K]; got shape {tuple(w.shape)}")
    if not torch.isfinite(w).all() or (w < 0).any() or not (w > 0).any():
        raise ConfigError(f"preference must be finite, non-negative and not all zero; got {w.tolist()}")
    pos = w > 0
    k_plus = int(pos.sum())
    return torch.where(pos, 1.0 / (k_plus * torch.where(pos, w, torch.ones_like(w))), torch.zeros_like(w))
