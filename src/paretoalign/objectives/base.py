"""The Objective protocol (one named thing to maximise, scored per (prompt, completion)) and ObjectiveSet.

Every objective returns one float per sample from ``score``.  Scores are in the objective's own
units; ``direction`` says whether higher is better.  :class:`ObjectiveSet` turns K objectives into
the reward tensor ``[B, K]`` the trainers consume, oriented so that higher is always better, and
applies the NaN rule (see :func:`check_scores`).
"""

from __future__ import annotations

import warnings
from typing import Iterator, Literal, Sequence

import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.objectives.spec import spec_with_name

Direction = Literal["maximize", "minimize"]
DIRECTIONS = ("maximize", "minimize")


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


NAN_POLICIES = ("fail", "skip")


def check_scores(
    scores: torch.Tensor,
    names: Sequence[str],
    completions: Sequence[str] | None = None,
    nan_policy: str = "fail",
) -> torch.Tensor:
    """The NaN rule.  ``scores`` is ``[B, K]`` (objective ``k`` named ``names[k]``); returns ``valid [B]``.

    A score that is NaN or ±inf (an objective that could not score a sample; ``None`` from a
    user function arrives here as NaN) makes its sample invalid.

    - ``nan_policy="fail"``: raise :class:`~paretoalign.errors.ObjectiveError` naming the
      objective, how many samples, the first offending index and its completion (truncated).
    - ``nan_policy="skip"``: mark those samples invalid (``valid[i] = False``) and warn
      (``RuntimeWarning``) once per offending objective, naming it and the count.  If no sample
      is left valid, raise ``ObjectiveError`` all the same (there is nothing to learn from).
    """
    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}; got {nan_policy!r}")
    if scores.dim() != 2 or scores.shape[1] != len(names):
        raise ValueError(f"check_scores: expected scores [B, {len(names)}], got {tuple(scores.shape)}")
    bad = ~torch.isfinite(scores)  # [B, K]
    valid = ~bad.any(dim=1)
    if bool(valid.all()):
        return valid
    B = scores.shape[0]
    problems = []
    for k, name in enumerate(names):
        idx = bad[:, k].nonzero().flatten().tolist()
        if not idx:
            continue
        i = idx[0]
        what = "nan" if bool(torch.isnan(scores[i, k])) else f"{float(scores[i, k])}"
        text = ""
        if completions is not None and i < len(completions):
            c = str(completions[i])
            text = f", completion {c[:80]!r}" + ("..." if len(c) > 80 else "")
        problems.append((name, len(idx), f"objective {name!r} returned a non-finite score for {len(idx)} of {B} "
                                         f"sample(s); first at index {i} (value {what}{text})"))
    if nan_policy == "fail":
        others = "".join(f"; also {n!r} ({c})" for n, c, _ in problems[1:])
        raise ObjectiveError(f"{problems[0][2]}{others}. Fix the objective, or use nan_policy='skip' to drop "
                             "such samples")
    for name, count, _ in problems:
        warnings.warn(f"objective {name!r}: {count} of {B} sample(s) have a non-finite score; they are marked "
                      "invalid (nan_policy='skip')", RuntimeWarning, stacklevel=3)
    if not bool(valid.any()):
        raise ObjectiveError(f"every sample of the batch ({B}) has a non-finite score (first: {problems[0][2]}); "
                             "nothing left to use even with nan_policy='skip'")
    return valid


class ObjectiveSet:
    """K objectives scored together: the reward vector ``[B, K]`` the trainers consume.

    Orientation: :meth:`rewards` is oriented so that **higher is always better** -- the score of
    a ``direction="minimize"`` objective is negated (``rewards = raw * signs``, ``signs[k]`` is
    +1 or -1).  :meth:`raw_scores` gives the scores in each objective's own units, unoriented,
    for reports and plots.

    NaN rule (:func:`~paretoalign.objectives.base.check_scores`): a NaN, ±inf or missing score
    makes its sample invalid.  ``nan_policy="fail"`` (default) raises ``ObjectiveError`` naming
    the objective, the count, the first index and its completion; ``"skip"`` returns
    ``valid=False`` for those samples, sets their whole reward row to 0.0 (so sums and means
    never turn NaN -- but the caller must mask with ``valid``), and warns with the objective's
    name and count; a batch with no valid sample raises even under ``"skip"``.
    """

    def __init__(self, objectives: Sequence[Objective], nan_policy: str = "fail"):
        objectives = list(objectives)
        if not objectives:
            raise ConfigError("an objective set needs at least one objective")
        for o in objectives:
            if not isinstance(o, Objective):
                raise ConfigError(f"not an Objective: {o!r} (build one with build_objective)")
            if o.direction not in DIRECTIONS:
                raise ConfigError(f"objective {o.name!r}: direction must be maximize or minimize; got {o.direction!r}")
        seen: dict[str, Objective] = {}
        for o in objectives:
            if o.name in seen:
                a, b = getattr(seen[o.name], "spec", o.name), getattr(o, "spec", o.name)
                eg = "" if "name=" in b else f", e.g. {spec_with_name(b, o.name + '_2')}"
                raise ConfigError(f"duplicate objective name {o.name!r} ({a} and {b}); give each objective of a "
                                  f"set its own name with name=...{eg}")
            seen[o.name] = o
        if nan_policy not in NAN_POLICIES:
            raise ConfigError(f"nan_policy must be one of {', '.join(NAN_POLICIES)}; got {nan_policy!r}")
        self.objectives = objectives
        self.nan_policy = nan_policy

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def k(self) -> int:
        return len(self.objectives)

    @property
    def signs(self) -> torch.Tensor:
        """``[K]`` float32: +1 for maximize, -1 for minimize (``rewards = raw * signs``)."""
        return torch.tensor([1.0 if o.direction == "maximize" else -1.0 for o in self.objectives])

    def __len__(self) -> int:
        return len(self.objectives)

    def __iter__(self) -> Iterator[Objective]:
        return iter(self.objectives)

    def __getitem__(self, key: int | str) -> Objective:
        if isinstance(key, str):
            for o in self.objectives:
                if o.name == key:
                    return o
            raise KeyError(f"no objective named {key!r}; have {', '.join(self.names)}")
        return self.objectives[key]

    def describe(self) -> list[dict]:
        """JSON-able description of each objective (with the ``spec`` that rebuilds it, if known)."""
        out = []
        for o in self.objectives:
            d = dict(o.describe())
            if getattr(o, "spec", None):
                d["spec"] = o.spec
            out.append(d)
        return out

    def raw_scores(self, prompts: Sequence[str], completions: Sequence[str]) -> torch.Tensor:
        """``[B, K]`` float32 scores in each objective's own units; unoriented and unchecked (may hold NaN)."""
        cols = [o.score(prompts, completions) for o in self.objectives]
        return torch.stack(cols, dim=1) if cols else torch.zeros(len(completions), 0)

    def rewards(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rewards [B, K] float32, valid [B] bool)``: oriented (higher is better), NaN rule applied."""
        raw = self.raw_scores(prompts, completions)
        valid = check_scores(raw, self.names, completions, self.nan_policy)
        rewards = raw * self.signs
        if not bool(valid.all()):
            rewards = torch.where(valid.unsqueeze(1), rewards, torch.zeros_like(rewards))
        return rewards, valid

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"ObjectiveSet({', '.join(self.names)}, nan_policy={self.nan_policy!r})"
