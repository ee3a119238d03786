"""Configuration of DPA (directional preference alignment): ``paretoalign train --method dpa``.

Every field's ``help`` is the documentation shown by ``paretoalign train --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, check_choice, field, split_list
from paretoalign.preferences import DEFAULT_DIRECTION_TEMPLATE
from paretoalign.errors import ConfigError
from paretoalign.trainers.adaptation import LoraOptions


@dataclass
class DPAConfig(LoraOptions):
    """Options of ``paretoalign train --method dpa``."""

    method: Literal["dpa"] = field("dpa", help="'dpa': rejection-sampling fine-tuning conditioned on a preference direction.")
    model: str = field("tiny", help="Policy: a local folder, a cached Hugging Face id, 'smollm2-135m-instruct' or 'tiny'.")
    objectives: list = field(["sentiment", "length"], help="Objectives spanning the direction space (K >= 2), e.g. heads of one reward model.")
    prompts: str = field("builtin", help="Prompt set: 'builtin' or a local file or datasets folder.")
    prompt_column: str = field("prompt", help="Column holding the prompt in --prompts.")
    heldout_fraction: float = field(0.15, help="Fraction of the prompts kept out of training for evaluation.")
    use_chat_template: bool = field(True, help="Render prompts with the tokenizer's chat template (the direction is a system message).")

    # --- directions ------------------------------------------------------------------------------
    direction_template: str = field(
        DEFAULT_DIRECTION_TEMPLATE, help="System message carrying the direction: {weighted_rating} becomes "
        "'name1*w1 + name2*w2' with w = round(100 v); {w_<objective>} gives one weight.")
    min_angle: float = field(0.0, help="K = 2: directions v = (cos t, sin t) with t uniform in [min_angle, max_angle] degrees.")
    max_angle: float = field(90.0, help="K = 2: see --min-angle (the DPA model used |t| <= 45 around helpfulness).")
    angles: Optional[list] = field(None, help="K = 2: draw training directions from these angles (degrees) only, "
                                   "e.g. 10,45,80, instead of the continuous range.")

    # --- rejection sampling ----------------------------------------------------------------------
    rounds: int = field(3, help="Rejection-sampling fine-tuning rounds (sample, keep the best by v.r, fine-tune).")
    prompts_per_round: int = field(16, help="Prompts per round per process, each with its own sampled direction.")
    num_candidates: int = field(4, help="Completions sampled per prompt; the best by v.r is kept.")
    max_new_tokens: int = field(48, help="Maximum completion length in tokens.")
    max_prompt_length: int = field(256, help="Prompts longer than this many tokens are truncated from the left.")
    temperature: float = field(0.7, help="Sampling temperature (the DPA model card's 0.7).")
    top_p: float = field(1.0, help="Nucleus sampling.")
    nan_policy: Literal["fail", "skip"] = field("fail", help="A NaN score: 'fail' stops naming the objective; 'skip' drops the candidate.")
    utility_normalization: Literal["none", "group"] = field(
        "none", help="v.r on the raw scores ('none', the paper: objectives on one scale) or with each objective "
        "standardised over a prompt's candidates first ('group': for objectives on different scales).")

    # --- fine-tuning -----------------------------------------------------------------------------
    sft_epochs: int = field(1, help="Passes over each round's selected samples.")
    batch_size: int = field(4, help="Selected samples per fine-tuning step.")
    learning_rate: float = field(1e-4, help="AdamW learning rate (LoRA; full fine-tuning wants ~1e-5).")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm (<= 0 disables).")


    # --- run folder ------------------------------------------------------------------------------
    output_dir: str = field("runs/dpa", help="Run folder: config, metrics.jsonl, per-round checkpoints, final model.")
    save_total_limit: int = field(2, help="Keep at most this many round checkpoints.")
    resume: bool = field(False, help="Continue the run in --output-dir after its last completed round.")
    overwrite: bool = field(False, help="Delete an existing run in --output-dir and start over.")
    seed: int = field(0, help="Random seed (prompts, directions, sampling).")
    allow_download: bool = field(False, help="Let --model and reward models be fetched from a hub (off: local only).")
    progress: bool = field(True, help="Show a progress bar.")

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        from paretoalign.objectives.registry import split_objective_specs

        check_choice("method", self.method, ("dpa",))
        check_choice("nan_policy", self.nan_policy, ("fail", "skip"))
        check_choice("utility_normalization", self.utility_normalization, ("none", "group"))
        if isinstance(self.objectives, str):
            self.objectives = split_objective_specs(self.objectives)
        self.objectives = list(self.objectives)
        if len(self.objectives) < 2:
            raise ConfigError(f"DPA needs at least 2 objectives (a direction in one dimension is not a choice); got {self.objectives}")
        self.check_lora()
        for name in ("rounds", "prompts_per_round", "num_candidates", "max_new_tokens", "max_prompt_length",
                     "sft_epochs", "batch_size", "save_total_limit"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)!r}")
        if self.num_candidates < 2:
            raise ConfigError("num_candidates must be >= 2: rejection sampling keeps the best of several")
        if isinstance(self.angles, str):
            self.angles = split_list(self.angles)
        if self.angles is not None:
            try:
                self.angles = [float(a) for a in self.angles]
            except (TypeError, ValueError):
                raise ConfigError(f"angles must be numbers (degrees); got {self.angles!r}") from None
            if not self.angles or any(not -180.0 <= a <= 180.0 for a in self.angles):
                raise ConfigError(f"angles must be a non-empty list of degrees in [-180, 180]; got {self.angles}")
            if len(self.objectives) != 2:
                raise ConfigError("--angles describes directions of exactly 2 objectives")
        if not -180.0 <= self.min_angle <= self.max_angle <= 180.0:
            raise ConfigError(f"need -180 <= min_angle <= max_angle <= 180; got {self.min_angle}, {self.max_angle}")
        for name in ("learning_rate", "temperature"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"{name} must be >= 0; got {getattr(self, name)!r}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in (0, 1); got {self.heldout_fraction!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
