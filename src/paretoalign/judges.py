"""Judges: binary checks a completion must pass, and the pass-all indicator of a set of them.

A judge is called as ``judge(prompts, completions, gold=None)`` and returns one verdict per
sample: ``1`` (pass), ``0`` (fail) or ``-1`` (the judge failed: it could not decide, e.g. an
objective returned NaN, a gold answer is missing, a user function returned ``None``).
``gold`` is an optional list of reference completions, one per sample (``None`` entries allowed).

CGPO (Xu et al. 2024, "The Perfect Blend: Redefining RLHF with Mixture of Judges",
arXiv 2409.20370) constrains the policy with such a *mixture of judges*; the verdict codes and
the ``gold_completions`` argument follow TRL's unmerged PR #2159 (``BaseBinaryJudge``).
MAPL's instruction verifiers (:mod:`paretoalign.instructions`) are judges too.

Spec strings (the objective grammar of :mod:`paretoalign.objectives.spec`, plus comparisons and
mixtures)::

    max_words(n=60)                  a registered kind with options
    length(min=20,max=60,unit=words)
    include(words=paris|france)      keyword include (all by default; mode=any)
    regex:'^\\d+$'                   kind:arg; quote an argument holding , ( ) = or a comparison
    starts_with:'Dear Sir'
    sentiment>=0.2                   any objective spec, compared with >=, >, <= or <
                                     (``threshold:sentiment>=0.2`` is accepted too)
    reward_model:/p/rm#helpful>=0.5  so a reward-model head becomes a judge
    python:mypkg.judges:is_polite    your function f(prompts, completions[, gold], **options)
    all(max_words(n=60),any(include(words=yes),regex:'^ok'))   AND / OR, nested

A list is comma-separated (commas inside parentheses or quotes do not split); every kind accepts
``name=`` (the name in logs; the default is the canonical spec).  The dict form (YAML) is
``{kind: max_words, n: 60, name: short}``, ``{kind: "sentiment>=0.2", name: positive}``,
``{all: [...]}`` or ``{any: [...]}``.

Failed judgements.  Inside a mixture they follow three-valued (Kleene) logic: ``all`` fails if
any part fails (0), else is undecided (-1) if any part is, else passes; ``any`` passes if any
part passes, else is undecided if any part is, else fails.  A failed judge thus only matters
where it could change the outcome.  The pass-all indicator of a :class:`JudgeSet` (CGPO's
``1[(x, y) ∈ Σ]``) then resolves an undecided sample by ``on_failure``:

- ``"fail"`` (default; TRL's ``AllTrueJudge``, where anything but 1 is a violation): the sample fails;
- ``"pass"``: the sample passes (benefit of the doubt, for a flaky judge you trust little);
- ``"skip"``: the sample is marked invalid (``valid=False``), for the caller to drop, as
  objectives' ``nan_policy="skip"`` does.

Undecided samples and each judge's -1 verdicts are counted in :meth:`JudgeReport.metrics`, so a
flaky judge does not look like a failing policy.  An exception raised by a judge (a bug) is an
error, not a -1.  Add kinds with :func:`register_judge`.
"""

from __future__ import annotations

import difflib
import inspect
import json
import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.objectives.base import Objective
from paretoalign.objectives.models import PythonObjective, _user_error
from paretoalign.objectives.registry import build_objective
from paretoalign.objectives.rules import KeywordObjective, LengthObjective
from paretoalign.objectives.spec import (
    _split_top_level,
    format_objective_spec,
    parse_objective_spec,
    parse_value,
)

__all__ = [
    "FAILURE_RULES",
    "AllOf",
    "AnyOf",
    "Judge",
    "JudgeReport",
    "JudgeSet",
    "PythonJudge",
    "RuleJudge",
    "ThresholdJudge",
    "available_judges",
    "build_judge",
    "build_judge_set",
    "describe_judge",
    "kleene_all",
    "kleene_any",
    "register_judge",
    "split_judge_specs",
]

PASS, FAIL, FAILED = 1, 0, -1
FAILURE_RULES = ("fail", "pass", "skip")


