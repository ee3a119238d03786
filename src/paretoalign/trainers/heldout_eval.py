"""Held-out evaluation while training (``--eval-steps``): every N steps and after the last, the policy
generates on held-out prompts and each objective's mean and standard error go into that step's
``metrics.jsonl`` row (``eval/<objective>``, ``eval/<objective>_se``, ``time_eval``), so they reach
the trackers with the training metrics and are truncated and redone with them on ``--resume``.

What is measured is what ``paretoalign evaluate`` measures by default, so the two agree: the first
``--eval-prompts`` of the held-out split of ``--prompts`` (``--heldout-fraction``, split by the run's
``--seed``), one completion per prompt (``--eval-samples`` more) sampled with evaluate's decoding
(seed 1234, temperature 0.7, top-p 1, batches of 64 prompts, the run's ``--max-new-tokens``, chat
template and system prompt), raw (unoriented) scores, mean and standard error of the mean over the
finite ones.  With one sample per prompt, ``eval/<objective>`` at step N is evaluate's mean on
``RUN/checkpoints/step-N --num-prompts <eval-prompts>``.

The training is not disturbed: every random state (torch CPU and CUDA, Python, NumPy) is restored
afterwards and the model's train/eval mode too, so a run trains identically with or without it.
Every process evaluates (an FSDP-sharded model generates only with all of them); the main one logs.

The generation and statistics are those of :mod:`paretoalign.evaluation.scoring`, written against
the layers both packages stand on (:func:`paretoalign.rollout.generate`, the objective set): the
trainers and the evaluation package never import each other (``tests/test_layering.py``).
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from paretoalign.data.prompts import load_prompts, split_prompts
from paretoalign.errors import ConfigError
from paretoalign.rollout import generate

# `paretoalign evaluate`'s defaults (EvalConfig): the numbers agree with an evaluation of the checkpoint
EVAL_SEED = 1234
EVAL_TEMPERATURE = 0.7
EVAL_TOP_P = 1.0
EVAL_BATCH_SIZE = 64
EVAL_MAX_NEW_TOKENS = 48  # a run without --max-new-tokens (offline)


@contextmanager
def preserved_rng():
    """Run the block, then put every random state back (torch CPU and this process's CUDA device,
    Python's, NumPy's global one)."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def eval_due(step: int, every: int | None, last: int) -> bool:
    """Whether step ``step`` evaluates: every ``every`` steps and at the ``last`` (None/0: never)."""
    return bool(every) and (step % every == 0 or step == last)


def mean_and_se(col: torch.Tensor) -> tuple[float, float, int]:
    """Mean, standard error of the mean (sample std / sqrt(n); 0 for one value) and n over the finite values."""
    col = col.double()
    col = col[torch.isfinite(col)]
    n = col.numel()
    if n == 0:
        return float("nan"), float("nan"), 0
    se = float(col.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    return float(col.mean()), se, n


@dataclass
class HeldoutEval:
    """One evaluation set-up: the prompts, the objectives and the decoding, fixed for the run."""

    prompts: list
    objectives: object  # an ObjectiveSet
    max_new_tokens: int
    use_chat_template: bool = True
    system_prompt: str | None = None
    backend: str = "hf"
    samples: int = 1

    @classmethod
    def from_config(cls, cfg, objectives) -> HeldoutEval | None:
        """The run's evaluation (None when ``--eval-steps`` is off); ``objectives``: the set to score with."""
        if not getattr(cfg, "eval_steps", None):
            return None
        if objectives is None or not len(objectives):
            raise ConfigError("--eval-steps needs objectives that score text (registered objectives such as length or "
                              "reward_model:...); these are only labels of the data: "
                              f"{', '.join(map(str, cfg.objectives))}")
        prompts = load_prompts(cfg.prompts, column=cfg.prompt_column, allow_download=cfg.allow_download)
        _train, held = split_prompts(prompts, cfg.heldout_fraction, cfg.seed)
        return cls(prompts=held[: cfg.eval_prompts], objectives=objectives,
                   max_new_tokens=getattr(cfg, "max_new_tokens", EVAL_MAX_NEW_TOKENS),
                   use_chat_template=cfg.use_chat_template, system_prompt=cfg.system_prompt,
                   backend=getattr(cfg, "generation_backend", "hf"), samples=cfg.eval_samples)

    @torch.no_grad()
    def completions(self, policy, tokenizer) -> tuple[list[str], list[str]]:
        """(rendered prompt texts, completions), ``samples`` per prompt, with the fixed seed and decoding."""
        texts: list[str] = []
        completions: list[str] = []
        torch.manual_seed(EVAL_SEED)
        for i in range(0, len(self.prompts), EVAL_BATCH_SIZE):
            r = generate(policy, tokenizer, self.prompts[i : i + EVAL_BATCH_SIZE], num_generations=self.samples,
                         max_new_tokens=self.max_new_tokens, temperature=EVAL_TEMPERATURE, top_p=EVAL_TOP_P,
                         do_sample=True, use_chat_template=self.use_chat_template, system_prompt=self.system_prompt,
                         backend=self.backend)
            texts += r.prompt_texts
            completions += r.completions
        return texts, completions

    def __call__(self, policy, tokenizer) -> dict:
        """Generate and score; the metrics-row fields (``eval/<objective>``, ``eval/<objective>_se``, ``time_eval``)."""
        t0 = time.perf_counter()
        was_training = policy.training
        policy.eval()
        try:
            with preserved_rng():
                texts, completions = self.completions(policy, tokenizer)
                scores = self.objectives.raw_scores(texts, completions)
        finally:
            policy.train(was_training)
        row = {}
        for k, name in enumerate(self.objectives.names):
            mean, se, _n = mean_and_se(scores[:, k])
            row[f"eval/{name}"] = mean
            row[f"eval/{name}_se"] = se
        row["time_eval"] = time.perf_counter() - t0
        return row


__all__ = ["HeldoutEval", "eval_due", "mean_and_se", "preserved_rng", "EVAL_SEED"]
