"""One exception type for every user-facing error.

The CLI prints ``error: <message>`` for a :class:`ParetoAlignError` and exits with status 2,
without a traceback; anything else is a bug and keeps its traceback.
"""


class ParetoAlignError(Exception):
    """A problem with the user's input or environment, explained in the message."""


class ConfigError(ParetoAlignError, ValueError):
    """An invalid configuration value (weights, objective names, paths, options)."""


class ModelNotFoundError(ParetoAlignError):
    """A model name or path that cannot be resolved to weights on this machine."""


class ObjectiveError(ParetoAlignError):
    """An objective that cannot be built, or that returned unusable scores."""


class DataError(ParetoAlignError, ValueError):
    """A dataset file that is missing, empty or malformed (the message names file and row)."""


class RunDirError(ParetoAlignError):
    """A run folder that already holds a run, or that cannot be resumed."""


class FrontError(ParetoAlignError):
    """A front that cannot be built or compared (too few objectives, mismatched fronts, bad reference point, NaN scores)."""