class Judge:
    """Base class: subclasses implement :meth:`_judge`; calling checks shapes and verdict values."""

    name: str = "judge"
    spec: str | None = None  # the canonical spec string that rebuilds it (set by build_judge)

    def __call__(self, prompts: Sequence[str], completions: Sequence[str],
                 gold: Sequence[str | None] | None = None) -> list[int]:
        """One verdict per sample: 1 pass, 0 fail, -1 the judge failed."""
        if len(prompts) != len(completions):
            raise ValueError(f"judge {self.name!r}: got {len(prompts)} prompts and {len(completions)} completions")
        if gold is not None and len(gold) != len(completions):
            raise ValueError(f"judge {self.name!r}: got {len(gold)} gold completions for {len(completions)} samples")
        if not completions:
            return []
        out = self._judge(list(prompts), list(completions), None if gold is None else list(gold))
        return _verdicts(out, len(completions), self.name)

    def _judge(self, prompts: list[str], completions: list[str], gold: list[str | None] | None) -> Sequence[int]:
        raise NotImplementedError

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}({self.name!r})"


def _verdicts(values: Any, n: int, name: str) -> list[int]:
    """Normalise a judge's output: bools become 1/0, ``None`` and NaN become -1; anything else is an error."""
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    elif hasattr(values, "tolist") and not isinstance(values, (list, tuple)):  # NumPy arrays
        values = values.tolist()
    if isinstance(values, (str, bytes, Mapping)) or not hasattr(values, "__iter__"):
        raise ObjectiveError(f"judge {name!r} must return one verdict per completion (a list of 1, 0 or -1); "
                             f"got {type(values).__name__} {values!r:.60}")
    out = []
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(FAILED)
        elif isinstance(v, (bool, int, float)) and v in (1, 0, -1):
            out.append(int(v))
        else:
            raise ObjectiveError(f"judge {name!r} returned {v!r:.40} at index {i}; verdicts are 1 (pass), 0 (fail), "
                                 "-1 (judge failed), True/False or None")
    if len(out) != n:
        raise ObjectiveError(f"judge {name!r} returned {len(out)} verdicts for {n} completions")
    return out


# --- three-valued logic -------------------------------------------------------------------------
# Order fail < undecided < pass: AND is the minimum, OR the maximum (Kleene's strong logic).
_RANK = {FAIL: 0, FAILED: 1, PASS: 2}
_BY_RANK = (FAIL, FAILED, PASS)


def kleene_all(columns: Sequence[Sequence[int]]) -> list[int]:
    """Per-sample AND of verdict columns: 0 if any 0, else -1 if any -1, else 1."""
    return [_BY_RANK[min(_RANK[v] for v in row)] for row in zip(*columns)]


def kleene_any(columns: Sequence[Sequence[int]]) -> list[int]:
    """Per-sample OR of verdict columns: 1 if any 1, else -1 if any -1, else 0."""
    return [_BY_RANK[max(_RANK[v] for v in row)] for row in zip(*columns)]


class _Mixture(Judge):
    _combine: Callable[[Sequence[Sequence[int]]], list[int]]
    _word = ""

    def __init__(self, judges: Sequence[Judge], name: str | None = None):
        judges = list(judges)
        if not judges:
            raise ConfigError(f"{self._word}(...) needs at least one judge")
        for j in judges:
            if not isinstance(j, Judge):
                raise ConfigError(f"{self._word}(...): not a judge: {j!r} (build one with build_judge)")
        self.judges = judges
        self.name = name or f"{self._word}({','.join(j.name for j in judges)})"

    def _judge(self, prompts, completions, gold):
        return type(self)._combine([j(prompts, completions, gold) for j in self.judges])


class AllOf(_Mixture):
    """AND of judges (three-valued: a -1 only decides when no part fails)."""

    _combine = staticmethod(kleene_all)
    _word = "all"


class AnyOf(_Mixture):
    """OR of judges (three-valued: a -1 only decides when no part passes)."""

    _combine = staticmethod(kleene_any)
    _word = "any"


# --- judge classes ------------------------------------------------------------------------------


class RuleJudge(Judge):
    """A judge from a per-sample predicate ``check(prompt, completion, gold) -> bool | None`` (None: -1)."""

    def __init__(self, check: Callable[[str, str, str | None], bool | None], name: str):
        self.check = check
        self.name = name

    def _judge(self, prompts, completions, gold):
        gold = gold if gold is not None else [None] * len(completions)
        out = []
        for p, c, g in zip(prompts, completions, gold):
            v = self.check(p, c, g)
            out.append(FAILED if v is None else int(bool(v)))
        return out


