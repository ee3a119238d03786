"""The options of ``paretoalign evaluate`` (:class:`EvalConfig`), apart from the code that runs it
(:mod:`.evaluate`) so that the command line builds its parser without importing torch."""

from __future__ import annotations

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
    use_chat_template: Optional[bool] = field(None, help="Apply the chat template (default: the run's, else true).")
    baseline: str = field("auto", help="Win rates against: 'auto' (a run's base model; none for a model), 'none', or another target.")
    output: Optional[str] = field(None, help="Where to write eval.json (default: RUN/eval.json, CHECKPOINT/eval.json, or ./eval-<model>.json).")
    num_samples: int = field(8, help="Sample completions kept in the 'samples' list (all completions are stored anyway).")
    nan_policy: Literal["fail", "skip"] = field("fail", help="A NaN/inf score: 'fail' (error naming the objective) or 'skip' (left out of that objective's statistics).")
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
        if not self.target:
            raise ConfigError("evaluate needs a target: a run folder, a checkpoint folder or a model")
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
