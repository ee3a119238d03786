"""Fronts: preference sweeps and the Pareto fronts they produce.

* :mod:`~paretoalign.fronts.metrics` — Pareto mask, hypervolume, IGD / IGD+ (pure array maths).
* :mod:`~paretoalign.fronts.front` — fronts and comparisons: reference points, front.json, plots, report.
* :mod:`~paretoalign.fronts.sweep` — ``paretoalign front``: one run per preference, evaluated alike.
* :mod:`~paretoalign.fronts.plots`, :mod:`~paretoalign.fronts.html_report` — pictures, report.html.

Layer: fronts sit above training and evaluation (they drive both); nothing below imports them.
"""

# Resolved on first use (PEP 562): importing the package, or its light modules, never pulls in torch
# (`paretoalign --help` builds its parser from config modules beside these).
_EXPORTS = {
    "hypervolume": "paretoalign.fronts.metrics",
    "hypervolume_contributions": "paretoalign.fronts.metrics",
    "igd": "paretoalign.fronts.metrics",
    "igd_plus": "paretoalign.fronts.metrics",
    "normalize_points": "paretoalign.fronts.metrics",
    "pareto_mask": "paretoalign.fronts.metrics",
    "reference_point": "paretoalign.fronts.metrics",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["pareto_mask", "hypervolume", "hypervolume_contributions", "igd", "igd_plus", "reference_point",
           "normalize_points"]
