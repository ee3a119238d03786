"""One run lifecycle for every step-based trainer (online, offline, DPA).

A trainer implements the small :class:`Trainer` protocol — what one step does, what it saves, how
its summary reads — and :func:`run` owns the rest, the same for every method: the progress bar,
``metrics.jsonl`` and the experiment trackers (``--report-to``, :mod:`.tracking`), the held-out
evaluation every ``--eval-steps`` (:mod:`.heldout_eval`, in the step's row), the NaN guard,
checkpoints (with the learning-rate schedule), the final model, ``summary.json``, the run folder's
lock (claimed, validated and resumed by :func:`paretoalign.trainers.checkpoint.start_run` in the
trainer's set-up, before any model loads) and, last, ``--push-to-hub``.

In the style of torchtune's recipe protocol: a trainer's ``__init__`` is its set-up (load, adapt,
restore a checkpoint), :meth:`Trainer.step` its training step, and everything a run folder promises
lives here and in :mod:`paretoalign.run_dir` once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol

from tqdm.auto import tqdm

from paretoalign import run_dir
from paretoalign.config_utils import config_to_dict
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers import sharding, tracking
from paretoalign.trainers.heldout_eval import eval_due


class Trainer(Protocol):
    """What :func:`run` needs from a trainer.

    Attributes:
        config: the run's config (``progress``, ``save_steps`` when it checkpoints by steps).
        accelerator: the ``accelerate.Accelerator`` the run uses.
        out: the run folder.
        start_step: the last step done before this process started (0, or the resumed checkpoint's).
        total_steps: the step (or round) the run ends at.
        progress_desc: the progress bar's label.
        model: the prepared model whose trainable parameters the NaN guard checks.
        heldout_eval: the run's :class:`~paretoalign.trainers.heldout_eval.HeldoutEval` (None: no
            ``--eval-steps``).
    """

    config: object
    accelerator: object
    model: object
    out: Path
    start_step: int
    total_steps: int
    progress_desc: str
    heldout_eval: object

    def step(self, step: int) -> dict:
        """One optimisation step (or round), 1-based; returns its metrics row (with ``step``)."""

    def evaluate(self) -> dict:
        """The held-out evaluation's metrics-row fields (called when ``--eval-steps`` says so)."""

    def step_loss(self, row: dict) -> float | None:
        """The row's loss for the NaN guard (None: the step may have no loss, e.g. an empty round)."""

    def postfix(self, row: dict) -> dict:
        """Live values for the progress bar."""

    def should_save(self, step: int) -> bool:
        """Whether to checkpoint after ``step`` (the last step always is)."""

    def save_checkpoint(self, step: int) -> Path:
        """Write ``checkpoints/step-N`` (every process calls it)."""

    def save_final(self) -> Path:
        """Write ``final/`` (every process calls it)."""

    def summary(self, rows: list[dict], seconds: float) -> dict:
        """``summary.json``'s content from the run's metrics rows."""


def run(trainer: Trainer) -> dict:
    """Run ``trainer`` from its start step to its last; returns the summary (also in summary.json)."""
    acc, out, cfg = trainer.accelerator, trainer.out, trainer.config
    trackers = tracking.open_trackers(cfg, out, acc, config_to_dict(cfg), trainer.start_step)
    heldout = getattr(trainer, "heldout_eval", None)
    bar = None
    if acc.is_main_process and getattr(cfg, "progress", False):
        bar = tqdm(total=trainer.total_steps, initial=trainer.start_step, desc=trainer.progress_desc,
                   dynamic_ncols=True)
    t_start = time.perf_counter()
    try:
        for step in range(trainer.start_step + 1, trainer.total_steps + 1):
            row = trainer.step(step)
            if heldout is not None and eval_due(step, cfg.eval_steps, trainer.total_steps):
                row.update(trainer.evaluate())  # in the step's row: truncated and redone with it on --resume
            if acc.is_main_process:
                run_dir.append_metrics(out, row)
            trackers.log(row, step)
            ckpt_lib.check_finite(step, trainer.step_loss(row), trainer.model)  # before anything is saved
            if bar is not None:
                bar.set_postfix(trainer.postfix(row))
                bar.update(1)
            if trainer.should_save(step) or step == trainer.total_steps:
                trainer.save_checkpoint(step)
        if bar is not None:
            bar.close()
        trainer.save_final()
    finally:
        trackers.close()
    rows = run_dir.read_metrics(out) if acc.is_main_process else []
    summary = trainer.summary(rows, time.perf_counter() - t_start)
    ckpt_lib.finish(acc, out, summary)
    if getattr(cfg, "push_to_hub", False) and acc.is_main_process:  # the run is complete: a failed upload loses nothing
        repo_id = tracking.push_final(cfg, out)
        print(f"[paretoalign] uploaded {Path(out) / run_dir.FINAL} to the Hub repository {repo_id}")
    return summary


class StepTrainer:
    """The protocol's defaults for a trainer that counts optimisation steps (``max_steps``) and
    checkpoints every ``save_steps``; a trainer overrides what differs (DPA counts rounds)."""

    def train(self) -> dict:
        """Run to the last step with checkpoints; returns the summary (also written to summary.json)."""
        return run(self)

    @property
    def total_steps(self) -> int:
        return self.config.max_steps

    @property
    def progress_desc(self) -> str:
        return self.config.method

    def step_loss(self, row: dict) -> float | None:
        return row["loss"]

    def should_save(self, step: int) -> bool:
        return step % self.config.save_steps == 0

    def checkpoint_extra(self) -> dict | None:
        """Method state saved in the checkpoint's trainer_state.json (None: nothing beyond the files)."""
        return None

    def save_checkpoint(self, step: int) -> Path:
        return ckpt_lib.save_checkpoint(self.accelerator, self.out, step, self._save_model, self.optimizer,
                                        self.config.save_total_limit, self.checkpoint_extra(),
                                        getattr(self, "scheduler", None), model=self.model)

    # held-out evaluation (--eval-steps): the run's HeldoutEval on the policy that generates ----------
    heldout_eval = None

    @property
    def eval_policy(self):
        """The model that generates in the held-out evaluation (the unwrapped policy)."""
        return self.unwrapped

    def evaluate(self) -> dict:
        with sharding.full_weights(self.accelerator, self.model):  # it samples: every weight, whole
            return self.heldout_eval(self.eval_policy, self.tokenizer)

    def current_lr(self) -> float:
        """The rate the next optimiser update uses (the lr column: the step's first update's)."""
        return float(self.optimizer.param_groups[0]["lr"])


__all__ = ["Trainer", "StepTrainer", "run"]
