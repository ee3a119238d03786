"""The registry of objective kinds, :func:`build_objective` and :class:`ObjectiveSet`.

An objective is named by a spec string (``sentiment``, ``length(scale=100,unit=words)``,
``reward_model:/path/to/rm(index=0)``; grammar: :mod:`.spec`) or by a dict.  Every objective also
accepts ``name=`` (an alias) and ``direction=maximize|minimize``.

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
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.objectives.base import DIRECTIONS, Objective, ObjectiveSet
from paretoalign.objectives.embedding import RelevanceObjective
from paretoalign.objectives.implicit import ImplicitRewardObjective
from paretoalign.objectives.mo_reward_model import MultiObjectiveRewardObjective
from paretoalign.objectives.models import PythonObjective, RewardModelObjective
from paretoalign.objectives.rules import KeywordObjective, LengthObjective, ReadabilityObjective, SentimentObjective
from paretoalign.objectives.spec import (
    GENERIC_OPTIONS,
    format_objective_spec,
    parse_objective_spec,
    split_objective_specs,
)
from paretoalign.reward_model.model import CONFIG_FILE, MARKER, read_config

__all__ = [
    "available_objectives",
    "build_objective",
    "build_objective_set",
    "register_objective",
]


@dataclass
class _Kind:
    factory: Callable[..., Objective]
    arg: str | None  # key of the ``kind:<arg>`` argument in the dict form; None: the kind takes none
    options: tuple[str, ...]  # keyword options of the factory (besides name, tokenizer)
    any_options: bool  # the factory takes **kwargs: every option is passed on
    takes_name: bool
    takes_tokenizer: bool
    defaults: tuple[tuple[str, Any], ...] = ()  # (option, default) in signature order; no default: REQUIRED
    summary: str = ""  # the factory's first docstring line


REQUIRED = object()


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
            defaults=tuple((p.name, REQUIRED if p.default is p.empty else p.default) for p in params
                           if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in ("name", "tokenizer")),
            summary=(inspect.getdoc(f) or "").split("\n")[0],
        )
        return f

    return deco(factory) if factory is not None else deco


def available_objectives() -> list[str]:
    """The registered kinds, sorted (``reward_model`` and ``python`` take an argument: ``kind:arg``)."""
    return sorted(_KINDS)


def describe_objective(kind: str) -> tuple[str, str]:
    """(``kind[:<arg>](option=default, ...)``, one-line summary) of a registered kind, for listings."""
    k = _KINDS[kind]
    head = kind + (f":<{k.arg}>" if k.arg else "")
    opts = [f"{n}={d!r}" if d is not REQUIRED else n for n, d in k.defaults] + (["..."] if k.any_options else [])
    return f"{head}({', '.join(opts)})" if opts else head, k.summary


def _usage(kind: str) -> str:
    a = _KINDS[kind].arg
    return f"{kind}:<{'module>:<function' if kind == 'python' else a}>" if a else kind


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
# The model-backed classes import transformers only when they load their model, so building a set of
# rule objectives never imports it (checked by tests/objectives/test_registry.py).


def _length(scale: float = 140.0, low: float = 0.5, high: float = 1.5, unit: str = "chars", tokenizer: Any = None,
            name: str = "length"):
    """Clipped length reward clip(len/scale, low, high) in chars, words or tokens (PAMA's length objective)."""
    return LengthObjective(scale=scale, low=low, high=high, unit=unit, tokenizer=tokenizer, name=name)


def _sentiment(name: str = "sentiment"):
    """VADER compound sentiment of the completion, in [-1, 1] (higher: more positive)."""
    return SentimentObjective(name=name)


def _readability(clip: bool = False, empty: float = 0.0, lang: str = "en_US", name: str = "readability"):
    """Flesch reading ease of the completion (textstat; higher: easier); clip=true bounds it to [0, 100]."""
    return ReadabilityObjective(clip=clip, empty=empty, lang=lang, name=name)


def _keywords(words: Any = (), mode: str = "fraction", whole_words: bool = True, name: str = "keywords"):
    """Keywords present in the completion (words='a|b'): their fraction, any (0/1) or count (mode=)."""
    return KeywordObjective(words=words, mode=mode, whole_words=whole_words, name=name)


def _relevance(model: str | None = None, max_length: int | None = None, batch_size: int = 32, device: str = "auto",
               name: str = "relevance"):
    """Cosine similarity of prompt and completion embeddings, in [-1, 1] (the bundled MiniLM unless model=)."""
    return RelevanceObjective(model=model, max_length=max_length, batch_size=batch_size, device=device, name=name)


def _reward_model(model: str, index: int = 0, batch_size: int = 8, max_length: int = 1024, device: str = "auto",
                  format: str = "auto", dtype: str = "auto", allow_download: bool = False, name: str | None = None,
                  debiased: bool = False):
    """A sequence-classification reward model's logit (index=), or a head/score of a paretoalign reward model folder."""
    folder, _, head = str(model).partition("#")
    path = Path(folder).expanduser()
    # a damaged config.json is one error naming it, whichever kind of folder it belongs to
    if (path / CONFIG_FILE).is_file() and MARKER in read_config(path):  # paretoalign's: its score or one head
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
    """Your function <module>:<fn>(prompts, completions, **options) -> one number per completion."""
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
    """DPO's implicit reward beta*log(pi_adapter/pi_base) of a trained LoRA adapter (a run folder or final/policy)."""
    return ImplicitRewardObjective(adapter, beta=beta, base=base, batch_size=batch_size, max_length=max_length,
                                   use_chat_template=use_chat_template, name=name)


register_objective("implicit_dpo", _implicit_dpo, arg="adapter")
