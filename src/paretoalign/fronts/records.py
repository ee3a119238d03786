"""Typed records of fronts: what ``front.json`` and ``comparison.json`` hold, key by key.

``TypedDict``s over the plain JSON (see :mod:`paretoalign.evaluation.records` for the evaluation a
point is made from).  Means and reference points are in each objective's own units; hypervolume
and the dominance test use oriented values (minimised objectives negated: higher is better).
"""

from __future__ import annotations

from typing import Optional, TypedDict

from paretoalign.evaluation.records import Sample, WinRate


class FrontPoint(TypedDict, total=False):
    """One evaluated policy (or one preference of a steerable policy)."""

    label: str  # the preference as text, e.g. 'w=(0.25, 0.75)', or 'base'
    preference: list[float]  # [K] on the simplex (absent for the base model)
    run_dir: str  # the point's run folder, relative to the front's folder
    mean: list[float]  # [K] per-objective mean over the held-out prompts, raw units
    stderr: list[float]  # [K] standard error of each mean
    samples: list[Sample]
    eval: Optional[str]  # the point's eval.json
    win_rate: Optional[dict[str, WinRate]]  # vs the base model, by objective
    train_seconds: Optional[float]
    dominated: bool  # another point is at least as good on every objective and better on one
    direction: list[float]  # steerable methods: the unit direction the model was given


class Front(TypedDict, total=False):
    """The content of ``front.json`` (:func:`paretoalign.fronts.front.make_front`)."""

    paretoalign_front: int  # format version
    name: str
    method: str
    names: list[str]  # [K]
    objectives: list[dict]
    prompts_sha256: str  # every point was evaluated on these prompts
    prompts: dict
    decoding: dict
    reference_point: list[float]  # [K] raw units
    reference_point_source: str  # how it was chosen
    orientation: list[float]  # [K] +1 / -1
    hypervolume: float  # of the non-dominated points, oriented, against the reference point
    points: list[FrontPoint]
    base: Optional[FrontPoint]
    base_hypervolume: float
    igd: float  # with a reference front
    igd_plus: float
    wall_clock_s: float


class Comparison(TypedDict, total=False):
    """The content of ``comparison.json`` (:func:`paretoalign.fronts.front.compare_fronts`)."""

    paretoalign_comparison: int  # format version
    names: list[str]  # [K]
    objectives: list[dict]
    prompts_sha256: str
    decoding: dict
    reference_point: list[float]  # [K] one shared reference point, raw units
    reference_point_source: str
    orientation: list[float]
    fronts: list[Front]  # each with its hypervolume against the shared reference point
    hypervolumes: dict[str, float]  # by front name
    base: Optional[FrontPoint]
    base_hypervolume: float
    wall_clock_s: float


__all__ = ["FrontPoint", "Front", "Comparison"]
