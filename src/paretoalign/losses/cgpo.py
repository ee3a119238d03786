"""CGPO's calibrated reward and its three constrained optimisers, as pure tensor functions.

Reference: Xu et al. 2024, "The Perfect Blend: Redefining RLHF with Mixture of Judges"
(Meta, arXiv 2409.20370).  There is no official code; TRL's unmerged PRs #2155 (calibrated
reward), #2159 (judges) and #2190 (``CGPOTrainer``, last commit a4a7ceb) are the only public
implementation.  Tags in the docstrings: [P] the paper as secondary summaries report it, [V]
checked in the PR code, [R] a reconstruction or a choice of this library.

Per step the trainer samples k completions for each of B prompts; tensors here are ``[B, k]``
(prompt, sample), sequence log-probabilities are sums over completion tokens, and ``passed`` is
the pass-all indicator 1[(x, y) ∈ Σ] of a :class:`paretoalign.judges.JudgeSet`.

- :func:`calibrated_reward`: R_calib = σ(r(x, y) − r(x, ā)) against a baseline response ā.
- :func:`kl_gate`: the per-sample KL condition, hard (paper) or soft (PR).
- CRPG: :func:`crpg_advantages` + :func:`crpg_loss` (REINFORCE on R_calib·1[Σ]·gate).
- CODPO: :func:`codpo_select` + :func:`codpo_loss` (best passing vs worst failing sample, DPO + SFT).
- CRRAFT: :func:`crraft_select` + :func:`crraft_loss` (calibrated-reward-weighted SFT on the best
  feasible sample, falling back to ā).
- :func:`constrained_kl_optimum`: the closed-form optimum of the constrained problem on a
  finite action set, for exactness tests.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from paretoalign.losses.dpo import dpo_loss

__all__ = [
    "CODPOPairs",
    "CRRAFTSelection",
    "calibrated_reward",
    "cgpo_metrics",
    "codpo_loss",
    "codpo_select",
    "constrained_kl_optimum",
    "crpg_advantages",
    "crpg_loss",
    "crraft_loss",
    "crraft_select",
    "kl_gate",
    "missing_eos_penalty",
]

KL_GATES = ("hard", "soft")
CRPG_BASELINES = ("none", "batch_mean", "group_mean")


def _by_prompt(baseline: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-prompt tensor ``[B]`` broadcast against per-sample ``[B, k]``."""
    return baseline.unsqueeze(-1) if baseline.dim() == like.dim() - 1 else baseline


def calibrated_reward(rewards: torch.Tensor, baseline_rewards: torch.Tensor) -> torch.Tensor:
    """R_calib(x, y) = σ(r(x, y) − r(x, ā)) [V: PR #2155, paper eq. 5].

    ``rewards [B, k]`` (or ``[B]``), ``baseline_rewards [B]`` (or the same shape): the reward of
    the prompt's baseline response ā (its reference answer, or the reference policy's greedy one).
    The result lies in (0, 1), equals 0.5 for ā itself, and is unchanged by a per-prompt shift of
    the reward model, which makes rewards comparable across prompts.  Without any baseline
    response, ``baseline_rewards = rewards.mean(-1)`` calibrates against the group mean instead
    (a library option, not the paper's).
    """
    return torch.sigmoid(rewards - _by_prompt(baseline_rewards, rewards))


