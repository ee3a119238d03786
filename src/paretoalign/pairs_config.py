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

    # --- MAPL's prompt-side pairs (Sun et al. 2025, arXiv 2505.12845) ----------------------------
    mapl: bool = field(
        False, help="Also write MAPL's prompt-side pairs (intra.jsonl: for each response, a prompt whose appended "
        "instructions it satisfies vs one it violates, labelled by the instructions' verifiers; inter.jsonl: the "
        "pairs on instruction-augmented prompts, a reconstruction) for `train --method mapl` and `reward-model "
        "train --rc-bt`; the schema is in paretoalign.data.prompt_pairs.")
    pairs_in: Optional[str] = field(
        None, help="With --mapl: build from this file or folder instead of sampling --model: preference pairs (any "
        "format `train --pairs` reads; copied to pairs.jsonl) or rows of prompt + response (or completion).")
    instructions: list = field(
        ["max_words", "include_keyword", "start_with"], help="With --mapl: instruction kinds to draw from "
        "(max_words, min_words, include_keyword, exclude_keyword, start_with, end_with).")
    instructions_per_prompt: int = field(2, help="With --mapl: distinct instructions appended per prompt (fewer "
                                         "where a kind has none for the response).")
    mapl_rules: list = field(
        ["all_vs_some", "some_vs_none"], help="With --mapl: how x_w and x_l differ: 'all_vs_some' (x_w: all "
        "satisfied, x_l: at least one violated), 'some_vs_none' (x_w: at least one satisfied, x_l: none).")
    mapl_inter: bool = field(True, help="With --mapl: also write inter.jsonl from the pairs (where there are pairs).")
    mapl_inter_label: Optional[str] = field(
        None, help="With --mapl: the label that decides which response of a pair is the chosen one of the inter "
        "level (default: the first objective's, or the pairs file's first label).")
    mapl_inter_tries: int = field(3, help="With --mapl: draws per instruction kind when looking for one that "
                                  "separates a pair's responses.")

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
        for name in ("instructions", "mapl_rules"):
            v = getattr(self, name)
            setattr(self, name, [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else list(v))
        if self.pairs_in is not None and not self.mapl:
            raise ConfigError("--pairs-in builds MAPL's prompt-side pairs from a file: give --mapl too")
        if self.mapl:
            from paretoalign.instructions import PAIR_RULES, parse_instruction_kinds  # torch: at run time only

            self.instructions = parse_instruction_kinds(self.instructions)
            if not self.mapl_rules:
                raise ConfigError(f"--mapl-rules is empty; choose from {', '.join(PAIR_RULES)}")
            for r in self.mapl_rules:
                if r not in PAIR_RULES:
                    raise ConfigError(f"unknown MAPL pair rule {r!r}; available: {', '.join(PAIR_RULES)}")
            if self.instructions_per_prompt < 1 or self.mapl_inter_tries < 1:
                raise ConfigError("instructions_per_prompt and mapl_inter_tries must be >= 1; got "
                                  f"{self.instructions_per_prompt} and {self.mapl_inter_tries}")
