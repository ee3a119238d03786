"""Typed config dataclasses <-> YAML files <-> command-line flags.

Each config field carries its documentation in ``metadata["help"]``; that text becomes the CLI
help, so the dataclass is the single place an option is described.  Precedence: defaults, then
the YAML file (``--config``), then flags given on the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from paretoalign.errors import ConfigError


def field(default: Any = dataclasses.MISSING, help: str = "", cli: bool = True, group: str | None = None,  # noqa: A002
          **kwargs) -> Any:
    """A dataclass field with its help text (lists need a default factory); ``cli=False`` keeps it
    out of the generated flags (e.g. a positional argument); ``group`` is the ``--help`` heading it
    is listed under (default: the option group class that declares it, else the config's own)."""
    meta = {"help": help, "cli": cli, "group": group}
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


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def _str2bool(v: str) -> bool:
    s = str(v).strip().lower()
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false/yes/no/1/0, got {v!r}")


# Ranges of numeric options, by name: the same name means the same thing in every config.  Every
# number must also be finite.  (low, low_inclusive, high, high_inclusive); None = unbounded.
_AT_LEAST_1 = (1, True, None, False)
_AT_LEAST_0 = (0, True, None, False)
_POSITIVE = (0, False, None, False)
BOUNDS: dict[str, tuple] = {
    **dict.fromkeys((
        "max_steps", "batch_size", "num_generations", "max_new_tokens", "max_prompt_length", "ppo_epochs",
        "num_mini_batches", "save_steps", "save_total_limit", "lora_r", "rounds", "prompts_per_round",
        "num_candidates", "sft_epochs", "max_response_length", "max_length", "gate_hidden", "gate_layers",
        "gate_steps", "gate_batch_size", "num_completions", "eval_batch_size", "eval_num_prompts",
        "eval_max_new_tokens", "num_prompts", "max_pairs", "max_rows", "max_prompts", "min_pool"), _AT_LEAST_1),
    **dict.fromkeys((
        "seed", "split_seed", "eval_seed", "min_new_tokens", "refresh_every", "num_samples", "weight_decay",
        "gate_weight_decay", "kl_coef", "vf_coef", "dual_lr", "robust_radius", "sft_coef", "debias_max_lambda"),
        _AT_LEAST_0),
    **dict.fromkeys((
        "learning_rate", "gate_lr", "temperature", "eval_temperature", "beta", "amopo_beta", "tau", "lora_alpha",
        "lam_max", "max_weight", "clip_eps"), _POSITIVE),
    "top_p": (0, False, 1, True),
    "gamma": (0, True, 1, True),
    "lam": (0, True, 1, True),
    "heldout_fraction": (0, False, 1, False),
    "ridge_val_fraction": (0, True, 1, False),
    "lora_dropout": (0, True, 1, False),
    "dropout": (0, True, 1, False),
    "label_smoothing": (0, True, 0.5, False),
    "bound_relax": (0, False, 1, True),
}


def _range_text(b: tuple) -> str:
    lo, lo_in, hi, hi_in = b
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo}"
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def _type_name(tp) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(map(repr, get_args(tp)))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            list: "a list (or a comma-separated string)", dict: "a mapping"}.get(tp, getattr(tp, "__name__", str(tp)))


def coerce_value(name: str, tp, value):
    """``value`` as the field's type, checked against its range; a ConfigError naming the option,
    the value and what is expected otherwise.  Strings from YAML/flags are parsed ("1e-5", "yes")."""
    tp, optional = _unwrap_optional(tp)
    bad = ConfigError(f"option {name}: expected {_type_name(tp)}{' or null' if optional else ''}, got {value!r}")
    if value is None:
        if optional:
            return None
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        elif isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise bad from None
        if not isinstance(value, int):
            raise bad
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad
        try:
            value = float(value)
        except ValueError:
            raise bad from None
        if not math.isfinite(value):
            raise ConfigError(f"option {name}: expected a finite number, got {value!r}")
    elif tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise bad
    elif tp is list or get_origin(tp) in (list, tuple):
        if not isinstance(value, (list, tuple, str)):
            raise bad
    elif tp is dict:
        if not isinstance(value, dict):
            raise bad
    elif get_origin(tp) is Literal:
        if value not in get_args(tp):
            raise bad
    b = BOUNDS.get(name)
    if b is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, lo_in, hi, hi_in = b
        if (value < lo or (value == lo and not lo_in)) or (hi is not None and (value > hi or (value == hi and not hi_in))):
            raise ConfigError(f"option {name}: must be {_range_text(b)}, got {value!r}")
    return value


