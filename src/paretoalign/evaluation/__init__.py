"""Evaluation: generate on held-out prompts with fixed seeds and score every objective.

* :mod:`~paretoalign.evaluation.scoring` — generate + score, summaries, win rates.
* :mod:`~paretoalign.evaluation.evaluate` — ``paretoalign evaluate`` (cached eval.json).
* :mod:`~paretoalign.evaluation.targets` — what is evaluated (run, checkpoint, model), its fingerprint and loading.
* :mod:`~paretoalign.evaluation.cache` — the completions and scores cache behind ``paretoalign evaluate``.

Layer: evaluation stands beside training; neither imports the other.  Fronts (sweeps, hypervolume,
plots) build on both: :mod:`paretoalign.fronts`.
"""

from paretoalign.lazy import lazy_exports

# Resolved on first use (paretoalign.lazy): importing the package never pulls in torch.
_EXPORTS = {
    "evaluate_policy": "paretoalign.evaluation.scoring",
    "summarize_scores": "paretoalign.evaluation.scoring",
    "win_rates": "paretoalign.evaluation.scoring",
}


__getattr__ = lazy_exports(globals(), _EXPORTS)


__all__ = ["evaluate_policy", "summarize_scores", "win_rates"]
