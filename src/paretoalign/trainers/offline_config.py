"""Configuration of the offline preference trainer (DPO, MODPO, MOPO, AMoPO).

Every field's ``help`` is the documentation shown by ``paretoalign train --help``.

What ``objectives`` means per method (K entries, in the order of ``weights``):

- ``dpo``: label names of the pairs data; with K > 1 the labels are scalarised by ``weights``.
- ``modpo``: the first is the objective the pairs are labelled for; every other one is a *margin*
  reward: an objective spec (``length``, ``reward_model:...``, ``implicit_dpo:<adapter>``), or the
  name of a per-response score stored in the pairs data.
- ``mopo``: the first is the primary objective; ``constraints`` bound the others.
- ``amopo``: the dimensions (label names), one dimension-aware prompt each.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, check_choice, field, split_list
from paretoalign.errors import ConfigError
from paretoalign.trainers.adaptation import LoraOptions

OFFLINE_METHODS = ("dpo", "modpo", "mopo", "amopo")
# AMoPO's dimension-aware prompt, after its reference code (which prepends this instruction to the
# user turn).  The reference code adds "The evaluation values for this dimension range from 1 to 5
# ... respond based on the evaluation value of {d}" with the chosen response's rating; we leave that
# sentence out by default because generated and binary-labelled pairs have no 1-5 rating.
DEFAULT_DIMENSION_TEMPLATE = ("You are an expert in question answering, and you need to focus on the {dimension} "
                              "dimension to respond to me.\n\n{prompt}")
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
class OfflineConfig(LoraOptions):
    """Options of ``paretoalign train`` for the offline methods."""

    # --- what to train -------------------------------------------------------------------------
    method: Literal["dpo", "modpo", "mopo", "amopo"] = field(
        "modpo",
        help="'dpo' (one label, or labels scalarised by --weights), 'modpo' (DPO on one objective's pairs with "
        "the others as margin rewards), 'mopo' (primary objective, constraints on the others), 'amopo' "
        "(dimension-aware prompts, adaptive weights, no reference or reward model).",
    )
    model: str = field("tiny", help="Policy: a local folder, a cached Hugging Face id, 'smollm2-135m-instruct' or 'tiny'.")
    pairs: list = field(
        [], help="Preference data: a .jsonl/.json/.parquet/.csv file or datasets folder, or several "
        "'objective=path' sets (one per objective). Formats: trl, hh-rlhf, pku-saferlhf, helpsteer2, ultrafeedback.",
    )
    pairs_format: str = field("auto", help="Schema of --pairs ('auto' detects it from the columns).")
    max_pairs: Optional[int] = field(None, help="Use at most this many rows of --pairs.")
    objectives: list = field(["sentiment", "length"], help="Objectives in weight order; see the module docs for what each method reads.")
    weights: Optional[list] = field(
        None, help="Preference vector over --objectives (non-negative, summing to 1; default uniform). "
        "MODPO: weights[0] (the labelled objective) must be > 0.",
    )
    normalize_weights: bool = field(False, help="Divide --weights by their sum instead of requiring a sum of 1.")
    prompts: str = field("builtin", help="Prompt set whose held-out split evaluation uses (training reads --pairs).")
    prompt_column: str = field("prompt", help="Column holding the prompt in --prompts.")
    heldout_fraction: float = field(0.15, help="Fraction of --prompts kept for evaluation.")
    system_prompt: Optional[str] = field(None, help="Optional system message prepended to every chat prompt.")
    use_chat_template: bool = field(True, help="Render prompts with the tokenizer's chat template.")

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

    # --- optimisation --------------------------------------------------------------------------
    max_steps: int = field(20, help="Number of optimisation steps.")
    batch_size: int = field(4, help="Pairs (MOPO: prompts) per step per process.")
    max_prompt_length: int = field(256, help="Prompts longer than this many tokens are truncated from the left.")
    max_response_length: int = field(256, help="Responses longer than this many tokens are truncated.")
    learning_rate: float = field(5e-5, help="AdamW learning rate.")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm (<= 0 disables).")


    # --- run folder ----------------------------------------------------------------------------
    output_dir: str = field("runs/paretoalign", help="Run folder: config, metrics.jsonl, checkpoints, final model.")
    save_steps: int = field(10, help="Checkpoint every this many steps (and at the end).")
    save_total_limit: int = field(2, help="Keep at most this many checkpoints.")
    resume: bool = field(False, help="Continue the run in --output-dir from its last checkpoint.")
    overwrite: bool = field(False, help="Delete an existing run in --output-dir and start over.")
    seed: int = field(0, help="Random seed.")
    allow_download: bool = field(False, help="Let --model and reward models be fetched from a hub (off: local only).")
    progress: bool = field(True, help="Show a progress bar.")

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        from paretoalign.objectives.registry import split_objective_specs

        check_choice("method", self.method, OFFLINE_METHODS)
        check_choice("mopo_form", self.mopo_form, ("lagrangian", "robust"))
        check_choice("win_mode", self.win_mode, ("indicator", "bradley_terry"))
        if isinstance(self.objectives, str):
            self.objectives = split_objective_specs(self.objectives)
        self.objectives = list(self.objectives)
        if not self.objectives:
            raise ConfigError("--objectives is empty")
        if self.method in ("modpo", "mopo") and len(self.objectives) < 2:
            raise ConfigError(f"{self.method} needs at least 2 objectives; got {self.objectives}")
        self.pairs = split_list(self.pairs) if isinstance(self.pairs, str) else list(self.pairs or [])
        if isinstance(self.weights, str):
            self.weights = split_list(self.weights)
        if self.weights is not None:
            try:
                self.weights = [float(w) for w in self.weights]
            except (TypeError, ValueError):
                raise ConfigError(f"weights must be numbers; got {self.weights!r}") from None
        self.constraints = split_list(self.constraints) if isinstance(self.constraints, str) else list(self.constraints or [])
        self.parsed_constraints()  # malformed or out-of-range thresholds fail now
        self.check_lora()
        for name in ("max_steps", "batch_size", "save_steps", "save_total_limit", "max_prompt_length",
                     "max_response_length", "min_pool"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)!r}")
        for name in ("beta", "tau", "amopo_beta"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"{name} must be > 0; got {getattr(self, name)!r}")
        for name in ("learning_rate", "dual_lr", "lam_max", "robust_radius", "sft_coef", "refresh_every"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"{name} must be >= 0; got {getattr(self, name)!r}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"label_smoothing must be in [0, 0.5); got {self.label_smoothing!r}")
        if not self.max_weight >= 1:
            raise ConfigError(f"max_weight must be >= 1 (the mean weight is 1); got {self.max_weight!r}")
        if not 0 < self.bound_relax <= 1:
            raise ConfigError(f"bound_relax must be in (0, 1]; got {self.bound_relax!r}")
        if "{prompt}" not in self.dimension_template or "{dimension}" not in self.dimension_template:
            raise ConfigError("dimension_template must contain {prompt} and {dimension}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in (0, 1); got {self.heldout_fraction!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")

    def parsed_constraints(self) -> list[tuple[str, float]]:
        out = [parse_constraint(c) for c in self.constraints]
        names = [n for n, _ in out]
        if len(set(names)) != len(names):
            raise ConfigError(f"a constraint is given twice: {self.constraints}")
        return out
