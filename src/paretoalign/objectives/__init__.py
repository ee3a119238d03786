"""Objectives: named things to maximise, scored per (prompt, completion), and the sets of them.

Build them from spec strings (``"sentiment,length(scale=100,unit=words)"``) or YAML dicts with
:func:`build_objective_set` / :func:`build_objective`; see :mod:`paretoalign.objectives.spec` for the
syntax, :mod:`paretoalign.objectives.registry` for the kinds and the dict form, and :class:`ObjectiveSet`
(:mod:`paretoalign.objectives.base`) for the reward tensor, its orientation and the NaN rule.
The objective classes live in :mod:`.rules`, :mod:`.embedding` and :mod:`.models`; model-backed
ones import transformers only when they first load their model.
"""

from paretoalign.objectives.base import Objective, ObjectiveSet, check_scores
from paretoalign.objectives.embedding import RelevanceObjective, SentenceEmbedder
from paretoalign.objectives.models import PythonObjective, RewardModelObjective
from paretoalign.objectives.registry import (
    available_objectives,
    build_objective,
    build_objective_set,
    register_objective,
)
from paretoalign.objectives.rules import KeywordObjective, LengthObjective, ReadabilityObjective, SentimentObjective
from paretoalign.objectives.spec import parse_objective_spec, split_objective_specs

__all__ = [
    "Objective",
    "ObjectiveSet",
    "available_objectives",
    "build_objective",
    "build_objective_set",
    "check_scores",
    "parse_objective_spec",
    "register_objective",
    "split_objective_specs",
    "LengthObjective",
    "SentimentObjective",
    "ReadabilityObjective",
    "KeywordObjective",
    "RelevanceObjective",
    "SentenceEmbedder",
    "RewardModelObjective",
    "PythonObjective",
]
