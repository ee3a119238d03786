"""Rewards-in-Context (RiC): the pure parts — score normalisation, the reward-conditioned prompt,
the preference → target mapping, online goal sampling and the quantile filter.

Reference: Yang et al. 2024, "Rewards-in-Context: Multi-objective Alignment of Foundation Models
with Dynamic Preference Adjustment" (ICML 2024, arXiv 2402.10207), public code YangRui2015/RiC
(``ric/utils.py``).  The trainer that uses these is :mod:`paretoalign.trainers.ric_trainer`.

RiC fine-tunes ONE model on responses whose prompt carries their own (normalised) objective scores,
``<rm1_score> s1 <rm2_score> s2``; at inference a preference w is mapped to target scores written
the same way, so the model is steered by its input.

What follows the reference code, and what is ours:

* Scores are standardised per objective over the offline training set, ``(r − mean)/std`` (population
  std, as ``np.std``), and printed with one decimal (the reference's ``round(.., 1)``; we also never
  print "-0.0", a pitfall the spec names).  The statistics are saved in the run
  (``reward_stats.json``) and reused at inference: targets mean nothing on another scale.
* The tags follow the reference's ``Instructions_n`` format ``<rm{k}_score> {s}`` after the user's
  text.  With a chat template (our default) they end the last user message, where the reference's
  plain "Human/Assistant" format put them before "Assistant:".
* Mappings (``map_preference``): ``linf`` (the reference function's default and the paper's dynamic
  inference adjustment: the most-preferred objective at its maximum, each other one at
  ``min(K·w_k, 1)`` of its range), ``l2`` (the reference's ``evaluation.py`` choice) and ``linear``.
  ``linf`` is our default; see the README for the trade-off.
* Bounds ``low``/``high``: the reference's evaluation takes them from 50 000 fresh N(0, 1) draws
  (about ±4.2, varying per run); by default we take the range the model was trained on (the min and
  max of the normalised offline scores), which is deterministic and never asks for a score the data
  never showed (``bounds="normal"`` gives the reference's, from a seeded draw).  Targets outside
  ``[low, high]`` are clipped (with a warning) by default: they extrapolate badly.
* Online goals (``sample_goals``): each objective uniform in ``[low, high]``, then every objective
  but the smallest drawn one set to ``high`` ("outer boundary"), rounded to one decimal, as the
  reference's ``sample_goals``.
* Multi-objective rejection sampling (``quantile_keep``): keep a sample if, on ANY objective, its
  score is >= that objective's ``quantile`` (0.7) over the set, as ``select_data_with_quantile``.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from paretoalign.errors import ConfigError, DataError

REWARD_STATS_FILE = "reward_stats.json"
MAPPINGS = ("linf", "l2", "linear")
BOUNDS = ("data", "normal")
_TAG = "<rm{k}_score>"
_TAG_RE = re.compile(r"<rm(\d+)_score>\s*(-?\d+(?:\.\d+)?)")


# ---------------------------------------------------------------------------------------------
# scores: normalisation and statistics
# ---------------------------------------------------------------------------------------------


@dataclass
class RewardStats:
    """Per-objective statistics a RiC model is trained and steered with.

    Attributes:
        names: the objectives, in tag order (``<rm1_score>`` is ``names[0]``).
        mean, std: the raw scores' mean and population standard deviation over the offline set.
        low, high: the normalised range targets are mapped into and clipped to.
        bounds: how low/high were chosen ("data" or "normal").
    """

    names: list
    mean: list
    std: list
    low: list
    high: list
    bounds: str = "data"

    @property
    def k(self) -> int:
        return len(self.names)

    def normalise(self, raw) -> np.ndarray:
        """Raw scores ``[N, K]`` -> normalised and rounded to one decimal (as written into prompts)."""
        raw = np.asarray(raw, dtype=np.float64)
        return round1((raw - np.asarray(self.mean)) / np.asarray(self.std))

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / REWARD_STATS_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> "RewardStats":
        """Read ``folder/reward_stats.json``; a missing or malformed file is one clear error (a RiC
        model steered on another scale would silently mean nothing)."""
        path = Path(folder) / REWARD_STATS_FILE
        if not path.is_file():
            raise DataError(f"{path}: missing; a RiC model needs the score statistics it was trained with "
                            "(written by `paretoalign train --method ric` next to the model)")
        try:
            d = json.loads(path.read_text())
            stats = cls(**{k: d[k] for k in ("names", "mean", "std", "low", "high")}, bounds=d.get("bounds", "data"))
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not RiC score statistics ({type(e).__name__}: {e})") from None
        k = len(stats.names)
        if k < 1 or any(len(getattr(stats, f)) != k for f in ("mean", "std", "low", "high")):
            raise DataError(f"{path}: names, mean, std, low and high must have one entry per objective")
        vals = np.asarray([stats.mean, stats.std, stats.low, stats.high], dtype=np.float64)
        if not np.isfinite(vals).all() or (np.asarray(stats.std) <= 0).any() or (vals[2] > vals[3]).any():
            raise DataError(f"{path}: statistics must be finite with std > 0 and low <= high")
        return stats


def round1(x) -> np.ndarray:
    """Round to one decimal, half away from zero, without negative zero (so "-0.0" is never printed
    and a value prints the same however it was computed)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.sign(x) * np.floor(np.abs(x) * 10 + 0.5 + 1e-9) / 10
    return out + 0.0  # -0.0 -> 0.0


