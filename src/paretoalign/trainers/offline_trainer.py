"""The offline preference trainer: DPO, MODPO, MOPO, AMoPO and MAPL on one accelerate path.

Each step: this process's slice of examples (a seeded permutation, so a resumed run sees exactly
the examples it would have) -> tokenise (prompt, response) in the rollout layout -> response
log-probabilities under the policy (and the reference where the method has one) -> the method's
loss from :mod:`paretoalign.losses` -> one optimiser step.  With ``--gradient-accumulation-steps M``
a step is M such batches (micro-batches, the examples of one step at M x ``--batch-size``) whose
mean loss is the step's.  DDP/FSDP/DeepSpeed come from
``accelerate launch``; checkpoints and the final model are those of the online trainer.

This module orchestrates; what differs between methods (their examples, loss, and state such as
MOPO's duals or MODPO's margin cache) is each method's strategy in
:mod:`paretoalign.trainers.offline_methods`, picked once from ``--method``.

References: Rafailov et al. 2023 (DPO); Zhou et al. 2023 (MODPO, arXiv 2310.03708); Agnihotri et
al. 2025 (MOPO); Liu et al. 2025 (AMoPO, ACL Findings); Sun et al. 2025 (MAPL, arXiv 2505.12845).
"""

from __future__ import annotations

import copy
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from paretoalign import run_dir
from paretoalign.errors import ConfigError, DataError
from paretoalign.models import TINY_NAME, check_batch_fits, load_causal_lm, load_tokenizer, logit_bytes_per_token
from paretoalign.objectives.base import ObjectiveSet
from paretoalign.objectives.registry import available_objectives, build_objective
from paretoalign.objectives.spec import parse_objective_spec
from paretoalign.preferences import uniform_weights, validate_weights
from paretoalign.rollout import render_prompt
from paretoalign.sequences import encode_responses, response_token_logps
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
from paretoalign.trainers.offline_config import OfflineConfig
from paretoalign.trainers.offline_methods import STRATEGIES
from paretoalign.trainers.tracking import preflight

_IDENT = re.compile(r"^[A-Za-z_][\w\-]*$")


@dataclass
class ObjectiveEntry:
    """One of ``--objectives``: its name (the label looked up in the data) and, if the spec names a
    scorer, the :class:`~paretoalign.objectives.Objective` (used for margins and evaluation)."""

    spec: str
    name: str
    scorer: object = None


def resolve_objectives(specs: list, tokenizer=None) -> list[ObjectiveEntry]:
    """Objective specs -> entries; a bare name that is not a registered kind is a data label."""
    out = []
    for spec in specs:
        if isinstance(spec, str):
            kind, _arg, _opts = parse_objective_spec(spec)
            if kind not in available_objectives():
                if not _IDENT.match(spec):
                    raise ConfigError(f"objective {spec!r} is neither a registered objective spec nor a label name")
                out.append(ObjectiveEntry(spec, spec))
                continue
        obj = build_objective(spec, tokenizer=tokenizer)
        out.append(ObjectiveEntry(str(getattr(obj, "spec", spec)), obj.name, obj))
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"two objectives share a name: {names}; give one a name= option")
    return out


