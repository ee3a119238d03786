"""The options of ``paretoalign pairs`` (:class:`PairsConfig`), apart from the code that samples and
scores (:mod:`paretoalign.pairs`) so that the command line builds its parser without importing torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, field
from paretoalign.errors import ConfigError
from paretoalign.objectives.spec import split_objective_specs

__all__ = ["PairsConfig"]


@dataclass
class PairsConfig:
    """Options of ``paretoalign pairs``."""

    model: str = field("tiny", help="Model that samples the completions (usually the policy you will train).")
    objectives: list = field(["sentiment", "length"], help="Objectives that score every completion.")
    prompts: str = field("builtin", help="Prompt set; only its training split is used (the held-out split stays unseen).")
    prompt_column: str = field("prompt", help="Column holding the prompt in --prompts.")
    heldout_fraction: float = field(0.15, help="Held-out fraction, as in training (the same split).")
    max_prompts: Optional[int] = field(None, help="Use at most this many training prompts.")
    num_completions: int = field(4, help="Completions sampled per prompt (>= 2).")
    pairing: Literal["all", "adjacent", "best_worst"] = field(
        "all", help="'all': every two completions of a prompt (n(n-1)/2 pairs); 'adjacent': disjoint pairs "
        "(1-2, 3-4, ...); 'best_worst': per objective, its best vs its worst completion.")
    max_new_tokens: int = field(48, help="Completion length in tokens.")
    temperature: float = field(1.0, help="Sampling temperature.")
    top_p: float = field(1.0, help="Nucleus sampling.")
    batch_size: int = field(16, help="Prompts per generation batch (rows = this x --num-completions; 64 rows use a "
                            "CPU's cores well).")
    generation_backend: Literal["hf", "hf-generate", "vllm"] = field(
        "hf", help="'hf': paretoalign's packed decode loop where the model is Llama-like, else transformers' generate; "
        "'vllm': a vLLM engine (GPU; pip install 'paretoalign[vllm]'); "
        "'hf-generate': always generate (slower; same distribution).")
    max_prompt_length: int = field(256, help="Prompts longer than this many tokens are truncated from the left.")
    system_prompt: Optional[str] = field(None, help="Optional system message.")
    use_chat_template: bool = field(True, help="Render prompts with the tokenizer's chat template.")
    seed: int = field(0, help="Seed of the prompt split and of sampling.")
    output_dir: str = field("data/pairs", help="Dataset folder to write.")
    overwrite: bool = field(False, help="Replace an existing dataset in --output-dir.")
    min_untied_pairs: int = field(
        32, help="Refuse to write a set in which some objective has fewer untied pairs than this (a tie teaches "
        "nothing: the offline methods learn only from pairs whose label on their objective is not a tie).")
    force: bool = field(False, help="Write the pairs even below --min-untied-pairs (e.g. a smoke test).")
    allow_download: bool = field(False, help="Let --model and reward models be fetched from a hub.")
    progress: bool = field(True, help="Show a progress bar.")

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        if isinstance(self.objectives, str):
            self.objectives = split_objective_specs(self.objectives)
        self.objectives = list(self.objectives)
        from paretoalign.rollout import check_backend  # torch: at run time, not while --help builds

        check_backend(self.generation_backend)
        if not self.objectives:
            raise ConfigError("--objectives is empty")
        if self.num_completions < 2:
            raise ConfigError(f"num_completions must be >= 2 to make pairs; got {self.num_completions}")
