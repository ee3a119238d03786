"""Fronts: preference sweeps and the Pareto fronts they produce.

* :mod:`~paretoalign.fronts.metrics` — Pareto mask, hypervolume, IGD / IGD+ (pure array maths).
* :mod:`~paretoalign.fronts.front` — fronts and comparisons: reference points, front.json, plots, report.
* :mod:`~paretoalign.fronts.sweep` — ``paretoalign front``: one run per preference, evaluated alike.
* :mod:`~paretoalign.fronts.plots`, :mod:`~paretoalign.fronts.html_report` — pictures, report.html.

Layer: fronts sit above training and evaluation (they drive both); nothing below imports them.
"""

from paretoalign.fronts.metrics import (
    hypervolume,
    hypervolume_contributions,
    igd,
    igd_plus,
    normalize_points,
    pareto_mask,
    reference_point,
)

__all__ = ["pareto_mask", "hypervolume", "hypervolume_contributions", "igd", "igd_plus", "reference_point",
           "normalize_points"]
