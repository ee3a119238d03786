"""Configuration of RiC (Rewards-in-Context): ``paretoalign train --method ric``.

Every field's ``help`` is the documentation shown by ``paretoalign train --help``.  Defaults are
sized for a small model on a CPU; the reference code's (Llama-2-7B, 4 GPUs) are given in each help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, field, split_list
from paretoalign.errors import ConfigError
from paretoalign.trainers.methods import check_family
from paretoalign.trainers.options import (
    GENERATION,
    METHOD,
    OPTIMISATION,
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
class RicConfig(ModelOptions, PromptOptions, ScoreOptions, GenerationOptions, OptimOptions, ScheduleOptions,
                RunOptions, HubOptions, LoggingOptions):
    """Options of ``paretoalign train --method ric``."""

    method: str = field("ric", help="'ric': supervised fine-tuning on responses whose prompt carries their own "
                        "normalised scores, then online rounds (Rewards-in-Context).", group=METHOD)

    # --- offline data ----------------------------------------------------------------------------
    pairs: list = field(
        [], help="RiC: the offline responses: preference data as for the offline methods (a file, datasets folder or "
        "Hugging Face dataset; `paretoalign pairs` makes one). Both sides of every pair become training samples, as "
        "the reference code does.")
    pairs_format: str = field("auto", help="Schema of --pairs ('auto' detects it from the columns).")
    max_pairs: Optional[int] = field(None, help="Use at most this many rows of --pairs.")
    rescore: bool = field(
        False, help="RiC: score every offline response with --objectives even where the data holds a score named "
        "like the objective (default: the data's scores where every response has one, else scored).")
    max_response_length: int = field(128, help="Offline responses longer than this many tokens are truncated (EOS kept).")

    # --- conditioning ------------------------------------------------------------------------------
    mapping: Literal["linf", "l2", "linear"] = field(
        "linf", help="RiC: how a preference w becomes target scores: 'linf' (the paper's dynamic adjustment and the "
        "reference function's default: the most-preferred objective at its maximum, each other at min(K w_k, 1) of "
        "its range), 'l2' (the reference's evaluation script) or 'linear'.")
    bounds: Literal["data", "normal"] = field(
        "data", help="RiC: the normalised range [low, high] targets map into and online goals are drawn from: 'data' "
        "(the offline scores' min and max, deterministic) or 'normal' (the reference: the extremes of 50 000 N(0,1) "
        "draws, about +-4.2).")

    # --- stages ------------------------------------------------------------------------------------
    offline_steps: int = field(120, help="RiC: supervised steps on the offline set (reference: 20000 at batch 8).",
                               group=OPTIMISATION)
    online_rounds: int = field(2, help="RiC: online rounds after the offline stage (reference: 2). Each: sample prompts "
                               "with outer-boundary targets, score, keep the samples above --quantile on any "
                               "objective, fine-tune on them plus offline samples.")
    online_prompts: int = field(32, help="RiC: prompts (one completion each) per online round per process "
                                "(reference: 20000).")
    online_steps: int = field(30, help="RiC: supervised steps per online round (reference: 4000).")
    online_learning_rate: Optional[float] = field(
        None, help="RiC: the online rounds' constant learning rate (default: --learning-rate / 10; the reference: "
        "1.414e-4 offline, 1e-5 online).")
    quantile: float = field(0.7, help="RiC: multi-objective rejection sampling keeps a sample if its score on any "
                            "objective is >= that objective's quantile (reference: 0.7).")
    num_origin_samples: int = field(256, help="RiC: offline samples (passing the same quantile filter) mixed into each "
                                    "online round (reference: 10000).")
    temperature: float = field(1.0, help="RiC online sampling temperature (the reference samples at 1).", group=GENERATION)

    # --- run folder --------------------------------------------------------------------------------
    output_dir: str = field("runs/ric", help="Run folder: config, metrics.jsonl, checkpoints, final model with "
                            "reward_stats.json.", group=RUN)
    save_steps: int = field(40, help="RiC: checkpoint every this many offline steps (every online round is "
                            "checkpointed, and the last step).", group=RUN)

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        check_family(self.method, "conditioned")  # the method table says which methods this config runs
        self.check_objectives(2, "RiC (conditioning on one score is not a trade-off)")
        self.check_lora()
        self.check_generation()
        self.check_schedule()
        self.check_run()
        self.check_hub()
        self.check_logging()
        self.pairs = split_list(self.pairs) if isinstance(self.pairs, str) else list(self.pairs or [])
        if not 0.0 <= self.quantile <= 1.0:
            raise ConfigError(f"option quantile: must be in [0, 1], got {self.quantile}")
        for name in ("offline_steps", "online_steps", "online_prompts", "save_steps", "max_response_length"):
            if getattr(self, name) < (0 if name == "offline_steps" else 1):
                raise ConfigError(f"option {name}: must be >= {0 if name == 'offline_steps' else 1}, "
                                  f"got {getattr(self, name)}")
        if self.online_rounds < 0 or self.num_origin_samples < 0:
            raise ConfigError("options online_rounds and num_origin_samples must be >= 0")
        if self.offline_steps + self.online_rounds == 0:
            raise ConfigError("RiC with --offline-steps 0 and --online-rounds 0 trains nothing")
        if self.online_learning_rate is not None and not self.online_learning_rate > 0:
            raise ConfigError(f"option online_learning_rate: must be > 0, got {self.online_learning_rate}")

    @property
    def total_steps(self) -> int:
        """The run's steps: one per offline optimiser step, then one per online round."""
        return self.offline_steps + self.online_rounds

    @property
    def online_lr(self) -> float:
        return self.online_learning_rate if self.online_learning_rate is not None else self.learning_rate / 10

    @property
    def updates_per_step(self) -> int:
        """What the learning-rate schedule counts: the offline stage's optimiser steps (the online rounds
        run at their own constant rate)."""
        return 1
