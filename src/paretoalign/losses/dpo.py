"""Direct preference optimisation as pure tensor functions.

Reference: Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a
Reward Model" (arXiv 2305.18290).  Log-probabilities are sums over the response tokens, shape [B].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def implicit_reward(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float) -> torch.Tensor:
    """DPO's implicit reward β·log(π_θ(y|x)/π_ref(y|x)), shape [B]."""
    return beta * (policy_logps - ref_logps)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Per-example DPO losses [B]: −log σ(β[(log π_θ − log π_ref)(y_w) − (log π_θ − log π_ref)(y_l)]).

    ``label_smoothing`` ε > 0 gives the conservative DPO of Mitchell (2023): the label is flipped
    with probability ε, so the loss is (1−ε)·ℓ(z) + ε·ℓ(−z).
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    z = implicit_reward(policy_chosen_logps, ref_chosen_logps, beta) - implicit_reward(
        policy_rejected_logps, ref_rejected_logps, beta
    )
    loss = -F.logsigmoid(z)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * F.logsigmoid(-z)
    return loss
