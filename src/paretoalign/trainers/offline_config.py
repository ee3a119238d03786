"""Configuration of the offline preference trainer (DPO, MODPO, MOPO, AMoPO).

Every field's ``help`` is the documentation shown by ``paretoalign train --help``.

What ``objectives`` means per method (K entries, in the order of ``weights``):

- ``dpo``: label names of the pairs data; with K > 1 the labels are scalarised by ``weights``.
- ``modpo``: the first is the objective the pairs are labelled for; every other one is a *margin*
  reward: an objective spec (``length``, ``reward_model:...``, ``implicit_dpo:<adapter>``), or the
  name of a per-response score stored in the pairs data.
- ``mopo``: the first is the primary objective; ``constraints`` bound the others.
- ``amopo``: the dimensions (label names), one dimension-aware prompt each.
- ``mapl``: the labels of the original pairs of the MAPL folder (its ``pairs.jsonl``), scalarised by
  ``weights`` as for ``dpo``, for the L_0 term only; the prompt-side pairs need no labels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, field, split_list
from paretoalign.errors import ConfigError
from paretoalign.trainers.methods import check_family
from paretoalign.trainers.options import (
    METHOD,
    OPTIMISATION,
    AccumulationOptions,
    EvalOptions,
    HubOptions,
    LoggingOptions,
    ModelOptions,
    OptimOptions,
    PreferenceOptions,
    PromptOptions,
    RunOptions,
    ScheduleOptions,
    StepOptions,
)

# AMoPO's dimension-aware prompt, after its reference code (which prepends this instruction to the
# user turn).  The reference code adds "The evaluation values for this dimension range from 1 to 5
# ... respond based on the evaluation value of {d}" with the chosen response's rating; we leave that
# sentence out by default because generated and binary-labelled pairs have no 1-5 rating.
DEFAULT_DIMENSION_TEMPLATE = ("You are an expert in question answering, and you need to focus on the {dimension} "
                              "dimension to respond to me.\n\n{prompt}")
# The reference code's "integrate all dimensions" prompt (its ``no_object`` row, trained with
# --amopo-integrate-all), with our dimension names in place of its fixed "helpfulness,
# correctness, instruction following" and the same blank line as above before the prompt (the
# reference glues the instruction to the prompt with no separator).
DEFAULT_INTEGRATE_TEMPLATE = ("You are an expert in question answering, and you need to respond to me by integrating "
                              "the dimensions of {dimensions}.\n\n{prompt}")
AMOPO_INTEGRATE_ROW = "integrate_all"  # metrics name of that row (weight/integrate_all, accuracy/integrate_all)
_CONSTRAINT = re.compile(r"^\s*([^<>=\s]+)\s*>=\s*([^\s]+)\s*$")


def parse_constraint(text: str) -> tuple[str, float]:
    """``"harmless>=0.6"`` -> ``("harmless", 0.6)``; MOPO thresholds are win rates, so in [0, 1]."""
    m = _CONSTRAINT.match(str(text))
    if not m:
        raise ConfigError(f"constraint {text!r} is not of the form 'objective>=threshold' (e.g. harmless>=0.6)")
    name, value = m.group(1), m.group(2)
    try:
        b = float(value)
    except ValueError:
        raise ConfigError(f"constraint {text!r}: threshold {value!r} is not a number") from None
    if not (math.isfinite(b) and 0.0 <= b <= 1.0):
        raise ConfigError(
            f"constraint {text!r}: threshold {b:g} is outside [0, 1]; MOPO constrains win rates against the "
            "behaviour policy (0.5 = as good as a typical candidate)"
        )
    return name, b


@dataclass
class OfflineConfig(ModelOptions, PromptOptions, PreferenceOptions, OptimOptions, AccumulationOptions,
                    ScheduleOptions, StepOptions, RunOptions, HubOptions, EvalOptions, LoggingOptions):
    """Options of ``paretoalign train`` for the offline methods."""

    # --- what to train -------------------------------------------------------------------------
    method: str = field(
        "modpo",
        help="'dpo' (one label, or labels scalarised by --weights), 'modpo' (DPO on one objective's pairs with "
        "the others as margin rewards), 'mopo' (primary objective, constraints on the others), 'amopo' "
        "(dimension-aware prompts, adaptive weights, no reference or reward model), 'mapl' (prompt-side pairs from "
        "`paretoalign pairs --mapl`: for one response, the prompt whose instructions it satisfies is preferred).",
        group=METHOD)
    pairs: list = field(
        [], help="Preference data: a .jsonl/.json/.parquet/.csv file or datasets folder, a Hugging Face dataset name[:config[:split]] such as trl-lib/ultrafeedback_binarized (from the local cache; from the Hub with --allow-download), or several "
        "'objective=path' sets (one per objective). Formats: trl, hh-rlhf, pku-saferlhf, helpsteer2, ultrafeedback.",
    )
    pairs_format: str = field("auto", help="Schema of --pairs ('auto' detects it from the columns).")
    max_pairs: Optional[int] = field(None, help="Use at most this many rows of --pairs.")

    # --- DPO / MODPO ---------------------------------------------------------------------------
    beta: float = field(0.1, help="DPO/MODPO KL temperature beta (MODPO paper: 0.1).")
    label_smoothing: float = field(0.0, help="DPO: conservative label smoothing epsilon.")

    # --- MOPO ----------------------------------------------------------------------------------
    constraints: list = field([], help="MOPO: constraints 'objective>=threshold' on win rates in [0, 1].")
    mopo_form: Literal["lagrangian", "robust"] = field(
        "lagrangian", help="MOPO: plain Lagrangian, or the robust form (worst behaviour policy in a KL ball).")
    tau: float = field(0.5, help="MOPO: KL temperature tau of the closed-form ratio (paper: 0.08, with its tempering "
                       "guard off; ours is larger because --max-weight tempers sharp ratios anyway).")
    dual_lr: float = field(0.5, help="MOPO: step size of the dual (lambda, chi) updates.")
    lam_max: float = field(20.0, help="MOPO collapse guard: cap on each lambda.")
    max_weight: float = field(4.0, help="MOPO collapse guard: a pool's importance weights are tempered to at most this multiple of their mean.")
    robust_radius: float = field(0.1, help="MOPO robust form: KL radius epsilon of the behaviour-policy ball (paper: 0.15).")
    refresh_every: int = field(0, help="MOPO: every this many steps the reference becomes the current policy and bounds are "
                               "refreshed (0: never; paper: 500).")
    bound_relax: float = field(0.9, help="MOPO: at a refresh each bound becomes max(your threshold, bound_relax * achieved win "
                               "rate) (paper: bound_relax * achieved, 0.9995; we never loosen a threshold you set).")
    win_mode: Literal["indicator", "bradley_terry"] = field("indicator", help="MOPO: win probability from scores: indicator (ties 1/2) or Bradley-Terry.")
    min_pool: int = field(3, help="MOPO: warn when a prompt has fewer candidates than this (collapse risk).")

    # --- AMoPO ---------------------------------------------------------------------------------
    amopo_beta: float = field(0.8, help="AMoPO: beta of the length-normalised margin (reference code: 0.8).")
    amopo_gamma: float = field(2.0, help="AMoPO: target margin gamma (reference code: 2.0).")
    sft_coef: float = field(0.0, help="AMoPO: weight of the optional SFT (NLL of the chosen response) term.")
    dimension_template: str = field(
        DEFAULT_DIMENSION_TEMPLATE, help="AMoPO: dimension-aware prompt; {prompt} and {dimension} are filled in.")
    weight_sign: float = field(1.0, help="AMoPO: +1 weights confidently generated dimensions more, -1 less (see losses/amopo.py).")
    amopo_reduction: Literal["mean", "sum"] = field(
        "mean", help="AMoPO: a pair's loss is the 'mean' over its D dimension rows of weight*loss (default: the reference "
        "code's losses.mean(), so its hyperparameters, e.g. pref_ftx as --sft-coef and its clipping norm, carry over) or "
        "their 'sum' (D times larger, the scale of one SimPO loss; interacts with --max-grad-norm).")
    amopo_weight_scope: Literal["example", "batch"] = field(
        "example", help="AMoPO: softmax the adaptive weights over each pair's dimensions ('example', default: the paper's "
        "per-pair weights, independent of --batch-size) or over all dimension x example rows of the batch ('batch': the "
        "reference code; equal at batch size 1, its setting; at B > 1 it scales the loss by about 1/B).")
    amopo_integrate_all: bool = field(
        False, help="AMoPO: also train the reference code's 'integrate all dimensions' prompt (--integrate-template) as one "
        "more weighted row, on the pair's own chosen over rejected (the reference always does; off by default because our "
        "pairs' chosen side need not be an overall preference when labels are per dimension).")
    integrate_template: str = field(
        DEFAULT_INTEGRATE_TEMPLATE, help="AMoPO with --amopo-integrate-all: the integrate-all prompt; {prompt} and "
        "{dimensions} (the dimension names, comma-separated) are filled in.")

    # --- MAPL ----------------------------------------------------------------------------------
    mapl_intra_coef: float = field(
        1.0, help="MAPL: lambda_intra, weight of the intra-sample term: DPO across two prompts for one response, "
        "-log sigma(beta*log[pi(y|x_w)/pi_ref(y|x_w)] - beta*log[pi(y|x_l)/pi_ref(y|x_l)]), on the --pairs folder's "
        "intra.jsonl (`paretoalign pairs --mapl`). Must be > 0.")
    mapl_pairs_coef: float = field(
        1.0, help="MAPL: weight of L_0, DPO on the original pairs (the folder's pairs.jsonl, labels scalarised by "
        "--objectives/--weights as for dpo); skipped, with a warning, when the folder has none.")
    mapl_inter_coef: float = field(
        0.0, help="MAPL: lambda_inter, weight of the inter-sample term (a reconstruction: DPO on the folder's "
        "inter.jsonl, pairs on instruction-augmented prompts); 0 leaves it out.")
    mapl_conflict_rule: Literal["compliance", "semantics", "drop"] = field(
        "compliance", help="MAPL inter term: a pair whose instructions the rejected response satisfies and the chosen "
        "one violates is decided by 'compliance' (the complying response wins), 'semantics' (the original label "
        "wins) or 'drop'.")
    mapl_anchor: Literal["none", "sft", "drop"] = field(
        "none", help="MAPL: an anchor against lowering the intra loss only by pushing pi(y|x_l) down (the two "
        "prompts' normalisers do not cancel): 'sft' adds -log pi(y|x_w)/|y| (as CODPO's SFT term), 'drop' adds "
        "relu(log pi_ref(y|x_l) - log pi(y|x_l) - --mapl-drop-margin). A reconstruction; the diagnostic "
        "mapl/down_share is logged either way.")
    mapl_anchor_coef: float = field(0.1, help="MAPL: weight of --mapl-anchor (when it is not 'none').")
    mapl_drop_margin: float = field(0.0, help="MAPL 'drop' anchor: how far (nats) log pi(y|x_l) may fall below the "
                                    "reference before the hinge acts.")

    # --- optimisation --------------------------------------------------------------------------
    max_prompt_length: int = field(256, help="Prompts longer than this many tokens are truncated from the left.")
    max_response_length: int = field(256, help="Responses longer than this many tokens are truncated.")
    learning_rate: float = field(5e-5, help="AdamW learning rate (offline default: 5e-5).", group=OPTIMISATION)


    # --- run folder ----------------------------------------------------------------------------

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        check_family(self.method, "offline")  # the method table says which methods this config runs
        self.check_objectives(2 if self.method in ("modpo", "mopo") else 1, self.method)
        self.check_weights()
        self.check_lora()
        self.check_accumulation()
        self.check_schedule()
        self.check_run()
        self.check_hub()
        self.check_eval()
        self.check_logging()
        if self.method == "mopo" and self.gradient_accumulation_steps > 1:
            raise ConfigError("MOPO takes a dual step after every batch, so it has no gradient accumulation; "
                              "raise --batch-size instead of --gradient-accumulation-steps")
        self.pairs = split_list(self.pairs) if isinstance(self.pairs, str) else list(self.pairs or [])
        self.constraints = split_list(self.constraints) if isinstance(self.constraints, str) else list(self.constraints or [])
        self.parsed_constraints()  # malformed or out-of-range thresholds fail now
        if not self.max_weight >= 1:
            raise ConfigError(f"max_weight must be >= 1 (the mean weight is 1); got {self.max_weight!r}")
        if "{prompt}" not in self.dimension_template or "{dimension}" not in self.dimension_template:
            raise ConfigError("dimension_template must contain {prompt} and {dimension}")
        try:
            self.integrate_template.format(prompt="", dimensions="")
        except (KeyError, IndexError, ValueError):
            raise ConfigError("integrate_template may only use the fields {prompt} and {dimensions}") from None
        if "{prompt}" not in self.integrate_template:
            raise ConfigError("integrate_template must contain {prompt} (and may use {dimensions})")
        for name in ("mapl_intra_coef", "mapl_pairs_coef", "mapl_inter_coef", "mapl_anchor_coef", "mapl_drop_margin"):
            if getattr(self, name) < 0:
                raise ConfigError(f"option {name}: must be >= 0, got {getattr(self, name)!r}")
        if self.method == "mapl" and not self.mapl_intra_coef > 0:
            raise ConfigError("MAPL's intra-sample term is the method: --mapl-intra-coef must be > 0 (for DPO on the "
                              "original or inter pairs alone use --method dpo)")
        if self.method == "amopo" and self.amopo_integrate_all and AMOPO_INTEGRATE_ROW in self.objectives:
            raise ConfigError(f"an objective named {AMOPO_INTEGRATE_ROW!r} clashes with --amopo-integrate-all's row")

    def parsed_constraints(self) -> list[tuple[str, float]]:
        out = [parse_constraint(c) for c in self.constraints]
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"a constraint is given twice: {self.constraints}")
        return out

    @property
    def updates_per_step(self) -> int:
        """Optimiser steps per training step (what the learning-rate schedule counts)."""
        return 1