class LengthJudge(Judge):
    """Passes when ``min <= length <= max``, length in chars, words or tokens (as :class:`LengthObjective` counts)."""

    def __init__(self, min: float = 0, max: float | None = None, unit: str = "words", tokenizer: Any = None,
                 name: str = "length"):
        self.name = name
        if unit not in LengthObjective.UNITS:
            raise ConfigError(f"judge {name!r}: unit must be one of {', '.join(LengthObjective.UNITS)}; got {unit!r}")
        if unit == "tokens" and tokenizer is None:
            raise ConfigError(f"judge {name!r}: unit=tokens needs the policy's tokenizer (build_judge(..., "
                              "tokenizer=)); or use unit=words or unit=chars")
        hi = math.inf if max is None else max
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (min, hi)) or math.isnan(hi) \
                or not 0 <= min <= hi:
            raise ConfigError(f"judge {name!r}: needs numbers 0 <= min <= max; got min={min!r}, max={max!r}")
        self.min, self.max, self.unit = min, hi, unit
        self._counter = LengthObjective(unit=unit, tokenizer=tokenizer, name=name)

    def _judge(self, prompts, completions, gold):
        return [int(self.min <= n <= self.max) for n in self._counter.lengths(completions)]


class ThresholdJudge(Judge):
    """``objective <op> threshold`` on the objective's raw score (its own units, whatever its direction).

    A non-finite score (the objective could not score the sample; see the objectives' NaN rule)
    is a failed judgement (-1), not a fail.
    """

    OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}

    def __init__(self, objective: Objective, op: str, threshold: float, name: str | None = None):
        if op not in self.OPS:
            raise ConfigError(f"comparison must be one of {', '.join(self.OPS)}; got {op!r}")
        label = f"{getattr(objective, 'spec', None) or objective.name}{op}{threshold}"
        if isinstance(threshold, bool) or not (isinstance(threshold, (int, float)) and math.isfinite(threshold)):
            raise ConfigError(f"judge {label!r}: the threshold must be a finite number")
        label = f"{getattr(objective, 'spec', None) or objective.name}{op}{threshold:g}"
        if objective.bounds is not None:
            lo, hi = objective.bounds
            if not lo <= threshold <= hi:
                raise ConfigError(f"judge {label!r}: threshold {threshold:g} is outside the range [{lo:g}, {hi:g}] of "
                                  f"objective {objective.name!r}, so every sample would get the same verdict")
        self.objective, self.op, self.threshold = objective, op, float(threshold)
        self.name = name or label

    def _judge(self, prompts, completions, gold):
        cmp = self.OPS[self.op]
        scores = self.objective.score(prompts, completions).tolist()
        return [cmp(s, self.threshold) if math.isfinite(s) else FAILED for s in scores]


class PythonJudge(Judge):
    """Your function as a judge: ``python:<module>:<function>`` (a module or a ``.py`` file path).

    Called as ``f(prompts, completions, **options)``, with ``gold=`` as well when ``f`` has a
    ``gold`` parameter (or ``**kwargs``).  It returns one verdict per completion: 1/0/-1,
    True/False, or ``None``/NaN for "could not judge" (-1).  Options of the spec
    (``python:m:f(strict=true)``) become keyword arguments, checked against the signature.
    Importing and error reporting are those of ``python:`` objectives: an exception inside ``f``
    is one error line followed by your own traceback frames.
    """

    def __init__(self, target: str, name: str | None = None, **options: Any):
        label = f"python:{target}"
        module_name, sep, func_name = (target or "").rpartition(":")
        if not sep or not module_name or not func_name:
            raise ConfigError(f"judge {label!r}: expected python:<module>:<function>, e.g. python:mypkg.judges:is_polite")
        try:
            module = PythonObjective._import(module_name, label)
        except (ConfigError, ObjectiveError) as e:  # its messages name an "objective"
            raise type(e)(str(e).replace("objective ", "judge ", 1)) from None
        fn = getattr(module, func_name, None)
        if not callable(fn):
            raise ObjectiveError(f"judge {label!r}: module {module_name!r} has no function {func_name!r}")
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):  # builtins without a signature
            params = {}
        self.takes_gold = "gold" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
        if params:
            try:
                inspect.signature(fn).bind(["p"], ["c"], **options, **({"gold": None} if self.takes_gold else {}))
            except TypeError as e:
                raise ConfigError(f"judge {label!r}: cannot call {func_name}{inspect.signature(fn)} as "
                                  f"f(prompts, completions, ...): {e}") from None
        self.fn, self.options, self.target, self._label = fn, dict(options), target, label
        self.name = name or func_name

    def _judge(self, prompts, completions, gold):
        kw = dict(self.options)
        if self.takes_gold:
            kw["gold"] = gold
        try:
            return self.fn(prompts, completions, **kw)
        except Exception as e:  # a bug in the user's function: one error line plus their frames
            own = getattr(getattr(self.fn, "__code__", None), "co_filename", None)
            raise _user_error(f"judge {self.spec or self._label!r} raised", e, own) from None


