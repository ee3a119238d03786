"""Evaluation: generate on held-out prompts with fixed seeds and score every objective.

* :mod:`~paretoalign.evaluation.scoring` — generate + score, summaries, win rates.
* :mod:`~paretoalign.evaluation.evaluate` — ``paretoalign evaluate`` (cached eval.json).
* :mod:`~paretoalign.evaluation.targets` — what is evaluated (run, checkpoint, model), its fingerprint and loading.
* :mod:`~paretoalign.evaluation.cache` — the completions and scores cache behind ``paretoalign evaluate``.

Layer: evaluation stands beside training; neither imports the other.  Fronts (sweeps, hypervolume,
plots) build on both: :mod:`paretoalign.fronts`.
"""

# Resolved on first use (PEP 562): importing the package, or its light modules, never pulls in torch
# (`paretoalign --help` builds its parser from config modules beside these).
_EXPORTS = {
    "evaluate_policy": "paretoalign.evaluation.scoring",
    "summarize_scores": "paretoalign.evaluation.scoring",
    "win_rates": "paretoalign.evaluation.scoring",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["evaluate_policy", "summarize_scores", "win_rates"]
