"""Objectives: named things to maximise, scored per (prompt, completion), and the sets of them.

Build them from spec strings (``"sentiment,length(scale=100,unit=words)"``) or YAML dicts with
:func:`build_objective_set` / :func:`build_objective`; see :mod:`paretoalign.objectives.spec` for the
syntax, :mod:`paretoalign.objectives.registry` for the kinds and the dict form, and :class:`ObjectiveSet`
(:mod:`paretoalign.objectives.base`) for the reward tensor, its orientation and the NaN rule.
The objective classes live in :mod:`.rules`, :mod:`.embedding` and :mod:`.models`; model-backed
ones import transformers only when they first load their model.
"""

from paretoalign.lazy import lazy_exports

# Resolved on first use (paretoalign.lazy): importing the package never pulls in torch.
_EXPORTS = {
    "Objective": "paretoalign.objectives.base",
    "ObjectiveSet": "paretoalign.objectives.base",
    "check_scores": "paretoalign.objectives.base",
    "RelevanceObjective": "paretoalign.objectives.embedding",
    "SentenceEmbedder": "paretoalign.objectives.embedding",
    "PythonObjective": "paretoalign.objectives.models",
    "RewardModelObjective": "paretoalign.objectives.models",
    "available_objectives": "paretoalign.objectives.registry",
    "build_objective": "paretoalign.objectives.registry",
    "build_objective_set": "paretoalign.objectives.registry",
    "register_objective": "paretoalign.objectives.registry",
    "KeywordObjective": "paretoalign.objectives.rules",
    "LengthObjective": "paretoalign.objectives.rules",
    "ReadabilityObjective": "paretoalign.objectives.rules",
    "SentimentObjective": "paretoalign.objectives.rules",
    "parse_objective_spec": "paretoalign.objectives.spec",
    "split_objective_specs": "paretoalign.objectives.spec",
}


__getattr__ = lazy_exports(globals(), _EXPORTS)


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