# --- the pass-all indicator ---------------------------------------------------------------------


@dataclass
class JudgeReport:
    """The verdicts of a :class:`JudgeSet` on a batch of B samples and J judges.

    Attributes:
        names: the J judge names.
        verdicts: ``[B, J]`` int8, 1 / 0 / -1 per judge.
        passed: ``[B]`` bool, the pass-all indicator after the failure rule.
        valid: ``[B]`` bool; False only under ``on_failure="skip"``, for undecided samples.
        undecided: ``[B]`` bool, the samples whose pass-all verdict was -1 (decided by the rule).
    """

    names: list[str]
    verdicts: torch.Tensor
    passed: torch.Tensor
    valid: torch.Tensor
    undecided: torch.Tensor

    def metrics(self, prefix: str = "judge") -> dict[str, float]:
        """Per judge: ``pass_rate`` (share of 1s) and ``failed`` (count of -1s); for the set:
        ``all/pass_rate`` (of the indicator, over valid samples) and ``all/undecided`` (count)."""
        out: dict[str, float] = {}
        B = self.verdicts.shape[0]
        for j, name in enumerate(self.names):
            col = self.verdicts[:, j]
            out[f"{prefix}/{name}/pass_rate"] = float((col == PASS).sum()) / max(B, 1)
            out[f"{prefix}/{name}/failed"] = float((col == FAILED).sum())
        n_valid = int(self.valid.sum())
        out[f"{prefix}/all/pass_rate"] = float((self.passed & self.valid).sum()) / max(n_valid, 1)
        out[f"{prefix}/all/undecided"] = float(self.undecided.sum())
        return out


class JudgeSet:
    """The judges every sample must pass (CGPO's Σ = ∩_j Σ_j) and the rule for failed judgements.

    :meth:`evaluate` gives a :class:`JudgeReport`; calling the set like a judge gives the
    three-valued AND of its judges (before the failure rule).
    """

    def __init__(self, judges: Sequence[Judge], on_failure: str = "fail"):
        judges = list(judges)
        if not judges:
            raise ConfigError("a judge set needs at least one judge, e.g. 'max_words(n=60)'")
        if on_failure not in FAILURE_RULES:
            raise ConfigError(f"on_failure must be one of {', '.join(FAILURE_RULES)}; got {on_failure!r}")
        seen = set()
        for j in judges:
            if not isinstance(j, Judge):
                raise ConfigError(f"not a judge: {j!r} (build one with build_judge)")
            if j.name in seen:
                raise ConfigError(f"duplicate judge {j.name!r}; give each judge of a set its own name with name=...")
            seen.add(j.name)
        self.judges, self.on_failure = judges, on_failure

    @property
    def names(self) -> list[str]:
        return [j.name for j in self.judges]

    def __len__(self) -> int:
        return len(self.judges)

    def __call__(self, prompts, completions, gold=None) -> list[int]:
        return kleene_all([j(prompts, completions, gold) for j in self.judges])

    def evaluate(self, prompts: Sequence[str], completions: Sequence[str],
                 gold: Sequence[str | None] | None = None) -> JudgeReport:
        """Judge a batch: every judge's verdicts and the pass-all indicator (see the module docstring)."""
        cols = [j(prompts, completions, gold) for j in self.judges]
        B = len(completions)
        verdicts = torch.tensor(cols, dtype=torch.int8).T.reshape(B, len(cols))
        combined = torch.tensor(kleene_all(cols) if B else [], dtype=torch.int8)
        undecided = combined == FAILED
        passed = (combined == PASS) | (undecided if self.on_failure == "pass" else torch.zeros_like(undecided))
        valid = ~undecided if self.on_failure == "skip" else torch.ones_like(undecided)
        return JudgeReport(self.names, verdicts, passed, valid, undecided)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"JudgeSet({', '.join(self.names)}, on_failure={self.on_failure!r})"


# --- the registry -------------------------------------------------------------------------------


