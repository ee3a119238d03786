"""Prompt sets: loading, validation, splitting and fingerprinting.

A *prompt* is either a plain string or a conversation in TRL's conversational format, a list
of ``{"role": ..., "content": ...}`` messages whose roles are ``system``, ``user`` or
``assistant`` and which contains at least one user message::

    "Write a short review of a pizza place."
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Review a pizza place."}]

:func:`load_prompts` reads prompts from the packaged set (``None`` or ``"builtin"``) or from a
local file.  Nothing is ever downloaded: hub dataset names and URLs are refused.  Accepted
sources, chosen by suffix:

``.jsonl``
    One JSON object per line, the prompt under ``column`` (default ``"prompt"``); a line may
    also be a bare JSON string.  Blank lines are skipped.  Rows are reported by line number.
``.json``
    A JSON list of objects (prompt under ``column``) or a list of strings.  A ``.json`` file
    that is really JSON Lines is read as such.  Rows are reported by list index (0-based).
``.csv``
    A header row naming the columns, then one prompt per row under ``column`` (conversations
    are not supported in CSV).  Rows are reported by line number (the header is line 1).
``.txt``
    One prompt per line; blank lines are skipped; ``column`` is ignored.
``.parquet``
    A table with a ``column`` column (strings, or lists of ``{role, content}`` structs).
    Rows are reported by index (0-based).
a folder written by ``datasets``' ``save_to_disk``
    A ``Dataset``, or a ``DatasetDict`` from which ``split`` picks one split (it may be left out
    when the folder holds a single split).  Rows are reported by index (0-based).

Every problem raises :class:`~paretoalign.errors.DataError` with a message that names the
file, the row and the field: a missing file, a file with no prompts, malformed JSON (the
decoder's message is quoted), a missing column (the columns that exist are listed), a value
that is neither a string nor a valid conversation, an empty or whitespace-only prompt, and a
conversation message without ``role``/``content`` or with an unknown role.

:func:`split_prompts` makes a deterministic train/held-out split, :func:`builtin_prompts`
returns the packaged set (or one of its default splits), :func:`prompt_text` gives the text
that objectives score for a prompt, and :func:`prompts_hash` fingerprints a prompt list so that
a run or evaluation can record which prompts it used.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from paretoalign.errors import ConfigError, DataError

Prompt = str | list[dict]
"""A plain prompt string, or a conversation ``[{"role": "user", "content": "..."}]``."""

__all__ = [
    "BUILTIN",
    "FORMATS",
    "VALID_ROLES",
    "Prompt",
    "builtin_prompts",
    "load_prompts",
    "prompt_text",
    "prompts_hash",
    "split_prompts",
]

BUILTIN = "builtin"
FORMATS = (".jsonl", ".json", ".csv", ".txt", ".parquet", "a datasets save_to_disk folder")
VALID_ROLES = ("system", "user", "assistant")
DEFAULT_HELDOUT_FRACTION = 0.15
DEFAULT_SEED = 0

_BUILTIN_PACKAGE = "paretoalign.resources"
_BUILTIN_FILE = "prompts.jsonl"
_FORMATS_TEXT = ", ".join(FORMATS)


# ---------------------------------------------------------------------------------------------
# Validation of one value


def _where(name: str, row: str) -> str:
    return f"{name}, {row}"


def _validate_prompt(value: Any, name: str, row: str, column: str) -> Prompt:
    """Check one raw value and return it as a :data:`Prompt`; ``row`` is e.g. ``"line 3"``."""
    where = f"{_where(name, row)}, field '{column}'"
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: the prompt is empty or whitespace only")
        return value
    if isinstance(value, (list, tuple)):
        return _validate_conversation(list(value), where)
    raise DataError(
        f"{where}: expected a string or a conversation (a list of "
        f"{{'role': ..., 'content': ...}} messages), got {type(value).__name__}"
    )


def _validate_conversation(messages: list, where: str) -> list[dict]:
    if not messages:
        raise DataError(f"{where}: the conversation has no messages")
    out: list[dict] = []
    has_user = False
    for i, msg in enumerate(messages, start=1):
        here = f"{where}, message {i}"
        if not isinstance(msg, dict):
            raise DataError(
                f"{here}: expected a {{'role': ..., 'content': ...}} object, got {type(msg).__name__}"
            )
        for key in ("role", "content"):
            if key not in msg or msg[key] is None:
                raise DataError(f"{here}: the message lacks '{key}' (keys present: {_keys(msg)})")
        role, content = msg["role"], msg["content"]
        if role not in VALID_ROLES:
            raise DataError(
                f"{here}: invalid role {role!r} (expected one of {', '.join(VALID_ROLES)})"
            )
        if not isinstance(content, str):
            raise DataError(f"{here}: 'content' must be a string, got {type(content).__name__}")
        if role == "user":
            if not content.strip():
                raise DataError(f"{here}: the user message is empty or whitespace only")
            has_user = True
        out.append({"role": role, "content": content})
    if not has_user:
        raise DataError(f"{where}: the conversation has no user message")
    return out


def _keys(d: dict) -> str:
    return ", ".join(repr(str(k)) for k in d) or "none"


def _from_record(record: Any, name: str, row: str, column: str) -> Prompt:
    """A row of a JSON/JSONL file: an object holding ``column``, or a bare string."""
    if isinstance(record, str):
        return _validate_prompt(record, name, row, column)
    if not isinstance(record, dict):
        raise DataError(
            f"{_where(name, row)}: expected a JSON object with a '{column}' field or a string, "
            f"got {type(record).__name__}"
        )
    if column not in record:
        raise DataError(
            f"{_where(name, row)}: missing field '{column}' (fields present: {_keys(record)})"
        )
    return _validate_prompt(record[column], name, row, column)


def _nonempty(prompts: list[Prompt], name: str) -> list[Prompt]:
    if not prompts:
        raise DataError(f"{name}: no prompts found (the file is empty)")
    return prompts


# ---------------------------------------------------------------------------------------------
# Readers, one per format


def _read_text(path: Path) -> str:
    """The file as text; bytes that are not UTF-8, or a NUL byte (a binary file), name their line."""
    try:
        raw = path.read_bytes()
    except OSError as e:  # unreadable, or a directory
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    return decode_text(raw, str(path))


def first_line(e: BaseException) -> str:
    """An exception's first line, control characters escaped (library messages may quote raw bytes)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


