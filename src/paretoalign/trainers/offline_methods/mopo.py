"""MOPO (Agnihotri et al. 2025): the primary objective's win rate under constraints on the others'.

Examples are pools (a prompt's candidates with pairwise win probabilities); a step is importance-
weighted behaviour cloning with the closed-form ratio of :mod:`paretoalign.losses.mopo`, then a
dual step.  The state a resume restores: the duals λ (and χ of the robust form), the bounds the
refresh ratchets, and the refreshed reference's trainable weights (``mopo_ref.safetensors``).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import save_file

from paretoalign.errors import ConfigError
from paretoalign.losses import mopo as M
from paretoalign.sequences import response_token_logps
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.offline_methods.base import OfflineStrategy

REF_FILE = "mopo_ref.safetensors"  # the refreshed reference, in checkpoints (and final/)


class MOPOStrategy(OfflineStrategy):
    """Attributes:
        cons: the constraints, (objective name, threshold) pairs.
        lam, chi: the dual variables, one per constraint (χ: the robust form's).
        bounds: the current bounds (the thresholds, raised by the refresh).
        ref_snapshot: the refreshed reference's trainable weights (None before the first refresh:
            the reference is the policy's base).
    """

    sharded_refusal = ("MOPO", "its reference snapshots copy the policy's parameters, which a sharded run splits "
                               "over the processes")

    def __init__(self, trainer):
        super().__init__(trainer)
        self.cons = self.config.parsed_constraints()
        known = set(trainer.names[1:])
        for name, _b in self.cons:
            if name not in known:
                raise ConfigError(f"constraint on unknown objective {name!r}; constrainable: {sorted(known)} "
                                  f"(--objectives after the primary {trainer.names[0]!r})")
        self.lam = torch.zeros(len(self.cons))
        self.chi = torch.ones(len(self.cons))
        self.bounds = torch.tensor([b for _, b in self.cons], dtype=torch.float32)
        self.ref_snapshot: dict | None = None

    def label_names(self) -> list[str]:
        return [self.trainer.names[0], *[n for n, _ in self.cons]]

    def build_examples(self) -> list[dict]:
        """Per prompt: candidates and the pairwise win probabilities [n, n] of the primary and each
        constrained objective (from scores, else from the pairs' labels)."""
        cfg = self.config
        names = self.label_names()
        pools = []
        for g in self.trainer.data.groups():
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

    # --- a step ----------------------------------------------------------------------------------
    def loss(self, idx, step):
        cfg, tr = self.config, self.trainer
        pools = [tr.examples[i] for i in idx]
        n_max = max(len(p["responses"]) for p in pools)
        B, J = len(pools), len(self.cons)
        prompts, responses, slots = [], [], []
        for b, p in enumerate(pools):
            for i, r in enumerate(p["responses"]):
                prompts.append(p["prompt"])
                responses.append(r)
                slots.append((b, i))
        batch = tr._encode(prompts, responses)
        dev = batch.input_ids.device
        rows = torch.tensor([s[0] for s in slots], device=dev)
        cols = torch.tensor([s[1] for s in slots], device=dev)
        mask = torch.zeros(B, n_max, dtype=torch.bool, device=dev)
        mask[rows, cols] = True
        log_prior = None
        if self.ref_snapshot is not None:  # before the policy forward: the swap writes into its weights
            with torch.no_grad():
                with self._weights_swapped(self.ref_snapshot):
                    ref_t = response_token_logps(tr.unwrapped, batch).sum(1)
                ref_0 = tr._ref_logps(batch)
            log_prior = torch.zeros(B, n_max, device=dev).index_put((rows, cols), ref_t - ref_0)
        logp_flat = response_token_logps(tr.model, batch).sum(1)
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
        row[f"win/{tr.names[0]}"] = float(M.expected_under_target(P.unsqueeze(-1), w, mask)[0])
        if J:
            acc = tr.accelerator
            eq = acc.reduce(M.expected_under_target(Q, w, mask), "mean") \
                if acc.num_processes > 1 else M.expected_under_target(Q, w, mask)
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
            self.refresh(row)
        return loss, row

    def refresh(self, row: dict) -> None:
        """Reference <- current policy; each bound <- max(your threshold, bound_relax * achieved win rate)
        (the paper's Algorithm 1 with the user's threshold as a floor; see losses/mopo.py)."""
        cfg = self.config
        for j, (name, b0) in enumerate(self.cons):
            achieved = row.get(f"win/{name}", 0.0)
            self.bounds[j] = max(float(b0), cfg.bound_relax * achieved)
        self.ref_snapshot = self._trainable_state()

    def state_row(self) -> dict:
        out = {}
        for j, (name, _b) in enumerate(self.cons):
            out[f"lambda/{name}"] = float(self.lam[j])
            out[f"bound/{name}"] = float(self.bounds[j])
            if self.config.mopo_form == "robust":
                out[f"chi/{name}"] = float(self.chi[j])
        return out

    # --- the reference snapshot ------------------------------------------------------------------
    @contextmanager
    def _weights_swapped(self, state: dict):
        """Temporarily load ``state`` (name -> tensor, the trainable parameters) into the policy."""
        params = dict(self.trainer.unwrapped.named_parameters())
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
        return {n: p.detach().clone().cpu() for n, p in self.trainer.unwrapped.named_parameters() if p.requires_grad}

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"lambda": self.lam.tolist(), "chi": self.chi.tolist(), "bounds": self.bounds.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.lam = torch.tensor(state["lambda"], dtype=torch.float32)
        self.chi = torch.tensor(state["chi"], dtype=torch.float32)
        self.bounds = torch.tensor(state["bounds"], dtype=torch.float32)

    def save_files(self, folder: Path) -> None:
        if self.ref_snapshot is not None:
            save_file({k: v.contiguous() for k, v in self.ref_snapshot.items()}, Path(folder) / REF_FILE)

    def load_files(self, folder: Path) -> None:
        if (Path(folder) / REF_FILE).is_file():
            self.ref_snapshot = ckpt_lib.load_tensors(Path(folder) / REF_FILE)
