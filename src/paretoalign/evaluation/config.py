"""The options of ``paretoalign evaluate`` (:class:`EvalConfig`), apart from the code that runs it
(:mod:`.evaluate`) so that the command line builds its parser without importing torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_choice, field, split_list
from paretoalign.errors import ConfigError
from paretoalign.objectives.spec import split_objective_specs

__all__ = ["EvalConfig"]


@dataclass
class EvalConfig:
    """Options of ``paretoalign evaluate`` (``None`` means: take it from the run, else the default shown)."""

    target: str = field("", cli=False, help="A run folder, a checkpoint folder (RUN/checkpoints/step-N), or a model (folder, cached id, 'smollm2-135m-instruct', 'tiny').")
    objectives: Optional[list] = field(None, help="Objective specs (default: the run's objectives; required for a model).")
    prompts: Optional[str] = field(None, help="Prompt set (default: the run's --prompts, else 'builtin').")
    prompt_column: Optional[str] = field(None, help="Column holding the prompt (default: the run's, else 'prompt').")
    split: Literal["heldout", "train", "all"] = field("heldout", help="Which part of the prompt set: the held-out split (default), train, or all.")
    heldout_fraction: Optional[float] = field(None, help="Held-out fraction of the split (default: the run's, else 0.15).")
    split_seed: Optional[int] = field(None, help="Seed of the train/held-out split (default: the run's --seed, else 0).")
    num_prompts: Optional[int] = field(None, help="Evaluate only the first N prompts of the split.")
    max_new_tokens: Optional[int] = field(None, help="Completion length cap (default: the run's, else 48).")
    temperature: float = field(0.7, help="Sampling temperature.")
    top_p: float = field(1.0, help="Nucleus sampling.")
    do_sample: bool = field(True, help="Sample (true) or decode greedily (false).")
    seed: int = field(1234, help="Generation seed (completions depend on it and on --batch-size).")
    batch_size: int = field(64, help="Prompts per generation batch (64 rows use a CPU's cores well).")
    generation_backend: Literal["hf", "hf-generate", "vllm"] = field(
        "hf", help="'hf': paretoalign's packed decode loop where the model is Llama-like, else transformers' generate; "
        "'vllm': a vLLM engine (GPU; pip install 'paretoalign[vllm]'); "
        "'hf-generate': always generate (slower; same distribution, other samples for a seed).")
    system_prompt: Optional[str] = field(None, help="System message (default: the run's).")
    direction: Optional[list] = field(
        None, help="Steer a DPA model: a direction over the objectives (e.g. 0.8,0.6; normalised to unit length), "
        "written into the system message with the run's direction template.")
    direction_template: Optional[str] = field(None, help="Template for --direction (default: the run's, else DPA's).")
    preference: Optional[list] = field(
        None, help="Steer a model trained for every preference by a preference over the objectives (e.g. 0.7,0.3; "
        "normalised to sum 1): RiC maps it to target scores (the run's --mapping), DPA uses the direction w/|w|.")
    targets: Optional[list] = field(
        None, help="RiC: the target scores themselves, in the run's normalised units (e.g. 1.5,-0.5), instead of "
        "--preference; clipped to the trained range.")
    mapping: Optional[str] = field(None, help="RiC: preference-to-targets mapping linf, l2 or linear (default: the run's).")
    use_chat_template: Optional[bool] = field(None, help="Apply the chat template (default: the run's, else true).")
    baseline: str = field("auto", help="Win rates against: 'auto' (a run's base model; none for a model), 'none', or another target.")
    output: Optional[str] = field(None, help="Where to write eval.json (default: RUN/eval.json, CHECKPOINT/eval.json, or ./eval-<model>.json).")
    num_samples: int = field(8, help="Sample completions kept in the 'samples' list (all completions are stored anyway).")
    nan_policy: Literal["fail", "skip"] = field("fail", help="A NaN/inf score: 'fail' (error naming the objective) or 'skip' (left out of that objective's statistics).")
    mod: Optional[list] = field(
        None, help="MOD (multi-objective decoding, Shi et al. 2024) in place of a target: decode from K endpoints' "
        "combined next-token distributions, given as name=RUN,name=RUN (run folders, checkpoints or models trained "
        "from one base model; objectives and prompts default to the first endpoint's run).")
    mod_weights: Optional[list] = field(None, help="MOD: one weight per --mod endpoint, on the simplex (e.g. 0.6,0.4).")
    divergence: str = field(
        "reverse_kl", help="MOD: the regulariser the endpoints were trained with: reverse_kl (PPO, DPO: softmax of the "
        "weighted log-probabilities), forward_kl (weighted harmonic mean) or alpha:A (0 < A < 1).")
    # one flag on the command line, --no-cache (cli.py); YAML may say `cache: false`
    cache: bool = field(True, cli=False, help="Reuse cached completions and scores (see the module docs).")
    allow_download: bool = field(False, help="Let models be fetched from a hub (off: local only).")

    def __post_init__(self):
        check_choice("split", self.split, ("heldout", "train", "all"))
        from paretoalign.rollout import check_backend  # torch: at run time, not while --help builds

        check_backend(self.generation_backend)
        if isinstance(self.direction, str):
            self.direction = split_list(self.direction)
        if self.direction is not None and self.system_prompt is not None:
            raise ConfigError("--direction writes the system message itself; drop --system-prompt")
        check_choice("nan_policy", self.nan_policy, ("fail", "skip"))
        self._check_steering()
        self._check_mod()
        if not self.target and self.mod is None:
            raise ConfigError("evaluate needs a target: a run folder, a checkpoint folder or a model (or --mod)")
        if isinstance(self.objectives, str):
            self.objectives = split_objective_specs(self.objectives)
        elif self.objectives is not None:
            self.objectives = split_list(self.objectives)
        for name in ("batch_size", "num_prompts", "max_new_tokens"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"{name} must be >= 1; got {v!r}")
        if not self.temperature > 0 and self.do_sample:
            raise ConfigError(f"temperature must be > 0 when sampling; got {self.temperature!r} (use --do-sample false for greedy)")

    def _check_steering(self) -> None:
        """--preference / --targets / --mapping: numbers, one way of steering at a time."""
        for name in ("preference", "targets"):
            v = getattr(self, name)
            if v is None:
                continue
            try:
                vals = [float(x) for x in split_list(v)]
            except (TypeError, ValueError):
                raise ConfigError(f"--{name} must be numbers, one per objective; got {v!r}") from None
            if not vals or not all(math.isfinite(x) for x in vals):
                raise ConfigError(f"--{name} must be finite numbers, one per objective; got {v!r}")
            setattr(self, name, vals)
        if self.preference is not None and self.targets is not None:
            raise ConfigError("--preference and --targets both steer a RiC model; give one")
        if (self.preference is not None or self.targets is not None) and self.direction is not None:
            raise ConfigError("--direction and --preference/--targets both steer the model; give one")
        if (self.preference is not None or self.targets is not None) and self.mod is not None:
            raise ConfigError("--mod takes its preference as --mod-weights; --preference/--targets steer one run")
        if self.mapping is not None:
            check_choice("mapping", self.mapping, ("linf", "l2", "linear"))
            if self.preference is None:
                raise ConfigError("--mapping maps a --preference to RiC targets; give --preference")

    def _check_mod(self) -> None:
        """--mod, --mod-weights, --divergence: each problem is one error line."""
        if self.mod is None:
            if self.mod_weights is not None:
                raise ConfigError("--mod-weights needs --mod (the endpoints it weighs)")
            if self.divergence != "reverse_kl":
                raise ConfigError("--divergence needs --mod (it is MOD's combination rule)")
            return
        from paretoalign.mod import parse_divergence  # torch: at run time, not while --help builds
        from paretoalign.preferences import SUM_TOLERANCE, validate_weights

        if self.target:
            raise ConfigError(f"--mod replaces the target; drop {self.target!r} (the endpoints are the runs in --mod)")
        self.mod = split_list(self.mod)
        if len(self.mod) < 2:
            raise ConfigError(f"--mod needs at least two endpoints (one per objective), as name=RUN,name=RUN; got {self.mod}")
        names = [m.partition("=")[0] if "=" in m else m for m in self.mod]
        if any("=" in m and not m.partition("=")[2] for m in self.mod):
            raise ConfigError(f"--mod entries are name=RUN (or RUN); got {self.mod}")
        if len(set(names)) != len(names):
            raise ConfigError(f"--mod endpoint names must differ; got {names}")
        if self.mod_weights is None:
            raise ConfigError(f"--mod needs --mod-weights: one weight per endpoint ({', '.join(names)}), on the simplex")
        validate_weights(self.mod_weights, len(self.mod), names, normalize=True)  # count, NaN, sign: its messages
        values = [float(x) for x in split_list(self.mod_weights)]
        total = math.fsum(values)
        if abs(total - 1.0) > SUM_TOLERANCE:
            raise ConfigError(f"--mod-weights {values} sum to {total:g}, not 1: MOD's weights lie on the simplex "
                              "(one per endpoint, >= 0, summing to 1)")
        self.mod_weights = [v / total for v in values]  # 0.6 stays 0.6 (the cache key reads it)
        rule, alpha = parse_divergence(self.divergence)
        self.divergence = rule if alpha is None else f"alpha:{alpha:g}"
        if self.direction is not None:
            raise ConfigError("--direction steers a DPA model; it does not combine with --mod")
        if self.generation_backend != "hf":
            raise ConfigError(f"--mod decodes with paretoalign's own loop; --generation-backend {self.generation_backend} "
                              "does not apply (leave it at hf)")