def check_fields(cfg) -> None:
    """Coerce and range-check every field of a config dataclass in place (call from __post_init__)."""
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if f.init:
            setattr(cfg, f.name, coerce_value(f.name, hints[f.name], getattr(cfg, f.name)))


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, exclude=()) -> None:
    """Flags for one config class (see :func:`add_config_arguments`)."""
    add_config_arguments(parser, [cls], exclude=exclude, own_heading=lambda c: "options")


def option_group(cls):
    """Class decorator for a dataclass of shared options: its fields are listed in ``--help`` under
    the class's ``GROUP`` heading wherever a config composes it."""
    for f in dataclasses.fields(cls):
        if f.name in cls.__dict__.get("__annotations__", {}) and f.metadata.get("group") is None:
            f.metadata = types.MappingProxyType({**f.metadata, "group": cls.GROUP})
    return cls


def add_config_arguments(parser: argparse.ArgumentParser, classes, choices: dict | None = None,
                         exclude=(), own_heading=None, group_order=(), helps: dict | None = None) -> None:
    """Flags for the union of the fields of ``classes`` (config dataclasses), each once, listed under
    its group heading; unset flags are absent from the parsed namespace.  A field whose default
    differs between the classes says so in its help.  ``choices`` overrides a field's choices (e.g.
    ``--method`` from the method table); ``own_heading(cls)`` names the group of fields that belong
    to one class only (default: the class's name); ``group_order`` lists the headings that come
    first, in that order; ``helps`` overrides a field's help text."""
    groups: dict[str, argparse._ArgumentGroup] = {heading: parser.add_argument_group(heading) for heading in group_order}
    seen: dict[str, list] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.init and f.metadata.get("cli") is not False and f.name not in exclude:
                seen.setdefault(f.name, []).append((cls, f))
    for name, owners in seen.items():
        cls, f = owners[0]
        heading = f.metadata.get("group") or (own_heading(cls) if own_heading else f"{cls.__name__} options")
        if heading not in groups:
            groups[heading] = parser.add_argument_group(heading)
        defaults = {c.__name__: _default_of(g) for c, g in owners}
        if len({repr(v) for v in defaults.values()}) > 1:
            shown = ", ".join(f"{v!r} for {c}" for c, v in defaults.items())
        else:
            shown = repr(next(iter(defaults.values())))
        _add_flag(groups[heading], f, typing.get_type_hints(cls)[name], shown, (choices or {}).get(name),
                  (helps or {}).get(name))


def _default_of(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def _add_flag(parser, f, hint, shown_default: str, choices=None, help_text=None) -> None:
    tp, _optional = _unwrap_optional(hint)
    help_text = help_text or f.metadata.get("help", "")
    if f.name in BOUNDS:
        help_text = f"{help_text} [{_range_text(BOUNDS[f.name])}]"
    help_text = f"{help_text} (default: {shown_default})" if help_text else f"default: {shown_default}"
    kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
    if tp is bool:
        kwargs.update(nargs="?", const=True, type=_str2bool, metavar="BOOL")
    elif choices is not None or get_origin(tp) is Literal:
        choices = tuple(choices) if choices is not None else get_args(tp)
        kwargs.update(choices=choices, type=type(choices[0]))
    elif get_origin(tp) in (list, tuple) or tp is list:
        # Comma-separated on the command line; the config class parses the string.
        kwargs.update(type=str, metavar="A,B,...")
    elif tp in (int, float, str):
        kwargs.update(type=tp)
    else:
        kwargs.update(type=str)
    # both spellings, as TRL's parser: --max-steps and --max_steps (the YAML / dataclass name)
    spellings = [_flag(f.name)] + (["--" + f.name] if "_" in f.name else [])
    parser.add_argument(*spellings, **kwargs)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {str(path)!r} is a folder; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {str(path)!r} is not valid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of option: value")
    # keys take both spellings, as flags do (max-steps, max_steps); one option given both ways is ambiguous
    out: dict = {}
    for k, v in data.items():
        name = str(k).replace("-", "_")
        if name in out:
            raise ConfigError(f"config file {str(path)!r} gives option {name} twice (as {name!r} and "
                              f"{name.replace('_', '-')!r}); keep one")
        out[name] = v
    return out


def build_config(cls, yaml_path: str | Path | None = None, overrides: dict | None = None):
    """Defaults <- YAML file <- overrides (flags); unknown keys are an error that lists valid ones."""
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update(overrides or {})
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - names)
    if unknown:
        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, names, n=1)
            hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ConfigError(f"unknown option(s) {', '.join(hints)} for {cls.__name__}")
    hints = typing.get_type_hints(cls)
    values = {k: coerce_value(k, hints[k], v) for k, v in values.items()}
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
