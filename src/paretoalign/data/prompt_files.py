"""Reading prompt files: one reader per format, every value checked as a :data:`Prompt`.

:func:`read_prompt_file` picks the reader by suffix (``.jsonl``, ``.json``, ``.csv``, ``.txt``, ``.parquet``,
or a ``datasets`` ``save_to_disk`` folder; :mod:`.prompts` documents each) and every problem is a
:class:`~paretoalign.errors.DataError` naming the file, the row and the field.
:func:`validate_conversation` is the one check of a conversation (the pair readers use it too), and
:func:`prompts_from_values` the one check of a table's prompt column (a Hugging Face dataset's too).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from paretoalign.data.text_files import first_line, read_text
from paretoalign.errors import DataError

Prompt = str | list[dict]
"""A plain prompt string, or a conversation ``[{"role": "user", "content": "..."}]``."""

__all__ = ["FORMATS", "VALID_ROLES", "Prompt", "parse_prompt_jsonl", "prompts_from_values", "read_prompt_file",
           "validate_conversation"]

FORMATS = (".jsonl", ".json", ".csv", ".txt", ".parquet", "a datasets save_to_disk folder")
VALID_ROLES = ("system", "user", "assistant")

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
        return validate_conversation(list(value), where)
    raise DataError(
        f"{where}: expected a string or a conversation (a list of "
        f"{{'role': ..., 'content': ...}} messages), got {type(value).__name__}"
    )


def validate_conversation(messages: list, where: str) -> list[dict]:
    """``messages`` as ``[{"role", "content"}]`` with known roles and at least one non-empty user
    message; else a :class:`DataError` starting with ``where`` and naming the message."""
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


def parse_prompt_jsonl(text: str, name: str, column: str) -> list[Prompt]:
    """The prompts of JSON Lines ``text`` (of file ``name``): ``column`` of each object, or a bare string."""
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
    return parse_prompt_jsonl(read_text(path), str(path), column)


def _load_json(path: Path, column: str) -> list[Prompt]:
    name = str(path)
    text = read_text(path)
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
                return parse_prompt_jsonl(text, name, column)
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
        line for line in read_text(path).splitlines() if line.strip()
    ]
    return _nonempty(prompts, name)


def _load_csv(path: Path, column: str) -> list[Prompt]:
    name = str(path)
    text = read_text(path)
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


def prompts_from_values(values: Iterable[Any], name: str, column: str) -> list[Prompt]:
    """The values of a table's ``column`` (of ``name``) checked as prompts, rows named ``row i`` (0-based)."""
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
    return prompts_from_values(values, name, column)


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
    return prompts_from_values(ds[column], name, column)


def read_prompt_file(path: Path, column: str, split: str | None) -> list[Prompt]:
    """The prompts of an existing local file or ``save_to_disk`` folder, read by its suffix."""
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
