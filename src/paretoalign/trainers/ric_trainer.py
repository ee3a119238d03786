"""RiC: Rewards-in-Context — one model steered by the target scores written into its prompt.

Reference: Yang et al. 2024, "Rewards-in-Context: Multi-objective Alignment of Foundation Models
with Dynamic Preference Adjustment" (ICML 2024, arXiv 2402.10207); public code YangRui2015/RiC.
The maths (normalisation, tags, mappings, goals, quantile filter) is in :mod:`paretoalign.ric`;
this module only orchestrates:

1. **Offline stage** (steps ``1 .. offline_steps``): every response of ``--pairs`` (both sides of a
   pair, as the reference's ``build_dataset``) is scored on the K objectives (the data's own scores
   where every response has one, else the objectives score it), normalised with statistics saved in
   the run, and written into its prompt (``<rm1_score> s1 <rm2_score> s2``); one supervised step is
   the negative log-likelihood of a batch of responses, on the response tokens and EOS only (EOS is
   always appended: the reference repository's later fix for non-terminating generations).
2. **Online rounds** (the last ``online_rounds`` steps; the DPA trainer's sample → score → select →
   fine-tune loop): prompts are drawn with outer-boundary targets, one completion each is sampled and
   scored, the completions above the 0.7-quantile on any objective join a growing online set (each
   labelled with the scores it *obtained*, as the reference relabels them), and ``online_steps``
   supervised steps run on that set plus ``num_origin_samples`` offline samples passing the same
   filter, at a constant ``online_learning_rate``.

At inference a preference is mapped to targets (:func:`paretoalign.ric.map_preference`):
``paretoalign evaluate RUN --preference 0.7,0.3`` or ``paretoalign front --method ric``.

Resume: every offline step's batch and every round's prompts, goals and samples are functions of
(seed, step, process); the online set is saved in each checkpoint (JSON in trainer_state.json), so a
killed run resumes exactly where its last checkpoint left it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from paretoalign import run_dir
from paretoalign.data.preference_pairs import load_preference_data, prompt_key
from paretoalign.data.prompts import load_prompts, split_prompts
from paretoalign.errors import ConfigError, DataError, ParetoAlignError
from paretoalign.models import (
    TINY_NAME,
    check_batch_fits,
    kv_bytes_per_token,
    load_tokenizer,
    logit_bytes_per_token,
)
from paretoalign.objectives import build_objective_set
from paretoalign.ric import RewardStats, fit_stats, quantile_keep, reward_prompt, sample_goals
from paretoalign.rollout import count_overlong, generate, render_prompt
from paretoalign.sequences import encode_responses, response_token_logps
from paretoalign.trainers import base, sharding
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.adaptation import (
    fine_tuned_policy,
    make_accelerator,
    set_deepspeed_micro_batch,
)
from paretoalign.trainers.ric_config import RicConfig
from paretoalign.trainers.tracking import preflight

ONLINE_KEY = "ric_online"  # trainer_state.json: the online set so far


def offline_samples(data, names: list, signs: list, rescore: bool) -> tuple[list, list, np.ndarray | None]:
    """The distinct (prompt, response) samples of preference ``data`` (both sides of every pair) and, when
    every one carries a finite score for every objective (and not ``rescore``), those scores oriented
    by ``signs`` (higher is better) ``[N, K]``; else None (the objectives score them)."""
    seen, prompts, responses, scores = set(), [], [], []
    for pair in data.pairs:
        for text, sc in ((pair.chosen, pair.chosen_scores), (pair.rejected, pair.rejected_scores)):
            key = (prompt_key(pair.prompt), text)
            if key in seen or not str(text).strip():
                continue
            seen.add(key)
            prompts.append(pair.prompt)
            responses.append(text)
            scores.append([sc.get(n, math.nan) for n in names])
    arr = np.asarray(scores, dtype=np.float64).reshape(len(scores), len(names))
    if rescore or not len(arr) or not np.isfinite(arr).all():
        return prompts, responses, None
    return prompts, responses, arr * np.asarray(signs, dtype=np.float64)


class RicTrainer(base.StepTrainer):
    """Orchestrates RiC's offline stage and online rounds; the maths is in :mod:`paretoalign.ric`."""

    progress_desc = "ric"

    def __init__(self, config: RicConfig, model=None, tokenizer=None, objectives=None, data=None, prompts=None,
                 accelerator=None):
        self.config = cfg = config
        preflight(cfg)  # trackers' libraries, the Hub: refused before any work
        self.accelerator = acc = accelerator or make_accelerator(config)
        sharding.check_config(acc, cfg)
        self.out = Path(cfg.output_dir)
        if data is None and not cfg.pairs:
            raise ConfigError("--pairs is required: RiC fine-tunes on scored responses (both sides of each pair); "
                              "`paretoalign pairs` makes such data from the model's own samples")
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
        check_batch_fits(cfg.batch_size, cfg.max_prompt_length + max(cfg.max_response_length, cfg.max_new_tokens),
                         logit_bytes_per_token(len(self.tokenizer)), "--batch-size", acc.device.type)
        if cfg.online_rounds:
            check_batch_fits(cfg.online_prompts, cfg.max_prompt_length + cfg.max_new_tokens,
                             kv_bytes_per_token(cfg.model, cfg.allow_download), "--online-prompts (generation)",
                             acc.device.type)
        self.resume_from = ckpt_lib.start_run(acc, self.out, cfg, cfg.resume, cfg.overwrite,
                                              cfg.total_steps, "online_rounds").checkpoint
        self.objectives = objectives or build_objective_set(cfg.objectives, self.tokenizer, cfg.nan_policy)
        self.names = list(self.objectives.names)
        self.K = len(self.names)
        if data is None:
            data = load_preference_data(cfg.pairs, format=cfg.pairs_format, max_rows=cfg.max_pairs,
                                        allow_download=cfg.allow_download)
        self._build_offline(data)
        if prompts is None and cfg.online_rounds:
            prompts, _held = split_prompts(load_prompts(cfg.prompts, column=cfg.prompt_column,
                                                        allow_download=cfg.allow_download),
                                           cfg.heldout_fraction, cfg.seed)
        self.prompts = list(prompts or [])
        if cfg.online_rounds and not self.prompts:
            raise DataError(f"{cfg.prompts}: no training prompts for RiC's online rounds")

        self._rebuildable_tiny_base = model is None and cfg.model == TINY_NAME
        policy, optimizer, self.scheduler, state = fine_tuned_policy(cfg, model, self.tokenizer,
                                                                     max(cfg.offline_steps, 1), self.resume_from)
        self.start_step = int(state.get("step", 0))
        # {"prompt", "response", "scores" (normalised, obtained)}: the online set, saved in every checkpoint
        self.online: list[dict] = list(state.get(ONLINE_KEY, []))
        set_deepspeed_micro_batch(acc, cfg.batch_size)
        self.model, self.optimizer = ckpt_lib.prepare_training(acc, policy, optimizer, self.scheduler,
                                                               self.resume_from)

    # ------------------------------------------------------------------------------------------
    def _build_offline(self, data) -> None:
        """Score (or read the scores of) every offline response, fit the statistics, keep the
        normalised scores the prompts will carry."""
        cfg = self.config
        prompts, responses, scores = offline_samples(data, self.names, self.objectives.signs.tolist(), cfg.rescore)
        if len(responses) < 2:
            raise DataError(f"{data.name}: RiC needs at least 2 distinct responses; got {len(responses)}")
        self.scored_by = "data"
        if scores is None:
            self.scored_by = "objectives"
            texts = [render_prompt(p, self.tokenizer, cfg.use_chat_template, cfg.system_prompt) for p in prompts]
            raw, valid = self.objectives.rewards(texts, responses)
            keep = valid.cpu().numpy()
            prompts = [p for p, k in zip(prompts, keep) if k]
            responses = [r for r, k in zip(responses, keep) if k]
            scores = raw.double().cpu().numpy()[keep]
        self.stats: RewardStats = fit_stats(scores, self.names, cfg.bounds, cfg.seed)
        self.off_prompts, self.off_responses = prompts, responses
        self.off_scores = self.stats.normalise(scores)
        conditioned = [reward_prompt(p, s) for p, s in zip(prompts, self.off_scores)]
        long = count_overlong(conditioned, self.tokenizer, cfg.use_chat_template, cfg.max_prompt_length)
        if long:
            raise DataError(f"{long} offline prompt(s) with their score tags exceed --max-prompt-length "
                            f"{cfg.max_prompt_length} tokens; truncation would cut the tags. Raise it or drop them")

    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    @property
    def total_steps(self) -> int:
        return self.config.total_steps

    # ------------------------------------------------------------------------------------------
    def _sft_step(self, prompts: list, responses: list, scores: np.ndarray) -> float:
        """One optimiser step of NLL on the responses (and EOS) given their score-conditioned prompts."""
        cfg, acc = self.config, self.accelerator
        conditioned = [reward_prompt(p, s) for p, s in zip(prompts, scores)]
        batch = encode_responses(self.tokenizer, conditioned, responses, cfg.max_prompt_length,
                                 cfg.max_response_length, cfg.use_chat_template, cfg.system_prompt).to(acc.device)
        self.model.train()
        logp = response_token_logps(self.model, batch)
        m = batch.response_mask.to(logp.dtype)
        loss = -(logp * m).sum() / m.sum().clamp(min=1.0)
        acc.backward(loss)
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def offline_step(self, step: int) -> dict:
        cfg, acc = self.config, self.accelerator
        t0 = time.perf_counter()
        lr = self.current_lr()
        g = np.random.default_rng([cfg.seed, step, acc.process_index])
        idx = g.choice(len(self.off_responses), size=min(cfg.batch_size, len(self.off_responses)), replace=False)
        loss = self._sft_step([self.off_prompts[i] for i in idx], [self.off_responses[i] for i in idx],
                              self.off_scores[idx])
        self.scheduler.step()
        row = {"step": step, "stage": "offline", "loss": loss, "lr": lr}
        for k, name in enumerate(self.names):
            row[f"target/{name}"] = float(self.off_scores[idx, k].mean())
        row = self._mean_over_processes(row)
        row["time_step"] = time.perf_counter() - t0
        return row

    def _mean_over_processes(self, row: dict) -> dict:
        """The row's numbers averaged over the processes (as DPA's rounds): what metrics.jsonl reports."""
        acc = self.accelerator
        if acc.num_processes > 1:
            keys = sorted(k for k, v in row.items() if isinstance(v, (int, float)) and k not in ("step", "round"))
            t = acc.reduce(torch.tensor([float(row[k]) for k in keys], device=acc.device, dtype=torch.float64), "mean")
            row.update(dict(zip(keys, t.tolist())))
        return row

    def round_inputs(self, r: int) -> tuple[list, np.ndarray]:
        """This process's prompts and outer-boundary goals of online round ``r`` (1-based): a function of
        (seed, round, process) only."""
        cfg, acc = self.config, self.accelerator
        P = cfg.online_prompts
        g = np.random.default_rng([cfg.seed, 7_001, r, acc.process_index])
        idx = g.choice(len(self.prompts), size=P, replace=len(self.prompts) < P)
        goals = sample_goals(P, self.stats.low, self.stats.high, g)
        return [self.prompts[int(i)] for i in idx], goals

    def online_round(self, r: int) -> dict:
        cfg, acc = self.config, self.accelerator
        t0 = time.perf_counter()
        prompts, goals = self.round_inputs(r)
        conditioned = [reward_prompt(p, s) for p, s in zip(prompts, goals)]
        long = count_overlong(conditioned, self.tokenizer, cfg.use_chat_template, cfg.max_prompt_length)
        if long:
            raise ParetoAlignError(f"round {r}: {long} prompt(s) with their score tags exceed --max-prompt-length "
                                   f"{cfg.max_prompt_length} tokens; raise it or drop the long prompts")
        torch.manual_seed(cfg.seed * 7919 + r * 31 + acc.process_index)  # sampling is a function of the round
        with sharding.full_weights(acc, self.model):  # the sampler reads every weight
            ro = generate(self.unwrapped, self.tokenizer, conditioned, num_generations=1,
                          max_new_tokens=cfg.max_new_tokens, max_prompt_length=cfg.max_prompt_length,
                          temperature=cfg.temperature, top_p=cfg.top_p, use_chat_template=cfg.use_chat_template,
                          system_prompt=cfg.system_prompt, backend=cfg.generation_backend)
        t_gen = time.perf_counter() - t0
        # scored on the user's prompt, without the tags (as the reference scores prompt + response)
        plain = [render_prompt(p, self.tokenizer, cfg.use_chat_template, cfg.system_prompt) for p in prompts]
        raw, valid = self.objectives.rewards(plain, ro.completions)
        raw, valid = raw.double().cpu().numpy(), valid.cpu().numpy()
        obtained = self.stats.normalise(np.where(valid[:, None], raw, 0.0))
        ok = valid & np.array([bool(c.strip()) for c in ro.completions])
        keep = np.zeros(len(ok), dtype=bool)
        keep[ok] = quantile_keep(obtained[ok], cfg.quantile)
        new = [{"prompt": p, "response": c, "scores": s.tolist()}
               for p, c, s, k in zip(prompts, ro.completions, obtained, keep) if k]
        if acc.num_processes > 1:  # one online set on every process (and in every checkpoint)
            from accelerate.utils import gather_object

            new = gather_object(new)
        self.online.extend(new)
        # offline samples passing the same filter, a fresh draw each round
        g = np.random.default_rng([cfg.seed, 7_003, r, acc.process_index])
        pool = np.flatnonzero(quantile_keep(self.off_scores, cfg.quantile))
        origin = g.permutation(pool)[: cfg.num_origin_samples]
        mix_p = [self.off_prompts[i] for i in origin] + [s["prompt"] for s in self.online]
        mix_r = [self.off_responses[i] for i in origin] + [s["response"] for s in self.online]
        mix_s = np.concatenate([self.off_scores[origin].reshape(-1, self.K),
                                np.asarray([s["scores"] for s in self.online], dtype=np.float64).reshape(-1, self.K)])
        if not mix_r:
            raise ParetoAlignError(f"round {r}: nothing to fine-tune on (no sample passed the quantile filter and "
                                   "--num-origin-samples is 0)")
        for group in self.optimizer.param_groups:
            group["lr"] = cfg.online_lr
        losses = []
        for _ in range(cfg.online_steps):
            idx = g.choice(len(mix_r), size=min(cfg.batch_size, len(mix_r)), replace=False)
            losses.append(self._sft_step([mix_p[i] for i in idx], [mix_r[i] for i in idx], mix_s[idx]))
        row = {"step": self.config.offline_steps + r, "stage": "online", "round": r,
               "loss": float(np.mean(losses)), "loss_first": losses[0], "lr": cfg.online_lr,
               "kept": int(keep.sum()), "samples": int(len(keep)), "nan_skipped": int((~valid).sum()),
               "online_set": len(self.online), "origin_samples": int(len(origin))}
        for k, name in enumerate(self.names):
            row[f"reward/{name}"] = float(raw[valid, k].mean()) if valid.any() else float("nan")
            row[f"target/{name}"] = float(goals[:, k].mean())
            row[f"obtained/{name}"] = float(obtained[ok, k].mean()) if ok.any() else float("nan")
        row = self._mean_over_processes(row)
        row.update(time_generate=t_gen, time_step=time.perf_counter() - t0)
        if not math.isfinite(row["loss"]):
            raise ParetoAlignError(f"round {r}: the fine-tuning loss is not finite; the last checkpoint is intact, "
                                   "lower --online-learning-rate and --resume")
        return row

    # ------------------------------------------------------------------------------------------
    # the run lifecycle's protocol (trainers/base.py) ------------------------------------------------
    def step(self, step: int) -> dict:
        if step <= self.config.offline_steps:
            return self.offline_step(step)
        return self.online_round(step - self.config.offline_steps)

    def postfix(self, row: dict) -> dict:
        return {"stage": row["stage"], "loss": f"{row['loss']:.3f}"}

    def should_save(self, step: int) -> bool:
        return step > self.config.offline_steps or step % self.config.save_steps == 0

    def checkpoint_extra(self) -> dict:
        return {ONLINE_KEY: self.online}

    def summary(self, rows: list[dict], seconds: float) -> dict:
        cfg = self.config
        out = {"method": "ric", "objectives": self.names, "steps": len(rows), "seconds": seconds,
               "offline_samples": len(self.off_responses), "scored_by": self.scored_by,
               "online_set": len(self.online), "mapping": cfg.mapping, "reward_stats": self.stats.__dict__}
        off = [r for r in rows if r.get("stage") == "offline"]
        if off:
            out["loss"] = {"first": off[0]["loss"], "last": off[-1]["loss"]}  # the offline stage's NLL
            out["examples"] = len(self.off_responses)
        on = [r for r in rows if r.get("stage") == "online"]
        for name in self.names:
            if on:
                out[name] = {"first": on[0][f"reward/{name}"], "last": on[-1][f"reward/{name}"]}
        return out

    def _save_model(self, folder: Path, state: dict | None = None) -> None:
        """The policy (``state``: its whole state dict when sharded) and the score statistics."""
        sharding.save_pretrained(self.unwrapped, folder / run_dir.POLICY, state)
        self.stats.save(folder)  # targets mean nothing without the scale they were trained on

    def save_final(self) -> Path:
        cfg = self.config
        meta = {"base_model": cfg.model, "method": "ric", "objectives": self.objectives.describe(),
                "ric": {"names": self.names, "mapping": cfg.mapping, "bounds": cfg.bounds, "eos_appended": True,
                        "scored_by": self.scored_by, "offline_samples": len(self.off_responses)},
                "value_head": False}
        return ckpt_lib.save_final(self.accelerator, self.out, self._save_model, self.tokenizer, self.unwrapped,
                                   meta, cfg.total_steps, cfg.seed if self._rebuildable_tiny_base else None, model=self.model)


__all__ = ["RicTrainer", "offline_samples"]
