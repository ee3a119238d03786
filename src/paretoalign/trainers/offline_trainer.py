"""The offline preference trainer: DPO, MODPO, MOPO and AMoPO on one accelerate path.

Each step: this process's slice of examples (a seeded permutation, so a resumed run sees exactly
the examples it would have) -> tokenise (prompt, response) in the rollout layout -> response
log-probabilities under the policy (and the reference where the method has one) -> the method's
loss from :mod:`paretoalign.losses` -> one optimiser step.  DDP/FSDP/DeepSpeed come from
``accelerate launch``; checkpoints and the final model are those of the online trainer.

References: Rafailov et al. 2023 (DPO); Zhou et al. 2023 (MODPO, arXiv 2310.03708); Agnihotri et
al. 2025 (MOPO); Liu et al. 2025 (AMoPO, ACL Findings).
"""

from __future__ import annotations

import copy
import math
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from paretoalign import run_dir
from paretoalign.config_utils import config_to_dict
from paretoalign.errors import ConfigError, DataError, ParetoAlignError
from paretoalign.losses import mopo as M
from paretoalign.losses.amopo import amopo_adaptive_weights, amopo_loss, average_logps
from paretoalign.losses.dpo import dpo_loss
from paretoalign.losses.modpo import check_modpo_weights, modpo_loss
from paretoalign.models import TINY_NAME, check_batch_fits, load_causal_lm, load_tokenizer, logit_bytes_per_token
from paretoalign.preferences import uniform_weights, validate_weights
from paretoalign.rollout import render_prompt
from paretoalign.sequences import encode_responses, response_token_logps
from paretoalign.trainers import base
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.adaptation import add_lora, epoch_indices
from paretoalign.trainers.offline_config import AMOPO_INTEGRATE_ROW, OfflineConfig

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
    from paretoalign.objectives.registry import (
        available_objectives,
        build_objective,
        parse_objective_spec,
    )

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