def decode_text(raw: bytes, name: str, start_line: int = 1) -> str:
    """``raw`` (which starts at line ``start_line`` of file ``name``) decoded as UTF-8, a BOM dropped; else a
    :class:`DataError` naming the line of the first bad byte, or of a NUL byte (a binary file)."""
    if b"\0" in raw:  # text never holds one (UTF-16 files included: they are not UTF-8 either)
        line = start_line + raw[: raw.index(b"\0")].count(b"\n")
        raise DataError(f"{name}, line {line}: a NUL byte; this is a binary file, not UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = start_line + raw[: e.start].count(b"\n")
        raise DataError(f"{name}, line {line}: not valid UTF-8 text (byte 0x{raw[e.start]:02x}); "
                        "save the file as UTF-8") from None


def _parse_jsonl(text: str, name: str, column: str) -> list[Prompt]:
    prompts: list[Prompt] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{name}, line {lineno}: malformed JSON: {e}") from None
        prompts.append(_from_record(record, name, f"line {lineno}", column))
    return _nonempty(prompts, name)


def _load_jsonl(path: Path, column: str) -> list[Prompt]:
    return _parse_jsonl(_read_text(path), str(path), column)


def _load_json(path: Path, column: str) -> list[Prompt]:
    name = str(path)
    text = _read_text(path)
    if not text.strip():
        raise DataError(f"{name}: no prompts found (the file is empty)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        # Many ".json" dataset files are really JSON Lines; read them as such.
        if e.msg == "Extra data":
            first = text.lstrip().splitlines()[0]
            try:
                json.loads(first)
            except json.JSONDecodeError:
                pass
            else:
                return _parse_jsonl(text, name, column)
        raise DataError(f"{name}: malformed JSON: {e}") from None
    if not isinstance(data, list):
        raise DataError(
            f"{name}: expected a JSON list of objects or of strings, got {type(data).__name__}"
        )
    prompts = [_from_record(rec, name, f"row {i}", column) for i, rec in enumerate(data)]
    return _nonempty(prompts, name)


def _load_txt(path: Path) -> list[Prompt]:
    name = str(path)
    prompts: list[Prompt] = [
        line for line in _read_text(path).splitlines() if line.strip()
    ]
    return _nonempty(prompts, name)


def _load_csv(path: Path, column: str) -> list[Prompt]:
    name = str(path)
    text = _read_text(path)
    start = 1  # the line the row being read starts on (the header is line 1)
    try:
        reader = csv.DictReader(text.splitlines(keepends=True), strict=True)  # an unclosed quote is an error
        fieldnames = reader.fieldnames
        if not fieldnames:
            raise DataError(f"{name}: no prompts found (the file is empty)")
        if column not in fieldnames:
            raise DataError(
                f"{name}, line 1: missing column '{column}' "
                f"(columns present: {', '.join(repr(c) for c in fieldnames)})"
            )
        prompts: list[Prompt] = []
        start = 2
        for record in reader:
            value = record.get(column)
            if value is None:
                value = ""  # a short row: the cell is absent
            prompts.append(_validate_prompt(value, name, f"line {start}", column))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{name}, line {start}: malformed CSV: {e}") from None
    return _nonempty(prompts, name)


def _from_columns(values: Iterable[Any], name: str, column: str) -> list[Prompt]:
    prompts = [_validate_prompt(v, name, f"row {i}", column) for i, v in enumerate(values)]
    return _nonempty(prompts, name)


def _load_parquet(path: Path, column: str) -> list[Prompt]:
    name = str(path)
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow comes with `datasets`
        raise DataError(f"{name}: reading .parquet needs pyarrow (pip install pyarrow)") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid and friends
        raise DataError(f"{name}: not a readable parquet file ({first_line(e)})") from None
    columns = list(pf.schema_arrow.names)
    if column not in columns:
        raise DataError(
            f"{name}: missing column '{column}' "
            f"(columns present: {', '.join(repr(c) for c in columns) or 'none'})"
        )
    try:
        values = pf.read(columns=[column]).column(column).to_pylist()
    except Exception as e:  # a damaged column chunk or page: the footer alone was fine
        raise DataError(f"{name}: column '{column}' cannot be read; the parquet file is damaged "
                        f"({first_line(e)})") from None
    return _from_columns(values, name, column)


def _load_disk(path: Path, column: str, split: str | None) -> list[Prompt]:
    name = str(path)
    is_dict = (path / "dataset_dict.json").is_file()
    is_dataset = (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    if not (is_dict or is_dataset):
        raise DataError(
            f"{name}: a folder that was not written by datasets' save_to_disk "
            f"(no dataset_dict.json or state.json); supported formats: {_FORMATS_TEXT}"
        )
    import datasets

    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{name}: cannot read the save_to_disk folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        splits = list(ds.keys())
        if split is None:
            if len(splits) != 1:
                raise DataError(
                    f"{name}: the folder holds several splits ({', '.join(splits)}); "
                    "choose one with split="
                )
            split = splits[0]
        if split not in ds:
            raise DataError(
                f"{name}: no split {split!r} (splits present: {', '.join(splits) or 'none'})"
            )
        ds = ds[split]
        name = f"{name} [split {split}]"
    elif split is not None:
        raise DataError(f"{name}: split={split!r} was given but the folder holds a single Dataset")
    columns = list(ds.column_names)
    if column not in columns:
        raise DataError(
            f"{name}: missing column '{column}' "
            f"(columns present: {', '.join(repr(c) for c in columns) or 'none'})"
        )
    return _from_columns(ds[column], name, column)


# ---------------------------------------------------------------------------------------------
# Public API


def load_prompts(
    source: str | Path | None = None, column: str = "prompt", split: str | None = None
) -> list[Prompt]:
    """Load and validate prompts from the packaged set or a local file (see the module doc).

    ``source`` is ``None`` or ``"builtin"`` for the packaged prompts, otherwise the path of a
    ``.jsonl``, ``.json``, ``.csv``, ``.txt`` or ``.parquet`` file or of a ``save_to_disk``
    folder.  ``column`` names the field holding the prompt (ignored for ``.txt``); ``split``
    picks a split of a saved ``DatasetDict``.  Raises :class:`DataError` on any problem.
    """
    if source is None or (isinstance(source, str) and source == BUILTIN):
        if split is not None:
            raise DataError(
                f"split={split!r} only applies to save_to_disk folders; "
                "use builtin_prompts(split) for the packaged set's train/heldout split"
            )
        return _builtin_all(column)
    if not isinstance(source, (str, Path)):
        raise DataError(
            f"prompt source must be a path or 'builtin', got {type(source).__name__}"
        )
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(
            f"{source}: no such file or folder; only local files are supported "
            f"({_FORMATS_TEXT}), datasets are never downloaded"
        )
    if path.is_dir():
        return _load_disk(path, column, split)
    if split is not None:
        raise DataError(f"{path}: split={split!r} only applies to save_to_disk folders")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _load_jsonl(path, column)
    if suffix == ".json":
        return _load_json(path, column)
    if suffix == ".csv":
        return _load_csv(path, column)
    if suffix == ".txt":
        return _load_txt(path)
    if suffix == ".parquet":
        return _load_parquet(path, column)
    raise DataError(
        f"{path}: unsupported file type {suffix or '(no suffix)'!r}; "
        f"only local files are supported ({_FORMATS_TEXT})"
    )


def prompt_text(p: Prompt) -> str:
    """The text objectives see: the prompt itself, or a conversation's last user message."""
    if isinstance(p, str):
        return p
    if isinstance(p, (list, tuple)):
        for msg in reversed(p):
            if isinstance(msg, dict) and msg.get("role") == "user":
                content = msg.get("content")
                if isinstance(content, str):
                    return content
        raise DataError("the conversation has no user message with string content")
    raise DataError(f"a prompt must be a string or a conversation, got {type(p).__name__}")


def split_prompts(
    prompts: Sequence[Prompt],
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
    seed: int = DEFAULT_SEED,
) -> tuple[list[Prompt], list[Prompt]]:
    """Split ``prompts`` into ``(train, heldout)`` deterministically.

    The order is a permutation seeded by ``seed`` (each prompt's place comes from a sha256 of the
    seed and its index, so it does not depend on the Python version).  The held-out part has
    ``round(len * heldout_fraction)`` prompts, clamped so that both parts are non-empty; each part
    keeps the prompts' original relative order.
    """
    prompts = list(prompts)
    n = len(prompts)
    if n < 2:
        raise DataError(f"cannot split {n} prompt(s) into train and held-out parts; need at least 2")
    if not (0.0 < float(heldout_fraction) < 1.0):
        raise ConfigError(f"heldout_fraction must be strictly between 0 and 1, got {heldout_fraction}")
    n_held = min(max(round(n * heldout_fraction), 1), n - 1)
    order = sorted(range(n), key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).digest())
    held = set(order[:n_held])
    train = [p for i, p in enumerate(prompts) if i not in held]
    heldout = [p for i, p in enumerate(prompts) if i in held]
    return train, heldout


def builtin_prompts(split: Literal["train", "heldout", "all"] = "all") -> list[Prompt]:
    """The packaged prompts: all of them, or the train/held-out part of the default split."""
    prompts = _builtin_all("prompt")
    if split == "all":
        return prompts
    if split not in ("train", "heldout"):
        raise ConfigError(f"unknown split {split!r}; expected 'train', 'heldout' or 'all'")
    train, heldout = split_prompts(prompts)
    return train if split == "train" else heldout


def prompts_hash(prompts: Sequence[Prompt]) -> str:
    """A stable sha256 hex digest of the prompt list's canonical JSON (order matters)."""
    canonical = json.dumps(
        list(prompts), sort_keys=True, ensure_ascii=False, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _builtin_all(column: str) -> list[Prompt]:
    return list(_builtin_cached(column))


@lru_cache(maxsize=4)
def _builtin_cached(column: str) -> tuple[Prompt, ...]:
    text = resources.files(_BUILTIN_PACKAGE).joinpath(_BUILTIN_FILE).read_text(encoding="utf-8")
    return tuple(_parse_jsonl(text, f"<builtin {_BUILTIN_FILE}>", column))