class OfflineTrainer(base.StepTrainer):
    """Orchestrates offline training; each method's examples, loss and state are its strategy in
    :mod:`paretoalign.trainers.offline_methods`, the maths is in losses/{dpo,modpo,mopo,amopo,mapl}.py.

    Args:
        config: an :class:`OfflineConfig`.
        model, tokenizer: optional pre-built policy and tokenizer.
        data: optional :class:`~paretoalign.data.preference_pairs.PreferenceData` (default: ``config.pairs``).
        accelerator: optional ``accelerate.Accelerator``.
    """

    def __init__(self, config: OfflineConfig, model=None, tokenizer=None, data=None, accelerator=None):
        self.config = cfg = config
        preflight(cfg)  # trackers' libraries, the Hub: refused before any work
        self.accelerator = acc = accelerator or make_accelerator(config)
        self.out = Path(cfg.output_dir)
        if data is None and not cfg.pairs:
            raise ConfigError("--pairs is required: a preference dataset (see `paretoalign pairs` to make one)")
        if STRATEGIES[cfg.method].sharded_refusal is not None:  # before the run folder is claimed
            sharding.refuse(acc, *STRATEGIES[cfg.method].sharded_refusal)
        sharding.check_config(acc, cfg)
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
        check_batch_fits(2 * cfg.batch_size, cfg.max_prompt_length + cfg.max_response_length,
                         logit_bytes_per_token(len(self.tokenizer)), "--batch-size (chosen and rejected)",
                         acc.device.type)
        self.resume_from = ckpt_lib.start_run(acc, self.out, cfg, cfg.resume, cfg.overwrite,
                                              cfg.max_steps).checkpoint
        if data is None:  # the method's own reader (MAPL reads prompt-side pairs)
            data = STRATEGIES[cfg.method].load_data(cfg)
        self.data = data
        self.entries = resolve_objectives(cfg.objectives, self.tokenizer)
        scorers = [e.scorer for e in self.entries if e.scorer is not None]  # data labels cannot score text
        self.heldout_eval = HeldoutEval.from_config(cfg, ObjectiveSet(scorers) if scorers else None)
        self.names = [e.name for e in self.entries]
        self.K = len(self.names)
        raw = cfg.weights if cfg.weights is not None else uniform_weights(self.K).tolist()
        self.weights = validate_weights(raw, self.K, self.names, normalize=cfg.normalize_weights)
        self.strategy = STRATEGIES[cfg.method](self)  # the method's own checks run here
        self.examples = self._build_examples()
        if not self.examples:
            raise DataError(f"{data.name}: no usable training examples for {cfg.method} with objectives {self.names}")

        torch.manual_seed(cfg.seed)
        self._rebuildable_tiny_base = model is None and cfg.model == TINY_NAME
        policy = model if model is not None else load_causal_lm(cfg.model, self.tokenizer, cfg.seed, cfg.allow_download)
        self.ref_model = None
        if cfg.use_lora and not hasattr(policy, "peft_config"):
            policy = add_lora(policy, cfg)
        elif not cfg.use_lora and self.strategy.needs_reference:
            self.ref_model = copy.deepcopy(policy).eval().requires_grad_(False)
        enable_gradient_checkpointing(policy, cfg)
        self.ref_model = self.strategy.setup(policy, self.ref_model)
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.scheduler = make_scheduler(cfg, optimizer, cfg.max_steps)
        self.start_step = 0
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from, policy)
        set_deepspeed_micro_batch(acc, cfg.batch_size, cfg.gradient_accumulation_steps)
        self.model, self.optimizer = ckpt_lib.prepare_training(acc, policy, optimizer, self.scheduler,
                                                               self.resume_from)
        if self.ref_model is not None:
            self.ref_model.to(acc.device)
        if self.resume_from is not None:
            ckpt_lib.load_rng(acc, self.resume_from, cfg.seed + 1000 * acc.process_index + self.start_step)
        else:
            torch.manual_seed(cfg.seed + 1000 * acc.process_index)

    def _build_examples(self) -> list:
        data = self.data
        missing = [n for n in self.strategy.label_names() if n not in data.objectives]
        if missing:
            raise ConfigError(
                f"objective(s) {missing} are not labelled in {data.name} (its labels: {', '.join(data.objectives) or 'none'})"
            )
        return self.strategy.build_examples()

    # ------------------------------------------------------------------------------------------
    # batching: indices, tokens, log-probabilities (the strategies' building blocks)
    # ------------------------------------------------------------------------------------------
    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def indices_for_step(self, step: int, micro: int | None = None, size: int | None = None,
                         stream: int = 0) -> list[int]:
        """This process's example indices at ``step`` (1-based): epochs of seeded permutations.  All
        ``--gradient-accumulation-steps`` x ``--batch-size`` of them, or micro-batch ``micro``'s; they
        are those of one step at the effective batch size.  ``size`` and ``stream`` index another
        example list the same way (its own permutations; MAPL's secondary sets)."""
        cfg, acc = self.config, self.accelerator
        per_step = cfg.batch_size * cfg.gradient_accumulation_steps
        start = ((step - 1) * acc.num_processes + acc.process_index) * per_step
        if micro is not None:
            start, per_step = start + micro * cfg.batch_size, cfg.batch_size
        seed = cfg.seed if not stream else cfg.seed * 1000 + stream
        return epoch_indices(seed, len(self.examples) if size is None else size, start, per_step)

    def _encode(self, prompts: list, responses: list[str]):
        cfg = self.config
        return encode_responses(self.tokenizer, prompts, responses, cfg.max_prompt_length, cfg.max_response_length,
                                cfg.use_chat_template, cfg.system_prompt).to(self.accelerator.device)

    @torch.no_grad()
    def _ref_logps(self, batch) -> torch.Tensor:
        if self.ref_model is not None:
            if hasattr(self.ref_model, "peft_config"):  # holds margin adapters: the reference is its base
                with self.ref_model.disable_adapter():
                    return response_token_logps(self.ref_model, batch).sum(1)
            return response_token_logps(self.ref_model, batch).sum(1)
        # the inner model, past the sharded root: its weights gathered whole
        with sharding.full_weights(self.accelerator, self.model), self.unwrapped.disable_adapter():
            return response_token_logps(self.unwrapped, batch).sum(1)

    def _pair_logps(self, pairs):
        """Tokenised [chosen; rejected] batch and the summed response log-probs: policy (chosen,
        rejected), reference (chosen, rejected)."""
        prompts = [p.prompt for p in pairs] * 2
        batch = self._encode(prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
        B = len(pairs)
        logp = response_token_logps(self.model, batch).sum(1)
        ref = self._ref_logps(batch)
        return batch, logp[:B], logp[B:], ref[:B], ref[B:]

    # ------------------------------------------------------------------------------------------
    # one step
    # ------------------------------------------------------------------------------------------
    def step(self, step: int) -> dict:
        """One optimiser step on the step's micro-batches (their mean loss; with DDP only the last one
        synchronises); the row's loss and metrics are their means."""
        cfg, acc = self.config, self.accelerator
        t0 = time.perf_counter()
        lr = self.current_lr()
        M = cfg.gradient_accumulation_steps
        self.model.train()
        losses, rows = [], []
        for micro in range(M):
            self.micro = micro  # which micro-batch the strategy's loss is computing (MAPL's secondary sets)
            with micro_batch_context(acc, self.model, last=micro == M - 1):  # the forward too (DDP)
                loss, row = self.strategy.loss(self.indices_for_step(step, micro), step)
                micro_batch_backward(acc, loss, M)
            losses.append(float(loss.detach()))
            rows.append(row)
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        keys = sorted(rows[0])
        means = [sum(losses) / M] + [sum(r[k] for r in rows) / M for k in keys]
        local = torch.tensor(means, device=acc.device)
        local = acc.reduce(local, "mean") if acc.num_processes > 1 else local
        out = {"step": step, "loss": float(local[0])}
        out.update({k: float(v) for k, v in zip(keys, local[1:].tolist())})
        out.update(self.strategy.state_row())
        out.update(lr=lr, time_step=time.perf_counter() - t0)
        return out

    # the rest of the run lifecycle's protocol (trainers/base.py) --------------------------------------
    def postfix(self, row: dict) -> dict:
        return {k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "rewards/accuracy", "ess_fraction")}

    def summary(self, rows: list[dict], seconds: float) -> dict:
        cfg = self.config
        out = {"method": cfg.method, "objectives": self.names, "weights": self.weights.tolist(),
               "steps": len(rows), "seconds": seconds, "examples": len(self.examples)}
        if rows:
            n = max(1, min(5, len(rows) // 2))
            out["loss"] = {"first": float(np.mean([r["loss"] for r in rows[:n]])),
                           "last": float(np.mean([r["loss"] for r in rows[-n:]]))}
            out["window"] = n
        return out

    # ------------------------------------------------------------------------------------------
    # saving and resuming (the strategy's state under its method's name in trainer_state.json)
    # ------------------------------------------------------------------------------------------
    def _save_model(self, folder: Path, state: dict | None = None) -> None:
        """The policy; ``state``: its whole state dict when sharded (from the module otherwise)."""
        policy = self.unwrapped
        extra = {"selected_adapters": ["default"]} if hasattr(policy, "peft_config") else {}
        sharding.save_pretrained(policy, folder / run_dir.POLICY, state, **extra)
        self.strategy.save_files(folder)

    def checkpoint_extra(self) -> dict | None:
        state = self.strategy.state_dict()
        return {self.config.method: state} if state is not None else None

    def _load_checkpoint(self, ckpt: Path, policy) -> None:
        """The policy, the step and the method's state from ``ckpt`` (before ``prepare``; the optimizer's comes after)."""
        ckpt_lib.load_policy_state(policy, ckpt / run_dir.POLICY)
        state = ckpt_lib.read_state(ckpt)
        self.start_step = int(state["step"])
        if self.config.method in state:
            self.strategy.load_state_dict(state[self.config.method])
        self.strategy.load_files(ckpt)

    def save_final(self) -> Path:
        cfg = self.config
        meta = {"base_model": cfg.model, "method": cfg.method, "objectives": self.names,
                "weights": self.weights.tolist(), "value_head": False}
        return ckpt_lib.save_final(self.accelerator, self.out, self._save_model, self.tokenizer, self.unwrapped,
                                   meta, cfg.max_steps, cfg.seed if self._rebuildable_tiny_base else None, model=self.model)

    # ------------------------------------------------------------------------------------------
    # the strategies' state under its earlier names on the trainer (tests, bench/offline.py)
    # ------------------------------------------------------------------------------------------
    @property
    def margin_adapters(self) -> dict:
        """MODPO: objective index -> (host model, adapter name, beta); empty for the other methods."""
        return getattr(self.strategy, "margin_adapters", {})

    @property
    def _margin_cache(self) -> dict:
        """MODPO: example index -> its cached [2, K−1] margins; empty for the other methods."""
        return getattr(self.strategy, "margin_cache", {})

    @property
    def lam(self) -> torch.Tensor:
        return self.strategy.lam  # MOPO

    @property
    def chi(self) -> torch.Tensor:
        return self.strategy.chi  # MOPO

    @property
    def bounds(self) -> torch.Tensor:
        return self.strategy.bounds  # MOPO

    @property
    def ref_snapshot(self) -> dict | None:
        """MOPO: the refreshed reference's trainable weights (None: none yet, or not MOPO)."""
        return getattr(self.strategy, "ref_snapshot", None)

    def _mopo_refresh(self, row: dict) -> None:
        self.strategy.refresh(row)

    def dimension_prompt(self, prompt, dimension: str):
        return self.strategy.dimension_prompt(prompt, dimension)  # AMoPO

    def integrate_prompt(self, prompt):
        return self.strategy.integrate_prompt(prompt)  # AMoPO


def example_prompt_text(tokenizer, prompt, cfg: OfflineConfig) -> str:
    """The rendered prompt the trainer feeds the model (for inspection and tests)."""
    return render_prompt(prompt, tokenizer, cfg.use_chat_template, cfg.system_prompt)
