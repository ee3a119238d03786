"""DPO (Rafailov et al. 2023) on one objective's labels, or on labels scalarised by the weights."""

from __future__ import annotations

from paretoalign.losses.dpo import dpo_loss
from paretoalign.trainers.offline_methods.base import OfflineStrategy, pair_metrics


class DPOStrategy(OfflineStrategy):
    def build_examples(self) -> list:
        tr = self.trainer
        if tr.K == 1:
            return tr.data.oriented(tr.names[0])
        return tr.data.scalarized(dict(zip(tr.names, tr.weights.tolist())))

    def loss(self, idx, step):
        cfg, tr = self.config, self.trainer
        pairs = [tr.examples[i] for i in idx]
        _, pc, pr, rc, rr = tr._pair_logps(pairs)
        losses = dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
        return losses.mean(), pair_metrics(cfg.beta, pc, pr, rc, rr)
