"""AMoPO: adaptive multi-objective preference optimisation, without reward or reference models.

Reference: Liu et al., ACL Findings 2025, "AMoPO: Adaptive Multi-objective Preference Optimization
without Reward Models and Reference Models".  For each dimension d the prompt is rewritten into a
dimension-aware prompt x_d (the template, after the reference code's, is
``DEFAULT_DIMENSION_TEMPLATE`` in :mod:`paretoalign.trainers.offline_config`, overridable); the
implicit reward is the length-normalised log-likelihood (SimPO-style, no reference model):

    r_d(y) = (1/|y|) · log π_θ(y | x_d)
    L_d    = −log σ(β·(r_d(y_w) − r_d(y_l)) − γ)

and the dimensions are weighted adaptively: for each sequence, the mean μ and standard deviation
s of its token probabilities define a Gaussian N(μ, s²); one draw for the chosen and one for the
rejected response are summed per dimension, and a softmax over the dimensions gives the weights
α_d, detached from the graph.  Total: Σ_d α_d·L_d (+ an optional SFT term on the chosen
responses).  Defaults of the reference code: β = 0.8, γ = 2.0, SFT weight 0 (its ``pref_ftx``),
learning rate 3e-7 with full fine-tuning; the Gaussian uses the unbiased standard deviation.

Ambiguity (documented choice): the paper does not say whether a *higher* generation probability
should raise or lower a dimension's weight; we follow its text (softmax of the sampled
probabilities: dimensions the model already generates confidently weigh more) and expose
``sign=-1`` for the opposite reading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def average_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Length-normalised log-likelihood (1/|y|)·Σ_t log π(y_t|...), over the last axis: [..., T] -> [...]."""
    m = mask.to(token_logps.dtype)
    return (token_logps * m).sum(-1) / m.sum(-1).clamp(min=1.0)


def amopo_dimension_losses(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, beta: float = 0.8,
                           gamma: float = 2.0) -> torch.Tensor:
    """L_d = −log σ(β(r_d(y_w) − r_d(y_l)) − γ) for every example and dimension: [B, D]."""
    return -F.logsigmoid(beta * (chosen_avg_logps - rejected_avg_logps) - gamma)


def token_probability_stats(token_logps: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased standard deviation (as the reference code's ``torch.std``) of the token
    probabilities of each sequence: [..., T] -> [...] x 2; the deviation of a one-token sequence is 0."""
    m = mask.to(token_logps.dtype)
    p = token_logps.exp() * m
    n = m.sum(-1)
    mu = p.sum(-1) / n.clamp(min=1.0)
    var = (((token_logps.exp() - mu.unsqueeze(-1)) ** 2) * m).sum(-1) / (n - 1).clamp(min=1.0)
    return mu, var.sqrt()


def amopo_adaptive_weights(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor,
                           rejected_token_logps: torch.Tensor, rejected_mask: torch.Tensor,
                           valid: torch.Tensor | None = None, generator: torch.Generator | None = None,
                           temperature: float = 1.0, sign: float = 1.0) -> torch.Tensor:
    """Adaptive dimension weights α [B, D] (rows sum to 1 over the valid dimensions), detached.

    Inputs are per-token log-probabilities and masks [B, D, T] of each response under each
    dimension's prompt; ``valid [B, D]`` marks dimensions labelled for the pair.
    """
    mu_c, s_c = token_probability_stats(chosen_token_logps.detach(), chosen_mask)
    mu_r, s_r = token_probability_stats(rejected_token_logps.detach(), rejected_mask)
    # drawn on the CPU so a seeded generator gives the same weights on any device
    eps = torch.randn((2, *mu_c.shape), generator=generator, dtype=mu_c.dtype).to(mu_c.device)
    draw = (mu_c + s_c * eps[0]) + (mu_r + s_r * eps[1])
    logits = sign * draw / temperature
    if valid is not None:
        logits = torch.where(valid, logits, torch.full_like(logits, -float("inf")))
    w = torch.nan_to_num(torch.softmax(logits, dim=-1))
    return w.detach()


def amopo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, weights: torch.Tensor,
               valid: torch.Tensor | None = None, beta: float = 0.8, gamma: float = 2.0,
               sft_nll: torch.Tensor | None = None, sft_coef: float = 0.0) -> torch.Tensor:
    """Per-example AMoPO loss [B]: Σ_d α_d·L_d (+ ``sft_coef``·NLL of the chosen response, [B])."""
    L = amopo_dimension_losses(chosen_avg_logps, rejected_avg_logps, beta, gamma)
    if valid is not None:
        L = torch.where(valid, L, torch.zeros_like(L))
    loss = (weights.detach() * L).sum(-1)
    if sft_coef and sft_nll is not None:
        loss = loss + sft_coef * sft_nll
    return loss