class OfflineTrainer:
    """Orchestrates offline training; the maths is in losses/{dpo,modpo,mopo,amopo}.py.

    Args:
        config: an :class:`OfflineConfig`.
        model, tokenizer: optional pre-built policy and tokenizer.
        data: optional :class:`~paretoalign.data.preference_pairs.PreferenceData` (default: ``config.pairs``).
        accelerator: optional ``accelerate.Accelerator``.
    """

    def __init__(self, config: OfflineConfig, model=None, tokenizer=None, data=None, accelerator=None):
        from accelerate import Accelerator

        self.config = cfg = config
        self.accelerator = acc = accelerator or Accelerator()
        self.out = Path(cfg.output_dir)
        if data is None and not cfg.pairs:
            raise ConfigError("--pairs is required: a preference dataset (see `paretoalign pairs` to make one)")
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
        check_batch_fits(2 * cfg.batch_size, cfg.max_prompt_length + cfg.max_response_length,
                         logit_bytes_per_token(len(self.tokenizer)), "--batch-size (chosen and rejected)",
                         acc.device.type)
        self.resume_from = ckpt_lib.start_run(acc, self.out, config_to_dict(cfg), cfg.resume, cfg.overwrite,
                                              cfg.max_steps).checkpoint
        if data is None:
            from paretoalign.data.preference_pairs import load_preference_data

            data = load_preference_data(cfg.pairs, format=cfg.pairs_format, max_rows=cfg.max_pairs)
        self.data = data
        self.entries = resolve_objectives(cfg.objectives, self.tokenizer)
        self.names = [e.name for e in self.entries]
        self.K = len(self.names)
        raw = cfg.weights if cfg.weights is not None else uniform_weights(self.K).tolist()
        self.weights = validate_weights(raw, self.K, self.names, normalize=cfg.normalize_weights)
        if cfg.method == "modpo":
            check_modpo_weights(self.weights, self.K - 1)
        self.cons = cfg.parsed_constraints() if cfg.method == "mopo" else []
        self._warned: set = set()
        self.examples = self._build_examples()
        if not self.examples:
            raise DataError(f"{data.name}: no usable training examples for {cfg.method} with objectives {self.names}")

        torch.manual_seed(cfg.seed)
        self._rebuildable_tiny_base = model is None and cfg.model == TINY_NAME
        policy = model if model is not None else load_causal_lm(cfg.model, self.tokenizer, cfg.seed, cfg.allow_download)
        self.ref_model = None
        if cfg.use_lora and not hasattr(policy, "peft_config"):
            policy = add_lora(policy, cfg)
        elif not cfg.use_lora and cfg.method != "amopo":  # AMoPO has no reference model
            self.ref_model = copy.deepcopy(policy).eval().requires_grad_(False)
        self._setup_margin_adapters(policy)
        params = [p for p in policy.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        # MOPO's dual state (kept in checkpoints)
        self.lam = torch.zeros(len(self.cons))
        self.chi = torch.ones(len(self.cons))
        self.bounds = torch.tensor([b for _, b in self.cons], dtype=torch.float32)
        self.ref_snapshot = None  # MOPO: the refreshed reference's trainable weights
        self.start_step = 0
        if self.resume_from is not None:
            self._load_checkpoint(self.resume_from, policy, optimizer)
        self.model, self.optimizer = acc.prepare(policy, optimizer)
        if self.ref_model is not None:
            self.ref_model.to(acc.device)
        if self.resume_from is not None:
            ckpt_lib.load_rng(acc, self.resume_from, cfg.seed + 1000 * acc.process_index + self.start_step)
        else:
            torch.manual_seed(cfg.seed + 1000 * acc.process_index)
        self._margin_cache: dict[int, torch.Tensor] = {}

    # ------------------------------------------------------------------------------------------
    # data -> examples
    # ------------------------------------------------------------------------------------------
    def _build_examples(self) -> list:
        cfg, data = self.config, self.data
        if cfg.method == "mopo":
            known = set(self.names[1:])
            for name, _b in self.cons:
                if name not in known:
                    raise ConfigError(f"constraint on unknown objective {name!r}; constrainable: {sorted(known)} "
                                      f"(--objectives after the primary {self.names[0]!r})")
        missing = [n for n in self._label_names() if n not in data.objectives]
        if missing:
            raise ConfigError(
                f"objective(s) {missing} are not labelled in {data.name} (its labels: {', '.join(data.objectives) or 'none'})"
            )
        if cfg.method == "dpo":
            if self.K == 1:
                return data.oriented(self.names[0])
            return data.scalarized(dict(zip(self.names, self.weights.tolist())))
        if cfg.method == "modpo":
            pairs = data.oriented(self.names[0])
            for e in self.entries[1:]:
                if e.scorer is None:
                    for p in pairs:
                        for side in ("chosen_scores", "rejected_scores"):
                            v = getattr(p, side).get(e.name)
                            if v is None or not math.isfinite(float(v)):
                                raise DataError(f"{p.source}: margin objective {e.name!r} has no score in '{side}'; "
                                                "give a scorer spec for it or scores for every response")
            return pairs
        if cfg.method == "amopo":
            return [p for p in data.pairs if any(p.labels.get(n) in (1.0, -1.0) for n in self.names)]
        return self._mopo_pools()

    def _label_names(self) -> list[str]:
        cfg = self.config
        if cfg.method == "modpo":
            return [self.names[0]]
        if cfg.method == "mopo":
            return [self.names[0], *[n for n, _ in cfg.parsed_constraints()]]
        return list(self.names)

    def _mopo_pools(self) -> list[dict]:
        """Per prompt: candidates and the pairwise win probabilities [n, n] of the primary and each
        constrained objective (from scores, else from the pairs' labels)."""
        cfg = self.config
        names = [self.names[0], *[n for n, _ in self.cons]]
        pools = []
        for g in self.data.groups():
            n = len(g.responses)
            if n < 2:
                continue
            pw = []
            for name in names:
                s = g.scores.get(name)
                if s is not None and sum(math.isfinite(float(x)) for x in s) >= 2:
                    p = M.pairwise_win_probabilities(torch.tensor([s], dtype=torch.float32),
                                                     torch.ones(1, n, dtype=torch.bool), cfg.win_mode)[0]
                else:
                    p = torch.full((n, n), float("nan"))
                    for w, l_ in g.wins.get(name, []):
                        p[w, l_], p[l_, w] = 1.0, 0.0
                pw.append(p)
            if torch.isnan(M.win_probabilities(pw[0].unsqueeze(0))).all():
                continue
            pools.append({"prompt": g.prompt, "responses": list(g.responses), "pairwise": torch.stack(pw, -1)})
        small = sum(len(p["responses"]) < cfg.min_pool for p in pools)
        if small:
            self._warn("pool", f"MOPO: {small} of {len(pools)} prompts have fewer than {cfg.min_pool} candidates; "
                       "small pools let the duals diverge and the ratios collapse to one-hot (guards: "
                       f"lam_max={cfg.lam_max}, max_weight={cfg.max_weight})")
        return pools

    def _warn(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(msg, stacklevel=2)

    # ------------------------------------------------------------------------------------------
    # margins (MODPO): scorers, data scores, or frozen implicit-DPO adapters on the policy's base
    # ------------------------------------------------------------------------------------------
    def _setup_margin_adapters(self, policy) -> None:
        from paretoalign.objectives.implicit import ImplicitRewardObjective

        self.margin_adapters = {}
        if self.config.method != "modpo":
            return
        host = policy if hasattr(policy, "peft_config") else self.ref_model
        for i, e in enumerate(self.entries[1:], start=1):
            if isinstance(e.scorer, ImplicitRewardObjective):
                from peft import PeftModel

                name = f"margin_{i}"
                if host is self.ref_model and not hasattr(host, "peft_config"):
                    host = self.ref_model = PeftModel.from_pretrained(host, str(e.scorer.adapter), adapter_name=name)
                else:
                    host.load_adapter(str(e.scorer.adapter), adapter_name=name, is_trainable=False)
                self.margin_adapters[i] = (host, name, e.scorer.beta)
        if self.margin_adapters and hasattr(policy, "peft_config"):
            policy.set_adapter("default")
            for n, p in policy.named_parameters():
                if "margin_" in n:
                    p.requires_grad_(False)

    @contextmanager
    def _adapter(self, host, name):
        prev = host.active_adapter if isinstance(host.active_adapter, str) else host.active_adapter[0]
        host.set_adapter(name)
        try:
            yield
        finally:
            host.set_adapter(prev)
            for n, p in host.named_parameters():  # set_adapter re-enables grads on the active adapter only
                if "margin_" in n:
                    p.requires_grad_(False)

    @torch.no_grad()
    def _margins(self, idx: list[int], pairs: list, chosen, rejected, ref_c, ref_r) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, K−1] margin rewards of the chosen and rejected responses (cached per example)."""
        todo = [j for j, i in enumerate(idx) if i not in self._margin_cache]
        if todo:
            sub = [pairs[j] for j in todo]
            cols_c, cols_r = [], []
            for k, e in enumerate(self.entries[1:], start=1):
                if k in self.margin_adapters:
                    host, name, beta = self.margin_adapters[k]
                    sel = torch.tensor(todo, device=chosen.input_ids.device)
                    with self._adapter(host, name):
                        lc = response_token_logps(host, chosen.select(sel)).sum(1)
                        lr = response_token_logps(host, rejected.select(sel)).sum(1)
                    cols_c.append(beta * (lc - ref_c[sel]))
                    cols_r.append(beta * (lr - ref_r[sel]))
                elif e.scorer is not None:
                    from paretoalign.data.prompts import prompt_text

                    prompts = [prompt_text(p.prompt) for p in sub]
                    sc = e.scorer.score(prompts, [p.chosen for p in sub])
                    sr = e.scorer.score(prompts, [p.rejected for p in sub])
                    for s, p in ((sc, "chosen"), (sr, "rejected")):
                        if not torch.isfinite(s).all():
                            bad = sub[int((~torch.isfinite(s)).nonzero()[0])]
                            raise ParetoAlignError(f"margin objective {e.name!r} returned NaN/inf for the {p} "
                                                   f"response of {bad.source}")
                    sign = -1.0 if getattr(e.scorer, "direction", "maximize") == "minimize" else 1.0
                    cols_c.append(sign * sc.to(ref_c.device))
                    cols_r.append(sign * sr.to(ref_c.device))
                else:
                    cols_c.append(torch.tensor([float(p.chosen_scores[e.name]) for p in sub], device=ref_c.device))
                    cols_r.append(torch.tensor([float(p.rejected_scores[e.name]) for p in sub], device=ref_c.device))
            mc, mr = torch.stack(cols_c, 1).float(), torch.stack(cols_r, 1).float()
            for j, t in enumerate(todo):
                self._margin_cache[idx[t]] = torch.stack([mc[j], mr[j]]).cpu()
        both = torch.stack([self._margin_cache[i] for i in idx]).to(ref_c.device)  # [B, 2, K-1]
        return both[:, 0], both[:, 1]

    # ------------------------------------------------------------------------------------------
    # one step
    # ------------------------------------------------------------------------------------------
    @property
    def unwrapped(self):
        return self.accelerator.unwrap_model(self.model)

    def indices_for_step(self, step: int) -> list[int]:
        """This process's example indices at ``step`` (1-based): epochs of seeded permutations."""
        cfg, acc = self.config, self.accelerator
        start = ((step - 1) * acc.num_processes + acc.process_index) * cfg.batch_size
        return epoch_indices(cfg.seed, len(self.examples), start, cfg.batch_size)

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
        with self.unwrapped.disable_adapter():
            return response_token_logps(self.unwrapped, batch).sum(1)

    def step(self, step: int) -> dict:
        cfg, acc = self.config, self.accelerator
        t0 = time.perf_counter()
        idx = self.indices_for_step(step)
        self.model.train()
        loss, row = getattr(self, f"_loss_{cfg.method}")(idx, step)
        acc.backward(loss)
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        local = torch.tensor([float(loss.detach())] + [row[k] for k in sorted(row)], device=acc.device)
        local = acc.reduce(local, "mean") if acc.num_processes > 1 else local
        out = {"step": step, "loss": float(local[0])}
        out.update({k: float(v) for k, v in zip(sorted(row), local[1:].tolist())})
        if cfg.method == "mopo":
            out.update(self._mopo_state_row())
        out.update(lr=self.optimizer.param_groups[0]["lr"], time_step=time.perf_counter() - t0)
        if not math.isfinite(out["loss"]):
            raise ParetoAlignError(f"step {step}: the loss is not finite ({out['loss']}); the last checkpoint is "
                                   "intact, lower --learning-rate and --resume")
        return out

    def _pair_logps(self, pairs):
        prompts = [p.prompt for p in pairs] * 2
        batch = self._encode(prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
        B = len(pairs)
        logp = response_token_logps(self.model, batch).sum(1)
        ref = self._ref_logps(batch)
        return batch, logp[:B], logp[B:], ref[:B], ref[B:]

    def _loss_dpo(self, idx, step):
        pairs = [self.examples[i] for i in idx]
        _, pc, pr, rc, rr = self._pair_logps(pairs)
        losses = dpo_loss(pc, pr, rc, rr, self.config.beta, self.config.label_smoothing)
        return losses.mean(), self._pair_metrics(pc, pr, rc, rr)

    def _loss_modpo(self, idx, step):
        pairs = [self.examples[i] for i in idx]
        batch, pc, pr, rc, rr = self._pair_logps(pairs)
        B = len(pairs)
        chosen, rejected = batch.select(slice(0, B)), batch.select(slice(B, 2 * B))
        t0 = time.perf_counter()
        mc, mr = self._margins(idx, pairs, chosen, rejected, rc, rr)
        t_margin = time.perf_counter() - t0
        losses = modpo_loss(pc, pr, rc, rr, mc, mr, self.weights.to(pc.device), self.config.beta)
        row = self._pair_metrics(pc, pr, rc, rr)
        for k, name in enumerate(self.names[1:]):
            row[f"margin/{name}"] = float((mc[:, k] - mr[:, k]).mean())
        row["time_margins"] = t_margin
        return losses.mean(), row

    def _pair_metrics(self, pc, pr, rc, rr) -> dict:
        beta = self.config.beta
        rwc, rwr = beta * (pc - rc).detach(), beta * (pr - rr).detach()
        return {"rewards/chosen": float(rwc.mean()), "rewards/rejected": float(rwr.mean()),
                "rewards/accuracy": float((rwc > rwr).float().mean()), "rewards/margin": float((rwc - rwr).mean())}

    def dimension_prompt(self, prompt, dimension: str):
        """AMoPO's dimension-aware prompt: the template applied to the (last) user message."""
        tpl = self.config.dimension_template
        if isinstance(prompt, list):
            msgs = [dict(m) for m in prompt]
            last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
            msgs[last]["content"] = tpl.format(prompt=msgs[last]["content"], dimension=dimension)
            return msgs
        return tpl.format(prompt=prompt, dimension=dimension)

    def integrate_prompt(self, prompt):
        """AMoPO's "integrate all dimensions" prompt (``--amopo-integrate-all``; the reference code's
        ``no_object`` row): ``--integrate-template`` applied to the (last) user message."""
        tpl, dims = self.config.integrate_template, ", ".join(self.names)
        if isinstance(prompt, list):
            msgs = [dict(m) for m in prompt]
            last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
            msgs[last]["content"] = tpl.format(prompt=msgs[last]["content"], dimensions=dims)
            return msgs
        return tpl.format(prompt=prompt, dimensions=dims)

    def _loss_amopo(self, idx, step):
        cfg = self.config
        pairs = [self.examples[i] for i in idx]
        rows = self.names + ([AMOPO_INTEGRATE_ROW] if cfg.amopo_integrate_all else [])
        B, D = len(pairs), len(rows)
        prompts, chosen, rejected = [], [], []
        valid = torch.zeros(B, D, dtype=torch.bool)
        for b, p in enumerate(pairs):
            for d, name in enumerate(self.names):
                lab = p.labels.get(name)
                valid[b, d] = lab in (1.0, -1.0)
                win, lose = (p.rejected, p.chosen) if lab == -1.0 else (p.chosen, p.rejected)
                prompts.append(self.dimension_prompt(p.prompt, name))
                chosen.append(win)
                rejected.append(lose)
            if cfg.amopo_integrate_all:  # the reference trains this row on the pair as given
                valid[b, D - 1] = True
                prompts.append(self.integrate_prompt(p.prompt))
                chosen.append(p.chosen)
                rejected.append(p.rejected)
        batch = self._encode(prompts * 2, chosen + rejected)
        tok = response_token_logps(self.model, batch)  # [2BD, T]
        mask = batch.response_mask
        T = tok.shape[1]
        tc, tr = tok[: B * D].view(B, D, T), tok[B * D :].view(B, D, T)
        mc, mr = mask[: B * D].view(B, D, T), mask[B * D :].view(B, D, T)
        valid = valid.to(tok.device)
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        w = amopo_adaptive_weights(tc, mc, tr, mr, valid, generator=g, sign=cfg.weight_sign,
                                   scope=cfg.amopo_weight_scope)
        avg_c, avg_r = average_logps(tc, mc), average_logps(tr, mr)
        sft = None
        if cfg.sft_coef:  # NLL of the chosen response under the plain prompt
            plain = self._encode([p.prompt for p in pairs], [p.chosen for p in pairs])
            sft = -average_logps(response_token_logps(self.model, plain), plain.response_mask)
        losses = amopo_loss(avg_c, avg_r, w, valid, cfg.amopo_beta, cfg.amopo_gamma, sft, cfg.sft_coef,
                            reduction=cfg.amopo_reduction)
        row = {}
        margin = (avg_c - avg_r).detach()
        for d, name in enumerate(rows):
            v = valid[:, d]
            row[f"weight/{name}"] = float(w[:, d].mean())
            row[f"accuracy/{name}"] = float((margin[v, d] > 0).float().mean()) if v.any() else 0.0
        return losses.mean(), row

    # --- MOPO ------------------------------------------------------------------------------------
    @contextmanager
    def _weights_swapped(self, state: dict):
        """Temporarily load ``state`` (name -> tensor, the trainable parameters) into the policy."""
        params = dict(self.unwrapped.named_parameters())
        saved = {n: params[n].detach().clone() for n in state}
        with torch.no_grad():
            for n, t in state.items():
                params[n].copy_(t.to(params[n].device))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, t in saved.items():
                    params[n].copy_(t)

    def _trainable_state(self) -> dict:
        return {n: p.detach().clone().cpu() for n, p in self.unwrapped.named_parameters() if p.requires_grad}

    def _loss_mopo(self, idx, step):
        cfg = self.config
        pools = [self.examples[i] for i in idx]
        n_max = max(len(p["responses"]) for p in pools)
        B, J = len(pools), len(self.cons)
        prompts, responses, slots = [], [], []
        for b, p in enumerate(pools):
            for i, r in enumerate(p["responses"]):
                prompts.append(p["prompt"])
                responses.append(r)
                slots.append((b, i))
        batch = self._encode(prompts, responses)
        dev = batch.input_ids.device
        rows = torch.tensor([s[0] for s in slots], device=dev)
        cols = torch.tensor([s[1] for s in slots], device=dev)
        mask = torch.zeros(B, n_max, dtype=torch.bool, device=dev)
        mask[rows, cols] = True
        log_prior = None
        if self.ref_snapshot is not None:  # before the policy forward: the swap writes into its weights
            with torch.no_grad():
                with self._weights_swapped(self.ref_snapshot):
                    ref_t = response_token_logps(self.unwrapped, batch).sum(1)
                ref_0 = self._ref_logps(batch)
            log_prior = torch.zeros(B, n_max, device=dev).index_put((rows, cols), ref_t - ref_0)
        logp_flat = response_token_logps(self.model, batch).sum(1)
        logp = torch.zeros(B, n_max, device=dev).index_put((rows, cols), logp_flat)
        pw = torch.full((B, n_max, n_max, 1 + J), float("nan"), device=dev)
        for b, p in enumerate(pools):
            n = len(p["responses"])
            pw[b, :n, :n] = p["pairwise"].to(dev)
        P = torch.nan_to_num(M.win_probabilities(pw[..., 0]), nan=0.5)
        lam, chi = self.lam.to(dev), self.chi.to(dev)
        if cfg.mopo_form == "robust":
            Q = torch.stack([M.robust_win_probabilities(pw[..., 1 + j], chi[j], cfg.robust_radius)
                             for j in range(J)], -1) if J else torch.zeros(B, n_max, 0, device=dev)
        else:
            Q = M.win_probabilities(pw[..., 1:].movedim(-1, 1).reshape(B * J, n_max, n_max)).view(B, J, n_max).movedim(1, -1) \
                if J else torch.zeros(B, n_max, 0, device=dev)
        Q = torch.nan_to_num(Q, nan=0.5)
        w = M.mopo_weights(M.mopo_log_ratio(P, Q, lam, cfg.tau), mask, log_prior, cfg.max_weight)
        loss = M.mopo_policy_loss(logp, w, mask).mean()
        row = {}
        ess = float(M.effective_sample_fraction(w, mask).mean())
        row["ess_fraction"] = ess
        row[f"win/{self.names[0]}"] = float(M.expected_under_target(P.unsqueeze(-1), w, mask)[0])
        if J:
            eq = self.accelerator.reduce(M.expected_under_target(Q, w, mask), "mean") \
                if self.accelerator.num_processes > 1 else M.expected_under_target(Q, w, mask)
            for j, (name, _b) in enumerate(self.cons):
                row[f"win/{name}"] = float(eq[j])
            self.lam = M.dual_step(lam, eq, self.bounds.to(dev), cfg.dual_lr, cfg.lam_max).cpu()
            if cfg.mopo_form == "robust":
                self.chi = M.robust_chi_step(chi, pw[..., 1:], mask, w, cfg.robust_radius, cfg.dual_lr).cpu()
            if (self.lam >= cfg.lam_max - 1e-9).any():
                self._warn("lam", f"MOPO: a dual variable reached lam_max={cfg.lam_max} at step {step}: the constraint "
                           "looks unreachable with these candidates; the ratios are tempered (max_weight)")
        if ess < 0.3:
            self._warn("ess", f"MOPO: effective sample size {ess:.2f} of the pool at step {step}; the importance "
                       "weights are close to one-hot (collapse risk)")
        if cfg.refresh_every and step % cfg.refresh_every == 0:
            self._mopo_refresh(row)
        return loss, row

    def _mopo_refresh(self, row: dict) -> None:
        """Reference <- current policy; each bound <- max(your threshold, bound_relax * achieved win rate)
        (the paper's Algorithm 1 with the user's threshold as a floor; see losses/mopo.py)."""
        cfg = self.config
        for j, (name, b0) in enumerate(self.cons):
            achieved = row.get(f"win/{name}", 0.0)
            self.bounds[j] = max(float(b0), cfg.bound_relax * achieved)
        self.ref_snapshot = self._trainable_state()

    def _mopo_state_row(self) -> dict:
        out = {}
        for j, (name, _b) in enumerate(self.cons):
            out[f"lambda/{name}"] = float(self.lam[j])
            out[f"bound/{name}"] = float(self.bounds[j])
            if self.config.mopo_form == "robust":
                out[f"chi/{name}"] = float(self.chi[j])
        return out

    # ------------------------------------------------------------------------------------------
    def train(self) -> dict:
        """Run to ``max_steps`` with checkpoints; returns the summary (also written to summary.json)."""
        return base.run(self)

    # the run lifecycle's protocol (trainers/base.py) -----------------------------------------------
    @property
    def total_steps(self) -> int:
        return self.config.max_steps

    @property
    def progress_desc(self) -> str:
        return self.config.method

    def step_loss(self, row: dict) -> float:
        return row["loss"]

    def postfix(self, row: dict) -> dict:
        return {k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "rewards/accuracy", "ess_fraction")}

    def should_save(self, step: int) -> bool:
        return step % self.config.save_steps == 0

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

    def _save_model(self, folder: Path) -> None:
        policy = self.unwrapped
        if hasattr(policy, "peft_config"):
            policy.save_pretrained(folder / run_dir.POLICY, selected_adapters=["default"])
        else:
            policy.save_pretrained(folder / run_dir.POLICY)
        if self.ref_snapshot is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in self.ref_snapshot.items()}, folder / "mopo_ref.safetensors")

    def save_checkpoint(self, step: int) -> Path:
        extra = {"mopo": {"lambda": self.lam.tolist(), "chi": self.chi.tolist(), "bounds": self.bounds.tolist()}} \
            if self.config.method == "mopo" else None
        return ckpt_lib.save_checkpoint(self.accelerator, self.out, step, self._save_model, self.optimizer,
                                        self.config.save_total_limit, extra)

    def _load_checkpoint(self, ckpt: Path, policy, optimizer) -> None:
        ckpt_lib.load_policy_state(policy, ckpt / run_dir.POLICY)
        ckpt_lib.load_optimizer(optimizer, ckpt)
        state = ckpt_lib.read_state(ckpt)
        self.start_step = int(state["step"])
        if "mopo" in state:
            self.lam = torch.tensor(state["mopo"]["lambda"], dtype=torch.float32)
            self.chi = torch.tensor(state["mopo"]["chi"], dtype=torch.float32)
            self.bounds = torch.tensor(state["mopo"]["bounds"], dtype=torch.float32)
        if (ckpt / "mopo_ref.safetensors").is_file():
            self.ref_snapshot = ckpt_lib.load_tensors(ckpt / "mopo_ref.safetensors")

    def save_final(self) -> Path:
        cfg = self.config
        meta = {"base_model": cfg.model, "method": cfg.method, "objectives": self.names,
                "weights": self.weights.tolist(), "value_head": False}
        return ckpt_lib.save_final(self.accelerator, self.out, self._save_model, self.tokenizer, self.unwrapped,
                                   meta, cfg.max_steps, cfg.seed if self._rebuildable_tiny_base else None)


def example_prompt_text(tokenizer, prompt, cfg: OfflineConfig) -> str:
    """The rendered prompt the trainer feeds the model (for inspection and tests)."""
    return render_prompt(prompt, tokenizer, cfg.use_chat_template, cfg.system_prompt)
