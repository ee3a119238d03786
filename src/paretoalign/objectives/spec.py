"""The objective-spec grammar: how one string names an objective, and how a list of them splits.

One objective::

    name                       sentiment
    name(k=v,k=v)              length(scale=100,unit=words)
    kind:arg                   reward_model:/path/to/rm        python:mypkg.rewards:politeness
    kind:arg(k=v)              reward_model:OpenAssistant/reward-model-deberta-v3-large-v2(index=0)

Several objectives: separated by commas; commas inside parentheses (or quotes) do not split
(:func:`split_objective_specs`).  Values parse as ``int``, ``float`` (also ``nan``, ``inf``),
``bool`` (``true``/``false``) or else ``str``; quote a value (``'...'`` or ``"..."``) to keep it a
string or to put ``,()=`` inside.  Every objective also accepts ``name=`` (an alias, so that
two instances of one kind can coexist: ``length(name=short,direction=minimize)``) and
``direction=maximize|minimize`` (:data:`GENERIC_OPTIONS`).

Pure string handling: which kinds exist and what their options mean is :mod:`.registry`'s business.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from paretoalign.errors import ConfigError

__all__ = [
    "GENERIC_OPTIONS",
    "format_objective_spec",
    "parse_objective_spec",
    "parse_value",
    "spec_with_name",
    "split_objective_specs",
]

GENERIC_OPTIONS = ("name", "direction")


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


def spec_with_name(spec: str, name: str) -> str:
    """``spec`` with ``name=<name>`` added to its options (``length(scale=9)`` -> ``length(scale=9,name=x)``)."""
    if spec.endswith(")"):
        return spec[:-1] + f",name={name})"
    return spec + f"(name={name})"