@dataclass
class _Kind:
    factory: Callable[..., Judge]
    arg: str | None  # name of the ``kind:<arg>`` argument; None: the kind takes none
    options: tuple[str, ...]
    any_options: bool
    takes_tokenizer: bool
    takes_name: bool
    required: tuple[str, ...]
    summary: str


_KINDS: dict[str, _Kind] = {}
_MIXTURES = {"all": AllOf, "any": AnyOf}


def register_judge(kind: str, factory: Callable[..., Judge] | None = None, *, arg: str | None = None):
    """Register ``factory`` (returning a :class:`Judge`) under ``kind``; a decorator or a call.

    As :func:`~paretoalign.objectives.register_objective`: the factory's keyword parameters are
    the kind's options (checked when a spec is built), ``tokenizer`` receives the tokenizer given
    to :func:`build_judge`, ``name`` the alias; with ``arg=`` the kind takes ``kind:<arg>``, passed
    as the first positional parameter.
    """
    if not re.fullmatch(r"[A-Za-z_][\w\-]*", kind or "") or kind in _MIXTURES:
        raise ConfigError(f"judge kind must be an identifier other than all/any; got {kind!r}")

    def deco(f):
        params = list(inspect.signature(f).parameters.values())
        if arg is not None:
            params = params[1:]
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        _KINDS[kind] = _Kind(f, arg, tuple(n for n in names if n not in ("name", "tokenizer")),
                             any(p.kind is p.VAR_KEYWORD for p in params), "tokenizer" in names,
                             "name" in names,
                             tuple(p.name for p in params if p.default is p.empty and p.name in names
                                   and p.name not in ("name", "tokenizer")),
                             (inspect.getdoc(f) or "").split("\n")[0])
        return f

    return deco(factory) if factory is not None else deco


def available_judges() -> list[str]:
    """The registered kinds, sorted (besides comparisons ``objective>=b`` and ``all(...)``/``any(...)``)."""
    return sorted(_KINDS)


def describe_judge(kind: str) -> tuple[str, str]:
    """(``kind[:<arg>](option, ...)``, one-line summary) of a registered kind, for listings."""
    k = _KINDS[kind]
    opts = [*k.options, *(["..."] if k.any_options else [])]
    return _usage(kind) + (f"({', '.join(opts)})" if opts else ""), k.summary


def split_judge_specs(text: str) -> list[str]:
    """``"max_words(n=60),regex:'a,b'"`` -> ``["max_words(n=60)", "regex:'a,b'"]`` (top-level commas only)."""
    if not isinstance(text, str):
        raise ConfigError(f"judge specs must be a string like 'max_words(n=60)'; got {type(text).__name__}")
    return _split_top_level(text, "judge list")


def _usage(kind: str) -> str:
    a = _KINDS[kind].arg
    return f"{kind}:<{'module>:<function' if kind == 'python' else a}>" if a else kind


def _find_comparison(s: str) -> tuple[int, str] | None:
    """Position and operator of the one comparison outside parentheses and quotes, if any."""
    found, depth, quote, i = [], 0, None, 0
    while i < len(s):
        ch = s[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch in "<>" and depth == 0:
            op = s[i : i + 2] if s[i + 1 : i + 2] == "=" else ch
            found.append((i, op))
            i += len(op) - 1
        i += 1
    if len(found) > 1:
        raise ConfigError(f"judge {s!r}: more than one comparison; write one judge per comparison, e.g. a>=0,a<=1")
    return found[0] if found else None


def _threshold(text: str, pos: int, op: str, tokenizer, objectives, name) -> ThresholdJudge:
    left, right = text[:pos].strip(), text[pos + len(op):].strip()
    kind = left.partition("(")[0].partition(":")[0].strip()
    if kind in _KINDS and _KINDS[kind].arg and kind != "python":  # regex:a>=b: the pattern held a comparison
        raise ConfigError(f"judge {text!r}: quote the argument of {kind!r} when it holds a comparison, "
                          f"e.g. {kind}:'{left.partition(':')[2]}{text[pos:]}'")
    if not left:
        raise ConfigError(f"judge {text!r}: nothing before {op!r}; expected objective{op}threshold, e.g. sentiment>=0.2")
    value = parse_value(right) if right else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"judge {text!r}: threshold {right!r} is not a finite number")
    objective = None
    if objectives is not None:  # reuse a scorer the caller already built (a reward model loads once)
        objective = next((o for o in objectives if o.name == left), None)
    if objective is None:
        try:
            objective = build_objective(left, tokenizer=tokenizer)
        except ConfigError as e:
            raise ConfigError(f"judge {text!r}: {e}") from None
    return ThresholdJudge(objective, op, float(value), name=name)


