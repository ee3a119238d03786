"""DPA: directional preference alignment by preference-conditioned rejection-sampling fine-tuning.

Reference: Wang et al. 2024, "Arithmetic Control of LLMs for Diverse User Preferences: Directional
Preference Alignment with Multi-Objective Rewards" (arXiv 2402.18571).  Each round:

1. draw training prompts and, for each, a direction v (a unit vector in objective space,
   :func:`paretoalign.preferences.sample_directions`), written into a system message;
2. sample ``num_candidates`` completions of the current policy for each conditioned prompt;
3. score them with the K objectives (on the user's prompt, without the direction) and keep the
   one maximising vᵀr(x, y);
4. fine-tune on the kept (conditioned prompt, completion) pairs (negative log-likelihood of the
   completion tokens, exactly the sampled tokens).

The trained model is steered at inference by the same system message:
``paretoalign evaluate RUN --direction 0.8,0.6`` or a ``paretoalign front --method dpa`` sweep.

Documented choices: vᵀr uses the objectives' raw (oriented) scores by default, as the paper's reward
model put all objectives on one 0-100 scale; put objectives on comparable scales (e.g. heads of one
reward model) or the larger one dominates the selection, or set ``utility_normalization="group"``
(our extension: each objective standardised over a prompt's candidates before vᵀr).  Candidates with a non-finite score are dropped
(``nan_policy=skip``) or stop the run (``fail``).  A round is the unit of checkpointing: a killed
run resumes after its last completed round, with the same prompts and directions.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from paretoalign import run_dir
from paretoalign.data.prompts import load_prompts, split_prompts
from paretoalign.errors import ParetoAlignError
from paretoalign.models import (
    TINY_NAME,
    check_batch_fits,
    kv_bytes_per_token,
    load_tokenizer,
    logit_bytes_per_token,
)
from paretoalign.objectives import build_objective_set
from paretoalign.preferences import (
    check_direction_template,
    conditioned_prompt,
    direction_from_angle,
    direction_prompt,
    sample_directions,
)
from paretoalign.rollout import count_overlong, generate
from paretoalign.sequences import ResponseBatch, response_token_logps
from paretoalign.trainers import base, sharding
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.adaptation import (
    epoch_indices,
    fine_tuned_policy,
    make_accelerator,
    set_deepspeed_micro_batch,
)
from paretoalign.trainers.dpa_config import DPAConfig
from paretoalign.trainers.tracking import preflight


def select_best(scores: torch.Tensor, valid: torch.Tensor, directions: torch.Tensor, n: int,
                normalization: str = "none") -> tuple[torch.Tensor, torch.Tensor]:
    """Rejection sampling: per prompt, the candidate maximising vᵀr.  ``scores [P*n, K]`` (grouped by
    prompt), ``valid [P*n]``, ``directions [P, K]`` -> (row index of the best per prompt [P],
    utilities vᵀr [P, n]); a prompt without a valid candidate gets index -1.

    ``normalization="group"`` standardises each objective over a prompt's valid candidates first
    (an extension for objectives on different scales; "none" is the paper's raw vᵀr)."""
    P = directions.shape[0]
    r = scores.view(P, n, -1).double()
    if normalization == "group":
        v = valid.view(P, n, 1).double()
        cnt = v.sum(1, keepdim=True).clamp(min=1)
        mean = (r * v).sum(1, keepdim=True) / cnt
        std = ((((r - mean) ** 2) * v).sum(1, keepdim=True) / cnt).sqrt()
        r = torch.where(v > 0, (r - mean) / (std + 1e-6), torch.zeros_like(r))
    elif normalization != "none":
        raise ValueError(f"normalization must be 'none' or 'group'; got {normalization!r}")
    u = (r * directions.view(P, 1, -1).double()).sum(-1)
    u = torch.where(valid.view(P, n), u, torch.full_like(u, -math.inf))
    best = u.argmax(1)
    rows = torch.arange(P) * n + best
    rows = torch.where(torch.isfinite(u.max(1).values), rows, torch.full_like(rows, -1))
    return rows, u


class DPATrainer(base.StepTrainer):
    """Orchestrates DPA's rounds; the direction maths is in :mod:`paretoalign.preferences`."""

    def __init__(self, config: DPAConfig, model=None, tokenizer=None, objectives=None, prompts=None, accelerator=None):
        self.config = cfg = config
        preflight(cfg)  # trackers' libraries, the Hub: refused before any work
        self.accelerator = acc = accelerator or make_accelerator(config)
        sharding.check_config(acc, cfg)
        self.out = Path(cfg.output_dir)
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
        seq = cfg.max_prompt_length + cfg.max_new_tokens
        check_batch_fits(cfg.prompts_per_round * cfg.num_candidates, seq,
                         kv_bytes_per_token(cfg.model, cfg.allow_download),
                         "--prompts-per-round x --num-candidates (generation)", acc.device.type)
        check_batch_fits(cfg.batch_size, seq, logit_bytes_per_token(len(self.tokenizer)), "--batch-size",
                         acc.device.type)
        self.resume_from = ckpt_lib.start_run(acc, self.out, cfg, cfg.resume, cfg.overwrite,
                                              cfg.rounds, "rounds").checkpoint
        self.objectives = objectives or build_objective_set(cfg.objectives, self.tokenizer, cfg.nan_policy)
        self.names = list(self.objectives.names)
        self.K = len(self.names)
        check_direction_template(cfg.direction_template, self.names)
        if prompts is None:
            prompts, _held = split_prompts(load_prompts(cfg.prompts, column=cfg.prompt_column, allow_download=cfg.allow_download), cfg.heldout_fraction, cfg.seed)
        self.prompts = list(prompts)

        self._rebuildable_tiny_base = model is None and cfg.model == TINY_NAME
        policy, optimizer, self.scheduler, state = fine_tuned_policy(cfg, model, self.tokenizer, cfg.rounds,
                                                                     self.resume_from)
        self.start_step = int(state.get("step", 0))
        set_deepspeed_micro_batch(acc, cfg.batch_size)
        self.model, self.optimizer = ckpt_lib.prepare_training(acc, policy, optimizer, self.scheduler,
                                                               self.resume_from)

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------
    def round_inputs(self, r: int) -> tuple[list, torch.Tensor]:
        """This process's prompts and directions of round ``r`` (1-based): a function of (seed, round,
        process) only, so a resumed run sees exactly what it would have."""
        cfg, acc = self.config, self.accelerator
        P = cfg.prompts_per_round
        start = ((r - 1) * acc.num_processes + acc.process_index) * P
        out = [self.prompts[i] for i in epoch_indices(cfg.seed, len(self.prompts), start, P)]
        g = torch.Generator().manual_seed(cfg.seed * 100_003 + r * 1009 + acc.process_index)
        if cfg.angles:
            pick = torch.randint(0, len(cfg.angles), (P,), generator=g)
            return out, torch.stack([direction_from_angle(cfg.angles[int(i)]) for i in pick])
        return out, sample_directions(P, self.K, g, cfg.min_angle, cfg.max_angle)

    def round(self, r: int) -> dict:
        cfg, acc = self.config, self.accelerator
        t0 = time.perf_counter()
        lr = self.current_lr()
        prompts, dirs = self.round_inputs(r)
        conditioned = [conditioned_prompt(p, direction_prompt(v, self.names, cfg.direction_template)) for p, v in zip(prompts, dirs)]
        self._check_direction_survives(conditioned, r)
        torch.manual_seed(cfg.seed * 7919 + r * 31 + acc.process_index)  # sampling is a function of the round
        with sharding.full_weights(acc, self.model):  # the sampler reads every weight
            ro = generate(self.unwrapped, self.tokenizer, conditioned, num_generations=cfg.num_candidates,
                          max_new_tokens=cfg.max_new_tokens, max_prompt_length=cfg.max_prompt_length,
                          temperature=cfg.temperature, top_p=cfg.top_p, use_chat_template=cfg.use_chat_template,
                          backend=cfg.generation_backend)
        t_gen = time.perf_counter() - t0
        scores, valid = self.objectives.rewards(ro.prompt_texts, ro.completions)  # the user's prompt, no direction
        rows, util = select_best(scores.cpu(), valid.cpu(), dirs, cfg.num_candidates, cfg.utility_normalization)
        keep = rows[rows >= 0]
        # every process must run the same number of optimiser steps (DDP) and fail together
        fewest = int(acc.gather(torch.tensor([keep.numel()], device=acc.device)).min()) if acc.num_processes > 1 \
            else keep.numel()
        if fewest == 0:
            raise ParetoAlignError(f"round {r}: a process had no prompt with a candidate scored finitely on every "
                                   "objective (nan_policy=skip dropped them all); check the objectives")
        dev = ro.input_ids.device
        batch = ResponseBatch(ro.input_ids, ro.attention_mask, ro.completion_mask, ro.prompt_length).select(keep.to(dev))
        losses = self._fine_tune(batch, r)
        sel, cand = scores[keep.to(scores.device)], scores[valid]
        finite_u, best_u = util[torch.isfinite(util)], util.max(1).values
        row = {"step": r, "loss": float(np.mean(losses)) if losses else float("nan"),
               "loss_first": losses[0] if losses else float("nan"), "sft_steps": len(losses),
               "utility/selected": float(best_u[torch.isfinite(best_u)].mean()),
               "utility/candidates": float(finite_u.mean()) if finite_u.numel() else float("nan"),
               "selected": int(keep.numel()), "samples": int(valid.numel()), "nan_skipped": int((~valid).sum())}
        for k, name in enumerate(self.names):
            row[f"reward/{name}"] = float(sel[:, k].mean())
            row[f"candidates/{name}"] = float(cand[:, k].mean()) if cand.numel() else float("nan")
            row[f"direction/{name}"] = float(dirs[:, k].mean())
        if acc.num_processes > 1:
            keys = sorted(k for k in row if k != "step")
            t = acc.reduce(torch.tensor([float(row[k]) for k in keys], device=acc.device), "mean")
            row.update(dict(zip(keys, t.tolist())))
        row.update(lr=lr, time_generate=t_gen, time_step=time.perf_counter() - t0)
        if not math.isfinite(row["loss"]):
            raise ParetoAlignError(f"round {r}: the fine-tuning loss is not finite; the last checkpoint is intact, "
                                   "lower --learning-rate and --resume")
        return row

    def _fine_tune(self, batch: ResponseBatch, r: int) -> list[float]:
        """NLL of the kept completions (mean over their tokens), ``sft_epochs`` passes of ``batch_size``.

        The number of steps per pass is fixed by ``prompts_per_round`` (the same on every process, as
        DDP needs); when some prompts kept nothing (``nan_policy=skip``) the kept samples are cycled."""
        cfg, acc = self.config, self.accelerator
        n = batch.input_ids.shape[0]
        P = cfg.prompts_per_round
        g = np.random.default_rng([cfg.seed, r, acc.process_index])
        self.model.train()
        losses = []
        for _ in range(cfg.sft_epochs):
            order = g.permutation(n)
            order = np.resize(order, P) if n < P else order  # cycle: same step count everywhere
            for s in range(0, P, cfg.batch_size):
                mb = batch.select(torch.as_tensor(order[s : s + cfg.batch_size], device=batch.input_ids.device))
                logp = response_token_logps(self.model, mb)
                m = mb.response_mask.to(logp.dtype)
                loss = -(logp * m).sum() / m.sum().clamp(min=1.0)
                acc.backward(loss)
                if cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                losses.append(float(loss.detach()))
        return losses

    def _check_direction_survives(self, conditioned: list, r: int) -> None:
        """Prompts are cut from the left at ``max_prompt_length``, which would cut the direction (the
        system message comes first): refuse rather than train direction-blind."""
        cfg = self.config
        n = count_overlong(conditioned, self.tokenizer, cfg.use_chat_template, cfg.max_prompt_length)
        if n:
            raise ParetoAlignError(
                f"round {r}: {n} prompt(s) with their direction exceed --max-prompt-length {cfg.max_prompt_length} "
                "tokens; truncation would cut the direction. Raise --max-prompt-length or drop the long prompts")

    # ------------------------------------------------------------------------------------------
    # the run lifecycle's protocol (trainers/base.py): a step is a round, each one checkpointed ------
    @property
    def total_steps(self) -> int:
        return self.config.rounds

    @property
    def start_round(self) -> int:
        return self.start_step

    progress_desc = "dpa rounds"

    def step(self, r: int) -> dict:
        return self.round(r)

    def step_loss(self, row: dict) -> None:
        return None  # a round without selected samples has no loss; the weights are still checked

    def postfix(self, row: dict) -> dict:
        return {"v.r": f"{row['utility/selected']:.3f}", "loss": f"{row['loss']:.3f}"}

    def should_save(self, step: int) -> bool:
        return True

    def summary(self, rows: list[dict], seconds: float) -> dict:
        cfg = self.config
        out = {"method": "dpa", "objectives": self.names, "steps": len(rows), "rounds": len(rows),
               "seconds": seconds, "direction_template": cfg.direction_template}
        if rows:
            for name in self.names:
                out[name] = {"first": rows[0][f"reward/{name}"], "last": rows[-1][f"reward/{name}"],
                             "weight": float(np.mean([r[f"direction/{name}"] for r in rows]))}
            out["utility"] = {"first": rows[0]["utility/selected"], "last": rows[-1]["utility/selected"]}
        return out

    def _save_model(self, folder: Path, state: dict | None = None) -> None:
        """The policy; ``state``: its whole state dict when sharded (from the module otherwise)."""
        sharding.save_pretrained(self.unwrapped, folder / run_dir.POLICY, state)

    def save_final(self) -> Path:
        cfg = self.config
        meta = {"base_model": cfg.model, "method": "dpa", "objectives": self.objectives.describe(),
                "direction_names": self.names, "direction_template": cfg.direction_template, "value_head": False}
        return ckpt_lib.save_final(self.accelerator, self.out, self._save_model, self.tokenizer, self.unwrapped,
                                   meta, cfg.rounds, cfg.seed if self._rebuildable_tiny_base else None, model=self.model)


__all__ = ["DPATrainer", "select_best"]
