"""AMoPO (Liu et al. 2025, ACL Findings): one dimension-aware prompt per objective, adaptive
weights from the policy's own likelihoods, no reference model."""

from __future__ import annotations

import torch

from paretoalign.losses.amopo import amopo_adaptive_weights, amopo_loss, average_logps
from paretoalign.sequences import response_token_logps
from paretoalign.trainers.offline_config import AMOPO_INTEGRATE_ROW
from paretoalign.trainers.offline_methods.base import OfflineStrategy


def _on_last_user_turn(prompt, template: str, **fields):
    """``template`` (with ``{prompt}``) applied to a text prompt, or to the content of the last user
    message of a chat (a copy; the input is not mutated)."""
    if isinstance(prompt, list):
        msgs = [dict(m) for m in prompt]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
        msgs[last]["content"] = template.format(prompt=msgs[last]["content"], **fields)
        return msgs
    return template.format(prompt=prompt, **fields)


class AMoPOStrategy(OfflineStrategy):
    needs_reference = False

    def build_examples(self) -> list:
        names = self.trainer.names
        return [p for p in self.trainer.data.pairs if any(p.labels.get(n) in (1.0, -1.0) for n in names)]

    def dimension_prompt(self, prompt, dimension: str):
        """AMoPO's dimension-aware prompt: the template applied to the (last) user message."""
        return _on_last_user_turn(prompt, self.config.dimension_template, dimension=dimension)

    def integrate_prompt(self, prompt):
        """AMoPO's "integrate all dimensions" prompt (``--amopo-integrate-all``; the reference code's
        ``no_object`` row): ``--integrate-template`` applied to the (last) user message."""
        return _on_last_user_turn(prompt, self.config.integrate_template, dimensions=", ".join(self.trainer.names))

    def loss(self, idx, step):
        cfg, trainer = self.config, self.trainer
        pairs = [trainer.examples[i] for i in idx]
        rows = trainer.names + ([AMOPO_INTEGRATE_ROW] if cfg.amopo_integrate_all else [])
        B, D = len(pairs), len(rows)
        prompts, chosen, rejected = [], [], []
        valid = torch.zeros(B, D, dtype=torch.bool)
        for b, p in enumerate(pairs):
            for d, name in enumerate(trainer.names):
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
        batch = trainer._encode(prompts * 2, chosen + rejected)
        tok = response_token_logps(trainer.model, batch)  # [2BD, T]
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
            plain = trainer._encode([p.prompt for p in pairs], [p.chosen for p in pairs])
            sft = -average_logps(response_token_logps(trainer.model, plain), plain.response_mask)
        losses = amopo_loss(avg_c, avg_r, w, valid, cfg.amopo_beta, cfg.amopo_gamma, sft, cfg.sft_coef,
                            reduction=cfg.amopo_reduction)
        row = {}
        margin = (avg_c - avg_r).detach()
        for d, name in enumerate(rows):
            v = valid[:, d]
            row[f"weight/{name}"] = float(w[:, d].mean())
            row[f"accuracy/{name}"] = float((margin[v, d] > 0).float().mean()) if v.any() else 0.0
        return losses.mean(), row
