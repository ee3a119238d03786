"""Evaluation: generate on held-out prompts with fixed seeds, score every objective, build fronts.

* :mod:`~paretoalign.evaluation.scoring` — generate + score, summaries, win rates.
* :mod:`~paretoalign.evaluation.evaluate` — ``paretoalign evaluate`` (cached eval.json).
* :mod:`~paretoalign.evaluation.metrics` — Pareto mask, hypervolume, IGD / IGD+.
* :mod:`~paretoalign.evaluation.front` — preference sweeps, fronts, comparisons.
* :mod:`~paretoalign.evaluation.plots`, :mod:`~paretoalign.evaluation.html_report` — pictures, report.html.
"""

from paretoalign.evaluation.metrics import (
    hypervolume,
    hypervolume_contributions,
    igd,
    igd_plus,
    normalize_points,
    pareto_mask,
    reference_point,
)
from paretoalign.evaluation.scoring import evaluate_policy, summarize_scores, win_rates

__all__ = [
    "evaluate_policy",
    "summarize_scores",
    "win_rates",
    "pareto_mask",
    "hypervolume",
    "hypervolume_contributions",
    "igd",
    "igd_plus",
    "reference_point",
    "normalize_points",
]
