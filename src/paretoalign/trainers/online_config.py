"""Configuration of the online multi-objective trainer (PAMA, MORLHF, MGDA-UB).

Every field's ``help`` is the documentation shown by ``paretoalign train --help``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, check_choice, field, split_list
from paretoalign.errors import ConfigError
from paretoalign.trainers.adaptation import LoraOptions

METHODS = ("pama", "morlhf", "mgda-ub", "mo-grpo")
LINEAR_METHODS = ("morlhf", "mo-grpo")  # fixed linear weights on the per-objective signals


@dataclass
class OnlineConfig(LoraOptions):
    """Options of ``paretoalign train`` for the online methods."""

    # --- what to train -------------------------------------------------------------------------
    method: Literal["pama", "morlhf", "mgda-ub", "mo-grpo"] = field(
        "pama",
        help="How per-objective signals become one update: 'pama' (closed-form Theorem-1 weights on "
        "Noon-PPO terms, O(K)), 'morlhf' (fixed linear weights), 'mgda-ub' (min-norm weights on "
        "gradients w.r.t. the last hidden states), 'mo-grpo' (multi-objective GRPO: critic-free group "
        "advantages of the weighted objectives, --group-aggregation picks the rule; each objective logged).",
    )
    model: str = field(
        "tiny",
        help="Policy: a local folder, a Hugging Face id already in the local cache, "
        "'smollm2-135m-instruct' (bundled, offline) or 'tiny' (random test model).",
    )
    objectives: list = field(
        ["sentiment", "length"],
        help="Objectives, comma-separated specs such as 'sentiment,length(scale=100,unit=words)'; "
        "see `paretoalign objectives` for the list.",
    )
    weights: Optional[list] = field(
        None,
        help="Preference vector, one non-negative weight per objective summing to 1 (default: uniform). "
        "MORLHF: the linear scalarisation weights. PAMA / MGDA-UB (our extension for front sweeps; "
        "their papers have no preference): each objective's signal is scaled by 1/(K*w_k) before the "
        "weight solve and zero-weight objectives are left out, so progress follows w; uniform = the paper.",
    )
    normalize_weights: bool = field(False, help="Divide --weights by their sum instead of requiring a sum of 1.")
    prompts: str = field("builtin", help="Prompt set: 'builtin' or a local .jsonl/.json/.csv/.txt/.parquet file or datasets folder.")
    prompt_column: str = field("prompt", help="Column holding the prompt in --prompts.")
    heldout_fraction: float = field(0.15, help="Fraction of the prompts kept out of training for evaluation.")
    system_prompt: Optional[str] = field(None, help="Optional system message prepended to every chat prompt.")
    use_chat_template: bool = field(True, help="Wrap plain prompts as a user message and apply the tokenizer's chat template.")

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
    whiten_advantages: bool = field(True, help="GAE: standardise each objective's advantages over the batch before combining.")

    # --- optimisation --------------------------------------------------------------------------
    max_steps: int = field(20, help="Number of optimisation steps (each: generate, score, update).")
    batch_size: int = field(4, help="Prompts per step per process.")
    num_generations: int = field(2, help="Completions sampled per prompt (>= 2 for --advantage group).")
    max_new_tokens: int = field(48, help="Maximum completion length in tokens.")
    min_new_tokens: int = field(0, help="Minimum completion length in tokens (EOS is suppressed before it).")
    max_prompt_length: int = field(256, help="Prompts longer than this many tokens are truncated from the left.")
    temperature: float = field(1.0, help="Sampling temperature for rollouts.")
    top_p: float = field(1.0, help="Nucleus sampling for rollouts.")
    learning_rate: float = field(1e-4, help="AdamW learning rate (the paper uses 1e-5 for full models; LoRA wants more).")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm (<= 0 disables).")
    kl_coef: float = field(0.2, help="KL coefficient beta against the reference model (paper: 0.2).")
    clip_eps: float = field(0.2, help="PPO ratio clip epsilon (paper: 0.2).")
    gamma: float = field(1.0, help="GAE discount.")
    lam: float = field(0.95, help="GAE lambda.")
    vf_coef: float = field(0.1, help="Weight of the value-head loss (GAE only).")
    value_clip: float = field(0.2, help="PPO value clipping range (<= 0 disables).")
    ppo_epochs: int = field(1, help="Passes over each rollout batch.")
    num_mini_batches: int = field(1, help="Mini-batches per pass over the rollout batch.")


    # --- run folder ----------------------------------------------------------------------------
    output_dir: str = field("runs/paretoalign", help="Run folder: config, metrics.jsonl, checkpoints, final model.")
    save_steps: int = field(10, help="Checkpoint every this many steps (and at the end).")
    save_total_limit: int = field(2, help="Keep at most this many checkpoints (oldest removed).")
    resume: bool = field(False, help="Continue the run in --output-dir from its last checkpoint.")
    overwrite: bool = field(False, help="Delete an existing run in --output-dir and start over.")
    seed: int = field(0, help="Random seed (prompt order, sampling, initialisation).")
    nan_policy: Literal["fail", "skip"] = field(
        "fail",
        help="What a NaN/inf/missing objective score does: 'fail' stops with an error naming the "
        "objective; 'skip' drops those samples from the update (logged as nan_skipped).",
    )
    allow_download: bool = field(False, help="Let --model and reward models be fetched from a hub (off: local only).")
    progress: bool = field(True, help="Show a progress bar with live per-objective rewards.")

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        from paretoalign.objectives.registry import split_objective_specs

        check_choice("method", self.method, METHODS)
        if self.advantage is None:
            self.advantage = "group" if self.method == "mo-grpo" else "gae"
        check_choice("advantage", self.advantage, ("gae", "group"))
        if self.method == "mo-grpo" and self.advantage != "group":
            raise ConfigError("mo-grpo is critic-free: it needs --advantage group (the default for it); "
                              "for value heads and GAE use --method morlhf")
        check_choice("pama_granularity", self.pama_granularity, ("batch", "sequence", "token"))
        check_choice("pama_ratio", self.pama_ratio, ("reference", "old"))
        check_choice("group_aggregation", self.group_aggregation, ("sum_then_normalize", "normalize_then_sum"))
        check_choice("nan_policy", self.nan_policy, ("fail", "skip"))
        if isinstance(self.objectives, str):
            self.objectives = split_objective_specs(self.objectives)
        self.objectives = list(self.objectives)
        if len(self.objectives) < 2:
            raise ConfigError(
                f"multi-objective training needs at least 2 objectives; got {len(self.objectives)}: {self.objectives}"
            )
        if isinstance(self.weights, str):
            self.weights = split_list(self.weights)
        if self.weights is not None:
            try:
                self.weights = [float(w) for w in self.weights]
            except (TypeError, ValueError):
                raise ConfigError(f"weights must be numbers; got {self.weights!r}") from None
        self.check_lora()
        for name in ("max_steps", "batch_size", "num_generations", "max_new_tokens", "ppo_epochs",
                     "num_mini_batches", "save_steps", "save_total_limit", "max_prompt_length"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)!r}")
        if self.advantage == "group" and self.num_generations < 2:
            raise ConfigError("--advantage group needs --num-generations >= 2 (a group baseline of one sample is zero)")
        if (self.batch_size * self.num_generations) % self.num_mini_batches:
            raise ConfigError(
                f"batch_size*num_generations ({self.batch_size * self.num_generations}) must be divisible "
                f"by num_mini_batches ({self.num_mini_batches})"
            )
        for name in ("kl_coef", "learning_rate", "clip_eps", "temperature"):
            if not float(getattr(self, name)) >= 0:
                raise ConfigError(f"{name} must be non-negative; got {getattr(self, name)!r}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ConfigError(f"heldout_fraction must be in (0, 1); got {self.heldout_fraction!r}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")

    @property
    def uses_critic(self) -> bool:
        return self.advantage == "gae"
