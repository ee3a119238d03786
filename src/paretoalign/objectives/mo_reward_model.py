"""A trained multi-objective reward model as objectives: ``reward_model:<folder>`` (its gated score)
and ``reward_model:<folder>#<objective>`` (one head).

Several objectives on the same folder share one loaded model and one backbone pass per batch: the
model is loaded once per process (keyed by its resolved folder) and the last batch's outputs are
kept, so K heads in one :class:`~paretoalign.objectives.ObjectiveSet` cost one forward pass.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from paretoalign.objectives.base import Objective
from paretoalign.reward_model.model import MultiObjectiveRewardModel

_MODELS: dict[str, object] = {}


def _shared_model(folder: Path, device: str, batch_size: int):
    key = f"{folder}|{device}|{batch_size}"
    if key not in _MODELS:
        m = MultiObjectiveRewardModel.from_pretrained(folder)
        # no disk cache and no per-text memory: policy samples are new every step; one batch is kept below
        m.extractor(device=device, batch_size=batch_size, cache_dir=None, keep_in_memory=False)
        m._last = (None, None)
        _MODELS[key] = m
    return _MODELS[key]


def _batch_key(prompts, completions) -> str:
    h = hashlib.sha256()
    for p, c in zip(prompts, completions):
        h.update(repr(p).encode("utf-8", "surrogatepass") + b"\0" + c.encode("utf-8", "surrogatepass") + b"\1")
    return h.hexdigest()


class MultiObjectiveRewardObjective(Objective):
    """One output of a :class:`~paretoalign.reward_model.MultiObjectiveRewardModel` folder:
    ``head=None`` the gated score, else the named head's reward (scaled rating, [0, 1] on its
    training data; ``debiased=True`` gives the verbosity-debiased reward instead)."""

    def __init__(self, folder: str, head: str | None = None, debiased: bool = False, device: str = "auto",
                 batch_size: int = 8, name: str | None = None):
        self.folder = Path(str(folder)).expanduser().resolve()
        self.head, self.debiased = head, bool(debiased)
        self.device, self.batch_size = device, int(batch_size)
        m = self.model  # loads the heads and gate now (the backbone on first score): a bad folder fails here
        if head is not None:
            m.index(head)  # unknown head -> ConfigError naming the known ones
        self.name = name or (head if head else "reward")
        self.spec = f"reward_model:{self.folder}" + (f"#{head}" if head else "")

    @property
    def model(self):
        return _shared_model(self.folder, self.device, self.batch_size)

    def outputs(self, prompts, completions):
        m = self.model
        key = _batch_key(prompts, completions)
        if m._last[0] != key:
            m._last = (key, m.score(prompts, [str(c) for c in completions]))
        return m._last[1]

    def _score(self, prompts, completions):
        out = self.outputs(prompts, completions)
        if self.head is None:
            return out.score
        k = self.model.index(self.head)
        return (out.debiased if self.debiased else out.rewards)[:, k]

    def describe(self) -> dict:
        return {**super().describe(), "kind": "reward_model", "model": str(self.folder), "head": self.head,
                "debiased": self.debiased, "spec": self.spec}


def clear_shared_models() -> None:
    """Forget loaded reward models (tests; or after retraining a folder in place)."""
    _MODELS.clear()


__all__ = ["MultiObjectiveRewardObjective", "clear_shared_models"]
