"""Each offline method's strategy for :class:`~paretoalign.trainers.offline_trainer.OfflineTrainer`:
which examples it trains on, its loss (from the pure maths in :mod:`paretoalign.losses`) and the
state only it has.  The interface is :class:`~paretoalign.trainers.offline_methods.base.OfflineStrategy`.
"""

from __future__ import annotations

from paretoalign.trainers.offline_methods.amopo import AMoPOStrategy
from paretoalign.trainers.offline_methods.base import OfflineStrategy
from paretoalign.trainers.offline_methods.dpo import DPOStrategy
from paretoalign.trainers.offline_methods.mapl import MAPLStrategy
from paretoalign.trainers.offline_methods.modpo import MODPOStrategy
from paretoalign.trainers.offline_methods.mopo import MOPOStrategy

# --method -> its strategy: one per offline method of the method table (tests/trainers/test_methods.py)
STRATEGIES: dict[str, type[OfflineStrategy]] = {
    "dpo": DPOStrategy,
    "modpo": MODPOStrategy,
    "mopo": MOPOStrategy,
    "amopo": AMoPOStrategy,
    "mapl": MAPLStrategy,
}

__all__ = ["STRATEGIES", "AMoPOStrategy", "DPOStrategy", "MAPLStrategy", "MODPOStrategy", "MOPOStrategy",
           "OfflineStrategy"]
