"""THE method table: every method once, with its family, config, trainer and paper.

The CLI's ``--method`` choices (``train``, ``front``, ``demo``), the front sweep's dispatch and the
README's method table are read from (or checked against, in ``tests/trainers/test_methods.py``)
this table.  Adding a method = one row here + its config fields, its loss (losses/) and its step:
in its family's trainer, or, for an offline method, a strategy in :mod:`paretoalign.trainers.offline_methods`.

Families share a config class and a trainer (the run lifecycle is :mod:`paretoalign.trainers.base`):

* ``online``: generate, score, update (PPO-style or group baselines);
* ``offline``: preference pairs, no generation while training;
* ``steerable``: one model for every preference, steered at inference (a front evaluates the one
  model per preference instead of training one model per point).

Classes are named by import path and loaded on first use, so reading the table (``--help``,
choices) loads no trainer.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from paretoalign.errors import ConfigError

Family = Literal["online", "offline", "steerable"]

# family -> (config class, trainer class), as "module:Class"
FAMILY_CLASSES: dict[str, tuple[str, str]] = {
    "online": ("paretoalign.trainers.online_config:OnlineConfig", "paretoalign.trainers.online_trainer:OnlineTrainer"),
    "offline": ("paretoalign.trainers.offline_config:OfflineConfig",
                "paretoalign.trainers.offline_trainer:OfflineTrainer"),
    "steerable": ("paretoalign.trainers.dpa_config:DPAConfig", "paretoalign.trainers.dpa_trainer:DPATrainer"),
}


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Method:
    """One row of the table.

    Attributes:
        name: the ``--method`` value.
        family: which config and trainer run it (``FAMILY_CLASSES``).
        summary: one line for ``--help`` and the README.
        paper: the paper's title (and authors, year).
        arxiv: its arXiv id ("" where there is none).
        steerable: one trained model serves every preference at inference.
        sweepable: ``paretoalign front`` can sweep it over preference vectors (MOPO takes
            constraints, not weights).
    """

    name: str
    family: Family
    summary: str
    paper: str
    arxiv: str
    steerable: bool = False
    sweepable: bool = True

    @property
    def config_class(self):
        return _load(FAMILY_CLASSES[self.family][0])

    @property
    def trainer_class(self):
        return _load(FAMILY_CLASSES[self.family][1])


METHODS: tuple[Method, ...] = (
    Method("pama", "online", "closed-form O(K) Theorem-1 weights on per-objective Noon-PPO terms (the headline)",
           "He & Maghsudi 2025, Pareto Multi-Objective Alignment for Language Models", "2508.07768"),
    Method("morlhf", "online", "fixed linear weights on the per-objective signals (linear scalarisation)",
           "Wu et al. 2023, Fine-Grained Human Feedback Gives Better Rewards for Language Model Training",
           "2306.01693"),
    Method("mgda-ub", "online", "min-norm weights of the objectives' gradients w.r.t. the last hidden states",
           "Sener & Koltun 2018, Multi-Task Learning as Multi-Objective Optimization", "1810.04650"),
    Method("mo-grpo", "online", "multi-objective GRPO: critic-free group advantages of the weighted objectives",
           "Shao et al. 2024, DeepSeekMath (GRPO); Liu et al. 2026, GDPO (normalise-then-sum)", "2402.03300"),
    Method("dpo", "offline", "DPO on one label or a weighted sum of labels (the offline baseline)",
           "Rafailov et al. 2023, Direct Preference Optimization", "2305.18290"),
    Method("modpo", "offline", "DPO with the other objectives as reward margins (same optimum as MORLHF, no RL)",
           "Zhou et al. 2023, Beyond One-Preference-Fits-All Alignment: Multi-Objective Direct Preference "
           "Optimization", "2310.03708"),
    Method("mopo", "offline", "constrained: a primary objective with lower bounds on the others, closed-form ratio",
           "Agnihotri et al. 2025, Multi-Objective Preference Optimization: Improving Human Alignment of "
           "Generative Models", "2505.10892", sweepable=False),
    Method("amopo", "offline", "dimension-aware prompts, length-normalised rewards, adaptive weights; no reference",
           "Liu et al. 2025, AMoPO: Adaptive Multi-objective Preference Optimization without Reward Models and "
           "Reference Models", "2506.07165"),
    Method("dpa", "steerable", "one model steered by a direction in its system message (rejection-sampling rounds)",
           "Wang et al. 2024, Arithmetic Control of LLMs for Diverse User Preferences: Directional Preference "
           "Alignment with Multi-Objective Rewards", "2402.18571", steerable=True),
)

BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}


def method_names(family: str | None = None) -> tuple[str, ...]:
    return tuple(m.name for m in METHODS if family is None or m.family == family)


def get_method(name: str) -> Method:
    try:
        return BY_NAME[name]
    except KeyError:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(BY_NAME)}") from None


def check_family(name: str, family: str) -> None:
    """A config accepts the methods of its own family only (the table says which)."""
    if get_method(name).family != family:
        raise ConfigError(f"option method: {name!r} is a {get_method(name).family} method, not one of this "
                          f"config's ({', '.join(method_names(family))}); choose one of {', '.join(BY_NAME)}")


def markdown_table() -> str:
    """The README's method table (``tests/trainers/test_methods.py`` checks the README holds exactly this)."""
    rows = ["| `--method` | family | what it does | paper | steerable at inference | in `front` sweeps |",
            "|---|---|---|---|---|---|"]
    for m in METHODS:
        paper = f"{m.paper} ([arXiv {m.arxiv}](https://arxiv.org/abs/{m.arxiv}))" if m.arxiv else m.paper
        rows.append(f"| `{m.name}` | {m.family} | {m.summary} | {paper} | {'yes' if m.steerable else 'no'} | "
                    f"{'yes' if m.sweepable else 'no'} |")
    return "\n".join(rows)


__all__ = ["Method", "METHODS", "BY_NAME", "FAMILY_CLASSES", "method_names", "get_method", "check_family", "markdown_table"]
