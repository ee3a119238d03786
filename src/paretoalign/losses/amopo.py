"""AMoPO: adaptive multi-objective preference optimisation, without reward or reference models.

Reference: Liu et al., ACL Findings 2025, "AMoPO: Adaptive Multi-objective Preference Optimization
without Reward Models and Reference Models" (arXiv 2506.07165); reference code
github.com/Javkonline/AMoPO, a LLaMA-Factory fork (``src/llamafactory/train/amopo/trainer_multi_obj.py``,
``CustomMOTrainer.get_batch_loss_metrics``; prompts in
``src/llamafactory/data/processors/pairwise_multi_object.py``).  For each dimension d the prompt is
rewritten into a dimension-aware prompt x_d (the template, after the reference code's, is
``DEFAULT_DIMENSION_TEMPLATE`` in :mod:`paretoalign.trainers.offline_config`, overridable); the
implicit reward is the length-normalised log-likelihood (SimPO-style, no reference model):

    r_d(y) = (1/|y|) · log π_θ(y | x_d)
    L_d    = −log σ(β·(r_d(y_w) − r_d(y_l)) − γ)

and the dimensions are weighted adaptively: for each sequence, the mean μ and standard deviation
s of its token probabilities define a Gaussian N(μ, s²); one draw for the chosen and one for the
rejected response are summed per dimension, and a softmax gives the weights α_d, detached from
the graph.  Loss of a pair: (1/D)·Σ_d α_d·L_d (``reduction="mean"``) or Σ_d α_d·L_d (``"sum"``),
plus an optional SFT term on the chosen responses.  Defaults of the reference code: β = 0.8,
γ = 2.0, SFT weight 0 (its ``pref_ftx``), learning rate 3e-7 with full fine-tuning,
``max_grad_norm`` 3.0, per-device batch size 1 (``run_amopo/run_bash_accelerate.sh``); the
Gaussian uses the unbiased standard deviation.

Where the reference code differs, and what is available here (the trainer's options are
``--amopo-reduction``, ``--amopo-weight-scope`` and ``--amopo-integrate-all``):

* Reduction: the reference stacks the D·B (dimension × example) rows and returns
  ``(losses * softmax).mean()``, a mean over the rows; :func:`amopo_loss` with ``reduction="mean"``
  (default) is exactly that, ``"sum"`` is D times it.
* Softmax scope: the reference softmaxes the D·B row scores together (``F.softmax(..., dim=0)``
  on the flattened rows), so at B > 1 the examples of a batch compete for one unit of weight;
  ``scope="batch"`` reproduces that, ``scope="example"`` (default) softmaxes over the dimensions
  of each pair (the two agree at B = 1, the reference's released setting).
* Integrate-all row: the reference always adds a D-th "integrate all dimensions" prompt
  (``no_object``) trained like any dimension; the trainer adds it with ``--amopo-integrate-all``
  (off by default); these functions just see one more dimension column.

Ambiguity (documented choice): the paper does not say whether a *higher* generation probability
should raise or lower a dimension's weight; we follow its text (softmax of the sampled
probabilities: dimensions the model already generates confidently weigh more, as the reference
code does) and expose ``sign=-1`` for the opposite reading.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHT_SCOPES = ("example", "batch")
REDUCTIONS = ("mean", "sum")


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


def amopo_weight_softmax(scores: torch.Tensor, valid: torch.Tensor | None = None,
                         scope: str = "example") -> torch.Tensor:
    """Softmax of the per-(example, dimension) scores [B, D] into weights [B, D]; invalid entries get 0.

    ``scope="example"`` (default): over the dimensions of each example, so every row with a valid
    dimension sums to 1 — the paper's weights, one distribution over the preference dimensions
    of a pair (Liu et al. 2025, adaptive weight assignment).

    ``scope="batch"``: over all B·D (example, dimension) entries at once, so the whole matrix sums
    to 1 — what the reference code does (``trainer_multi_obj.py``, ``get_batch_loss_metrics``:
    the D·B row scores are concatenated and ``F.softmax(softmax_tensor, dim=0)`` normalises them
    together).  Equal to ``"example"`` at B = 1 (the reference's released per-device batch size);
    at B > 1 the examples compete for weight and each example's weights sum to about 1/B, which,
    after the mean over rows, also scales the loss by about 1/B (and under data parallelism each
    process normalises over its own rows only).  Per row, ``"batch"`` renormalised is ``"example"``.

    A row (``example``) or a batch (``batch``) without any valid entry gives zeros, never NaN.
    """
    if scope not in WEIGHT_SCOPES:
        raise ValueError(f"scope must be one of {WEIGHT_SCOPES}; got {scope!r}")
    logits = scores
    if valid is not None:
        logits = torch.where(valid, logits, torch.full_like(logits, -float("inf")))
    if scope == "example":
        w = torch.softmax(logits, dim=-1)
    else:
        w = torch.softmax(logits.reshape(*logits.shape[:-2], -1), dim=-1).view_as(logits)
    return torch.nan_to_num(w)


def amopo_adaptive_weights(chosen_token_logps: torch.Tensor, chosen_mask: torch.Tensor,
                           rejected_token_logps: torch.Tensor, rejected_mask: torch.Tensor,
                           valid: torch.Tensor | None = None, generator: torch.Generator | None = None,
                           temperature: float = 1.0, sign: float = 1.0, scope: str = "example") -> torch.Tensor:
    """Adaptive dimension weights α [B, D], detached.

    Inputs are per-token log-probabilities and masks [B, D, T] of each response under each
    dimension's prompt; ``valid [B, D]`` marks dimensions labelled for the pair.  The score of an
    entry is one Gaussian draw N(μ, s²) of the chosen response's token probabilities plus one of
    the rejected response's (the reference's ``torch.normal(mean, std)`` per sequence, drawn here
    by reparametrisation from ``generator``); ``scope`` picks the softmax (see
    :func:`amopo_weight_softmax`): per example (default, rows sum to 1 over the valid dimensions)
    or over the whole batch as the reference code (the matrix sums to 1).
    """
    mu_c, s_c = token_probability_stats(chosen_token_logps.detach(), chosen_mask)
    mu_r, s_r = token_probability_stats(rejected_token_logps.detach(), rejected_mask)
    # drawn on the CPU so a seeded generator gives the same weights on any device
    eps = torch.randn((2, *mu_c.shape), generator=generator, dtype=mu_c.dtype).to(mu_c.device)
    draw = (mu_c + s_c * eps[0]) + (mu_r + s_r * eps[1])
    return amopo_weight_softmax(sign * draw / temperature, valid, scope).detach()


def amopo_loss(chosen_avg_logps: torch.Tensor, rejected_avg_logps: torch.Tensor, weights: torch.Tensor,
               valid: torch.Tensor | None = None, beta: float = 0.8, gamma: float = 2.0,
               sft_nll: torch.Tensor | None = None, sft_coef: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Per-example AMoPO loss [B]; the trainer takes its mean over the batch.

    ``reduction="mean"`` (default): (1/D)·Σ_d α_d·L_d, D the number of dimension columns
    (unlabelled ones count as rows with zero loss).  With the batch mean this is the reference
    code's ``(losses * softmax).mean()`` over its D·B rows (``trainer_multi_obj.py``,
    ``get_batch_loss_metrics``), so its hyperparameters carry over unchanged — in particular its
    ``pref_ftx`` (our ``sft_coef``, added after the mean as here) and its gradient-clipping norm.
    ``reduction="sum"``: Σ_d α_d·L_d, exactly D times larger; with weights summing to 1 over the
    dimensions this is a convex combination of the L_d, on the scale of one SimPO loss whatever D.
    Under AdamW the constant factor D mostly cancels; it matters through gradient clipping, Adam's
    ε and the relative weight of the SFT term.

    Plus ``sft_coef``·NLL of the chosen response ([B]) when given (not divided by D).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}; got {reduction!r}")
    L = amopo_dimension_losses(chosen_avg_logps, rejected_avg_logps, beta, gamma)
    if valid is not None:
        L = torch.where(valid, L, torch.zeros_like(L))
    loss = (weights.detach() * L).sum(-1)
    if reduction == "mean":
        loss = loss / L.shape[-1]
    if sft_coef and sft_nll is not None:
        loss = loss + sft_coef * sft_nll
    return loss
