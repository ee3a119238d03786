"""Objective names usable from the command line and YAML, and :class:`ObjectiveSet`.

Spec syntax (one objective)::

    name                       sentiment
    name(k=v,k=v)              length(scale=100,unit=words)
    kind:arg                   reward_model:/path/to/rm        python:mypkg.rewards:politeness
    kind:arg(k=v)              reward_model:OpenAssistant/reward-model-deberta-v3-large-v2(index=0)

Several objectives: separated by commas; commas inside parentheses (or quotes) do not split
(:func:`split_objective_specs`).  Values parse as ``int``, ``float`` (also ``nan``, ``inf``),
``bool`` (``true``/``false``) or else ``str``; quote a value (``'...'`` or ``"..."``) to keep it a
string or to put ``,()=`` inside.  Every objective also accepts ``name=`` (an alias, so that
two instances of one kind can coexist: ``length(name=short,direction=minimize)``) and
``direction=maximize|minimize``.

Dict form (YAML)::

    - sentiment                                   # a spec string is fine too
    - {kind: length, scale: 100, unit: words}
    - {kind: reward_model, model: /path/to/rm, index: 1, name: helpful}
    - {kind: python, function: mypkg.rewards:politeness}
    - {name: readability}                         # no "kind": "name" is the kind

``kind`` may itself be a spec string (``{kind: "reward_model:/path/rm", name: rm}``); the argument of
``reward_model`` is the key ``model``, that of ``python`` the key ``function``; list values
(``words: [please, thanks]``) are allowed.

Built-in kinds: ``length``, ``sentiment``, ``readability``, ``keywords`` (:mod:`.rules`),
``relevance`` (:mod:`.embedding`), ``reward_model:<folder or hub id>`` and
``python:<module>:<function>`` (:mod:`.models`; a folder written by ``paretoalign reward-model train``
gives its gated score, ``reward_model:<folder>#<objective>`` one head, :mod:`.mo_reward_model`),
``implicit_dpo:<LoRA adapter folder>``
(β·log π_adapter/π_base, :mod:`.implicit`).  Add your own with :func:`register_objective`.
"""

from __future__ import annotations

import difflib
import inspect
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.objectives.base import NAN_POLICIES, Objective, check_scores

__all__ = [
    "ObjectiveSet",
    "available_objectives",
    "build_objective",
    "build_objective_set",
    "parse_objective_spec",
    "register_objective",
    "split_objective_specs",
]

GENERIC_OPTIONS = ("name", "direction")
DIRECTIONS = ("maximize", "minimize")


@dataclass
class _Kind:
    factory: Callable[..., Objective]
    arg: str | None  # key of the ``kind:<arg>`` argument in the dict form; None: the kind takes none
    options: tuple[str, ...]  # keyword options of the factory (besides name, tokenizer)
    any_options: bool  # the factory takes **kwargs: every option is passed on
    takes_name: bool
    takes_tokenizer: bool


_KINDS: dict[str, _Kind] = {}


def register_objective(kind: str, factory: Callable[..., Objective] | None = None, *, arg: str | None = None):
    """Register ``factory`` (a class or function returning an :class:`Objective`) under ``kind``.

    Usable as a decorator (``@register_objective("politeness")``) or a call.  The factory's
    keyword parameters are the kind's options (checked when a spec is built); a parameter named
    ``tokenizer`` receives the tokenizer given to :func:`build_objective`, one named ``name`` the
    alias.  With ``arg="model"`` the kind takes an argument (``kind:<arg>``), passed as the
    factory's first positional parameter (and read from that key in the dict form).
    Registering an existing kind replaces it.
    """
    if not re.fullmatch(r"[A-Za-z_][\w\-]*", kind or ""):
        raise ConfigError(f"objective kind must be an identifier (letters, digits, _ or -); got {kind!r}")

    def deco(f: Callable[..., Objective]):
        try:
            params = list(inspect.signature(f).parameters.values())
        except (TypeError, ValueError):
            params = []
        if arg is not None and params:
            params = params[1:]  # the positional argument
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        _KINDS[kind] = _Kind(
            factory=f,
            arg=arg,
            options=tuple(n for n in names if n not in ("name", "tokenizer")),
            any_options=any(p.kind is p.VAR_KEYWORD for p in params),
            takes_name="name" in names,
            takes_tokenizer="tokenizer" in names,
        )
        return f

    return deco(factory) if factory is not None else deco


def available_objectives() -> list[str]:
    """The registered kinds, sorted (``reward_model`` and ``python`` take an argument: ``kind:arg``)."""
    return sorted(_KINDS)