def _mixture(text: str) -> tuple[str, str] | None:
    m = re.fullmatch(r"(all|any)\s*\((.*)\)", text, re.S)
    if m is None:
        return None
    try:  # "all(a)(b)" is not one call
        _split_top_level(m.group(2), "judge mixture")
    except ConfigError:
        return None
    return m.group(1), m.group(2)


def build_judge(spec: str | Mapping[str, Any] | Judge, tokenizer: Any = None,
                objectives: Sequence[Objective] | None = None) -> Judge:
    """Build one judge from a spec string or a dict (see the module docstring).

    ``tokenizer`` serves ``length(unit=tokens)`` and objectives that need one; ``objectives``
    (e.g. the run's :class:`~paretoalign.objectives.ObjectiveSet`) are reused by name in
    comparisons, so ``rm>=0.5`` scores with the reward model already loaded as objective ``rm``.
    The returned judge's ``spec`` is the canonical spec string.
    """
    if isinstance(spec, Judge):
        return spec
    name = None
    if isinstance(spec, Mapping):
        d = dict(spec)
        name = d.pop("name", None)
        mix = [k for k in _MIXTURES if k in d]
        if mix:
            parts = d.pop(mix[0])
            if d or isinstance(parts, (str, Mapping)) or not hasattr(parts, "__iter__"):
                raise ConfigError(f"judge {spec!r}: expected {{{mix[0]}: [judge, ...]}} (and optionally name)")
            return _build_mixture(mix[0], parts, tokenizer, objectives, name)
        if "kind" not in d or not isinstance(d["kind"], str):
            raise ConfigError(f"judge {spec!r}: give its kind, e.g. {{kind: max_words, n: 60}} or {{all: [...]}}")
        text = d.pop("kind")
        if d:
            if _find_comparison(text) or _mixture(text.strip()):
                raise ConfigError(f"judge {spec!r}: options do not apply to {text!r}")
            kind, arg, opts = _parse(text)
            for k, v in d.items():
                if k in opts:
                    raise ConfigError(f"judge {text!r}: option {k!r} given twice")
                opts[k] = v
            text = _format_spec(kind, arg, opts)
        spec = text
    if not isinstance(spec, str):
        raise ConfigError(f"a judge is a spec string or a dict; got {type(spec).__name__} {spec!r}")
    text = spec.strip()
    if text.startswith("threshold:"):  # the spelling of the CGPO spec's examples
        text = text[len("threshold:"):].strip()
    if not text:
        raise ConfigError("empty judge spec")
    mix = _mixture(text)
    if mix is not None:
        return _build_mixture(mix[0], _split_top_level(mix[1], f"judge {text!r}"), tokenizer, objectives, name)
    cmp = _find_comparison(text)
    if cmp is not None:
        j = _threshold(text, cmp[0], cmp[1], tokenizer, objectives, name)
        j.spec = text
        return j
    kind, arg, opts = _parse(text)
    return _build_kind(text, kind, arg, opts, tokenizer, name)


def _build_mixture(word: str, parts: Sequence, tokenizer, objectives, name) -> Judge:
    judges = [build_judge(p, tokenizer, objectives) for p in parts]
    j = _MIXTURES[word](judges, name=name)
    j.spec = f"{word}({','.join(x.spec or x.name for x in judges)})"
    return j


def _format_spec(kind: str, arg: str | None, opts: Mapping[str, Any]) -> str:
    """Canonical spec; an argument that the parser would cut (``regex:'(a|b)'``) keeps its quotes."""
    if arg is not None and re.search(r"[,()='\"<>]", arg):
        arg = "'" + arg + "'" if "'" not in arg else '"' + arg + '"'
    return format_objective_spec(kind, arg, opts)


def _parse(text: str):
    try:
        return parse_objective_spec(text)
    except ConfigError as e:
        hint = "; quote an argument that holds , ( ) or =, e.g. regex:'a(b)'" if ":" in text else ""
        raise ConfigError(str(e).replace("objective spec", "judge spec", 1) + hint) from None


