"""THE method table: every method once, with its family, config, trainer and paper.

The CLI's ``--method`` choices (``train``, ``front``, ``demo``), the front sweep's dispatch and the
README's method table are read from (or checked against, in ``tests/trainers/test_methods.py``)
this table.  Adding a method = one row here + its config fields, its loss (losses/) and its step:
in its family's trainer, or, for an offline method, a strategy in :mod:`paretoalign.trainers.offline_methods`.

Families share a config class and a trainer (the run lifecycle is :mod:`paretoalign.trainers.base`):

* ``online``: generate, score, update (PPO-style or group baselines);
* ``offline``: preference pairs, no generation while training;
* ``steerable``: one model for every preference, steered at inference (a front evaluates the one
  model per preference instead of training one model per point);
* ``conditioned``: also one model for every preference, trained by supervised fine-tuning on
  responses whose prompt carries their own scores (RiC, :mod:`paretoalign.trainers.ric_trainer`);
  steered by the target scores a preference maps to.
* ``merging``: no trainer of its own.  Its *endpoints* are ordinary runs of another method, one per
  objective (one-hot weights); every preference is then served by merging them (Rewarded Soups,
  :mod:`paretoalign.merging`).  ``paretoalign merge`` makes one merge; ``front --method rs`` trains the
  K endpoints once (``--endpoint-method``, default morlhf) or takes them (``--endpoints``) and evaluates
  a merge per preference.
* ``decoding``: the same K endpoints, combined per preference at decoding time instead (MOD: their
  next-token distributions, :mod:`paretoalign.mod`); ``paretoalign evaluate --mod`` evaluates one
  preference, ``front --method mod`` all of them.  ``ENDPOINT_FAMILIES`` lists both.

Classes are named by import path and loaded on first use, so reading the table (``--help``,
choices) loads no trainer.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

from paretoalign.errors import ConfigError

Family = Literal["online", "offline", "steerable", "conditioned", "experts", "constrained", "merging", "decoding"]

# family -> (config class, trainer class), as "module:Class"
FAMILY_CLASSES: dict[str, tuple[str, str]] = {
    "online": ("paretoalign.trainers.online_config:OnlineConfig", "paretoalign.trainers.online_trainer:OnlineTrainer"),
    "offline": ("paretoalign.trainers.offline_config:OfflineConfig",
                "paretoalign.trainers.offline_trainer:OfflineTrainer"),
    "steerable": ("paretoalign.trainers.dpa_config:DPAConfig", "paretoalign.trainers.dpa_trainer:DPATrainer"),
    "conditioned": ("paretoalign.trainers.ric_config:RicConfig", "paretoalign.trainers.ric_trainer:RicTrainer"),
    "experts": ("paretoalign.trainers.hoe_config:HoEConfig", "paretoalign.trainers.hoe_trainer:HoETrainer"),
    "constrained": ("paretoalign.trainers.cgpo_config:CGPOConfig", "paretoalign.trainers.cgpo_trainer:CGPOTrainer"),
}
# Families without a trainer of their own: a front trains K one-objective endpoints with another method
# (``front --endpoint-method``) and makes each preference's point from them.
ENDPOINT_FAMILIES: tuple[str, ...] = ("merging", "decoding")


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
        steerable: every preference is served at inference without training for it (one model
            steered by its input, or K endpoints re-merged per preference).
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
    def trains(self) -> bool:
        """Does ``paretoalign train --method <name>`` train it (False: its endpoints are trained by other methods)?"""
        return self.family in FAMILY_CLASSES

    @property
    def config_class(self):
        return _load(FAMILY_CLASSES[self._trained()][0])

    @property
    def trainer_class(self):
        return _load(FAMILY_CLASSES[self._trained()][1])

    def _trained(self) -> str:
        if self.family not in FAMILY_CLASSES:
            raise ConfigError(
                f"{self.name!r} trains no model of its own: its endpoints are ordinary runs, one per objective "
                f"(e.g. `paretoalign train --method morlhf --weights 1,0`, then --weights 0,1), "
                + ("merged by `paretoalign merge --endpoints a=RUN,b=RUN --weights 0.3,0.7`" if self.family == "merging"
                   else "decoded together by `paretoalign evaluate --mod a=RUN,b=RUN --mod-weights 0.3,0.7`")
                + f"; `paretoalign front --method {self.name}` trains them once and evaluates every preference")
        return self.family


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
    Method("mapl", "offline", "prompt-side pairs for multi-instruction compliance: for one response, DPO prefers "
           "the prompt whose instructions it satisfies (+ original pairs; inter level reconstructed); a front sweeps "
           "the weights of the original pairs' labels, the prompt-side levels fixed",
           "Sun et al. 2025, Multi-Level Aware Preference Learning: Enhancing RLHF for Complex Multi-Instruction "
           "Tasks", "2505.12845"),
    Method("dpa", "steerable", "one model steered by a direction in its system message (rejection-sampling rounds)",
           "Wang et al. 2024, Arithmetic Control of LLMs for Diverse User Preferences: Directional Preference "
           "Alignment with Multi-Objective Rewards", "2402.18571", steerable=True),
    Method("ric", "conditioned", "Rewards-in-Context: one model fine-tuned on responses whose prompt carries their own "
           "normalised scores (then online rounds); steered by the target scores a preference maps to",
           "Yang et al. 2024, Rewards-in-Context: Multi-objective Alignment of Foundation Models with Dynamic "
           "Preference Adjustment", "2402.10207", steerable=True),
    Method("hoe", "experts", "HoE-lite: LoRA experts cut by task-SVD from one-objective endpoints, one router per "
           "anchor preference trained over them (Tchebycheff, mirror-descent weights), preferences served by mixing "
           "the anchors' routers (a reconstruction; no public code)",
           "Li et al. 2025, Multi-objective Large Language Model Alignment with Hierarchical Experts", "2505.20925",
           steerable=True),
    Method("cgpo", "constrained", "CGPO: a reward plus a mixture of judges as hard constraints, reward calibrated "
           "against a baseline answer, KL threshold; CRPG, CODPO or CRRAFT per task, several tasks mixed in one run "
           "(--tasks); a front sweeps the reward's weights over the objectives under the same judges",
           "Xu et al. 2024, The Perfect Blend: Redefining RLHF with Mixture of Judges", "2409.20370"),
    Method("rs", "merging", "Rewarded Soups: K one-objective endpoints (one training per objective), their weights "
           "interpolated per preference (exact LoRA deltas); steered at inference by re-merging",
           "Ramé et al. 2023, Rewarded soups: towards Pareto-optimal alignment by interpolating weights fine-tuned "
           "on diverse rewards", "2306.04488", steerable=True),
    Method("mod", "decoding", "MOD: the same K one-objective endpoints, their next-token distributions combined per "
           "preference at decoding time (f-divergence closed forms; one batched forward over K LoRA adapters)",
           "Shi et al. 2024, Decoding-Time Language Model Alignment with Multiple Objectives", "2406.18853",
           steerable=True),
)

BY_NAME: dict[str, Method] = {m.name: m for m in METHODS}


def method_names(family: str | None = None) -> tuple[str, ...]:
    return tuple(m.name for m in METHODS if family is None or m.family == family)


def endpoint_methods() -> tuple[str, ...]:
    """Methods that can train a soup's endpoints: they take one-hot ``--weights`` (online and offline
    methods that a front can sweep)."""
    return tuple(m.name for m in METHODS if m.family in ("online", "offline") and m.sweepable)


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


__all__ = ["Method", "METHODS", "BY_NAME", "FAMILY_CLASSES", "ENDPOINT_FAMILIES", "method_names", "endpoint_methods",
           "get_method", "check_family", "markdown_table"]
