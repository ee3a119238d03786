"""MODPO (Zhou et al. 2023, arXiv 2310.03708): DPO on the first objective's pairs with the other
objectives as margin rewards.

A margin comes from a scorer (any objective spec), from per-response scores in the data, or from a
frozen implicit-DPO adapter loaded onto the policy's own base model (one base in memory).  Margins
do not change while training, so they are computed once per example and cached.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

import torch

from paretoalign.console import quiet_third_party
from paretoalign.data.prompts import prompt_text
from paretoalign.errors import DataError, ParetoAlignError
from paretoalign.losses.modpo import check_modpo_weights, modpo_loss
from paretoalign.objectives.implicit import ImplicitRewardObjective
from paretoalign.sequences import response_token_logps
from paretoalign.trainers.offline_methods.base import OfflineStrategy, pair_metrics


class MODPOStrategy(OfflineStrategy):
    """Attributes:
        margin_adapters: objective index -> (host model, adapter name, beta) of implicit-DPO margins.
        margin_cache: example index -> [2, K−1] margin rewards of its chosen and rejected responses.
    """

    sharded_refusal = ("MODPO", "each process computes a pair's margin rewards when it first sees the pair, on the "
                                "policy's margin adapters, and gathering split weights needs every process at once")

    def __init__(self, trainer):
        super().__init__(trainer)
        check_modpo_weights(trainer.weights, trainer.K - 1)
        self.margin_adapters: dict[int, tuple] = {}
        self.margin_cache: dict[int, torch.Tensor] = {}

    def label_names(self) -> list[str]:
        return [self.trainer.names[0]]

    def build_examples(self) -> list:
        tr = self.trainer
        pairs = tr.data.oriented(tr.names[0])
        for e in tr.entries[1:]:
            if e.scorer is None:
                for p in pairs:
                    for side in ("chosen_scores", "rejected_scores"):
                        v = getattr(p, side).get(e.name)
                        if v is None or not math.isfinite(float(v)):
                            raise DataError(f"{p.source}: margin objective {e.name!r} has no score in '{side}'; "
                                            "give a scorer spec for it or scores for every response")
        return pairs

    def setup(self, policy, ref_model):
        """Load each implicit-DPO margin as a frozen adapter: onto the policy when it is a LoRA model,
        else onto the frozen reference (which then becomes a PEFT model whose base is the reference)."""
        host = policy if hasattr(policy, "peft_config") else ref_model
        for i, e in enumerate(self.trainer.entries[1:], start=1):
            if isinstance(e.scorer, ImplicitRewardObjective):
                from peft import PeftModel

                name = f"margin_{i}"
                if host is ref_model and not hasattr(host, "peft_config"):
                    with quiet_third_party():  # PEFT's FutureWarning on transformers' renamed attribute
                        host = ref_model = PeftModel.from_pretrained(host, str(e.scorer.adapter), adapter_name=name)
                else:
                    host.load_adapter(str(e.scorer.adapter), adapter_name=name, is_trainable=False)
                self.margin_adapters[i] = (host, name, e.scorer.beta)
        if self.margin_adapters and hasattr(policy, "peft_config"):
            policy.set_adapter("default")
            for n, p in policy.named_parameters():
                if "margin_" in n:
                    p.requires_grad_(False)
        return ref_model

    def loss(self, idx, step):
        cfg, tr = self.config, self.trainer
        pairs = [tr.examples[i] for i in idx]
        batch, pc, pr, rc, rr = tr._pair_logps(pairs)
        B = len(pairs)
        chosen, rejected = batch.select(slice(0, B)), batch.select(slice(B, 2 * B))
        t0 = time.perf_counter()
        mc, mr = self.margins(idx, pairs, chosen, rejected, rc, rr)
        t_margin = time.perf_counter() - t0
        losses = modpo_loss(pc, pr, rc, rr, mc, mr, tr.weights.to(pc.device), cfg.beta)
        row = pair_metrics(cfg.beta, pc, pr, rc, rr)
        for k, name in enumerate(tr.names[1:]):
            row[f"margin/{name}"] = float((mc[:, k] - mr[:, k]).mean())
        row["time_margins"] = t_margin
        return losses.mean(), row

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
    def margins(self, idx: list[int], pairs: list, chosen, rejected, ref_c, ref_r) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, K−1] margin rewards of the chosen and rejected responses (cached per example)."""
        todo = [j for j, i in enumerate(idx) if i not in self.margin_cache]
        if todo:
            sub = [pairs[j] for j in todo]
            cols_c, cols_r = [], []
            for k, e in enumerate(self.trainer.entries[1:], start=1):
                if k in self.margin_adapters:
                    host, name, beta = self.margin_adapters[k]
                    sel = torch.tensor(todo, device=chosen.input_ids.device)
                    with self._adapter(host, name):
                        lc = response_token_logps(host, chosen.select(sel)).sum(1)
                        lr = response_token_logps(host, rejected.select(sel)).sum(1)
                    cols_c.append(beta * (lc - ref_c[sel]))
                    cols_r.append(beta * (lr - ref_r[sel]))
                elif e.scorer is not None:
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
                self.margin_cache[idx[t]] = torch.stack([mc[j], mr[j]]).cpu()
        both = torch.stack([self.margin_cache[i] for i in idx]).to(ref_c.device)  # [B, 2, K-1]
        return both[:, 0], both[:, 1]
