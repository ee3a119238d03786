"""paretoalign: multi-objective alignment of language models.

The public entry points are the combiners (:mod:`paretoalign.combiners`), the objectives
(:mod:`paretoalign.objectives`), the model loader (:mod:`paretoalign.models`) and the online
trainer (:mod:`paretoalign.trainers`).  The command line is ``paretoalign`` (:mod:`paretoalign.cli`).
"""

from paretoalign.errors import ParetoAlignError

__version__ = "0.1.0"
__all__ = ["ParetoAlignError", "__version__"]