def _build_kind(text: str, kind: str, arg: str | None, opts: dict, tokenizer, name) -> Judge:
    entry = _KINDS.get(kind)
    if entry is None:
        close = difflib.get_close_matches(kind, [*_KINDS, *_MIXTURES], n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        raise ConfigError(f"unknown judge {kind!r} (in {text!r}){hint} Available: "
                          + ", ".join(_usage(n) for n in available_judges())
                          + ", all(...), any(...), or a comparison objective>=threshold")
    if entry.arg is not None and arg is None:
        raise ConfigError(f"judge {kind!r} needs an argument: {_usage(kind)}")
    if entry.arg is None and arg is not None:
        raise ConfigError(f"judge {kind!r} takes no ':{arg}' argument; use {kind}(k=v)")
    canonical = _format_spec(kind, arg, opts)
    kw = dict(opts)
    alias = kw.pop("name", None)
    alias = name if name is not None else alias
    if alias is not None and not str(alias).strip():
        raise ConfigError(f"judge {canonical!r}: name must not be empty")
    if not entry.any_options:
        unknown = [k for k in kw if k not in entry.options]
        if unknown:
            close = difflib.get_close_matches(unknown[0], entry.options, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ConfigError(f"judge {canonical!r}: unknown option {unknown[0]!r}{hint} Valid options of {kind!r}: "
                              + ", ".join([*entry.options, "name"]))
    missing = [k for k in entry.required if k not in kw]
    if missing:
        raise ConfigError(f"judge {canonical!r}: option {missing[0]!r} is required, e.g. {kind}({missing[0]}=...)")
    if entry.takes_tokenizer:
        kw["tokenizer"] = tokenizer
    label = str(alias) if alias is not None else canonical  # the canonical spec: unique, and says what it checks
    if entry.takes_name:
        kw["name"] = label
    try:
        j = entry.factory(arg, **kw) if entry.arg is not None else entry.factory(**kw)
    except TypeError as e:  # a missing required option, a value of the wrong type
        raise ConfigError(f"judge {canonical!r}: {e}") from None
    if not isinstance(j, Judge):
        raise ObjectiveError(f"judge kind {kind!r}: its factory returned {type(j).__name__}, not a Judge")
    j.name, j.spec = label, canonical
    return j


def build_judge_set(specs: str | Sequence[str | Mapping[str, Any] | Judge], tokenizer: Any = None,
                    objectives: Sequence[Objective] | None = None, on_failure: str = "fail") -> JudgeSet:
    """A :class:`JudgeSet` from ``"max_words(n=60),sentiment>=0.2"`` or a list of specs/dicts/judges."""
    if isinstance(specs, str):
        items: list = split_judge_specs(specs)
    elif isinstance(specs, (Mapping, Judge)):
        items = [specs]
    else:
        items = []
        for s in specs:
            items.extend(split_judge_specs(s) if isinstance(s, str) else [s])
    if not items:
        raise ConfigError(f"no judges given ({specs!r}); e.g. 'max_words(n=60),include(words=thanks)'. Available: "
                          + ", ".join(_usage(n) for n in available_judges()))
    return JudgeSet([build_judge(s, tokenizer, objectives) for s in items], on_failure=on_failure)


# --- built-in kinds -----------------------------------------------------------------------------


def _length(min: float = 0, max: float | None = None, unit: str = "words", tokenizer: Any = None,
            name: str = "length"):
    """Length in [min, max] (unit=words, chars or tokens)."""
    return LengthJudge(min=min, max=max, unit=unit, tokenizer=tokenizer, name=name)


def _max_words(n: int, name: str = "max_words"):
    """At most n words (whitespace-separated)."""
    return LengthJudge(max=n, unit="words", name=name)


def _min_words(n: int, name: str = "min_words"):
    """At least n words (whitespace-separated)."""
    return LengthJudge(min=n, unit="words", name=name)


def _keyword_counter(words: Any, whole_words: bool, name: str, kind: str) -> KeywordObjective:
    try:  # the objective's matching (case-insensitive, whole words), counted
        return KeywordObjective(words=words, mode="count", whole_words=whole_words, name=name)
    except ConfigError:  # its one error with mode=count: no keyword
        raise ConfigError(f"judge {name!r}: give at least one keyword, e.g. {kind}(words=please|thanks)") from None


def _include(words: Any = (), mode: str = "all", whole_words: bool = True, name: str = "include"):
    """The completion contains all (mode=all) or any (mode=any) of words='a|b' (case-insensitive)."""
    if mode not in ("all", "any"):
        raise ConfigError(f"judge {name!r}: mode must be all or any; got {mode!r}")
    kw = _keyword_counter(words, whole_words, name, "include")
    need = len(kw.words) if mode == "all" else 1
    return RuleJudge(lambda p, c, g: kw.score([p], [c])[0] >= need, name)


def _exclude(words: Any = (), whole_words: bool = True, name: str = "exclude"):
    """The completion contains none of words='a|b' (case-insensitive)."""
    kw = _keyword_counter(words, whole_words, name, "exclude")
    return RuleJudge(lambda p, c, g: kw.score([p], [c])[0] == 0, name)


def _regex(pattern: str, match: str = "search", ignore_case: bool = False, negate: bool = False,
           name: str = "regex"):
    """The completion matches the pattern (match=search anywhere, or full); negate=true inverts."""
    if match not in ("search", "full"):
        raise ConfigError(f"judge {name!r}: match must be search or full; got {match!r}")
    try:
        rx = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as e:
        raise ConfigError(f"judge {name!r}: bad regular expression {pattern!r}: {e}") from None
    find = rx.search if match == "search" else rx.fullmatch
    return RuleJudge(lambda p, c, g: (find(c) is not None) != bool(negate), name)


def _affix(phrase: str, ignore_case: bool, name: str, at_start: bool) -> RuleJudge:
    phrase = str(phrase)
    if not phrase.strip():
        raise ConfigError(f"judge {name!r}: the phrase must not be empty")
    fold = str.lower if ignore_case else str

    def check(p, c, g):  # surrounding whitespace of the completion does not count
        c = fold(c.strip())
        return c.startswith(fold(phrase)) if at_start else c.endswith(fold(phrase))

    return RuleJudge(check, name)


def _starts_with(phrase: str, ignore_case: bool = False, name: str = "starts_with"):
    """The completion (leading whitespace ignored) starts with the phrase."""
    return _affix(phrase, ignore_case, name, at_start=True)


def _ends_with(phrase: str, ignore_case: bool = False, name: str = "ends_with"):
    """The completion (trailing whitespace ignored) ends with the phrase."""
    return _affix(phrase, ignore_case, name, at_start=False)


_FENCE = re.compile(r"^```[\w-]*\s*\n(.*)\n\s*```$", re.S)


def _valid_json(strip_fences: bool = True, name: str = "valid_json"):
    """The completion parses as JSON (strip_fences=true accepts a ```json ... ``` block)."""

    def check(p, c, g):
        text = c.strip()
        m = _FENCE.match(text) if strip_fences else None
        try:
            json.loads(m.group(1) if m else text)
        except ValueError:
            return False
        return True

    return RuleJudge(check, name)


def _no_repeat(n: int = 3, name: str = "no_repeat"):
    """No word n-gram (lower-cased) occurs twice in the completion."""
    if not (isinstance(n, int) and n >= 1):
        raise ConfigError(f"judge {name!r}: n must be a positive integer; got {n!r}")

    def check(p, c, g):
        w = c.lower().split()
        grams = [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
        return len(set(grams)) == len(grams)

    return RuleJudge(check, name)


def _matches_gold(mode: str = "exact", name: str = "matches_gold"):
    """The completion equals (mode=exact) or contains (mode=contains) the gold answer, whitespace- and
    case-normalised; -1 where a sample has no gold answer."""
    if mode not in ("exact", "contains"):
        raise ConfigError(f"judge {name!r}: mode must be exact or contains; got {mode!r}")

    def norm(s: str) -> str:
        return " ".join(s.lower().split())

    def check(p, c, g):
        if g is None:
            return None
        return norm(c) == norm(g) if mode == "exact" else norm(g) in norm(c)

    return RuleJudge(check, name)


def _python(function: str, name: str | None = None, **options: Any):
    """Your function <module>:<fn>(prompts, completions[, gold], **options) -> 1/0/-1 per completion."""
    return PythonJudge(function, name=name, **options)


register_judge("length", _length)
register_judge("max_words", _max_words)
register_judge("min_words", _min_words)
register_judge("include", _include)
register_judge("exclude", _exclude)
register_judge("regex", _regex, arg="pattern")
register_judge("starts_with", _starts_with, arg="phrase")
register_judge("ends_with", _ends_with, arg="phrase")
register_judge("valid_json", _valid_json)
register_judge("no_repeat", _no_repeat)
register_judge("matches_gold", _matches_gold)
register_judge("python", _python, arg="function")
