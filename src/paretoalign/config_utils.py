"""Typed config dataclasses <-> YAML files <-> command-line flags.

Each config field carries its documentation in ``metadata["help"]``; that text becomes the CLI
help, so the dataclass is the single place an option is described.  Precedence: defaults, then
the YAML file (``--config``), then flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from paretoalign.errors import ConfigError


def field(default: Any = dataclasses.MISSING, help: str = "", cli: bool = True, **kwargs) -> Any:  # noqa: A002
    """A dataclass field with its help text (lists need a default factory); ``cli=False`` keeps it
    out of the generated flags (e.g. a positional argument)."""
    meta = {"help": help, "cli": cli}
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta, **kwargs)
    return dataclasses.field(default=default, metadata=meta, **kwargs)


def _unwrap_optional(tp):
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _str2bool(v: str) -> bool:
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {v!r}")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, exclude=()) -> None:
    """Add one flag per field of ``cls`` (except ``exclude``); unset flags are absent from the
    parsed namespace."""
    hints = typing.get_type_hints(cls)
    own = set(cls.__dict__.get("__annotations__", {}))
    fields = dataclasses.fields(cls)
    # a config's own options first, then those it shares through a mixin (e.g. LoRA)
    for f in [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]:
        if not f.init or f.metadata.get("cli") is False or f.name in exclude:
            continue
        tp, _optional = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} (default: {default!r})" if help_text else f"default: {default!r}"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            kwargs.update(nargs="?", const=True, type=_str2bool, metavar="BOOL")
        elif get_origin(tp) is Literal:
            choices = get_args(tp)
            kwargs.update(choices=choices, type=type(choices[0]))
        elif get_origin(tp) in (list, tuple):
            # Comma-separated on the command line; the config class parses the string.
            kwargs.update(type=str, metavar="A,B,...")
        elif tp in (int, float, str):
            kwargs.update(type=tp)
        else:
            kwargs.update(type=str)
        parser.add_argument(_flag(f.name), **kwargs)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of option: value")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def build_config(cls, yaml_path: str | Path | None = None, overrides: dict | None = None):
    """Defaults <- YAML file <- overrides (flags); unknown keys are an error that lists valid ones."""
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update(overrides or {})
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        import difflib

        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, names, n=1)
            hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown option(s) {', '.join(hints)} for {cls.__name__}")
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


def config_to_dict(cfg) -> dict:
    """A plain, YAML-able dict of a config dataclass."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init}


def check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


def split_list(value) -> list:
    """Accept a list or a comma-separated string (from the CLI)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)
