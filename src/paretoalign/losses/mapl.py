"""MAPL's losses: prompt-side (response-conditioned) preferences, for reward models and for DPO.

Reference: Sun et al. 2025, MAPL, "Multi-Level Aware Preference Learning" (arXiv 2505.12845).
No public code.  Its response-conditioned
Bradley–Terry building block (Rc-BT) is Cai et al. 2025.  Tags: [P] the paper as secondary
summaries report it, [R] a reconstruction of this library (check against the paper's §3.3).

Intra-sample level: for one response y and two prompts built from the same request, x_w (whose
instructions y satisfies) is preferred to x_l (which y violates).  Inter-sample level [R]: an
ordinary pair on an instruction-augmented prompt, (x+I, y_c) ≻ (x+I, y_r), where I is verified
against both responses (:mod:`paretoalign.instructions` builds both kinds of data).

Total loss [P]: L = L_0 + λ_intra·L_intra + λ_inter·L_inter, with L_0 the usual BT or DPO loss on
the original pairs.

The DPO form has a pitfall, documented and measurable here: DPO's implicit reward is
β·log π(y|x)/π_ref(y|x) = r(x, y) − β·log Z(x), and with two *different* prompts the normalisers
Z(x_w), Z(x_l) do not cancel.  So the intra DPO loss is not the BT likelihood of the implicit
reward, and it can be lowered just by pushing π(y|x_l) down (each prompt normalises separately,
the mass goes to other responses of x_l).  :func:`normaliser_diagnostic` tells how much of the
margin comes from that side, and :func:`mapl_intra_loss` takes an optional anchor term.  The
reward-model form (:func:`rc_bt_loss`) has no normaliser and no such issue.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from paretoalign.losses.dpo import dpo_loss

__all__ = [
    "ANCHORS",
    "CONFLICT_RULES",
    "mapl_inter_loss",
    "mapl_intra_loss",
    "normaliser_diagnostic",
    "rc_bt_loss",
]

ANCHORS = ("none", "sft", "drop")
CONFLICT_RULES = ("compliance", "semantics", "drop")


def rc_bt_loss(r_w: torch.Tensor, r_l: torch.Tensor) -> torch.Tensor:
    """Per-example response-conditioned BT loss −log σ(r(x_w, y) − r(x_l, y)) [P; Rc-BT].

    The reward model scores the same response under two prompts.  On a free reward table the
    minimiser for a triple labelled x_w ≻ x_l with frequency p is r(x_w, y) − r(x_l, y) = logit(p).
    Also the cross-sample reward form of the inter level: (x1+I1, y1) ≻ (x2+I2, y2).
    """
    return -F.logsigmoid(r_w - r_l)


def mapl_intra_loss(
    policy_logp_w: torch.Tensor,
    policy_logp_l: torch.Tensor,
    ref_logp_w: torch.Tensor,
    ref_logp_l: torch.Tensor,
    beta: float,
    anchor: str = "none",
    anchor_coef: float = 0.0,
    length_w: torch.Tensor | None = None,
    drop_margin: float = 0.0,
) -> torch.Tensor:
    """Per-example intra loss, DPO form (Rc-DPO) [P]:

        −log σ(β·log[π(y|x_w)/π_ref(y|x_w)] − β·log[π(y|x_l)/π_ref(y|x_l)])

    ``policy_logp_w`` = log π(y|x_w), ``policy_logp_l`` = log π(y|x_l) (sums over y's tokens), and
    the reference's.  It equals log 2 at π = π_ref.  The optional ``anchor`` [R] (see the module
    docstring for why), weighted by ``anchor_coef``:

    - ``"sft"``: −log π(y|x_w)/|y| (``length_w`` = |y| in tokens), as CODPO's SFT term: the
      margin must come with a likely y under x_w;
    - ``"drop"``: relu(log π_ref(y|x_l) − log π(y|x_l) − ``drop_margin``): a hinge on how far
      log π(y|x_l) may fall below the reference.
    """
    loss = dpo_loss(policy_logp_w, policy_logp_l, ref_logp_w, ref_logp_l, beta)
    if anchor == "none" or not anchor_coef:
        if anchor not in ANCHORS:
            raise ValueError(f"unknown MAPL anchor {anchor!r} ({', '.join(ANCHORS)})")
        return loss
    if anchor == "sft":
        if length_w is None:
            raise ValueError("the sft anchor needs length_w, the response's token count")
        return loss - anchor_coef * policy_logp_w / length_w.to(policy_logp_w.dtype).clamp(min=1)
    if anchor == "drop":
        return loss + anchor_coef * F.relu(ref_logp_l - policy_logp_l - drop_margin)
    raise ValueError(f"unknown MAPL anchor {anchor!r} ({', '.join(ANCHORS)})")


def normaliser_diagnostic(
    policy_logp_w: torch.Tensor,
    policy_logp_l: torch.Tensor,
    ref_logp_w: torch.Tensor,
    ref_logp_l: torch.Tensor,
) -> dict[str, float]:
    """Where the intra DPO margin comes from, for logging (batch means, no gradient).

    - ``mapl/logp_w``, ``mapl/logp_l``: mean log π(y|x_w) and log π(y|x_l);
    - ``mapl/delta_w``, ``mapl/delta_l``: their mean changes from the reference;
    - ``mapl/down_share`` in [0, 1]: the share of the margin's movement that comes from pushing
      π(y|x_l) down, max(0, −Δ_l) / (max(0, −Δ_l) + max(0, Δ_w)) per example, averaged
      (0 when neither side moved that way).  Near 1 with Δ_w ≤ 0 means the loss falls only
      because y became unlikely under the violated prompt: the failure mode of the
      module docstring, which the anchor term guards against.
    """
    with torch.no_grad():
        dw, dl = policy_logp_w - ref_logp_w, policy_logp_l - ref_logp_l
        up, down = dw.clamp(min=0), (-dl).clamp(min=0)
        total = up + down
        share = torch.where(total > 0, down / total.clamp(min=1e-30), torch.zeros_like(total))
        return {
            "mapl/logp_w": float(policy_logp_w.mean()),
            "mapl/logp_l": float(policy_logp_l.mean()),
            "mapl/delta_w": float(dw.mean()),
            "mapl/delta_l": float(dl.mean()),
            "mapl/down_share": float(share.mean()),
        }


def mapl_inter_loss(
    policy_logp_c: torch.Tensor,
    policy_logp_r: torch.Tensor,
    ref_logp_c: torch.Tensor,
    ref_logp_r: torch.Tensor,
    beta: float,
    conflict: torch.Tensor | None = None,
    rule: str = "compliance",
) -> torch.Tensor:
    """Per-example inter-sample loss [R: the abstract only says "synthesize multi-instruction
    preference pairs to capture inter-sample preference differences"; library variant ``mapl-inter``].

    Pairs share one instruction-augmented prompt x+I, so this is DPO on (x+I, y_c, y_r), where
    y_c is the semantically chosen response.  ``conflict [B]`` marks pairs whose instructions y_r
    satisfies and y_c violates, so compliance and semantics disagree; ``rule`` decides them:
    ``"compliance"`` (y_r is preferred: the label flips), ``"semantics"`` (y_c stays preferred)
    or ``"drop"`` (loss 0).  For reward models use :func:`rc_bt_loss` on the same pairs.
    """
    if rule not in CONFLICT_RULES:
        raise ValueError(f"unknown conflict rule {rule!r} ({', '.join(CONFLICT_RULES)})")
    forward = dpo_loss(policy_logp_c, policy_logp_r, ref_logp_c, ref_logp_r, beta)
    if conflict is None or rule == "semantics":
        return forward
    conflict = conflict.bool()
    if rule == "drop":
        return torch.where(conflict, torch.zeros_like(forward), forward)
    flipped = dpo_loss(policy_logp_r, policy_logp_c, ref_logp_r, ref_logp_c, beta)
    return torch.where(conflict, flipped, forward)
