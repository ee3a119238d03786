"""paretoalign: multi-objective alignment of language models.

The public entry points are the combiners (:mod:`paretoalign.combiners`), the objectives
(:mod:`paretoalign.objectives`), the model loader (:mod:`paretoalign.models`) and the online
trainer (:mod:`paretoalign.trainers`); a trained policy is loaded with :func:`load_policy`
(:mod:`paretoalign.inference`).  The command line is ``paretoalign`` (:mod:`paretoalign.cli`).
"""

from paretoalign.errors import ParetoAlignError
from paretoalign.lazy import lazy_exports

__version__ = "0.1.0"

# Resolved on first use (PEP 562): ``import paretoalign`` stays light (no torch, no transformers).
_LAZY = {
    "load_policy": "paretoalign.inference",
    "refresh_model_card": "paretoalign.model_card",
}


__getattr__ = lazy_exports(globals(), _LAZY)


__all__ = ["ParetoAlignError", "__version__", "load_policy", "refresh_model_card"]
