"""Fronts: preference sweeps and the Pareto fronts they produce.

* :mod:`~paretoalign.fronts.metrics` — Pareto mask, hypervolume, IGD / IGD+ (pure array maths).
* :mod:`~paretoalign.fronts.front` — fronts and comparisons: reference points, front.json, plots, report.
* :mod:`~paretoalign.fronts.sweep` — ``paretoalign front``: one run per preference, evaluated alike.
* :mod:`~paretoalign.fronts.plots`, :mod:`~paretoalign.fronts.html_report` — pictures, report.html.

Layer: fronts sit above training and evaluation (they drive both); nothing below imports them.
"""

from paretoalign.lazy import lazy_exports

# Resolved on first use (paretoalign.lazy): importing the package never pulls in torch.
_EXPORTS = {
    "hypervolume": "paretoalign.fronts.metrics",
    "hypervolume_contributions": "paretoalign.fronts.metrics",
    "igd": "paretoalign.fronts.metrics",
    "igd_plus": "paretoalign.fronts.metrics",
    "normalize_points": "paretoalign.fronts.metrics",
    "pareto_mask": "paretoalign.fronts.metrics",
    "reference_point": "paretoalign.fronts.metrics",
}


__getattr__ = lazy_exports(globals(), _EXPORTS)


__all__ = ["pareto_mask", "hypervolume", "hypervolume_contributions", "igd", "igd_plus", "reference_point",
           "normalize_points"]
