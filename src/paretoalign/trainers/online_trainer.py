"""The online multi-objective trainer: one rollout/scoring/logging path for PAMA, MORLHF, MGDA-UB and
multi-objective GRPO.

Each step: sample prompts -> generate completions -> score every objective (reward vector
``[N, K]``) -> per-objective advantages (GAE with one value head per objective, or group
baselines) -> the method's combiner (:mod:`paretoalign.losses.online`) -> one optimiser
step.  With ``--gradient-accumulation-steps M`` a step is M such rollouts of ``--batch-size``
prompts (micro-batches), each scored and given advantages and combiner weights on its own, whose
gradients are averaged into each optimiser step.  Scaling goes through accelerate: under ``accelerate launch`` each process draws its own
prompts, gradients are averaged by DDP/FSDP/DeepSpeed, and the combiners' inputs that must agree
across processes (PAMA's batch terms, MGDA's Gram matrix) are reduced first.

References: He & Maghsudi 2025 (PAMA, arXiv 2508.07768); Sener & Koltun 2018 (MGDA-UB);
Schulman et al. 2017 (PPO); Shao et al. 2024 (GRPO group baselines, for ``--advantage group``).
``mo-grpo`` is MORLHF's linear weights on group advantages with a k3 KL term, i.e. GRPO with several
rewards, as TRL's ``GRPOTrainer`` (``reward_weights`` with ``multi_objective_aggregation``):
``sum_then_normalize`` (TRL's default) standardises the weighted sum within each group (or, with
``--scale-rewards batch|none``, divides by the batch's std or not at all, as TRL's ``scale_rewards``);
``normalize_then_sum`` (GDPO, Liu et al. 2026, arXiv 2601.05242) standardises each objective within
its group, sums with the weights, then standardises over the batch.
"""

from __future__ import annotations

import copy
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from paretoalign import run_dir
from paretoalign.combiners import (
    group_normalize_objectives,
    linear_scalarize,
    normalize_then_sum,
    sum_then_normalize,
)
from paretoalign.data.prompts import load_prompts, split_prompts
from paretoalign.errors import ParetoAlignError, RunDirError
from paretoalign.losses import (
    gae,
    kl_k3,
    masked_mean,
    token_rewards,
    value_loss,
    whiten,
)
from paretoalign.losses.online import mgda_ub_loss, morlhf_loss, pama_loss
from paretoalign.models import (
    TINY_NAME,
    PolicyWithValueHeads,
    check_batch_fits,
    completion_logits,
    kv_bytes_per_token,
    load_causal_lm,
    load_tokenizer,
    logit_bytes_per_token,
)
from paretoalign.objectives import build_objective_set
from paretoalign.preferences import uniform_weights, validate_weights
from paretoalign.rollout import Rollout, generate, token_logprobs
from paretoalign.trainers import base, sharding
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.adaptation import (
    add_lora,
    enable_gradient_checkpointing,
    epoch_indices,
    make_accelerator,
    make_scheduler,
    micro_batch_backward,
    micro_batch_context,
    set_deepspeed_micro_batch,
)
from paretoalign.trainers.heldout_eval import HeldoutEval
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.tracking import preflight


