"""The option groups every trainer config is composed of, each declared once.

A family's config (``OnlineConfig``, ``OfflineConfig``, ``DPAConfig``) inherits the groups it uses
and adds only its own options, as TRL's method configs add theirs to a base config.  Each group's
fields are listed under its heading in ``--help`` (:func:`paretoalign.config_utils.option_group`);
a family that needs another default re-declares just that field (e.g. DPA's temperature 0.7).
Field names are those of the flat configs before the groups existed, so older YAML files load.

Every group also owns the checks of its fields that go beyond type and range (those are
:func:`paretoalign.config_utils.check_fields`, run first by each config's ``__post_init__``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import field, option_group, split_list
from paretoalign.errors import ConfigError
from paretoalign.objectives.spec import split_objective_specs

METHOD = "method"
MODEL = "model and adaptation"
PROMPTS = "prompts and objectives"
GENERATION = "generation"
OPTIMISATION = "optimisation"
RUN = "run folder"
EVAL = "evaluation during training"
LOGGING = "logging"
# --help lists the shared groups in this order, before a family's own options
GROUP_ORDER = (METHOD, MODEL, PROMPTS, GENERATION, OPTIMISATION, RUN, EVAL, LOGGING)
# The experiment trackers --report-to knows: its value -> (the module it imports, the pip extra).
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "trackio": ("trackio", "trackio"),
            "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
# Options that change what a run reports or where it publishes, never what it trains: --resume accepts
# new values for them (beside run_dir.RESUME_MUTABLE).
REPORTING_OPTIONS = frozenset({"report_to", "eval_steps", "eval_prompts", "eval_samples", "push_to_hub",
                               "hub_model_id"})


@option_group
@dataclass
class LoraOptions:
    """LoRA (PEFT) adapters instead of full fine-tuning."""

    GROUP = MODEL
    use_lora: bool = field(True, help="Train LoRA adapters (PEFT) instead of all weights.")
    lora_r: int = field(16, help="LoRA rank.")
    lora_alpha: int = field(32, help="LoRA alpha.")
    lora_dropout: float = field(0.0, help="LoRA dropout.")
    lora_target_modules: list = field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], help="Module names LoRA adapts.")

    def check_lora(self) -> None:
        self.lora_target_modules = split_list(self.lora_target_modules)


@option_group
@dataclass
class ModelOptions(LoraOptions):
    """Which policy is trained, and how it is adapted."""

    GROUP = MODEL
    model: str = field(
        "smollm2-135m-instruct", help="Policy: a local folder, a Hugging Face id already in the local cache, "
        "'smollm2-135m-instruct' (bundled, offline; the default) or 'tiny' (a random model for tests, never a "
        "default).")
    allow_download: bool = field(False, help="Let --model and reward models be fetched from a hub (off: local only).")
    mixed_precision: Optional[Literal["bf16", "fp16"]] = field(
        None, help="Autocast the forward passes (accelerate's mixed precision): 'bf16' or 'fp16' (loss scaling). "
        "Default: the launcher's setting (`accelerate launch --mixed_precision`, a --config_file), else full precision. "
        "Weights and optimiser state stay float32.")
    gradient_checkpointing: bool = field(
        False, help="Recompute each decoder layer's activations in the backward pass (transformers' gradient "
        "checkpointing, non-reentrant): about a third more compute for much less activation memory; for long "
        "sequences or large batches on a GPU.")


@option_group
@dataclass
class PromptOptions:
    """The objectives and the prompt set (its held-out split is what evaluation scores)."""

    GROUP = PROMPTS
    objectives: list = field(
        ["sentiment", "length"], help="Objectives, comma-separated specs such as 'sentiment,length(scale=100,unit=words)'; "
        "see `paretoalign objectives` for the list.")
    prompts: str = field("builtin", help="Prompt set: 'builtin' or a local .jsonl/.json/.csv/.txt/.parquet file or "
                         "datasets folder, or a Hugging Face dataset name[:config[:split]] such as trl-lib/tldr (from the local cache; from the Hub with --allow-download).")
    prompt_column: str = field("prompt", help="Column holding the prompt in --prompts.")
    heldout_fraction: float = field(0.15, help="Fraction of the prompts kept out of training for evaluation.")
    system_prompt: Optional[str] = field(None, help="Optional system message prepended to every chat prompt.")
    use_chat_template: bool = field(True, help="Wrap plain prompts as a user message and apply the tokenizer's chat "
                                    "template.")

    def check_objectives(self, at_least: int, why: str) -> None:
        """Objectives as a list of specs (a comma-separated string is split), at least ``at_least``."""
        if isinstance(self.objectives, str):
            self.objectives = split_objective_specs(self.objectives)
        self.objectives = list(self.objectives)
        if not self.objectives:
            raise ConfigError("--objectives is empty")
        if len(self.objectives) < at_least:
            raise ConfigError(f"{why} needs at least {at_least} objectives; got {len(self.objectives)}: {self.objectives}")


@option_group
@dataclass
class PreferenceOptions:
    """A preference vector over the objectives."""

    GROUP = PROMPTS
    weights: Optional[list] = field(
        None, help="Preference vector, one non-negative weight per objective summing to 1 (default: uniform).")
    normalize_weights: bool = field(False, help="Divide --weights by their sum instead of requiring a sum of 1.")

    def check_weights(self) -> None:
        """Numbers (a comma-separated string is split); the simplex is checked once K is known."""
        if isinstance(self.weights, str):
            self.weights = split_list(self.weights)
        if self.weights is not None:
            try:
                self.weights = [float(w) for w in self.weights]
            except (TypeError, ValueError):
                raise ConfigError(f"weights must be numbers; got {self.weights!r}") from None


@option_group
@dataclass
class ScoreOptions:
    """What an unusable score does (methods that score their own samples)."""

    GROUP = PROMPTS
    nan_policy: Literal["fail", "skip"] = field(
        "fail", help="What a NaN/inf/missing objective score does: 'fail' stops with an error naming the objective; "
        "'skip' drops those samples from the update (logged as nan_skipped).")


@option_group
@dataclass
class GenerationOptions:
    """Sampling the policy (rollouts, candidates)."""

    GROUP = GENERATION
    max_new_tokens: int = field(48, help="Maximum completion length in tokens.")
    max_prompt_length: int = field(256, help="Prompts longer than this many tokens are truncated from the left.")
    temperature: float = field(1.0, help="Sampling temperature.")
    top_p: float = field(1.0, help="Nucleus sampling.")
    generation_backend: Literal["hf", "hf-generate", "vllm"] = field(
        "hf", help="How completions are sampled: 'hf' (default) runs the in-process model with paretoalign's packed "
        "decode loop for Llama/Mistral/Qwen2 models (LoRA read in place, shared prompt prefill, static KV cache; "
        "transformers' generate for other models), 'hf-generate' always uses transformers' generate (the slower path, "
        "kept for comparison), 'vllm' a colocated vLLM engine whose weights are refreshed from the policy after each "
        "update (GPU; pip install 'paretoalign[vllm]'). All sample the same distribution.")

    def check_generation(self) -> None:
        from paretoalign.rollout import check_backend  # here: the option groups stay free of torch

        check_backend(self.generation_backend)


@option_group
@dataclass
class OptimOptions:
    """The optimiser (AdamW) and the batch it steps on."""

    GROUP = OPTIMISATION
    batch_size: int = field(4, help="Prompts (online), pairs (offline; MOPO: prompts) or selected samples (DPA) per "
                            "step per process.")
    learning_rate: float = field(1e-4, help="AdamW learning rate (LoRA; full fine-tuning wants ~1e-5).")
    weight_decay: float = field(0.0, help="AdamW weight decay.")
    max_grad_norm: float = field(1.0, help="Gradient clipping norm (<= 0 disables).")


@option_group
@dataclass
class AccumulationOptions:
    """Gradient accumulation: several micro-batches per optimiser step."""

    GROUP = OPTIMISATION
    gradient_accumulation_steps: int = field(
        1, help="Online and offline methods: micro-batches of --batch-size per optimiser step (TRL's name), so the "
        "effective batch is --batch-size x this (x processes); the update is the mean of the micro-batches' losses (the "
        "mean over the effective batch for per-sample means). Online: that many rollouts per step, each generated, "
        "scored and given its own advantages (group, whitening and batch statistics are per micro-batch) and its own "
        "PAMA/MGDA-UB combiner weights (solved per micro-batch; weight/<objective> logs their mean). Offline: that "
        "many batches of pairs (AMoPO's --amopo-weight-scope batch: per micro-batch). With DDP only the last "
        "micro-batch synchronises gradients. Not for MOPO (its dual step follows every batch).")

    def check_accumulation(self) -> None:
        if self.gradient_accumulation_steps < 1:
            raise ConfigError(f"option gradient_accumulation_steps: must be >= 1, got {self.gradient_accumulation_steps}")


@option_group
@dataclass
class ScheduleOptions:
    """The learning-rate schedule (transformers' ``get_scheduler``)."""

    GROUP = OPTIMISATION
    lr_scheduler_type: Literal["constant", "linear", "cosine", "constant_with_warmup"] = field(
        "constant", help="Learning-rate schedule over the run's optimiser steps (transformers' names): 'constant' "
        "(no warm-up), 'constant_with_warmup', 'linear' or 'cosine' (warm-up, then decay to 0 at the last step). "
        "Stepped once per optimiser step: one per step (online: --ppo-epochs x --num-mini-batches per step; DPA: its "
        "fine-tuning steps per round); saved in checkpoints, so --resume continues the same sequence. The lr column of "
        "metrics.jsonl is the step's (first) update's rate.")
    warmup_steps: int = field(0, help="Optimiser steps of linear warm-up from 0 to --learning-rate.")
    warmup_ratio: float = field(0.0, help="Warm-up as a fraction of the run's optimiser steps (rounded up); give this "
                                "or --warmup-steps, not both.")

    def check_schedule(self) -> None:
        if self.warmup_steps < 0:
            raise ConfigError(f"option warmup_steps: must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"option warmup_ratio: must be in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps and self.warmup_ratio:
            raise ConfigError("--warmup-steps and --warmup-ratio both set; give one")
        if (self.warmup_steps or self.warmup_ratio) and self.lr_scheduler_type == "constant":
            raise ConfigError("--lr-scheduler-type constant has no warm-up; use constant_with_warmup, linear or cosine")

    def warmup_for(self, total: int) -> int:
        """Warm-up optimiser steps of a run of ``total`` optimiser steps."""
        return self.warmup_steps if self.warmup_steps else math.ceil(self.warmup_ratio * total)


@option_group
@dataclass
class StepOptions:
    """How long a step-based run is, and how often it checkpoints."""

    GROUP = OPTIMISATION
    max_steps: int = field(20, help="Number of optimisation steps.")
    save_steps: int = field(10, help="Checkpoint every this many steps (and at the end).", group=RUN)


@option_group
@dataclass
class RunOptions:
    """The run folder (see README "Run folders")."""

    GROUP = RUN
    output_dir: str = field("runs/paretoalign", help="Run folder: config, metrics.jsonl, checkpoints, final model.")
    save_total_limit: int = field(2, help="Keep at most this many checkpoints (oldest removed).")
    resume: bool = field(False, help="Continue the run in --output-dir from its newest valid checkpoint.")
    overwrite: bool = field(False, help="Replace the run in --output-dir (only what paretoalign wrote is removed).")
    seed: int = field(0, help="Random seed (data order, sampling, initialisation).")

    def check_run(self) -> None:
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")


@option_group
@dataclass
class HubOptions:
    """Publishing the final model (huggingface_hub)."""

    GROUP = RUN
    push_to_hub: bool = field(
        False, help="After the final save, upload RUN/final/ to the Hugging Face Hub (--hub-model-id). The command runs "
        "offline by default; this flag is the opt-in, so the upload goes online. Refused before training when you set "
        "HF_HUB_OFFLINE=1 yourself or there is no token (hf auth login).")
    hub_model_id: Optional[str] = field(
        None, help="The Hub repository for --push-to-hub, 'user/name' or 'name' (default: the run folder's name); "
        "created if missing.")

    def check_hub(self) -> None:
        if self.hub_model_id is not None and not self.hub_model_id.strip():
            raise ConfigError("option hub_model_id: empty; give 'user/name' or leave it out")


@option_group
@dataclass
class EvalOptions:
    """Held-out evaluation while training (see :mod:`paretoalign.trainers.heldout_eval`)."""

    GROUP = EVAL
    eval_steps: Optional[int] = field(
        None, help="Online and offline methods: every this many steps, and after the last, generate on held-out "
        "prompts and log each objective's mean and standard error as eval/<objective> and eval/<objective>_se in that "
        "step's metrics.jsonl row (and the trackers). The prompts are the first --eval-prompts of the held-out split "
        "`paretoalign evaluate` uses (--prompts, --heldout-fraction, --seed); the decoding is evaluate's (seed 1234, "
        "temperature 0.7, top-p 1, --max-new-tokens, else 48); scores are raw, as evaluate reports them (offline: the "
        "objectives that score text, not data labels). The training RNG is left untouched: training is the same with "
        "or without it. None or 0: off.")
    eval_prompts: int = field(16, help="Held-out prompts per evaluation (--eval-steps).")
    eval_samples: int = field(1, help="Completions per held-out prompt per evaluation (--eval-steps); the standard "
                              "error counts each completion as one sample.")

    def check_eval(self) -> None:
        if self.eval_steps is not None and self.eval_steps < 0:
            raise ConfigError(f"option eval_steps: must be >= 0 (0: off), got {self.eval_steps}")
        for name in ("eval_prompts", "eval_samples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"option {name}: must be >= 1, got {getattr(self, name)}")


@option_group
@dataclass
class LoggingOptions:
    """What a run shows while it works."""

    GROUP = LOGGING
    progress: bool = field(True, help="Show a progress bar with live metrics.")
    report_to: list = field(
        ["none"], help="Experiment trackers that also get every numeric metrics.jsonl field, under its name, at its "
        "step (TRL's report_to): 'none', or one or more of tensorboard, trackio, wandb, mlflow, comma-separated. "
        "TensorBoard writes to RUN/logs/; the others use their own settings (WANDB_PROJECT, MLFLOW_TRACKING_URI ...; "
        "project 'paretoalign', run named after the run folder). Each needs its extra, e.g. "
        "pip install 'paretoalign[wandb]'.")

    def check_logging(self) -> None:
        """``report_to`` as a list of tracker names ([] for none); a tracker whose library is missing is
        refused before any work (:func:`paretoalign.trainers.tracking.check_trackers`)."""
        names = split_list(self.report_to)
        unknown = [n for n in names if n not in (*TRACKERS, "none")]
        if unknown:
            raise ConfigError(f"option report_to: unknown tracker(s) {', '.join(map(repr, unknown))}; choose 'none' "
                              f"or any of {', '.join(TRACKERS)}")
        if "none" in names and len(names) > 1:
            raise ConfigError(f"option report_to: 'none' together with {[n for n in names if n != 'none']}; pick one")
        self.report_to = list(dict.fromkeys(n for n in names if n != "none")) or ["none"]

    @property
    def trackers(self) -> list[str]:
        """The trackers to log to (empty for 'none')."""
        return [n for n in self.report_to if n != "none"]


__all__ = ["LoraOptions", "ModelOptions", "PromptOptions", "PreferenceOptions", "ScoreOptions", "GenerationOptions",
           "OptimOptions", "AccumulationOptions", "ScheduleOptions", "StepOptions", "RunOptions", "HubOptions",
           "EvalOptions", "LoggingOptions"]