def _usage(kind: str) -> str:
    a = _KINDS[kind].arg
    return f"{kind}:<{'module>:<function' if kind == 'python' else a}>" if a else kind


# --- parsing ----------------------------------------------------------------------------------


def _split_top_level(text: str, what: str) -> list[str]:
    """Split on commas outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced ')' at position {i} in {what} {text!r}")
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote:
        raise ConfigError(f"unclosed quote {quote} in {what} {text!r}")
    if depth:
        raise ConfigError(f"unclosed '(' in {what} {text!r}")
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def split_objective_specs(text: str) -> list[str]:
    """``"sentiment,length(scale=100,unit=words)"`` -> ``["sentiment", "length(scale=100,unit=words)"]``.

    Commas inside parentheses or quotes do not split; empty items are dropped.
    """
    if not isinstance(text, str):
        raise ConfigError(f"objective specs must be a string like 'sentiment,length'; got {type(text).__name__}")
    return _split_top_level(text, "objective list")


_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?|[+-]?(nan|inf|infinity)", re.I)


def parse_value(text: str) -> Any:
    """``"3"`` -> 3, ``"0.5"``/``"1e-3"``/``"nan"`` -> float, ``"true"``/``"false"`` -> bool, quoted or else -> str."""
    t = text.strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        return t[1:-1]
    if t.lower() in ("true", "false"):
        return t.lower() == "true"
    if _INT.fullmatch(t):
        return int(t)
    if _FLOAT.fullmatch(t):
        return float(t)
    return t


def parse_objective_spec(spec: str) -> tuple[str, str | None, dict[str, Any]]:
    """``"reward_model:/p/rm(index=1)"`` -> ``("reward_model", "/p/rm", {"index": 1})``."""
    s = spec.strip() if isinstance(spec, str) else ""
    if not s:
        raise ConfigError(f"empty objective spec {spec!r}")
    opts_text = None
    quote = None
    for i, ch in enumerate(s):  # the first '(' outside quotes opens the options
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            if not s.endswith(")"):
                raise ConfigError(f"objective spec {spec!r}: options must close the spec, as in name(k=v,k=v)")
            opts_text, s = s[i + 1 : -1], s[:i].rstrip()
            break
    kind, sep, arg = s.partition(":")
    kind, arg = kind.strip(), arg.strip()
    if not re.fullmatch(r"[A-Za-z_][\w\-]*", kind):
        raise ConfigError(f"objective spec {spec!r}: {kind!r} is not an objective name "
                          "(expected name, name(k=v), kind:arg or kind:arg(k=v))")
    if sep and not arg:
        raise ConfigError(f"objective spec {spec!r}: nothing after '{kind}:'")
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"":
        arg = arg[1:-1]
    options: dict[str, Any] = {}
    if opts_text is not None:
        for item in _split_top_level(opts_text, f"options of {kind!r}"):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not re.fullmatch(r"[A-Za-z_]\w*", key):
                raise ConfigError(f"objective spec {spec!r}: option {item!r} is not key=value")
            if key in options:
                raise ConfigError(f"objective spec {spec!r}: option {key!r} given twice")
            v = parse_value(value)
            options[key] = v if key not in GENERIC_OPTIONS or isinstance(v, str) else value.strip()
    return kind, (arg if sep else None), options


def _format_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        v = "|".join(str(x) for x in v)
    s = str(v)
    if isinstance(v, str) and (re.search(r"[,()='\"\s]", s) or parse_value(s) != s):
        return "'" + s + "'" if "'" not in s else '"' + s + '"'
    return s


def format_objective_spec(kind: str, arg: str | None, options: Mapping[str, Any]) -> str:
    """Inverse of :func:`parse_objective_spec` (used to record how an objective was built)."""
    s = kind + (f":{arg}" if arg is not None else "")
    if options:
        s += "(" + ",".join(f"{k}={_format_value(v)}" for k, v in options.items()) + ")"
    return s


# --- building ---------------------------------------------------------------------------------


def _unknown_kind(kind: str, spec: Any) -> ConfigError:
    names = available_objectives()
    close = difflib.get_close_matches(kind, names, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    return ConfigError(f"unknown objective {kind!r} (in {spec!r}){hint} Available: "
                       + ", ".join(_usage(n) for n in names))


def _from_dict(d: Mapping[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    d = dict(d)
    if "kind" in d:
        kind_text = d.pop("kind")
    elif "name" in d:
        kind_text = d.pop("name")
    else:
        raise ConfigError(f"objective {d!r}: give its kind, e.g. {{kind: length, scale: 100}}")
    if not isinstance(kind_text, str):
        raise ConfigError(f"objective {d!r}: kind must be a string; got {kind_text!r}")
    kind, arg, options = parse_objective_spec(kind_text)
    entry = _KINDS.get(kind)
    if entry is not None and entry.arg is not None and entry.arg in d:
        if arg is not None:
            raise ConfigError(f"objective {kind_text!r}: the {entry.arg!r} is given twice")
        arg = str(d.pop(entry.arg))
    for k, v in d.items():
        if k in options:
            raise ConfigError(f"objective {kind_text!r}: option {k!r} given twice")
        options[k] = str(v) if k in GENERIC_OPTIONS else v
    return kind, arg, options


def build_objective(spec: str | Mapping[str, Any], tokenizer: Any = None) -> Objective:
    """Build one objective from a spec string or a dict (see the module docstring).

    ``tokenizer`` is passed to kinds that can use one (``length(unit=tokens)``).  The returned
    objective has a ``spec`` attribute: the canonical spec string that rebuilds it.
    """
    if isinstance(spec, Objective):
        return spec
    if isinstance(spec, Mapping):
        kind, arg, options = _from_dict(spec)
    elif isinstance(spec, str):
        kind, arg, options = parse_objective_spec(spec)
    else:
        raise ConfigError(f"an objective is a spec string or a dict; got {type(spec).__name__} {spec!r}")
    entry = _KINDS.get(kind)
    if entry is None:
        raise _unknown_kind(kind, spec)
    if entry.arg is not None and arg is None:
        raise ConfigError(f"objective {kind!r} needs an argument: {_usage(kind)}")
    if entry.arg is None and arg is not None:
        raise ConfigError(f"objective {kind!r} takes no ':{arg}' argument; use {kind} or {kind}(k=v)")

    canonical = format_objective_spec(kind, arg, options)
    kw = dict(options)
    name = kw.pop("name", None)
    direction = kw.pop("direction", None)
    if name is not None and not str(name).strip():
        raise ConfigError(f"objective {canonical!r}: name must not be empty")
    if direction is not None and direction not in DIRECTIONS:
        raise ConfigError(f"objective {canonical!r}: direction must be maximize or minimize; got {direction!r}")
    if not entry.any_options:
        unknown = [k for k in kw if k not in entry.options]
        if unknown:
            close = difflib.get_close_matches(unknown[0], entry.options, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            valid = ", ".join([*entry.options, *GENERIC_OPTIONS])
            raise ConfigError(f"objective {canonical!r}: unknown option {unknown[0]!r}{hint} Valid options of "
                              f"{kind!r}: {valid}")
    if entry.takes_tokenizer:
        kw["tokenizer"] = tokenizer
    if entry.takes_name and name is not None:
        kw["name"] = str(name)
    try:
        obj = entry.factory(arg, **kw) if entry.arg is not None else entry.factory(**kw)
    except TypeError as e:  # e.g. a value of the wrong type for an option
        raise ConfigError(f"objective {canonical!r}: {e}") from None
    if not isinstance(obj, Objective):
        raise ObjectiveError(f"objective kind {kind!r}: its factory returned {type(obj).__name__}, not an Objective")
    if name is not None:
        obj.name = str(name)
    if direction is not None:
        obj.direction = direction
    obj.spec = canonical
    return obj


# --- the set ----------------------------------------------------------------------------------


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
                eg = "" if "name=" in b else f", e.g. {_with_name(b, o.name + '_2')}"
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


def _with_name(spec: str, name: str) -> str:
    if spec.endswith(")"):
        return spec[:-1] + f",name={name})"
    return spec + f"(name={name})"


def build_objective_set(specs: str | Sequence[str | Mapping[str, Any] | Objective], tokenizer: Any = None,
                        nan_policy: str = "fail") -> ObjectiveSet:
    """Build an :class:`ObjectiveSet` from ``"sentiment,length(scale=100)"`` or a list of specs/dicts."""
    if isinstance(specs, str):
        items: list = split_objective_specs(specs)
    elif isinstance(specs, Mapping):
        items = [specs]
    else:
        items = []
        for s in specs:
            items.extend(split_objective_specs(s) if isinstance(s, str) else [s])
    if not items:
        raise ConfigError(f"no objectives given ({specs!r}); e.g. 'sentiment,length'. Available: "
                          + ", ".join(_usage(n) for n in available_objectives()))
    return ObjectiveSet([build_objective(s, tokenizer=tokenizer) for s in items], nan_policy=nan_policy)


# --- built-in kinds ---------------------------------------------------------------------------
# Factories import lazily so that building a set of rule objectives never imports transformers.


def _length(scale: float = 140.0, low: float = 0.5, high: float = 1.5, unit: str = "chars", tokenizer: Any = None,
            name: str = "length"):
    from paretoalign.objectives.rules import LengthObjective

    return LengthObjective(scale=scale, low=low, high=high, unit=unit, tokenizer=tokenizer, name=name)


def _sentiment(name: str = "sentiment"):
    from paretoalign.objectives.rules import SentimentObjective

    return SentimentObjective(name=name)


def _readability(clip: bool = False, empty: float = 0.0, lang: str = "en_US", name: str = "readability"):
    from paretoalign.objectives.rules import ReadabilityObjective

    return ReadabilityObjective(clip=clip, empty=empty, lang=lang, name=name)


def _keywords(words: Any = (), mode: str = "fraction", whole_words: bool = True, name: str = "keywords"):
    from paretoalign.objectives.rules import KeywordObjective

    return KeywordObjective(words=words, mode=mode, whole_words=whole_words, name=name)


def _relevance(model: str | None = None, max_length: int | None = None, batch_size: int = 32, device: str = "auto",
               name: str = "relevance"):
    from paretoalign.objectives.embedding import RelevanceObjective

    return RelevanceObjective(model=model, max_length=max_length, batch_size=batch_size, device=device, name=name)


def _reward_model(model: str, index: int = 0, batch_size: int = 8, max_length: int = 1024, device: str = "auto",
                  format: str = "auto", dtype: str = "auto", allow_download: bool = False, name: str | None = None,
                  debiased: bool = False):
    from pathlib import Path

    from paretoalign.objectives.models import RewardModelObjective
    from paretoalign.reward_model.model import CONFIG_FILE, MARKER, read_config

    folder, _, head = str(model).partition("#")
    from paretoalign.errors import ConfigError

    path = Path(folder).expanduser()
    # a damaged config.json is one error naming it, whichever kind of folder it belongs to
    if (path / CONFIG_FILE).is_file() and MARKER in read_config(path):  # paretoalign's: its score or one head
        from paretoalign.objectives.mo_reward_model import MultiObjectiveRewardObjective

        unused = [f"{k}={v!r}" for k, v, d in (("index", index, 0), ("max_length", max_length, 1024), ("format", format, "auto"),
                                                ("dtype", dtype, "auto")) if v != d]
        if unused:
            raise ConfigError(f"reward_model:{model}: {', '.join(unused)} do not apply to a paretoalign multi-objective "
                              "reward model (its folder fixes them); pick a head with '#<objective>'")
        if debiased and not head:
            raise ConfigError(f"reward_model:{model}: debiased= applies to a head ('#<objective>'); the score is debiased already")
        return MultiObjectiveRewardObjective(folder, head or None, debiased=bool(debiased), device=device,
                                             batch_size=batch_size, name=name)
    if debiased:
        raise ConfigError(f"reward_model:{model}: debiased= applies to paretoalign multi-objective reward models only")
    if head:
        raise ConfigError(f"reward_model:{model}: '#{head}' picks a head of a paretoalign multi-objective reward model, "
                          f"but {folder!r} is not one (no config.json written by `paretoalign reward-model train`)")
    return RewardModelObjective(model, index=index, batch_size=batch_size, max_length=max_length, device=device,
                                format=format, dtype=dtype, allow_download=allow_download, name=name)


def _python(function: str, name: str | None = None, **options: Any):
    from paretoalign.objectives.models import PythonObjective

    return PythonObjective(function, name=name, **options)


register_objective("length", _length)
register_objective("sentiment", _sentiment)
register_objective("readability", _readability)
register_objective("keywords", _keywords)
register_objective("relevance", _relevance)
register_objective("reward_model", _reward_model, arg="model")
register_objective("python", _python, arg="function")


def _implicit_dpo(adapter: str, beta: float = 0.1, base: str | None = None, batch_size: int = 8,
                  max_length: int = 512, use_chat_template: bool = True, name: str | None = None):
    from paretoalign.objectives.implicit import ImplicitRewardObjective

    return ImplicitRewardObjective(adapter, beta=beta, base=base, batch_size=batch_size, max_length=max_length,
                                   use_chat_template=use_chat_template, name=name)


register_objective("implicit_dpo", _implicit_dpo, arg="adapter")
