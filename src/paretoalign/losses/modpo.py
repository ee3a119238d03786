"""MODPO: multi-objective DPO with margin rewards.

Reference: Zhou et al. 2023, "Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct
Preference Optimization" (arXiv 2310.03708).  Pairs are labelled for one objective k; the other
objectives enter as frozen rewards r_{−k} ("margins").  With w = (w_k, w_{−k}):

    h(x, y) = (1 / w_k) · [β·log(π_θ(y|x)/π_ref(y|x)) − w_{−k}ᵀ r_{−k}(x, y)]
    L       = −log σ(h(x, y_w) − h(x, y_l))

If the pairs follow Bradley–Terry with reward r_k, the minimiser is the MORLHF optimum
π_ref·exp(wᵀr/β)/Z — no RL needed (tested exactly on a tabular problem).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from paretoalign.errors import ConfigError


def check_modpo_weights(weights: torch.Tensor, num_margins: int) -> None:
    """Raise :class:`ConfigError` unless ``weights`` is [1 + num_margins], finite, >= 0, with weights[0] > 0."""
    if weights.dim() != 1 or weights.numel() != num_margins + 1:
        raise ConfigError(
            f"MODPO needs one weight for the labelled objective plus one per margin ({num_margins + 1} in "
            f"all); got weights of shape {tuple(weights.shape)}"
        )
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ConfigError(f"MODPO weights must be finite and >= 0; got {weights.tolist()}")
    if not float(weights[0]) > 0:
        raise ConfigError(
            "MODPO divides by the weight of the objective the pairs are labelled for (w_k); it is 0 here. "
            "Give that objective a positive weight (a point with w_k = 0 is the margin objectives alone: "
            "train it with pairs labelled for another objective)"
        )


def modpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_margins: torch.Tensor,
    rejected_margins: torch.Tensor,
    weights: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Per-example MODPO losses [B].

    Args:
        policy_*_logps, ref_*_logps: log-probabilities summed over the response tokens, [B].
        chosen_margins, rejected_margins: the other objectives' rewards of each response, [B, K−1]
            (K = 1 is allowed: [B, 0], and the loss is DPO with β/w_k).
        weights: [K]; ``weights[0]`` is the weight of the labelled objective (must be > 0).
        beta: the KL temperature β > 0.
    """
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ConfigError(f"beta must be a finite number > 0, got {beta!r}")
    if chosen_margins.dim() != 2 or chosen_margins.shape != rejected_margins.shape:
        raise ConfigError(
            f"margins must both be [B, K-1]; got {tuple(chosen_margins.shape)} and {tuple(rejected_margins.shape)}"
        )
    weights = weights.to(device=policy_chosen_logps.device, dtype=torch.float32)
    check_modpo_weights(weights, chosen_margins.shape[1])
    w_k, w_rest = weights[0], weights[1:]
    margin_c = chosen_margins.float() @ w_rest
    margin_r = rejected_margins.float() @ w_rest
    h_c = (beta * (policy_chosen_logps - ref_chosen_logps) - margin_c) / w_k
    h_r = (beta * (policy_rejected_logps - ref_rejected_logps) - margin_r) / w_k
    return -F.logsigmoid(h_c - h_r)