def standardize_valid(adv: torch.Tensor, pool: torch.Tensor, pool_valid: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(a − mean) / (std + eps), the statistics taken over the valid entries of ``pool`` (GDPO's
    batch-level step after the per-objective group normalisation; eps as TRL's ``normalize_then_sum``).
    ``pool`` is this process's batch, or the batch gathered from every process, as TRL does."""
    sel = pool[pool_valid.bool()]
    if not sel.numel():
        return adv
    return (adv - sel.mean()) / (sel.std(unbiased=False) + eps)


def needs_reference(cfg: OnlineConfig) -> bool:
    """Whether a step reads the reference log-probs log π_ref: the KL penalty (GAE's token rewards, or the
    group advantage's k3 term) when ``kl_coef > 0``, and PAMA's ratio π_θ/π_ref (``--pama-ratio reference``).
    When nothing does, the trainer skips the reference forward, keeps no frozen copy for full fine-tuning,
    and logs ``kl`` as null (not measured); the updates are exactly those with the reference computed
    (β·KL with β = 0 adds nothing)."""
    return cfg.kl_coef > 0 or (cfg.method == "pama" and cfg.pama_ratio == "reference")


class OnlineTrainer(base.StepTrainer):
    """Orchestrates training; all maths lives in losses/ (losses/online.py for the combined losses) and combiners.

    Args:
        config: an :class:`OnlineConfig`.
        model, tokenizer: optional pre-built policy and tokenizer (default: loaded from ``config.model``).
        objectives: optional :class:`~paretoalign.objectives.ObjectiveSet` (default: built from ``config.objectives``).
        prompts: optional list of training prompts (default: ``config.prompts`` minus the held-out split).
        accelerator: optional ``accelerate.Accelerator`` (default: a new one).
    """

    # How MGDA-UB computes its Gram matrix (:func:`paretoalign.losses.online.mgda_ub_loss`): "factored" (one
    # backward through the output layer, exact) or "per_objective" (K backwards, the reference; benchmarks set it).
    mgda_gram = "factored"
    # (what, why) for a method that does not run sharded (FSDP, DeepSpeed) yet (sharding.refuse), else None
    sharded_refusal: tuple[str, str] | None = None

    def __init__(self, config: OnlineConfig, model=None, tokenizer=None, objectives=None, prompts=None, accelerator=None):
        self.config = cfg = config
        preflight(cfg)  # trackers' libraries, the Hub: refused before any work
        self.accelerator = accelerator or make_accelerator(config)
        acc = self.accelerator
        if self.sharded_refusal is not None:
            sharding.refuse(acc, *self.sharded_refusal)
        if cfg.method == "mgda-ub":
            # measured: FSDP had freed the gathered weights, ZeRO-2's gradient buckets and ZeRO-3's hooks failed
            sharding.refuse(acc, "MGDA-UB", "its Gram matrix takes a backward pass through the output layer before "
                                            "the loss's own, which the sharded gradient hooks do not expect")
        sharding.check_config(acc, cfg)
        self.out = Path(cfg.output_dir)
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
        self.tokenizer.padding_side = "left"
        seq = cfg.max_prompt_length + cfg.max_new_tokens
        check_batch_fits(cfg.batch_size * cfg.num_generations, seq, kv_bytes_per_token(cfg.model, cfg.allow_download),
                         "--batch-size x --num-generations (generation)", acc.device.type)
        check_batch_fits(cfg.batch_size * cfg.num_generations // cfg.num_mini_batches, seq,
                         logit_bytes_per_token(len(self.tokenizer)),
                         "--batch-size x --num-generations / --num-mini-batches (loss)", acc.device.type)
        # Claim and validate the run folder before any expensive loading: a mistake costs nothing.
        self.resume_from = ckpt_lib.start_run(acc, self.out, cfg, cfg.resume, cfg.overwrite,
                                              cfg.max_steps).checkpoint
        self.objectives = objectives or build_objective_set(cfg.objectives, self.tokenizer, cfg.nan_policy)
        self.heldout_eval = HeldoutEval.from_config(cfg, self.objectives)
        self.names = list(self.objectives.names)
        self.K = len(self.names)
        # The preference: MORLHF's linear weights; for PAMA / MGDA-UB the scales of their weight
        # solve (None = the unscaled method of the paper).
        self.weights = None
        if cfg.linear or cfg.weights is not None:
            raw = cfg.weights if cfg.weights is not None else uniform_weights(self.K).tolist()
            self.weights = validate_weights(raw, self.K, self.names, normalize=cfg.normalize_weights)
        self.preference = None if cfg.linear else self.weights
        if prompts is None:
            prompts, _heldout = split_prompts(
                load_prompts(cfg.prompts, column=cfg.prompt_column, allow_download=cfg.allow_download), cfg.heldout_fraction, cfg.seed
            )
        self.prompts = list(prompts)

        torch.manual_seed(cfg.seed)
        # The tiny base exists only in memory; save_final() rebuilds it from the seed when we built it.
        self._rebuildable_tiny_base = model is None and cfg.model == TINY_NAME
        policy = model if model is not None else load_causal_lm(cfg.model, self.tokenizer, cfg.seed, cfg.allow_download)
        self.ref_model = None
        self.uses_reference = self._needs_reference()
        if cfg.use_lora:
            policy = add_lora(policy, cfg)
        elif self.uses_reference:
            # Full fine-tuning keeps a frozen copy as the KL reference (when anything reads it).
            self.ref_model = copy.deepcopy(policy).eval().requires_grad_(False)
        enable_gradient_checkpointing(policy, cfg)
        wrapped = PolicyWithValueHeads(policy, self.K, with_values=cfg.uses_critic)
        params = [p for p in wrapped.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(cfg, optimizer, cfg.max_steps)
        self.start_step = 0
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from, wrapped)
        set_deepspeed_micro_batch(acc, cfg.batch_size * cfg.num_generations // cfg.num_mini_batches,
                                  cfg.gradient_accumulation_steps)
        self.model, self.optimizer = ckpt_lib.prepare_training(acc, wrapped, optimizer, self.scheduler,
                                                               self.resume_from)
        if self.ref_model is not None:
            self.ref_model.to(acc.device)
        if self.resume_from is not None:
            self._load_rng(self.resume_from)
        else:
            # Each process samples differently; the prompt order itself comes from the seed alone.
            torch.manual_seed(cfg.seed + 1000 * acc.process_index)
            random.seed(cfg.seed + acc.process_index)
            np.random.seed(cfg.seed + acc.process_index)

    def _needs_reference(self) -> bool:
        """Whether steps read log π_ref (:func:`needs_reference`; a subclass may always need it, as CGPO's KL gate)."""
        return needs_reference(self.config)

    # ------------------------------------------------------------------------------------------
    @property
    def unwrapped(self) -> PolicyWithValueHeads:
        return self.accelerator.unwrap_model(self.model)

    @property
    def eval_policy(self):
        return self.unwrapped.policy

    def prompts_for_step(self, step: int, micro: int | None = None) -> list:
        """This process's prompts at ``step`` (1-based): epochs of seeded permutations, a function
        of (seed, step, process) only, so a resumed run sees exactly the prompts it would have.
        All ``--gradient-accumulation-steps`` x ``--batch-size`` of them, or micro-batch ``micro``'s;
        they are those of one step at the effective batch size."""
        cfg, acc = self.config, self.accelerator
        per_step = cfg.batch_size * cfg.gradient_accumulation_steps
        start = ((step - 1) * acc.num_processes + acc.process_index) * per_step
        if micro is not None:
            start, per_step = start + micro * cfg.batch_size, cfg.batch_size
        return [self.prompts[i] for i in epoch_indices(cfg.seed, len(self.prompts), start, per_step)]

    def _ref_logprobs(self, rollout: Rollout) -> torch.Tensor:
        policy = self.unwrapped.policy
        args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length)
        with torch.no_grad():
            if self.ref_model is not None:
                logits = completion_logits(self.ref_model, *args)
            else:  # the inner model, past the sharded root: its weights gathered whole
                with sharding.full_weights(self.accelerator, self.model), policy.disable_adapter():
                    logits = completion_logits(policy, *args)
        return token_logprobs(logits, rollout.completion_ids, self.config.temperature)

    def _forward(self, input_ids, attention_mask, prompt_length):
        """Policy log-probs [N, T], the shared representation [N, T, H] they are computed from, values [N, T, K]."""
        logits, shared, values = self.model(input_ids, attention_mask, prompt_length)
        logp = token_logprobs(logits, input_ids[:, prompt_length:], self.config.temperature)
        if values is not None:
            values = values.float()
        return logp, shared, values

    # ------------------------------------------------------------------------------------------
    def _advantages(self, scores, valid, mask, old_logp, ref_logp, old_values):
        """Per-objective advantages [N, T, K] (normalised as the method wants) and value targets."""
        cfg = self.config
        N, T = mask.shape
        returns = None
        if cfg.advantage == "gae":
            # β = 0 without a reference: the zero KL adds exactly nothing, as β·KL would
            kl = old_logp - ref_logp if ref_logp is not None else torch.zeros_like(old_logp)
            rewards = token_rewards(scores, kl, mask, cfg.kl_coef)
            raw, returns = gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        else:
            G, acc = cfg.num_generations, self.accelerator
            s = scores.view(N // G, G, self.K)
            # the group statistics count scored samples only; unscored ones get a zero advantage (and are masked out)
            v = valid.view(N // G, G).bool()
            if cfg.linear and cfg.group_aggregation == "normalize_then_sum":
                adv = normalize_then_sum(s, self.weights.to(s.device), valid=v).reshape(N)  # [B*G]
                # GDPO's second step, over the global batch
                pool = (acc.gather(adv.contiguous()), acc.gather(valid.contiguous())) if acc.num_processes > 1 \
                    else (adv, valid)
                return standardize_valid(adv, *pool).reshape(N, 1).expand(N, T), None
            # --scale-rewards batch divides by the std over every process's batch, as TRL: gather, compute, keep ours
            full = cfg.scale_rewards == "batch" and acc.num_processes > 1
            s_all, v_all = (acc.gather(s.contiguous()), acc.gather(v.contiguous())) if full else (s, v)
            ours = slice(acc.process_index * (N // G), (acc.process_index + 1) * (N // G)) if full else slice(None)
            if cfg.linear:
                adv = sum_then_normalize(s_all, self.weights.to(s.device), valid=v_all,
                                         scale_rewards=cfg.scale_rewards)[ours].reshape(N)
                return adv.reshape(N, 1).expand(N, T), None
            raw = group_normalize_objectives(s_all, valid=v_all, scale_rewards=cfg.scale_rewards)[ours]
            return raw.reshape(N, 1, self.K).expand(N, T, self.K), None
        if cfg.linear:
            adv = linear_scalarize(raw, self.weights.to(raw.device))
            adv = whiten(adv, mask) if cfg.whiten_advantages else adv
            return adv, returns
        adv = whiten(raw, mask) if cfg.whiten_advantages else raw
        return adv, returns

    def _policy_loss(self, logratio, adv, mask, shared):
        cfg, acc = self.config, self.accelerator
        if cfg.linear:
            return morlhf_loss(logratio, adv, mask, cfg.clip_eps), self.weights
        if cfg.method == "pama":
            return pama_loss(
                logratio, adv, mask, cfg.clip_eps, cfg.pama_granularity, cfg.noon,
                reduce_mean=lambda x: acc.reduce(x, "mean") if acc.num_processes > 1 else x,
                preference=self.preference,
            )
        return mgda_ub_loss(
            logratio, adv, mask, cfg.clip_eps, shared,
            reduce_sum=lambda x: acc.reduce(x, "sum") if acc.num_processes > 1 else x,
            preference=self.preference, gram=self.mgda_gram,
        )

    def rollout(self, step: int, micro: int = 0) -> tuple[Rollout, torch.Tensor, torch.Tensor, float]:
        """Generate this process's completions for micro-batch ``micro`` of ``step`` and score them:
        (rollout, rewards [N, K], valid [N], seconds)."""
        cfg = self.config
        t0 = time.perf_counter()
        with sharding.full_weights(self.accelerator, self.model):  # the sampler reads every weight
            rollout = generate(
                self.unwrapped.policy, self.tokenizer, self.prompts_for_step(step, micro),
                num_generations=cfg.num_generations, max_new_tokens=cfg.max_new_tokens,
                max_prompt_length=cfg.max_prompt_length, min_new_tokens=cfg.min_new_tokens,
                temperature=cfg.temperature, top_p=cfg.top_p,
                use_chat_template=cfg.use_chat_template, system_prompt=cfg.system_prompt,
                backend=cfg.generation_backend,
            )
        t_gen = time.perf_counter() - t0
        scores, valid = self.objectives.rewards(rollout.prompt_texts, rollout.completions)
        device = rollout.input_ids.device
        return rollout, scores.to(device), valid.to(device), t_gen

    def step(self, step: int) -> dict:
        """One optimisation step at ``step`` (1-based): rollout and score each micro-batch, update; returns this step's metrics."""
        t0 = time.perf_counter()
        batches, t_gen = [], 0.0
        for micro in range(self.config.gradient_accumulation_steps):
            rollout, scores, valid, t = self.rollout(step, micro)
            batches.append((rollout, scores, valid))
            t_gen += t
        row = self.update_batches(batches)
        row = {"step": step, **row, "time_generate": t_gen, "time_step": time.perf_counter() - t0}
        if not all(math.isfinite(row[k]) for k in ("loss", "policy_loss")):
            raise ParetoAlignError(
                f"step {step}: the loss is not finite ({row['loss']}); the last checkpoint is intact, "
                "lower --learning-rate and --resume"
            )
        return row

    def update(self, rollout: Rollout, scores: torch.Tensor, valid: torch.Tensor) -> dict:
        """The optimisation part of a step on one scored rollout (the same for every method up to the
        combiner); returns metrics.  Separate from :meth:`rollout` so benchmarks can time it on a fixed batch."""
        return self.update_batches([(rollout, scores, valid)])

    def _prepare(self, rollout: Rollout, scores: torch.Tensor, valid: torch.Tensor, with_grad: bool) -> dict:
        """What a micro-batch's loss needs besides the policy's new log-probs: the mask, reference and
        old log-probs, advantages and value targets.  ``with_grad``: the single-pass update, whose one
        forward gives old and new log-probs (kept as ``logp``/``shared``/``values`` to differentiate)."""
        mask = rollout.completion_mask.to(torch.float32) * valid.unsqueeze(1).float()
        # None when nothing reads it (needs_reference): no reference forward at all.
        ref_logp = self._ref_logprobs(rollout) if self.uses_reference else None
        self.model.train()
        st = {"rollout": rollout, "mask": mask, "ref_logp": ref_logp}
        args = (rollout.input_ids, rollout.attention_mask, rollout.prompt_length)
        if with_grad:
            logp, shared, values = self._forward(*args)
            st.update(logp=logp, shared=shared, values=values, old_logp=logp.detach(),
                      old_values=values.detach() if values is not None else None)
        else:
            with torch.no_grad():
                st["old_logp"], _, st["old_values"] = self._forward(*args)
        st["adv"], st["returns"] = self._advantages(scores, valid, mask, st["old_logp"], ref_logp, st["old_values"])
        return st

    def _loss(self, st: dict, cur: torch.Tensor, logp, shared, values) -> tuple:
        """(loss, policy loss, value loss, KL loss, combiner weights) of the rows ``cur`` of a prepared micro-batch."""
        cfg = self.config
        device = logp.device
        m = st["mask"][cur]
        # PAMA as written in the paper takes the Noon-PPO ratio against the reference.
        base = st["ref_logp"] if (cfg.method == "pama" and cfg.pama_ratio == "reference") else st["old_logp"]
        logratio = logp - base[cur]
        policy_loss, w = self._policy_loss(logratio, st["adv"][cur], m, shared)
        loss = policy_loss
        vl = torch.zeros((), device=device)
        if values is not None:
            vclip = cfg.value_clip if cfg.value_clip > 0 else None
            vl = value_loss(values, st["old_values"][cur], st["returns"][cur], m, vclip)
            loss = loss + cfg.vf_coef * vl
        kl_loss = torch.zeros((), device=device)
        if cfg.advantage == "group" and cfg.kl_coef > 0:
            kl_loss = masked_mean(kl_k3(logp, st["ref_logp"][cur]), m)
            loss = loss + cfg.kl_coef * kl_loss
        return loss, policy_loss, vl, kl_loss, w

    def update_batches(self, batches: list[tuple[Rollout, torch.Tensor, torch.Tensor]]) -> dict:
        """The optimisation part of a step on its scored micro-batches ``[(rollout, scores, valid), ...]``:
        ``ppo_epochs`` x ``num_mini_batches`` optimiser steps, each on the gradients of that mini-batch of
        every micro-batch, averaged (the loss is the mean over the micro-batches; with DDP only the last
        one synchronises).  Each micro-batch has its own advantages and combiner weights.  Returns metrics."""
        cfg, acc = self.config, self.accelerator
        t0 = time.perf_counter()
        lr = self.current_lr()
        M = len(batches)
        single_pass = cfg.ppo_epochs == 1 and cfg.num_mini_batches == 1
        # several passes: the old log-probs and advantages of every micro-batch first, without gradients
        states = [None] * M if single_pass else [self._prepare(*b, with_grad=False) for b in batches]

        totals = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "kl_loss": 0.0}
        weight_sum = torch.zeros(self.K)
        terms = 0
        for _epoch in range(cfg.ppo_epochs):
            orders = [torch.randperm(b[0].input_ids.shape[0]) if cfg.num_mini_batches > 1 else None for b in batches]
            for j in range(cfg.num_mini_batches):
                for i, b in enumerate(batches):
                    N, device = b[0].input_ids.shape[0], b[0].input_ids.device
                    with micro_batch_context(acc, self.model, last=i == M - 1):  # the forward too (DDP)
                        if single_pass:
                            # The rollout policy is the current policy: one forward gives old and new log-probs.
                            st = states[i] = self._prepare(*b, with_grad=True)
                            logp, shared, values = st.pop("logp"), st.pop("shared"), st.pop("values")
                            cur = torch.arange(N, device=device)
                        else:
                            st, mb = states[i], N // cfg.num_mini_batches
                            order = orders[i] if orders[i] is not None else torch.arange(N)
                            cur = order[j * mb : (j + 1) * mb].to(device)
                            rollout = st["rollout"]
                            logp, shared, values = self._forward(
                                rollout.input_ids[cur], rollout.attention_mask[cur], rollout.prompt_length
                            )
                        loss, policy_loss, vl, kl_loss, w = self._loss(st, cur, logp, shared, values)
                        micro_batch_backward(acc, loss, M)
                    totals["loss"] += float(loss.detach())
                    totals["policy_loss"] += float(policy_loss.detach())
                    totals["value_loss"] += float(vl.detach())
                    totals["kl_loss"] += float(kl_loss.detach())
                    weight_sum += w.detach().float().cpu()
                    terms += 1
                if cfg.max_grad_norm > 0:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)

        # ---- metrics over every micro-batch, averaged over processes ----------------------------
        device = batches[0][0].input_ids.device
        scores = torch.cat([b[1] for b in batches])
        valid = torch.cat([b[2] for b in batches])
        lengths = torch.cat([b[0].completion_mask.sum(1).float() for b in batches])
        g_scores, g_valid = acc.gather(scores), acc.gather(valid)
        g_len = acc.gather(lengths)
        g_kl = None
        if self.uses_reference:
            kl = torch.cat([((st["old_logp"] - st["ref_logp"]) * st["rollout"].completion_mask).sum(1) for st in states])
            g_kl = acc.gather(kl)
        local = torch.tensor([totals[k] / terms for k in ("loss", "policy_loss", "value_loss", "kl_loss")], device=device)
        local = acc.reduce(local, "mean") if acc.num_processes > 1 else local
        weights = weight_sum / terms
        row = {}
        vmask = g_valid.bool()
        for k, name in enumerate(self.names):
            col = g_scores[vmask, k]
            row[f"reward/{name}"] = float(col.mean()) if col.numel() else float("nan")
            row[f"reward_std/{name}"] = float(col.std(unbiased=False)) if col.numel() else float("nan")
        for k, name in enumerate(self.names):
            row[f"weight/{name}"] = float(weights[k])
        row.update(
            kl=float(g_kl.mean()) if g_kl is not None else None,
            loss=float(local[0]),
            policy_loss=float(local[1]),
            value_loss=float(local[2]),
            kl_loss=float(local[3]),
            completion_length=float(g_len.mean()),
            nan_skipped=int((~vmask).sum()),
            samples=int(g_valid.numel()),
            lr=lr,
            time_update=time.perf_counter() - t0,
        )
        return row

    # the rest of the run lifecycle's protocol (trainers/base.py) --------------------------------------
    def postfix(self, row: dict) -> dict:
        # k1: the sampled sum over tokens of log pi_old - log pi_ref, unbiased for the sequence KL but noisy,
        # so a batch's mean can come out negative while the true KL is >= 0
        return {n: f"{row[f'reward/{n}']:.3f}" for n in self.names} | {"kl(k1)": "-" if row["kl"] is None else f"{row['kl']:.3f}"}

    def summary(self, rows: list[dict], seconds: float) -> dict:
        out = {"method": self.config.method, "objectives": self.names, "steps": len(rows), "seconds": seconds}
        if rows:
            n = max(1, min(5, len(rows) // 2))
            for name in self.names:
                first = float(np.nanmean([r[f"reward/{name}"] for r in rows[:n]]))
                last = float(np.nanmean([r[f"reward/{name}"] for r in rows[-n:]]))
                out[name] = {"first": first, "last": last, "weight": float(np.mean([r[f"weight/{name}"] for r in rows]))}
            out["window"] = n
        return out

    # ------------------------------------------------------------------------------------------
    def _save_model(self, folder: Path, state: dict | None = None) -> None:
        """The policy and value heads; ``state``: the whole model's state dict when sharded (from the module otherwise)."""
        m = self.unwrapped
        sharding.save_pretrained(m.policy, folder / run_dir.POLICY, sharding.part(state, "policy."))
        if m.value_head is not None:
            heads = sharding.part(state, "value_head.") or m.value_head.state_dict()
            save_file({k: v.contiguous() for k, v in heads.items()}, folder / "value_head.safetensors")

    def _load_policy(self, policy, ckpt: Path) -> None:
        """Restore the policy's trained weights from a checkpoint (HoE restores its routers instead)."""
        ckpt_lib.load_policy_state(policy, ckpt / run_dir.POLICY)

    def _load_checkpoint(self, ckpt: Path, wrapped: PolicyWithValueHeads) -> None:
        """The model's state and the step from ``ckpt`` (before ``prepare``; the optimizer's comes after it)."""
        self._load_policy(wrapped.policy, ckpt)
        if wrapped.value_head is not None:
            f = ckpt / "value_head.safetensors"
            if not f.is_file():
                raise RunDirError(f"{f} is missing: the value heads would restart from zero and the run would not "
                                  "continue exactly; restore it or start over with --overwrite")
            try:
                wrapped.value_head.load_state_dict(ckpt_lib.load_tensors(f))
            except RuntimeError as exc:
                raise RunDirError(f"{f}: the value heads do not fit this run ({str(exc)[:200]})") from None
        self.start_step = int(ckpt_lib.read_state(ckpt)["step"])

    def _load_rng(self, ckpt: Path) -> None:
        acc = self.accelerator
        ckpt_lib.load_rng(acc, ckpt, self.config.seed + 1000 * acc.process_index + self.start_step)

    def save_final(self) -> Path:
        """``final/``: the policy (adapter or full model) loadable with from_pretrained, plus tokenizer."""
        cfg = self.config
        meta = {
            "base_model": cfg.model,
            "method": cfg.method,
            "objectives": self.objectives.describe(),
            "value_head": self.unwrapped.value_head is not None,
        }
        return ckpt_lib.save_final(self.accelerator, self.out, self._save_model, self.tokenizer, self.unwrapped.policy,
                                   meta, cfg.max_steps, cfg.seed if self._rebuildable_tiny_base else None,
                                   model=self.model)
