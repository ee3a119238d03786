"""Evaluation: generate on held-out prompts with fixed seeds and score every objective.

* :mod:`~paretoalign.evaluation.scoring` — generate + score, summaries, win rates.
* :mod:`~paretoalign.evaluation.evaluate` — ``paretoalign evaluate`` (cached eval.json).
* :mod:`~paretoalign.evaluation.targets` — what is evaluated (run, checkpoint, model), its fingerprint and loading.
* :mod:`~paretoalign.evaluation.cache` — the completions and scores cache behind ``paretoalign evaluate``.

Layer: evaluation stands beside training; neither imports the other.  Fronts (sweeps, hypervolume,
plots) build on both: :mod:`paretoalign.fronts`.
"""

from paretoalign.evaluation.scoring import evaluate_policy, summarize_scores, win_rates

__all__ = ["evaluate_policy", "summarize_scores", "win_rates"]