def missing_eos_penalty(rewards: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Subtract ``penalty`` from the reward of completions that never emitted EOS [V: PR config].

    Apply it to the samples and to the baseline alike, before :func:`calibrated_reward`.
    """
    if penalty is None:
        return rewards
    return rewards - penalty * (~has_eos.bool()).to(rewards.dtype)


def kl_gate(log_ratio: torch.Tensor, kl_max: float | None, mode: str = "hard") -> torch.Tensor:
    """The per-sample KL factor of CGPO's constrained reward.

    ``log_ratio`` is the sequence estimate KL_seq = log π_old(y|x) − log π_ref(y|x) of each sample
    (the sampling policy's; use the same estimate for logging).

    - ``"hard"`` [P]: 1[KL_seq ≤ KL_max], the paper's "KL condition holds";
    - ``"soft"`` [V: PR #2190]: max(0, 1 − KL_seq/KL_max).  Exactly as the PR writes it, a sample
      less likely under π_old than under π_ref (KL_seq < 0) gets a factor above 1.

    ``kl_max=None`` disables the gate (all ones).
    """
    if kl_max is None:
        return torch.ones_like(log_ratio)
    if not kl_max > 0:
        raise ValueError(f"kl_max must be > 0, got {kl_max!r}")
    if mode == "hard":
        return (log_ratio <= kl_max).to(log_ratio.dtype)
    if mode == "soft":
        return (1 - log_ratio / kl_max).clamp(min=0)
    raise ValueError(f"unknown KL gate {mode!r} (hard or soft)")


# --- CRPG ---------------------------------------------------------------------------------------


def crpg_advantages(
    calibrated: torch.Tensor,
    passed: torch.Tensor,
    gate: torch.Tensor | None = None,
    baseline: str = "none",
    kl_coef: float = 0.0,
    log_ratio: torch.Tensor | None = None,
) -> torch.Tensor:
    """CRPG's per-sample signal: the constrained regularised reward minus a baseline, detached.

    R_cr(x, y) = R_calib(x, y) · 1[(x, y) ∈ Σ] · gate(x, y) [P]: infeasible samples earn 0, and
    since R_calib > 0 every feasible sample earns more, so probability mass moves to the best
    feasible responses.  ``gate`` is :func:`kl_gate` (None: no KL condition).

    ``baseline`` (variance reduction; it does not change the expected gradient):
    ``"none"`` (the paper's REINFORCE), ``"batch_mean"`` (R_cr − mean over the batch, PR #2190
    [V]) or ``"group_mean"`` (minus the mean over the prompt's k samples, GRPO-like; needs ``[B, k]``).

    ``kl_coef`` η > 0 [R, a library option]: a KL *penalty* instead of (or besides) the gate, on
    feasible samples only: R_cr − η·KL_seq·1[Σ].  Infeasible samples keep their 0, so on a
    finite action set the policy-gradient fixed point is the constrained optimum
    π ∝ π_ref·1[Σ]·exp(R/η) (:func:`constrained_kl_optimum`) provided its regularised value
    η·log Σ_{y∈Σ} π_ref(y)·e^{R(y)/η} is positive, i.e. beats the 0 of an infeasible sample;
    otherwise some mass stays on infeasible responses (tests/losses/test_cgpo.py shows both).
    """
    feasible = passed.to(calibrated.dtype)
    r = calibrated * feasible
    if gate is not None:
        r = r * gate
    if kl_coef:
        if log_ratio is None:
            raise ValueError("kl_coef needs the per-sample log_ratio (log π_old − log π_ref)")
        r = r - kl_coef * log_ratio * feasible
    if baseline == "batch_mean":
        r = r - r.mean()
    elif baseline == "group_mean":
        if r.dim() != 2 or r.shape[1] < 2:
            raise ValueError(f"group_mean needs [B, k] with k >= 2 samples per prompt; got {tuple(r.shape)}")
        r = r - r.mean(-1, keepdim=True)
    elif baseline != "none":
        raise ValueError(f"unknown CRPG baseline {baseline!r} ({', '.join(CRPG_BASELINES)})")
    return r.detach()


def crpg_loss(logps: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """REINFORCE loss −mean(A · log π(y|x)) over samples; its gradient is −mean(A·∇log π).

    ``weights`` (optional, same shape) turn the mean into a weighted one: importance weights, or
    π(y) itself for an exact expectation over a finite action set.  The two versions of PR #2190
    average over samples or divide the sum by the number of prompts (a factor k on the learning
    rate, nothing else).
    """
    per_sample = -advantages.detach() * logps
    if weights is None:
        return per_sample.mean()
    weights = weights.detach()
    return (weights * per_sample).sum() / weights.sum()


# --- CODPO --------------------------------------------------------------------------------------


class CODPOPairs(NamedTuple):
    """Per prompt: the chosen and rejected sample indices ``[B]`` and whether the prompt is used ``[B]``."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    valid: torch.Tensor


def codpo_select(rewards: torch.Tensor, passed: torch.Tensor) -> CODPOPairs:
    """CODPO's pair per prompt [V: PR #2190, "eqn (14)"], from ``rewards`` and ``passed`` ``[B, k]``.

    - y+ = argmax r among the samples that pass all judges;
    - y− = argmin r among the failing samples, or among all samples when every one passes;
    - a prompt with no passing sample has no y+ and is not used (``valid`` False).

    Ties go to the lowest index.  When every sample passes with the same reward, y+ = y− and the
    DPO term is the constant log 2 (no gradient); only the SFT term acts, as in the PR.  The PR
    masks by multiplying with the 0/1 judgements, which picks a wrong sample when rewards can
    be negative (a masked 0 beats them); here the masks are ∓inf, the rule as stated.
    Rewards must be finite.
    """
    passed = passed.bool()
    inf = torch.tensor(math.inf, dtype=rewards.dtype, device=rewards.device)
    chosen = torch.where(passed, rewards, -inf).argmax(-1)
    worst_failing = torch.where(passed, inf, rewards).argmin(-1)
    rejected = torch.where(passed.all(-1), rewards.argmin(-1), worst_failing)
    return CODPOPairs(chosen, rejected, passed.any(-1))


def codpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    beta: float = 0.1,
    lamb: float = 5.0,
) -> torch.Tensor:
    """Per-pair CODPO losses [V: PR #2190, defaults β=0.1, λ=5]:

        −log σ(β[(log π − log π_ref)(y+) − (log π − log π_ref)(y−)]) − (λ/|y+|)·log π(y+)

    with |y+| the token length of y+ (a length-normalised SFT term on the winner).  Pass the
    pairs of the ``valid`` prompts of :func:`codpo_select`; the trainer averages over them.
    CODPO has no KL gate: β plays that role [V].
    """
    sft = policy_chosen_logps / chosen_lengths.to(policy_chosen_logps.dtype).clamp(min=1)
    return dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta) - lamb * sft


# --- CRRAFT -------------------------------------------------------------------------------------


class CRRAFTSelection(NamedTuple):
    """Per prompt ``[B]``: the sample index used (−1 where none is), its weight (0: prompt skipped)
    and whether the baseline ā is used instead of a sample."""

    index: torch.Tensor
    weight: torch.Tensor
    use_baseline: torch.Tensor

    @property
    def used(self) -> torch.Tensor:
        return self.weight > 0


def crraft_select(
    calibrated: torch.Tensor,
    passed: torch.Tensor,
    log_ratio: torch.Tensor | None = None,
    kl_max: float | None = None,
    baseline_passed: torch.Tensor | None = None,
    baseline_log_ratio: torch.Tensor | None = None,
) -> CRRAFTSelection:
    """CRRAFT's winner per prompt [V: PR #2190, "eqn (18)"].

    Each sample scores g = 1[KL_seq ≤ KL_max] · 1[Σ] · R_calib (``[B, k]``); the best one is used
    with weight g when g > 0.  Otherwise the baseline response ā is used, with weight
    R_calib(ā) = 0.5, if it passes the judges (``baseline_passed [B]``) and its own KL_seq is
    within the budget (``baseline_log_ratio [B]``); else the prompt is skipped (weight 0).
    ``baseline_passed=None``: no baseline fallback.
    """
    if kl_max is not None and log_ratio is None:
        raise ValueError("with kl_max, CRRAFT needs the samples' log_ratio (log π_old − log π_ref)")
    g = calibrated * passed.to(calibrated.dtype)
    if kl_max is not None:
        g = g * kl_gate(log_ratio, kl_max, "hard")
    best_g, best = g.max(-1)
    use_sample = best_g > 0
    if baseline_passed is None:
        base_ok = torch.zeros_like(use_sample)
    else:
        base_ok = baseline_passed.bool()
        if kl_max is not None:
            if baseline_log_ratio is None:
                raise ValueError("with kl_max, the baseline's fallback needs its baseline_log_ratio")
            base_ok = base_ok & (baseline_log_ratio <= kl_max)
    use_baseline = ~use_sample & base_ok
    weight = torch.where(use_sample, best_g, torch.where(use_baseline, 0.5, 0.0).to(g.dtype))
    index = torch.where(use_sample, best, torch.full_like(best, -1))
    return CRRAFTSelection(index, weight, use_baseline)


def crraft_loss(logps: torch.Tensor, weights: torch.Tensor, num_tokens: torch.Tensor) -> torch.Tensor:
    """−Σ g·log π(y*|x) / Σ |y*| over the used winners ("eqn (18)", as the spec states it):
    calibrated-reward-weighted SFT, normalised by the total token count of the used completions.
    PR #2190 divides by the number of non-zero rewards of the batch instead (about B·k), a scale
    that does not depend on which prompts were used.

    Pass the used prompts only (``selection.used``); no used prompt gives 0 (with a gradient of 0).
    """
    return -(weights.detach() * logps).sum() / num_tokens.to(logps.dtype).sum().clamp(min=1)


# --- logging and the exact optimum --------------------------------------------------------------


def cgpo_metrics(calibrated: torch.Tensor, passed: torch.Tensor, log_ratio: torch.Tensor | None = None,
                 kl_max: float | None = None) -> dict[str, float]:
    """Per-step numbers [R: the spec's list]: the mean R_calib, the pass-all rate, the fraction of
    prompts with no passing sample (high: judges too strict for the policy), the mean KL_seq and
    the fraction of samples over the KL budget.  Tensors ``[B, k]``."""
    passed = passed.bool()
    out = {
        "cgpo/calibrated_reward": float(calibrated.float().mean()),
        "cgpo/pass_rate": float(passed.float().mean()),
        "cgpo/all_fail_fraction": float((~passed.any(-1)).float().mean()),
    }
    if log_ratio is not None:
        out["cgpo/kl"] = float(log_ratio.float().mean())
        if kl_max is not None:
            out["cgpo/kl_gated_fraction"] = float((log_ratio > kl_max).float().mean())
    return out


def constrained_kl_optimum(ref_logps: torch.Tensor, rewards: torch.Tensor, feasible: torch.Tensor,
                           kl_max: float | None = None, eta: float | None = None,
                           iters: int = 200) -> tuple[torch.Tensor, float]:
    """The optimum of max E_π[R] s.t. π(Σ) = 1, KL(π‖π_ref) ≤ KL_max on a finite action set.

    π_η(y) ∝ π_ref(y)·1[y ∈ Σ]·exp(R(y)/η); give ``eta``, or ``kl_max`` and η is found by
    bisection on log η so that KL(π_η‖π_ref) = KL_max (KL falls as η grows).  When even the
    greedy feasible policy is within budget the constraint is inactive and the result is all mass
    on the best feasible action(s) (η = 0).  Returns (π ``[n]``, η).  Float64 throughout.
    """
    ref_logps, rewards = ref_logps.double(), rewards.double()
    mask = feasible.bool()
    if not bool(mask.any()):
        raise ValueError("no feasible action")
    ref_logps = ref_logps - torch.logsumexp(ref_logps, 0)

    def policy(e: float) -> torch.Tensor:
        return torch.softmax(torch.where(mask, ref_logps + rewards / e, -math.inf), 0)

    def kl(p: torch.Tensor) -> float:
        return float(torch.where(p > 0, p * (p.clamp(min=1e-300).log() - ref_logps), 0.0).sum())

    if eta is not None:
        return policy(eta), float(eta)
    if kl_max is None:
        raise ValueError("give eta or kl_max")
    best = mask & (rewards == rewards[mask].max())
    greedy = torch.where(best, ref_logps, -math.inf).softmax(0)
    if kl(greedy) <= kl_max:
        return greedy, 0.0
    if kl(policy(1e12)) > kl_max:  # = π_ref restricted to Σ, the smallest KL a feasible policy can have
        raise ValueError(f"kl_max={kl_max} is below KL(π_ref|Σ ‖ π_ref) = {kl(policy(1e12)):.4g}: infeasible budget")
    lo, hi = math.log(1e-8), math.log(1e12)
    for _ in range(iters):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if kl(policy(math.exp(mid))) > kl_max else (lo, mid)
    e = math.exp((lo + hi) / 2)
    return policy(e), e
