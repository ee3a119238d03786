"""What every offline method's strategy implements, and the pair metrics DPO and MODPO share.

The :class:`~paretoalign.trainers.offline_trainer.OfflineTrainer` only orchestrates: set-up, the
batch of example indices, tokenising and log-probabilities, the optimiser step and checkpoints.
Everything that differs between methods is a :class:`OfflineStrategy`: which examples the data
gives, the loss of a batch (from the pure functions in :mod:`paretoalign.losses`), and the state
only that method has (MOPO's duals and reference snapshot, MODPO's margin cache and adapters),
with what of it a checkpoint must restore.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch


class OfflineStrategy:
    """One offline method's specifics (subclassed once per method; see :data:`STRATEGIES`).

    Args:
        trainer: the :class:`~paretoalign.trainers.offline_trainer.OfflineTrainer`, built up to its
            weights.  A strategy reads its ``config``, objectives (``names``, ``entries``, ``weights``),
            ``data``, ``examples``, models (``model``, ``unwrapped``, ``accelerator``) and batching
            (``_encode``, ``_pair_logps``, ``_ref_logps``).  Config checks of the method run here.
    """

    needs_reference = True  # a frozen copy of the policy when training without LoRA
    # (what, why) for a method that does not run sharded (FSDP, DeepSpeed) yet (trainers.sharding.refuse), else None
    sharded_refusal: tuple[str, str] | None = None

    def __init__(self, trainer):
        self.trainer = trainer
        self.config = trainer.config
        self._warned: set = set()

    # --- set-up ----------------------------------------------------------------------------------
    @classmethod
    def load_data(cls, config):
        """The training data of ``--pairs`` (read before the strategy is built): preference pairs,
        unless the method reads another kind (MAPL: prompt-side pairs)."""
        from paretoalign.data.preference_pairs import load_preference_data

        return load_preference_data(config.pairs, format=config.pairs_format, max_rows=config.max_pairs,
                                    allow_download=config.allow_download)

    def label_names(self) -> list[str]:
        """The objectives the pairs data must be labelled for."""
        return list(self.trainer.names)

    def build_examples(self) -> list:
        """The training examples (the trainer indexes them per step)."""
        raise NotImplementedError

    def setup(self, policy, ref_model):
        """Called once the policy (LoRA-wrapped or not) and the reference exist, before the optimiser;
        returns the reference model the trainer keeps (a strategy may wrap it)."""
        return ref_model

    # --- a step ----------------------------------------------------------------------------------
    def loss(self, idx: list[int], step: int) -> tuple[torch.Tensor, dict]:
        """The loss of the examples ``idx`` at ``step`` (1-based) and its metrics row (floats,
        averaged over processes by the trainer)."""
        raise NotImplementedError

    def state_row(self) -> dict:
        """Metrics of the method's state after the step (already the same on every process)."""
        return {}

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict | None:
        """JSON-able state a resume must restore (saved under the method's name in trainer_state.json)."""
        return None

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""

    def save_files(self, folder: Path) -> None:
        """Write the method's tensors into a checkpoint (or final) folder (main process)."""

    def load_files(self, folder: Path) -> None:
        """Read back what :meth:`save_files` wrote, where it is there."""

    # ---------------------------------------------------------------------------------------------
    def _warn(self, key: str, msg: str) -> None:
        """Warn once per run and ``key``."""
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(msg, stacklevel=2)


def pair_metrics(beta: float, pc, pr, rc, rr) -> dict:
    """DPO's implicit rewards β·(log π − log π_ref) of the chosen and rejected responses: means,
    accuracy (chosen above rejected) and margin."""
    rwc, rwr = beta * (pc - rc).detach(), beta * (pr - rr).detach()
    return {"rewards/chosen": float(rwc.mean()), "rewards/rejected": float(rwr.mean()),
            "rewards/accuracy": float((rwc > rwr).float().mean()), "rewards/margin": float((rwc - rwr).mean())}
