"""MAPL (Sun et al. 2025, "Multi-Level Aware Preference Learning", arXiv 2505.12845), DPO form.

The data is a MAPL folder made by ``paretoalign pairs --mapl`` (schema:
:mod:`paretoalign.data.prompt_pairs`).  A step's loss is the paper's total [P]

    L = mapl_pairs_coef·L_0 + mapl_intra_coef·L_intra + mapl_inter_coef·L_inter

- L_intra (the method): for one response y, DPO across two prompts, x_w (instructions y satisfies)
  over x_l (instructions it violates): −log σ(β·log π(y|x_w)/π_ref(y|x_w) − β·log π(y|x_l)/π_ref(y|x_l)),
  with the optional anchor term [R] (``--mapl-anchor``) of :func:`paretoalign.losses.mapl.mapl_intra_loss`;
- L_0: DPO on the folder's original pairs (``pairs.jsonl``), labels scalarised by the weights as for ``dpo``;
- L_inter [R, this library's reconstruction]: DPO on the folder's ``inter.jsonl`` (pairs on
  instruction-augmented prompts), conflicts decided by ``--mapl-conflict-rule``.

Each level has its own batch of ``--batch-size`` examples per micro-batch: the intra-sample triples
are the trainer's examples (its seeded epochs); the other two sets are indexed the same way with
their own permutations (``indices_for_step(..., stream=)``), so a resumed run sees exactly the
examples it would have.

The two prompts' normalisers do not cancel (see :mod:`paretoalign.losses.mapl`): the intra loss can
fall just by pushing π(y|x_l) down.  Every step logs :func:`~paretoalign.losses.mapl.normaliser_diagnostic`
on the intra batch (``mapl/logp_w``, ``mapl/logp_l``, ``mapl/delta_w``, ``mapl/delta_l``,
``mapl/down_share``), and the intra accuracy and margin of the implicit rewards.
"""

from __future__ import annotations

import torch

from paretoalign.data.prompt_pairs import MaplData, load_mapl_data
from paretoalign.errors import ConfigError, DataError
from paretoalign.losses.dpo import dpo_loss
from paretoalign.losses.mapl import mapl_inter_loss, mapl_intra_loss, normaliser_diagnostic
from paretoalign.sequences import response_token_logps
from paretoalign.trainers.offline_methods.base import OfflineStrategy, pair_metrics

INTER_STREAM, PAIRS_STREAM = 1, 2  # the secondary sets' permutation streams


class MAPLStrategy(OfflineStrategy):
    """Attributes:
        pairs: L_0's oriented original pairs (empty when the term is off or the folder has none).
        inter: L_inter's pairs (empty when ``--mapl-inter-coef`` is 0).
    """

    @classmethod
    def load_data(cls, config) -> MaplData:
        return load_mapl_data(config.pairs, max_rows=config.max_pairs)

    def __init__(self, trainer):
        super().__init__(trainer)
        cfg, data = self.config, trainer.data
        if not isinstance(data, MaplData):
            raise ConfigError("--method mapl trains on prompt-side pairs: give --pairs a folder made by "
                              "`paretoalign pairs --mapl` (intra.jsonl), not plain preference pairs")
        self.inter = list(data.inter) if cfg.mapl_inter_coef > 0 else []
        if cfg.mapl_inter_coef > 0 and not self.inter:
            raise ConfigError(f"--mapl-inter-coef {cfg.mapl_inter_coef:g} needs inter-sample pairs, and {data.name} has "
                              "no inter.jsonl (make it with `paretoalign pairs --mapl` from pairs) or it is empty")
        self.use_pairs = cfg.mapl_pairs_coef > 0 and data.pairs is not None
        if cfg.mapl_pairs_coef > 0 and data.pairs is None:
            self._warn("no_pairs", f"MAPL: {data.name} has no original pairs (pairs.jsonl), so L_0 is left out; "
                       "the run trains the prompt-side level only")
        self.pairs: list = []

    def label_names(self) -> list[str]:
        return list(self.trainer.names) if self.use_pairs else []

    def build_examples(self) -> list:
        tr = self.trainer
        if self.use_pairs:
            data = tr.data.pairs
            self.pairs = data.oriented(tr.names[0]) if tr.K == 1 else \
                data.scalarized(dict(zip(tr.names, tr.weights.tolist())))
            if not self.pairs:
                raise DataError(f"{data.name}: no original pair has a strict label on {tr.names}; "
                                "set --mapl-pairs-coef 0 to train without L_0")
        return list(tr.data.intra)

    # --- a step ----------------------------------------------------------------------------------
    def intra_logps(self, examples: list):
        """The intra batch [x_w; x_l] with the same response: policy and reference log π(y|x_w),
        log π(y|x_l) (sums over y's tokens) and |y| in tokens."""
        tr = self.trainer
        B = len(examples)
        batch = tr._encode([e.prompt_w for e in examples] + [e.prompt_l for e in examples],
                           [e.response for e in examples] * 2)
        logp = response_token_logps(tr.model, batch).sum(1)
        ref = tr._ref_logps(batch)
        return logp[:B], logp[B:], ref[:B], ref[B:], batch.response_mask[:B].sum(1)

    def loss(self, idx, step):
        cfg, tr = self.config, self.trainer
        micro = getattr(tr, "micro", 0)
        pw, pl, rw, rl, length_w = self.intra_logps([tr.examples[i] for i in idx])
        intra = mapl_intra_loss(pw, pl, rw, rl, cfg.beta, cfg.mapl_anchor, cfg.mapl_anchor_coef, length_w,
                                cfg.mapl_drop_margin)
        loss = cfg.mapl_intra_coef * intra.mean()
        row = normaliser_diagnostic(pw, pl, rw, rl)
        margin = cfg.beta * ((pw - rw) - (pl - rl)).detach()
        row.update({"mapl/intra_loss": float(intra.detach().mean()),
                    "mapl/intra_accuracy": float((margin > 0).float().mean()),
                    "mapl/intra_margin": float(margin.mean())})
        if self.inter:
            j = tr.indices_for_step(step, micro, size=len(self.inter), stream=INTER_STREAM)
            pairs = [self.inter[i] for i in j]
            _, pc, pr, rc, rr = tr._pair_logps(pairs)
            conflict = torch.tensor([p.conflict for p in pairs], device=pc.device)
            inter = mapl_inter_loss(pc, pr, rc, rr, cfg.beta, conflict, cfg.mapl_conflict_rule)
            loss = loss + cfg.mapl_inter_coef * inter.mean()
            row["mapl/inter_loss"] = float(inter.detach().mean())
            row["mapl/inter_conflicts"] = float(conflict.float().mean())
        if self.pairs:
            j = tr.indices_for_step(step, micro, size=len(self.pairs), stream=PAIRS_STREAM)
            _, pc, pr, rc, rr = tr._pair_logps([self.pairs[i] for i in j])
            base = dpo_loss(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
            loss = loss + cfg.mapl_pairs_coef * base.mean()
            row["mapl/pairs_loss"] = float(base.detach().mean())
            row.update(pair_metrics(cfg.beta, pc, pr, rc, rr))
        return loss, row
