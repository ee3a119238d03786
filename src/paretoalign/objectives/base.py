"""The Objective protocol: one named thing to maximise, scored per (prompt, completion).

Every objective returns one float per sample from ``score``.  Scores are in the objective's own
units; ``direction`` says whether higher is better.  :class:`ObjectiveSet` turns K objectives into
the reward tensor ``[B, K]`` the trainers consume, oriented so that higher is always better, and
applies the NaN rule (see :func:`check_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

Direction = Literal["maximize", "minimize"]


class Objective:
    """Base class.  Subclasses set ``name`` and implement :meth:`_score`.

    Attributes:
        name: the identifier used in configs, logs and plots (e.g. ``"sentiment"``).
        direction: ``"maximize"`` or ``"minimize"``.
        bounds: optional ``(low, high)`` range of the raw score; ``None`` if unbounded.
    """

    name: str = "objective"
    direction: Direction = "maximize"
    bounds: tuple[float, float] | None = None

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        """Score a batch. Returns a float tensor of shape ``[B]`` (may contain NaN; the caller checks)."""
        if len(prompts) != len(completions):
            raise ValueError(
                f"objective {self.name!r}: got {len(prompts)} prompts and {len(completions)} completions"
            )
        if len(completions) == 0:
            return torch.zeros(0, dtype=torch.float32)
        out = self._score(list(prompts), list(completions))
        out = torch.as_tensor(out, dtype=torch.float32).reshape(-1)
        if out.shape[0] != len(completions):
            from paretoalign.errors import ObjectiveError

            raise ObjectiveError(
                f"objective {self.name!r} returned {out.shape[0]} scores for {len(completions)} completions"
            )
        return out

    def _score(self, prompts: list[str], completions: list[str]) -> torch.Tensor | Sequence[float]:
        raise NotImplementedError

    def describe(self) -> dict:
        """A JSON-able description recorded in the run folder."""
        return {"name": self.name, "direction": self.direction, "bounds": self.bounds}

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}(name={self.name!r})"