def fit_stats(raw, names: Sequence[str], bounds: str = "data", seed: int = 0) -> RewardStats:
    """Statistics of raw offline scores ``[N, K]`` (finite; at least 2 rows)."""
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(names):
        raise ValueError(f"scores must be [N, {len(names)}]; got {raw.shape}")
    if raw.shape[0] < 2 or not np.isfinite(raw).all():
        raise DataError("RiC needs at least 2 responses with finite scores on every objective")
    mean, std = raw.mean(0), raw.std(0)
    flat = [n for n, s in zip(names, std) if s <= 1e-12]
    if flat:
        raise DataError(f"objective(s) {flat} score every offline response the same: RiC cannot condition on a "
                        "constant (check the objectives or the data)")
    if bounds == "data":
        z = round1((raw - mean) / std)
        low, high = z.min(0), z.max(0)
    elif bounds == "normal":
        # the reference's evaluation: the extremes of 50 000 N(0, 1) draws (seeded here)
        draws = np.random.default_rng(seed).standard_normal((50_000, len(names)))
        low, high = round1(draws.min(0)), round1(draws.max(0))
    else:
        raise ConfigError(f"bounds must be one of {', '.join(BOUNDS)}; got {bounds!r}")
    return RewardStats(list(names), mean.tolist(), std.tolist(), low.tolist(), high.tolist(), bounds)


# ---------------------------------------------------------------------------------------------
# the reward-conditioned prompt
# ---------------------------------------------------------------------------------------------


def fmt_score(x: float) -> str:
    """One decimal, never "-0.0"."""
    return f"{float(round1(x)):.1f}"


def score_tags(scores: Sequence[float]) -> str:
    """``<rm1_score> s1 <rm2_score> s2 ...`` (the reference's ``Instructions_n`` tags)."""
    return " ".join(f"{_TAG.format(k=i + 1)} {fmt_score(s)}" for i, s in enumerate(scores))


def reward_prompt(prompt, scores: Sequence[float]):
    """The prompt conditioned on ``scores``: the tags appended to the user's text (a plain prompt) or to
    the last user message (a conversation; a copy, the input is not changed)."""
    tags = score_tags(scores)
    if isinstance(prompt, str):
        return f"{prompt.rstrip()} {tags}"
    msgs = [dict(m) for m in prompt]
    users = [i for i, m in enumerate(msgs) if m.get("role") == "user"]
    if not users:
        raise DataError("a conversation prompt without a user message cannot carry RiC's score tags")
    i = users[-1]
    msgs[i]["content"] = f"{str(msgs[i]['content']).rstrip()} {tags}"
    return msgs


def parse_scores(text: str, k: int) -> list[float]:
    """The ``k`` scores written into ``text`` by :func:`reward_prompt` (the last occurrence of each tag)."""
    found = {}
    for m in _TAG_RE.finditer(text if isinstance(text, str) else json.dumps(text)):
        found[int(m.group(1))] = float(m.group(2))
    missing = [i for i in range(1, k + 1) if i not in found]
    if missing:
        raise ValueError(f"no <rm{missing[0]}_score> tag in {text!r}")
    return [found[i] for i in range(1, k + 1)]


