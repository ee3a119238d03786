"""A reward head learned by response-conditioned Bradley–Terry (Rc-BT) on prompt-side pairs.

MAPL (Sun et al. 2025, "Multi-Level Aware Preference Learning", arXiv 2505.12845) trains reward
models with its intra-sample level: for one response y, the prompt x_w whose instructions y
satisfies is preferred to x_l, whose instructions it violates, with the response-conditioned BT loss
of Cai et al. 2025 [P]::

    L_intra = −E log σ( r(x_w, y) − r(x_l, y) )       (paretoalign.losses.mapl.rc_bt_loss)

On the frozen backbone features of :mod:`paretoalign.reward_model` the head is linear,
r(x, y) = wᵀ f(x, y) + b, so the loss depends on w only through the feature differences
d = f(x_w, y) − f(x_l, y): an L2-regularised logistic regression without intercept,

    min_w  mean_i [ t_i·ℓ(wᵀd_i) + (1 − t_i)·ℓ(−wᵀd_i) ] + (α/2)·‖w‖²,   ℓ(z) = −log σ(z),

with t_i = 1 for data from ``paretoalign pairs --mapl`` (x_w always preferred; the t_i < 1 form is
what the exactness test on a reward table uses: the minimiser there is wᵀd = logit(p)).  It is
convex and smooth; L-BFGS in float64 solves it to the gradient tolerance.  α is chosen on a seeded
validation split as stage 1's ridge strength is, then refitted on every row.  The bias b cancels
in the loss; it is set so the head's mean over the training rows (both prompts) is 0.

The reward-model form has none of the DPO form's normaliser problem (:mod:`paretoalign.losses.mapl`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from paretoalign.losses.mapl import rc_bt_loss

RC_BT_ALPHAS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)

__all__ = ["RC_BT_ALPHAS", "RcBtFit", "fit_rc_bt_head", "rc_bt_objective", "solve_rc_bt"]


@dataclass
class RcBtFit:
    """The head: ``weight [d]``, ``bias``, the α chosen, every α's validation loss (NaN without a
    validation split) and how many pairs it was fitted on."""

    weight: torch.Tensor
    bias: float
    alpha: float
    val_loss: dict
    count: int


def rc_bt_objective(w: torch.Tensor, diffs: torch.Tensor, targets: torch.Tensor, alpha: float) -> torch.Tensor:
    """The regularised Rc-BT loss of the module docstring (a scalar)."""
    z = diffs @ w
    zero = torch.zeros_like(z)
    loss = targets * rc_bt_loss(z, zero) + (1 - targets) * rc_bt_loss(zero, z)
    return loss.mean() + 0.5 * alpha * (w * w).sum()


def solve_rc_bt(diffs: torch.Tensor, alpha: float, targets: torch.Tensor | None = None,
                max_iter: int = 500) -> torch.Tensor:
    """argmin_w of :func:`rc_bt_objective` (float64, L-BFGS with a strong-Wolfe line search, from 0)."""
    diffs = diffs.double()
    targets = torch.ones(diffs.shape[0], dtype=torch.float64) if targets is None else targets.double()
    w = torch.zeros(diffs.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-15,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = rc_bt_objective(w, diffs, targets, alpha)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def fit_rc_bt_head(feat_w: torch.Tensor, feat_l: torch.Tensor, alphas: Sequence[float] = RC_BT_ALPHAS,
                   val_fraction: float = 0.2, seed: int = 0) -> RcBtFit:
    """The Rc-BT head on features ``[N, d]`` of (x_w, y) and (x_l, y) (see the module docstring)."""
    n = int(feat_w.shape[0])
    if n < 1:
        raise ValueError("no prompt-side pairs to fit the Rc-BT head on")
    diffs = feat_w.double() - feat_l.double()
    alphas = [float(a) for a in alphas]
    val_loss = {str(a): math.nan for a in alphas}
    n_val = int(round(val_fraction * n)) if len(alphas) > 1 else 0
    if n_val >= 1 and n - n_val >= 1:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        va, tr = perm[:n_val], perm[n_val:]
        ones = torch.ones(n_val, dtype=torch.float64)
        for a in alphas:
            w = solve_rc_bt(diffs[tr], a)
            val_loss[str(a)] = float(rc_bt_objective(w, diffs[va], ones, 0.0))
        alpha = min(alphas, key=lambda a: val_loss[str(a)])
    else:
        alpha = alphas[len(alphas) // 2]
    w = solve_rc_bt(diffs, alpha)
    bias = -float((torch.cat([feat_w, feat_l]).double() @ w).mean())
    return RcBtFit(w, bias, alpha, val_loss, n)
