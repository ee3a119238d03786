"""CGPO through the online trainer: ``paretoalign train --method cgpo --cgpo-optimizer crpg|codpo|crraft``.

Xu et al. 2024, *The Perfect Blend: Redefining RLHF with Mixture of Judges* (arXiv 2409.20370), Algorithm 1
and its multi-task form.  No official code exists; where the paper's text was not at hand the loop follows
TRL's unmerged PRs #2155 (calibrated reward), #2159 (judges) and #2190 (``CGPOTrainer``), single-task only.
The maths is :mod:`paretoalign.losses.cgpo` (pure functions with exactness tests) and
:mod:`paretoalign.judges`; this file is the plumbing.  Each step, for every task (one, ``main``, without
``--tasks``) and every micro-batch (``--gradient-accumulation-steps``):

1. draw the task's ``batch_size`` prompts (epochs of seeded permutations of its prompts, seed = run seed +
   task index: a function of the step only, so a resumed run sees the prompts it would have);
2. sample k completions per prompt from the current policy;
3. score them: the reward r(x, y) is the task's first objective, or Σ_k w_k·score_k with ``weights``
   (oriented scores; the other objectives are logged); ``missing_eos_penalty`` is subtracted where a
   completion has no EOS;
4. judge them (:class:`paretoalign.judges.JudgeSet`, the pass-all indicator 1[(x, y) ∈ Σ] after
   ``judge_on_failure``); the prompt's reference answer, when the data has one, is the judges' gold;
5. calibrate: R_calib = σ(r(x, y) − r(x, ā)) (paper eq. 5 [V: PR #2155]) with ā the prompt's reference
   answer (``--baseline-column``, or a conversation's final assistant turn), else the reference policy's
   greedy answer (computed once per prompt, kept in checkpoints) — or the group mean, or none
   (``--calibration``);
6. the per-sample KL estimate KL_seq = Σ_t (log π_old − log π_ref) over the completion's tokens, the same
   estimate for the gate and the log (spec §4.9);
7. the task's loss: CRPG (:func:`~paretoalign.losses.cgpo.crpg_advantages` + ``crpg_loss``: REINFORCE on
   R_calib·1[Σ]·gate, sequence log-probabilities), CODPO (``codpo_select`` + ``codpo_loss`` on sequence
   log-probabilities of the pair, averaged over prompts with a pair) or CRRAFT (``crraft_select`` +
   ``crraft_loss``; the fallback ā is scored by a forward of the policy and the reference on it).

The step's loss is Σ_tasks mix_t · mean_micro L_t, one optimiser step (the paper's multi-task update with
fixed mixing weights; mix_t defaults to the task's share of the training prompts — a reading of the paper
[R], spec §4.5).  Samples that cannot be used (a NaN score under ``--nan-policy skip``, an undecided judge
under ``--judge-on-failure skip``, or a baseline that could not be scored) get no weight: CRPG leaves them
out of its baselines and mean, CODPO never picks them, CRRAFT never takes them as a winner.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from paretoalign.data.prompt_files import prompts_from_values
from paretoalign.data.prompts import load_prompts, prompt_text, split_prompts
from paretoalign.errors import ConfigError, DataError, ParetoAlignError, RunDirError
from paretoalign.judges import JudgeReport, JudgeSet, build_judge_set
from paretoalign.losses.cgpo import (
    CODPOPairs,
    calibrated_reward,
    codpo_loss,
    codpo_select,
    crpg_advantages,
    crpg_loss,
    crraft_loss,
    crraft_select,
    kl_gate,
    missing_eos_penalty,
)
from paretoalign.models import load_tokenizer
from paretoalign.objectives import ObjectiveSet, build_objective_set
from paretoalign.preferences import validate_weights
from paretoalign.rollout import Rollout, generate, render_prompt
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.adaptation import epoch_indices, micro_batch_backward, micro_batch_context
from paretoalign.trainers.cgpo_config import CGPOConfig, CGPOTask
from paretoalign.trainers.online_trainer import OnlineTrainer

STATE_KEY = "cgpo"  # the reference policy's greedy answers, in a checkpoint's trainer_state.json
PAPER = "Xu et al. 2024, The Perfect Blend: Redefining RLHF with Mixture of Judges"
ARXIV = "2409.20370"


@dataclass
class Task:
    """A task ready to train: its settings, objectives, judges, reward weights and training prompts.

    ``gold[i]`` is prompt i's reference answer (None: none in the data); ``greedy`` caches the reference
    policy's greedy answers ``{prompt index: (text, ended with EOS)}``; ``mix`` is the task's loss share."""

    spec: CGPOTask
    objectives: ObjectiveSet
    judges: JudgeSet
    weights: torch.Tensor | None
    prompts: list
    gold: list
    mix: float = 1.0
    prefix: str = ""
    greedy: dict = field(default_factory=dict)


@dataclass
class CGPOBatch:
    """One task's scored and judged micro-batch of B prompts with k completions each.

    ``rewards``/``penalised``/``calibrated``/``passed``/``usable``/``has_eos`` are ``[B, k]``; ``scores``
    ``[B·k, K]`` the oriented objective scores; ``report`` the judges' verdicts on the B·k completions (rows
    grouped by prompt); ``baseline_*`` describe ā per prompt (None without ``--calibration baseline``)."""

    task: int
    indices: list
    rollout: Rollout
    scores: torch.Tensor
    rewards: torch.Tensor
    penalised: torch.Tensor
    has_eos: torch.Tensor
    report: JudgeReport
    passed: torch.Tensor
    usable: torch.Tensor
    calibrated: torch.Tensor
    baseline_texts: list | None = None
    baseline_eos: torch.Tensor | None = None
    baseline_rewards: torch.Tensor | None = None
    baseline_valid: torch.Tensor | None = None
    baseline_report: JudgeReport | None = None
    time_generate: float = 0.0


def split_reference_answer(prompt, gold=None):
    """A conversation that ends with an assistant turn is (the conversation before it, its content as the
    reference answer); anything else is returned as it is, with ``gold``."""
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[-1], dict) \
            and prompt[-1].get("role") == "assistant":
        return list(prompt[:-1]), (gold if gold is not None else prompt[-1].get("content"))
    return prompt, gold


def has_eos(rollout: Rollout, eos_token_id) -> torch.Tensor:
    """``[N]`` bool: the completion ended with EOS (not cut by the token budget)."""
    ids, mask = rollout.completion_ids, rollout.completion_mask.bool()
    eos = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    hit = torch.zeros_like(mask)
    for e in eos:
        if e is not None:
            hit |= ids == e
    return (hit & mask).any(1)


def codpo_pairs(rewards: torch.Tensor, passed: torch.Tensor, usable: torch.Tensor) -> CODPOPairs:
    """:func:`~paretoalign.losses.cgpo.codpo_select` over each prompt's usable samples only (all of them in
    the usual case, where this is exactly ``codpo_select``)."""
    passed = passed.bool() & usable.bool()
    if bool(usable.all()):
        return codpo_select(rewards, passed)
    chosen, rejected, valid = codpo_select(torch.where(usable, rewards, 0.0), passed)
    for b in torch.nonzero(~usable.all(-1)).flatten().tolist():
        keep = torch.nonzero(usable[b]).flatten()
        if not keep.numel():
            valid[b] = False
            continue
        c, r, v = codpo_select(rewards[b, keep].unsqueeze(0), passed[b, keep].unsqueeze(0))
        chosen[b], rejected[b], valid[b] = keep[c[0]], keep[r[0]], v[0]
    return CODPOPairs(chosen, rejected, valid)


def _concat_rollouts(a: Rollout, b: Rollout, pad_id: int) -> Rollout:
    """One batch of ``a``'s rows then ``b``'s: prompts left-padded and completions right-padded to common
    lengths (one forward, so DDP sees one forward per backward)."""
    P, T = max(a.prompt_length, b.prompt_length), max(a.input_ids.shape[1] - a.prompt_length,
                                                      b.input_ids.shape[1] - b.prompt_length)

    def fit(r: Rollout):
        p, t = r.prompt_length, r.input_ids.shape[1] - r.prompt_length
        n, dev = r.input_ids.shape[0], r.input_ids.device
        ids = torch.cat([torch.full((n, P - p), pad_id, dtype=r.input_ids.dtype, device=dev), r.input_ids[:, :p],
                         r.input_ids[:, p:], torch.full((n, T - t), pad_id, dtype=r.input_ids.dtype, device=dev)], 1)
        am = r.attention_mask
        attn = torch.cat([torch.zeros(n, P - p, dtype=am.dtype, device=dev), am,
                          torch.zeros(n, T - t, dtype=am.dtype, device=dev)], 1)
        cm = torch.cat([r.completion_mask, torch.zeros(n, T - t, dtype=r.completion_mask.dtype, device=dev)], 1)
        return ids, attn, cm

    (ia, aa, ca), (ib, ab, cb) = fit(a), fit(b)
    return Rollout(a.prompts + b.prompts, a.prompt_texts + b.prompt_texts, a.completions + b.completions,
                   torch.cat([ia, ib]), torch.cat([aa, ab]), torch.cat([ca, cb]), P)


class CGPOTrainer(OnlineTrainer):
    """Trains CGPO through :class:`OnlineTrainer` (same arguments; ``prompts`` serve the single task).

    Public pieces for tests and benchmarks: :attr:`tasks`, :meth:`task_indices`, :meth:`rollout_task` (one
    scored, judged micro-batch) and :meth:`task_loss` (its loss and the optimiser's decisions)."""

    sharded_refusal = ("CGPO", "each process samples its reference answers when a prompt first needs one, and "
                               "gathering split weights needs every process at once")

    def __init__(self, config: CGPOConfig, model=None, tokenizer=None, objectives=None, prompts=None, accelerator=None):
        cfg = config
        specs = cfg.task_specs()
        tok = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
        # Everything a typo can break is built before the run folder is claimed or a model loads.
        top = objectives or build_objective_set(cfg.objectives, tok, cfg.nan_policy)
        sets: dict[tuple, ObjectiveSet] = {tuple(map(str, cfg.objectives)): top}
        tasks = []
        for spec in specs:
            where = "" if cfg.tasks is None else f"{cfg.tasks_label}: task {spec.name!r}: "
            if not spec.judges:
                raise ConfigError(f"{where}--method cgpo needs judges, the checks every completion must pass: e.g. "
                                  "--judges 'length(min=5,max=40,unit=words)' (see the judges' list in the README)"
                                  if cfg.tasks is None else f"{where}no judges; give judges: [...] (or --judges)")
            key = tuple(map(str, spec.objectives))
            try:
                if key not in sets:
                    sets[key] = build_objective_set(spec.objectives, tok, cfg.nan_policy)
                objs = sets[key]
                judges = build_judge_set(spec.judges, tok, objectives=list(objs), on_failure=spec.judge_on_failure)
                w = None if spec.weights is None else validate_weights(spec.weights, len(objs), objs.names,
                                                                       normalize=spec.normalize_weights)
            except ConfigError as e:
                raise ConfigError(f"{where}{e}") from None
            ps, gold = self._task_prompts(cfg, spec, prompts if cfg.tasks is None else None, where)
            tasks.append(Task(spec, objs, judges, w, ps, gold, mix=spec.mix if spec.mix else float(len(ps)),
                              prefix="" if cfg.tasks is None else f"task/{spec.name}/"))
        total = sum(t.mix for t in tasks)
        for t in tasks:
            t.mix = t.mix / total
        self.tasks = tasks
        super().__init__(cfg, model=model, tokenizer=tok, objectives=top, prompts=tasks[0].prompts,
                         accelerator=accelerator)
        if self.resume_from is not None:
            state = ckpt_lib.read_state(self.resume_from).get(STATE_KEY)
            if not isinstance(state, dict) or len(state.get("greedy", ())) != len(self.tasks):
                raise RunDirError(f"{self.resume_from}: the CGPO state (the reference policy's greedy answers) is "
                                  "missing; the run cannot continue exactly; start over with --overwrite")
            for task, cache in zip(self.tasks, state["greedy"]):
                task.greedy = {int(i): (str(text), bool(eos)) for i, (text, eos) in cache.items()}
        for task in self.tasks:
            n = sum(g is None for g in task.gold)
            if task.spec.calibration == "baseline" and n and self.accelerator.is_main_process:
                print(f"[cgpo] task {task.spec.name!r}: {n} of {len(task.gold)} training prompts have no reference "
                      "answer; their baseline is the reference policy's greedy answer")

    # ------------------------------------------------------------------------------------------
    @staticmethod
    def _task_prompts(cfg: CGPOConfig, spec: CGPOTask, given, where: str) -> tuple[list, list]:
        """A task's training prompts and reference answers.  A source (file, builtin, dataset) is split as
        ``--heldout-fraction`` splits it (the held-out part is for evaluation); an inline list (YAML) or
        the ``prompts`` argument is used whole."""
        try:
            if given is not None:
                raw, split = list(given), False
            elif isinstance(spec.prompts, list):
                raw, split = prompts_from_values(spec.prompts, f"{where}prompts", "prompts"), False
            else:
                raw, split = load_prompts(spec.prompts, column=spec.prompt_column, allow_download=cfg.allow_download), True
            if not raw:
                raise ConfigError(f"{where}no prompts")
            gold = [None] * len(raw)
            if spec.baseline_column:
                if not split:
                    raise ConfigError(f"{where}--baseline-column reads a column of a prompt file; inline prompts give "
                                      "their reference answer as a final assistant turn")
                answers = load_prompts(spec.prompts, column=spec.baseline_column, allow_download=cfg.allow_download)
                if any(not isinstance(a, str) for a in answers):
                    raise DataError(f"{where}{spec.prompts}: column {spec.baseline_column!r} must hold text answers")
                gold = list(answers)
        except DataError as e:
            raise DataError(f"{where}{e}" if where and not str(e).startswith(where) else str(e)) from None
        pairs = [split_reference_answer(p, g) for p, g in zip(raw, gold)]
        if split:
            keep, _heldout = split_prompts(list(range(len(pairs))), spec.heldout_fraction, cfg.seed)
            pairs = [pairs[i] for i in keep]
        return [p for p, _ in pairs], [g for _, g in pairs]

    def _needs_reference(self) -> bool:
        return True  # the KL gate, CODPO's ratios, CRRAFT's fallback and the logged KL all read log π_ref

    def task_indices(self, t: int, step: int, micro: int = 0) -> list[int]:
        """Task ``t``'s prompt indices for micro-batch ``micro`` of ``step`` on this process (the online
        trainer's rule, per task, seed = run seed + t)."""
        cfg, acc = self.config, self.accelerator
        B = self.tasks[t].spec.batch_size
        per_step = B * cfg.gradient_accumulation_steps
        start = ((step - 1) * acc.num_processes + acc.process_index) * per_step + micro * B
        return epoch_indices(cfg.seed + t, len(self.tasks[t].prompts), start, B)

    def _reward(self, task: Task, scores: torch.Tensor) -> torch.Tensor:
        """r(x, y): the first objective, or Σ w_k·score_k with the task's weights (oriented scores)."""
        return scores[:, 0] if task.weights is None else scores @ task.weights.to(scores.device, scores.dtype)

    def _generate(self, model, prompts: list, k: int, do_sample: bool, backend: str) -> Rollout:
        cfg = self.config
        return generate(model, self.tokenizer, prompts, num_generations=k, max_new_tokens=cfg.max_new_tokens,
                        max_prompt_length=cfg.max_prompt_length, min_new_tokens=cfg.min_new_tokens,
                        temperature=cfg.temperature, top_p=cfg.top_p, do_sample=do_sample,
                        use_chat_template=cfg.use_chat_template, system_prompt=cfg.system_prompt, backend=backend)

    def greedy_answers(self, prompts: list) -> tuple[list[str], list[bool]]:
        """The reference policy's greedy answers (the base model: LoRA adapters disabled, or the frozen copy),
        without touching the training RNG."""
        acc = self.accelerator
        policy = self.unwrapped.policy
        model, ctx = (self.ref_model, contextlib.nullcontext()) if self.ref_model is not None \
            else (policy, policy.disable_adapter())
        backend = "hf" if self.config.generation_backend == "vllm" else self.config.generation_backend
        with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []), ctx:
            r = self._generate(model, prompts, 1, False, backend)
        return list(r.completions), has_eos(r, self.tokenizer.eos_token_id).tolist()

    def baselines(self, t: int, indices: list[int], prompts: list) -> tuple[list[str], list[bool]]:
        """ā per prompt: the reference answer, else the (cached) greedy answer of the reference policy."""
        task = self.tasks[t]
        todo = list(dict.fromkeys(j for j, i in enumerate(indices) if task.gold[i] is None and i not in task.greedy))
        todo = list({indices[j]: j for j in todo}.values())  # a prompt drawn twice is answered once
        if todo:
            texts, eos = self.greedy_answers([prompts[j] for j in todo])
            for j, text, e in zip(todo, texts, eos):
                task.greedy[indices[j]] = (text, bool(e))
        out = [(task.gold[i], True) if task.gold[i] is not None else task.greedy[i] for i in indices]
        return [a for a, _ in out], [e for _, e in out]

    def _teacher_forced(self, prompts: list, answers: list[str], eos: list[bool]) -> Rollout:
        """(prompt, answer) rows laid out as a rollout (prompt left-padded as :func:`generate` renders and
        truncates it; the answer's tokens, then EOS where it had one, right-padded) for log-probabilities."""
        cfg, tok = self.config, self.tokenizer
        texts = [render_prompt(p, tok, cfg.use_chat_template, cfg.system_prompt) for p in prompts]
        tok.padding_side, side = "left", tok.truncation_side
        tok.truncation_side = "left"
        enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=cfg.max_prompt_length,
                  add_special_tokens=False)
        tok.truncation_side = side
        eos_id = tok.eos_token_id[0] if isinstance(tok.eos_token_id, (list, tuple)) else tok.eos_token_id
        seqs = [tok(a, add_special_tokens=False)["input_ids"] + ([eos_id] if e else []) for a, e in zip(answers, eos)]
        seqs = [s or [eos_id] for s in seqs]
        T = max(len(s) for s in seqs)
        comp = torch.full((len(seqs), T), tok.pad_token_id, dtype=enc["input_ids"].dtype)
        cmask = torch.zeros((len(seqs), T), dtype=torch.long)
        for i, s in enumerate(seqs):
            comp[i, : len(s)] = torch.tensor(s, dtype=comp.dtype)
            cmask[i, : len(s)] = 1
        dev = self.accelerator.device
        return Rollout(list(prompts), [prompt_text(p) for p in prompts], list(answers),
                       torch.cat([enc["input_ids"], comp], 1).to(dev),
                       torch.cat([enc["attention_mask"], cmask.to(enc["attention_mask"].dtype)], 1).to(dev),
                       cmask.to(dev), enc["input_ids"].shape[1])

    # ------------------------------------------------------------------------------------------
    def rollout_task(self, t: int, step: int, micro: int = 0) -> CGPOBatch:
        """Sample task ``t``'s micro-batch ``micro`` of ``step``, score, judge and calibrate it."""
        task, cfg = self.tasks[t], self.config
        s = task.spec
        idx = self.task_indices(t, step, micro)
        prompts, gold = [task.prompts[i] for i in idx], [task.gold[i] for i in idx]
        B, k = len(idx), s.num_generations
        t0 = time.perf_counter()
        r = self._generate(self.unwrapped.policy, prompts, k, True, cfg.generation_backend)
        t_gen = time.perf_counter() - t0
        dev = r.input_ids.device
        scores, valid = task.objectives.rewards(r.prompt_texts, r.completions)
        scores, valid = scores.to(dev), valid.to(dev)
        rewards = self._reward(task, scores).view(B, k)
        eos = has_eos(r, self.tokenizer.eos_token_id).view(B, k)
        penalised = missing_eos_penalty(rewards, eos, s.missing_eos_penalty)
        with_gold = any(g is not None for g in gold)
        report = task.judges.evaluate(r.prompt_texts, r.completions,
                                      [g for g in gold for _ in range(k)] if with_gold else None)
        usable = (valid & report.valid.to(dev)).view(B, k)
        batch = dict(task=t, indices=idx, rollout=r, scores=scores, rewards=rewards, penalised=penalised, has_eos=eos,
                     report=report, time_generate=t_gen)
        if s.calibration == "baseline":
            texts, b_eos = self.baselines(t, idx, prompts)
            b_eos = torch.tensor(b_eos, dtype=torch.bool, device=dev)
            ptexts = [prompt_text(p) for p in prompts]
            b_scores, b_valid = task.objectives.rewards(ptexts, texts)
            b_r = missing_eos_penalty(self._reward(task, b_scores.to(dev)), b_eos, s.missing_eos_penalty)
            b_valid = b_valid.to(dev)
            usable = usable & b_valid.unsqueeze(1)
            calibrated = calibrated_reward(penalised, b_r)
            batch.update(baseline_texts=texts, baseline_eos=b_eos, baseline_rewards=b_r, baseline_valid=b_valid)
            if s.cgpo_optimizer == "crraft":
                batch["baseline_report"] = task.judges.evaluate(ptexts, texts, gold if with_gold else None)
        elif s.calibration == "group_mean":
            u = usable.to(penalised.dtype)
            mean = (penalised * u).sum(-1) / u.sum(-1).clamp(min=1)
            calibrated = calibrated_reward(penalised, mean)
        else:
            calibrated = penalised
        passed = report.passed.to(dev).view(B, k) & usable
        return CGPOBatch(passed=passed, usable=usable, calibrated=calibrated, **batch)

    def task_loss(self, batch: CGPOBatch) -> tuple[torch.Tensor, dict]:
        """The batch's loss under its task's optimiser (with gradients) and what the optimiser decided:
        ``log_ratio`` (KL_seq ``[B, k]``), ``seq_logp``, ``ref_seq_logp``, ``lengths``, and ``advantages``
        (CRPG), ``pairs`` (CODPO) or ``selection`` and ``baseline_log_ratio`` (CRRAFT)."""
        task = self.tasks[batch.task]
        s, r = task.spec, batch.rollout
        B, k = batch.rewards.shape
        N = B * k
        extra_rows = None
        if s.cgpo_optimizer == "crraft" and batch.baseline_report is not None:
            # The prompts that may fall back to ā (it passes the judges and could be scored): its log-probs
            # come from the same forward as the samples'; whether a prompt does fall back needs the samples'
            # KL, so every such prompt is scored (its row is in the loss only if crraft_select picks it).
            base_ok = (batch.baseline_report.passed & batch.baseline_report.valid).to(r.input_ids.device) \
                & batch.baseline_valid
            extra_rows = torch.nonzero(base_ok).flatten()
        seqs = r
        if extra_rows is not None and extra_rows.numel():
            rows = extra_rows.tolist()
            extra = self._teacher_forced([r.prompts[i * k] for i in rows], [batch.baseline_texts[i] for i in rows],
                                         batch.baseline_eos[extra_rows].tolist())
            seqs = _concat_rollouts(r, extra, self.tokenizer.pad_token_id)
        ref_logp = self._ref_logprobs(seqs)
        self.model.train()
        logp, _shared, _values = self._forward(seqs.input_ids, seqs.attention_mask, seqs.prompt_length)
        cmask = seqs.completion_mask.to(logp.dtype)
        seq_logp_all = (logp * cmask).sum(1)
        ref_all = (ref_logp * cmask).sum(1)
        len_all = seqs.completion_mask.sum(1)
        seq_logp, ref_seq = seq_logp_all[:N].view(B, k), ref_all[:N].view(B, k)
        lengths = len_all[:N].view(B, k)
        log_ratio = (seq_logp.detach() - ref_seq).float()
        usable, passed, cal = batch.usable, batch.passed, batch.calibrated.float()
        det = {"log_ratio": log_ratio, "seq_logp": seq_logp, "ref_seq_logp": ref_seq, "lengths": lengths}
        zero = seq_logp.sum() * 0.0
        if s.cgpo_optimizer == "crpg":
            gate = kl_gate(log_ratio, s.kl_max, s.cgpo_kl_gate) if s.kl_max is not None else None
            if bool(usable.all()):
                adv = crpg_advantages(cal, passed, gate, s.crpg_baseline, s.kl_coef, log_ratio)
                loss = crpg_loss(seq_logp, adv)
            else:
                adv = crpg_advantages(torch.where(usable, cal, 0.0), passed, gate, "none", s.kl_coef,
                                      torch.where(usable, log_ratio, 0.0))
                u = usable.to(adv.dtype)
                if s.crpg_baseline == "batch_mean":
                    adv = adv - (adv * u).sum() / u.sum().clamp(min=1)
                elif s.crpg_baseline == "group_mean":
                    adv = adv - ((adv * u).sum(-1, keepdim=True) / u.sum(-1, keepdim=True).clamp(min=1))
                adv = adv * u
                loss = crpg_loss(seq_logp, adv, weights=u) if bool(usable.any()) else zero
            det.update(advantages=adv, gate=gate)
        elif s.cgpo_optimizer == "codpo":
            pairs = codpo_pairs(batch.penalised.float(), passed, usable)
            rows = torch.nonzero(pairs.valid).flatten()
            if rows.numel():
                c, j = pairs.chosen[rows], pairs.rejected[rows]
                loss = codpo_loss(seq_logp[rows, c], seq_logp[rows, j], ref_seq[rows, c], ref_seq[rows, j],
                                  lengths[rows, c], s.codpo_beta, s.codpo_lambda).mean()
            else:
                loss = zero
            det["pairs"] = pairs
        else:  # crraft
            base_lr = torch.zeros(B, device=log_ratio.device)
            base_lp = seq_logp_all.new_zeros(B)
            base_len = lengths.new_zeros(B)
            base_ok = None
            if extra_rows is not None:
                base_ok = torch.zeros(B, dtype=torch.bool, device=log_ratio.device)
                base_ok[extra_rows] = True
                if extra_rows.numel():
                    base_lr[extra_rows] = (seq_logp_all[N:].detach() - ref_all[N:]).float()
                    base_lp = base_lp.index_copy(0, extra_rows, seq_logp_all[N:])
                    base_len[extra_rows] = len_all[N:]
            sel = crraft_select(cal, passed, log_ratio if s.kl_max is not None else None, s.kl_max, base_ok,
                                base_lr if s.kl_max is not None else None)
            used = sel.used
            if bool(used.any()):
                i = sel.index.clamp(min=0).unsqueeze(1)
                lp = torch.where(sel.use_baseline, base_lp, seq_logp.gather(1, i).squeeze(1))
                n_tok = torch.where(sel.use_baseline, base_len, lengths.gather(1, i).squeeze(1))
                loss = crraft_loss(lp[used], sel.weight[used].to(lp.dtype), n_tok[used])
            else:
                loss = zero
            det.update(selection=sel, baseline_log_ratio=base_lr)
        return loss, det

    # ------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict:
        """One optimiser step: every task's micro-batches, each loss weighted by the task's mix share."""
        cfg, acc = self.config, self.accelerator
        t0 = time.perf_counter()
        lr = self.current_lr()
        M = cfg.gradient_accumulation_steps
        units = [(t, m) for t in range(len(self.tasks)) for m in range(M)]
        logs: list[list[tuple[CGPOBatch, float, dict]]] = [[] for _ in self.tasks]
        t_gen = 0.0
        for i, (t, m) in enumerate(units):
            batch = self.rollout_task(t, step, m)
            t_gen += batch.time_generate
            with micro_batch_context(acc, self.model, last=i == len(units) - 1):
                loss, det = self.task_loss(batch)
                micro_batch_backward(acc, loss * self.tasks[t].mix, M)
            logs[t].append((batch, float(loss.detach()), {k: v for k, v in det.items() if k != "seq_logp"}))
        t_update = time.perf_counter()
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        row: dict = {"step": step}
        for t, task in enumerate(self.tasks):
            row.update(self._task_metrics(task, logs[t]))
        self._overall(row, logs)
        row.update(lr=lr, time_generate=t_gen, time_update=time.perf_counter() - t_update,
                   time_step=time.perf_counter() - t0)
        if not math.isfinite(row["loss"]):
            raise ParetoAlignError(f"step {step}: the loss is not finite ({row['loss']}); the last checkpoint is "
                                   "intact, lower --learning-rate and --resume")
        return row

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        acc = self.accelerator
        return acc.gather(x.contiguous()) if acc.num_processes > 1 else x

    def _mean_loss(self, losses: list[float]) -> float:
        x = torch.tensor(float(np.mean(losses)), device=self.accelerator.device)
        return float(self.accelerator.reduce(x, "mean")) if self.accelerator.num_processes > 1 else float(x)

    def _task_metrics(self, task: Task, logs: list) -> dict:
        """A task's metrics over its micro-batches (and processes), under the task's prefix."""
        p, s, g = task.prefix, task.spec, self._gather
        cat = lambda key: g(torch.cat([getattr(b, key) for b, _, _ in logs]))  # noqa: E731
        usable, passed, rewards = cat("usable"), cat("passed"), cat("rewards").float()
        scores = g(torch.cat([b.scores for b, _, _ in logs])).float()
        log_ratio = g(torch.cat([d["log_ratio"] for _, _, d in logs]))
        lengths = g(torch.cat([d["lengths"] for _, _, d in logs])).float()
        eos = cat("has_eos")
        reps = [b.report for b, _, _ in logs]
        dev = usable.device
        report = JudgeReport(reps[0].names, g(torch.cat([x.verdicts for x in reps]).to(dev)),
                             g(torch.cat([x.passed for x in reps]).to(dev)), g(torch.cat([x.valid for x in reps]).to(dev)),
                             g(torch.cat([x.undecided for x in reps]).to(dev)))
        flat = usable.reshape(-1)
        nan = float("nan")
        out = {f"{p}reward": float(rewards[usable].mean()) if flat.any() else nan}
        for j, name in enumerate(task.objectives.names):
            out[f"{p}reward/{name}"] = float(scores[flat, j].mean()) if flat.any() else nan
        if logs[0][0].baseline_rewards is not None:
            bv = cat("baseline_valid")
            out[f"{p}baseline_reward"] = float(cat("baseline_rewards")[bv].float().mean()) if bv.any() else nan
        out[f"{p}calibrated_reward"] = float(cat("calibrated")[usable].float().mean()) if flat.any() else nan
        out.update({f"{p}{k}": v for k, v in report.metrics("judge").items()})
        out[f"{p}all_fail_fraction"] = float((~passed.any(-1)).float().mean())
        out[f"{p}kl"] = float(log_ratio.mean())
        if s.kl_max is not None and s.cgpo_optimizer != "codpo":
            out[f"{p}kl_gated_fraction"] = float((log_ratio > s.kl_max).float().mean())
        out[f"{p}eos_missing_fraction"] = float((~eos).float().mean())
        out[f"{p}completion_length"] = float(lengths.mean())
        out[f"{p}nan_skipped"] = int((~usable).sum())
        out[f"{p}loss"] = self._mean_loss([lv for _, lv, _ in logs])
        if s.cgpo_optimizer == "crpg":
            adv = g(torch.cat([d["advantages"] for _, _, d in logs]))
            gate = [d["gate"] for _, _, d in logs]
            feasible = passed if gate[0] is None else passed & (g(torch.cat(gate)) > 0)
            out[f"{p}crpg/feasible_fraction"] = float(feasible.float().mean())
            out[f"{p}crpg/advantage_std"] = float(adv.float().std(unbiased=False))
        elif s.cgpo_optimizer == "codpo":
            out[f"{p}codpo/pair_fraction"] = float(g(torch.cat([d["pairs"].valid for _, _, d in logs])).float().mean())
        else:
            sel = [d["selection"] for _, _, d in logs]
            used, base = g(torch.cat([x.used for x in sel])), g(torch.cat([x.use_baseline for x in sel]))
            out[f"{p}crraft/sample_fraction"] = float((used & ~base).float().mean())
            out[f"{p}crraft/baseline_fraction"] = float((used & base).float().mean())
            out[f"{p}crraft/skipped_fraction"] = float((~used).float().mean())
        return out

    def _overall(self, row: dict, logs: list) -> None:
        """The step's mixed loss, and (several tasks) the KL and pass-all rate over every sample."""
        row["loss"] = float(sum(task.mix * row[f"{task.prefix}loss"] for task in self.tasks))
        passed = torch.cat([self._gather(torch.cat([b.passed for b, _, _ in lg]).reshape(-1)) for lg in logs])
        kl = torch.cat([self._gather(torch.cat([d["log_ratio"] for _, _, d in lg]).reshape(-1)) for lg in logs])
        row["kl"] = float(kl.mean())
        row["samples"] = int(passed.numel())
        if len(self.tasks) > 1:
            row["judge/all/pass_rate"] = float(passed.float().mean())

    # the rest of the run lifecycle's protocol (trainers/base.py) --------------------------------------
    def checkpoint_extra(self) -> dict:
        return {STATE_KEY: {"greedy": [{str(i): list(v) for i, v in t.greedy.items()} for t in self.tasks]}}

    def postfix(self, row: dict) -> dict:
        out = {}
        for task in self.tasks:
            p = task.prefix
            label = "" if not p else f"{task.spec.name}:"
            out[f"{label}r"] = f"{row[f'{p}reward']:.3f}"
            out[f"{label}pass"] = f"{row[f'{p}judge/all/pass_rate']:.2f}"
        out["kl"] = f"{row['kl']:.3f}"
        return out

    def summary(self, rows: list[dict], seconds: float) -> dict:
        series = []
        for task in self.tasks:
            series += [f"{task.prefix}{k}" for k in ("reward", "calibrated_reward", "judge/all/pass_rate", "kl")]
        out = {"method": self.config.method, "objectives": series, "steps": len(rows), "seconds": seconds,
               "tasks": {t.spec.name: {"optimizer": t.spec.cgpo_optimizer, "mix": t.mix, "prompts": len(t.prompts),
                                       "judges": t.judges.names} for t in self.tasks}}
        if rows:
            n = max(1, min(5, len(rows) // 2))
            for key in series:
                vals = [r.get(key, float("nan")) for r in rows]
                out[key] = {"first": float(np.nanmean(vals[:n])), "last": float(np.nanmean(vals[-n:]))}
            out["window"] = n
        return out


__all__ = ["CGPOTrainer", "CGPOBatch", "Task", "codpo_pairs", "has_eos", "split_reference_answer"]