# ---------------------------------------------------------------------------------------------
# preference -> targets, online goals, selection
# ---------------------------------------------------------------------------------------------


def map_preference(w: Sequence[float], low: Sequence[float], high: Sequence[float], method: str = "linf") -> np.ndarray:
    """Target scores for a preference ``w`` on the simplex (rounded to one decimal), as the reference's
    ``map_rewards_from_preference``:

    * ``linf``: ``t_{argmax w} = high``; every other ``t_k = min(K·w_k, 1)·(high_k − low_k) + low_k``;
    * ``l2``: ``t_k = w_k/‖w‖₂ · (high_k − low_k) + low_k``;
    * ``linear``: ``t_k = w_k · (high_k − low_k) + low_k``.

    Ties in ``argmax`` go to the first objective (numpy's argmax, as the reference)."""
    w = np.asarray(w, dtype=np.float64)
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    if not (w.shape == low.shape == high.shape) or w.ndim != 1:
        raise ConfigError(f"preference, low and high need one entry per objective; got {w.shape}, {low.shape}, "
                          f"{high.shape}")
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ConfigError(f"a RiC preference needs non-negative weights, not all zero; got {w.tolist()}")
    span = high - low
    if method == "linf":
        t = np.minimum(len(w) * w, 1.0) * span + low
        t[int(np.argmax(w))] = high[int(np.argmax(w))]
    elif method == "l2":
        t = w / np.sqrt((w**2).sum()) * span + low
    elif method == "linear":
        t = w * span + low
    else:
        raise ConfigError(f"unknown RiC mapping {method!r}; choose one of {', '.join(MAPPINGS)}")
    return round1(t)


def clip_targets(targets: Sequence[float], stats: RewardStats, warn: bool = True) -> np.ndarray:
    """Targets clipped to the trained range ``[low, high]`` (a warning says which moved)."""
    t = np.asarray(targets, dtype=np.float64)
    c = np.clip(t, stats.low, stats.high)
    moved = [f"{n} {fmt_score(a)} -> {fmt_score(b)}" for n, a, b in zip(stats.names, t, c) if a != b]
    if moved and warn:
        warnings.warn(f"RiC targets outside the trained range were clipped ({'; '.join(moved)}); targets beyond it "
                      "extrapolate badly", RuntimeWarning, stacklevel=2)
    return round1(c)


def sample_goals(n: int, low: Sequence[float], high: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Online targets on the outer boundary ``[n, K]``: each objective uniform in ``[low, high]``, then
    all but the smallest drawn one set to ``high`` (ties: the first smallest stays)."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    g = rng.random((n, len(low))) * (high - low) + low
    keep = g.argmin(1)
    out = np.broadcast_to(high, g.shape).copy()
    out[np.arange(n), keep] = g[np.arange(n), keep]
    return round1(out)


def quantile_keep(scores, q: float = 0.7) -> np.ndarray:
    """Boolean mask of rows whose score on ANY objective is >= that objective's ``q``-quantile over the
    rows (numpy's linear interpolation, as the reference's ``np.quantile``)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] == 0:
        return np.zeros(s.shape[:1], dtype=bool)
    if not 0.0 <= q <= 1.0:
        raise ConfigError(f"quantile must be in [0, 1]; got {q}")
    thr = np.quantile(s, q, axis=0)
    return (s >= thr).any(1)


def targets_label(targets: Sequence[float], names: Sequence[str]) -> str:
    return ", ".join(f"{n}={fmt_score(t)}" for n, t in zip(names, targets))


def finite_rows(scores) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return np.isfinite(s).all(1) if s.ndim == 2 else np.zeros(0, dtype=bool)


__all__ = ["RewardStats", "REWARD_STATS_FILE", "MAPPINGS", "BOUNDS", "fit_stats", "round1", "fmt_score",
           "score_tags", "reward_prompt", "parse_scores", "map_preference", "clip_targets", "sample_goals",
           "quantile_keep", "targets_label", "finite_rows"]
