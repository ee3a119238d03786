"""Configuration of the online multi-objective trainer (PAMA, MORLHF, MGDA-UB).

Every field's ``help`` is the documentation shown by ``paretoalign train --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, field
from paretoalign.errors import ConfigError
from paretoalign.trainers.methods import check_family
from paretoalign.trainers.options import (
    METHOD,
    AccumulationOptions,
    EvalOptions,
    GenerationOptions,
    HubOptions,
    LoggingOptions,
    ModelOptions,
    OptimOptions,
    PreferenceOptions,
    PromptOptions,
    RunOptions,
    ScheduleOptions,
    ScoreOptions,
    StepOptions,
)

METHODS = ("pama", "morlhf", "mgda-ub", "mo-grpo")
LINEAR_METHODS = ("morlhf", "mo-grpo")  # fixed linear weights on the per-objective signals


@dataclass
class OnlineConfig(ModelOptions, PromptOptions, PreferenceOptions, ScoreOptions, GenerationOptions,
                   OptimOptions, AccumulationOptions, ScheduleOptions, StepOptions, RunOptions, HubOptions,
                   EvalOptions, LoggingOptions):
    """Options of ``paretoalign train`` for the online methods."""

    FAMILY = "online"  # the method table's family this config runs (a subclass for another family names its own)
    MIN_OBJECTIVES = 2  # a subclass whose method needs fewer says so (CGPO: one reward per task)

    # --- what to train -------------------------------------------------------------------------
    method: str = field(
        "pama",
        help="How per-objective signals become one update: 'pama' (closed-form Theorem-1 weights on "
        "Noon-PPO terms, O(K)), 'morlhf' (fixed linear weights), 'mgda-ub' (min-norm weights on "
        "gradients w.r.t. the last hidden states), 'mo-grpo' (multi-objective GRPO: critic-free group "
        "advantages of the weighted objectives, --group-aggregation picks the rule; each objective logged).", group=METHOD)

    # --- advantages and combiner ---------------------------------------------------------------
    advantage: Optional[Literal["gae", "group"]] = field(
        None,
        help="'gae': one value head per objective and GAE on KL-shaped token rewards (the paper's PPO "
        "setting). 'group': critic-free variant with per-objective group baselines over "
        "--num-generations completions per prompt and a k3 KL loss term (GRPO-style; not the paper's setting). "
        "Default: 'group' for mo-grpo, 'gae' for the others.",
    )
    pama_granularity: Literal["batch", "sequence", "token"] = field(
        "batch",
        help="PAMA: where Theorem-1 weights are solved: one weight vector per batch (default; the "
        "MGDA-analogue reading of the paper), one per sequence, or one per token.",
    )
    pama_ratio: Literal["reference", "old"] = field(
        "reference",
        help="PAMA: the ratio u in the Noon-PPO surrogate and in I(A). 'reference': u = pi_theta/pi_ref, "
        "as the paper writes it (the clip is then a trust region around the reference model); "
        "'old': u = pi_theta/pi_old, the usual PPO ratio.",
    )
    noon: bool = field(
        True, help="PAMA: clip negative advantages to zero (Noon-PPO). Ignored by other methods."
    )
    group_aggregation: Literal["sum_then_normalize", "normalize_then_sum"] = field(
        "sum_then_normalize",
        help="mo-grpo (and morlhf with --advantage group): weight-sum the rewards then standardise within the "
        "group (TRL GRPO's default), or standardise each objective within its group, weight-sum (GDPO).",
    )
    scale_rewards: Literal["group", "batch", "none"] = field(
        "group",
        help="--advantage group (TRL GRPOConfig's scale_rewards, same default): centre each reward on its group's mean, "
        "then divide by the group's std ('group', GRPO), by the std over the whole batch of every process ('batch', "
        "PPO-Lite) or not at all ('none', Dr. GRPO). Applies to sum_then_normalize and to the per-objective group "
        "advantages of pama/mgda-ub; normalize_then_sum (GDPO) fixes its own scaling, as in TRL. Only scored samples "
        "count in the statistics (--nan-policy skip).",
    )
    whiten_advantages: bool = field(True, help="GAE: standardise each objective's advantages over the batch before combining.")

    # --- optimisation --------------------------------------------------------------------------
    num_generations: int = field(2, help="Completions sampled per prompt (>= 2 for --advantage group).")
    min_new_tokens: int = field(0, help="Minimum completion length in tokens (EOS is suppressed before it).")
    kl_coef: float = field(0.2, help="KL coefficient beta against the reference model (paper: 0.2).")
    clip_eps: float = field(0.2, help="PPO ratio clip epsilon (paper: 0.2).")
    gamma: float = field(1.0, help="GAE discount.")
    lam: float = field(0.95, help="GAE lambda.")
    vf_coef: float = field(0.1, help="Weight of the value-head loss (GAE only).")
    value_clip: float = field(0.2, help="PPO value clipping range (<= 0 disables).")
    ppo_epochs: int = field(1, help="Passes over each rollout batch.")
    num_mini_batches: int = field(1, help="Mini-batches per pass over the rollout batch.")


    # --- run folder ----------------------------------------------------------------------------

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        check_family(self.method, self.FAMILY)  # the method table says which methods this config runs
        self.check_objectives(self.MIN_OBJECTIVES, "multi-objective training")
        self.check_weights()
        self.check_lora()
        self.check_generation()
        self.check_accumulation()
        self.check_schedule()
        self.check_run()
        self.check_hub()
        self.check_eval()
        self.check_logging()
        if self.advantage is None:
            self.advantage = "group" if self.method == "mo-grpo" else "gae"
        if self.method == "mo-grpo" and self.advantage != "group":
            raise ConfigError("mo-grpo is critic-free: it needs --advantage group (the default for it); "
                              "for value heads and GAE use --method morlhf")
        if (self.scale_rewards != "group" and self.advantage == "group" and self.linear
                and self.group_aggregation == "normalize_then_sum"):
            raise ConfigError("--scale-rewards has no effect with --group-aggregation normalize_then_sum (GDPO standardises "
                              "each objective in its group, then over the batch; TRL ignores it too); use sum_then_normalize")
        if self.advantage == "group" and self.num_generations < 2:
            raise ConfigError("--advantage group needs --num-generations >= 2 (a group baseline of one sample is zero)")
        if (self.batch_size * self.num_generations) % self.num_mini_batches:
            raise ConfigError(
                f"batch_size*num_generations ({self.batch_size * self.num_generations}) must be divisible "
                f"by num_mini_batches ({self.num_mini_batches})"
            )

    @property
    def linear(self) -> bool:
        """Does the trainer combine the per-objective signals with linear weights (its ``weights``: fixed for
        MORLHF and MO-GRPO; a subclass may set them every step, as HoE's Tchebycheff dual weights)?"""
        return self.method in LINEAR_METHODS

    @property
    def uses_critic(self) -> bool:
        return self.advantage == "gae"

    @property
    def updates_per_step(self) -> int:
        """Optimiser steps per training step (what the learning-rate schedule counts)."""
        return self.ppo_epochs * self.num_mini_batches
