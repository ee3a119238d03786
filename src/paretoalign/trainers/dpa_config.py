"""Configuration of DPA (directional preference alignment): ``paretoalign train --method dpa``.

Every field's ``help`` is the documentation shown by ``paretoalign train --help``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, field, split_list
from paretoalign.errors import ConfigError
from paretoalign.preferences import DEFAULT_DIRECTION_TEMPLATE
from paretoalign.trainers.methods import check_family
from paretoalign.trainers.options import (
    GENERATION,
    METHOD,
    RUN,
    GenerationOptions,
    HubOptions,
    LoggingOptions,
    ModelOptions,
    OptimOptions,
    PromptOptions,
    RunOptions,
    ScheduleOptions,
    ScoreOptions,
)


@dataclass
class DPAConfig(ModelOptions, PromptOptions, ScoreOptions, GenerationOptions, OptimOptions, ScheduleOptions,
                RunOptions, HubOptions, LoggingOptions):
    """Options of ``paretoalign train --method dpa``."""

    method: str = field("dpa", help="'dpa': rejection-sampling fine-tuning conditioned on a preference direction.", group=METHOD)

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
    temperature: float = field(0.7, help="Sampling temperature (the DPA model card's 0.7).", group=GENERATION)
    utility_normalization: Literal["none", "group"] = field(
        "none", help="v.r on the raw scores ('none', the paper: objectives on one scale) or with each objective "
        "standardised over a prompt's candidates first ('group': for objectives on different scales).")

    # --- fine-tuning -----------------------------------------------------------------------------
    sft_epochs: int = field(1, help="Passes over each round's selected samples.")


    # --- run folder ------------------------------------------------------------------------------
    output_dir: str = field("runs/dpa", help="Run folder: config, metrics.jsonl, per-round checkpoints, final model.",
                            group=RUN)

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        check_family(self.method, "steerable")  # the method table says which methods this config runs
        self.check_objectives(2, "DPA (a direction in one dimension is not a choice)")
        self.check_lora()
        self.check_generation()
        self.check_schedule()
        self.check_run()
        self.check_hub()
        self.check_logging()
        if self.system_prompt is not None:
            raise ConfigError("DPA's system message carries the direction (--direction-template); --system-prompt "
                              "does not apply")
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

    @property
    def updates_per_step(self) -> int:
        """Optimiser steps per round (what the learning-rate schedule counts): each fine-tuning pass takes
        ``prompts_per_round`` samples in batches of ``batch_size``."""
        return self.sft_epochs * math.ceil(self.prompts_per_round / self.batch_size)
