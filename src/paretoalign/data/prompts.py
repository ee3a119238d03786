"""Prompt sets: loading, validation, splitting and fingerprinting.

A *prompt* is either a plain string or a conversation in TRL's conversational format, a list
of ``{"role": ..., "content": ...}`` messages whose roles are ``system``, ``user`` or
``assistant`` and which contains at least one user message::

    "Write a short review of a pizza place."
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Review a pizza place."}]

:func:`load_prompts` reads prompts from the packaged set (``None`` or ``"builtin"``), from a
local file or folder, or from a Hugging Face dataset named like ``trl-lib/tldr`` (see below).
Local sources, chosen by suffix:

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

a Hugging Face dataset name: ``owner/name``, ``owner/name:config`` or ``owner/name:config:split``
    Used only when no local file or folder of that name exists (a local path always wins).  The
    prompts are ``column`` of one split: ``split`` or the name's, else the only split, else
    ``train``.  By default it is read from the local caches only, with the Hub switched off
    (``hf download <name> --repo-type dataset`` or an earlier online load fills them); with
    ``allow_download=True`` (``--allow-download``) it is fetched from the Hub if needed.  URLs are
    refused.  The returned list is a :class:`PromptList` whose ``source`` records the name, config,
    split, revision and fingerprint; :mod:`.hub_datasets` does the loading.  Rows are reported by
    index (0-based).

Every problem raises :class:`~paretoalign.errors.DataError` with a message that names the
file, the row and the field: a missing file, a file with no prompts, malformed JSON (the
decoder's message is quoted), a missing column (the columns that exist are listed), a dataset
name in neither the local cache nor (with ``allow_download``) the Hub, an unknown config or split
(those that exist are listed), a value
that is neither a string nor a valid conversation, an empty or whitespace-only prompt, and a
conversation message without ``role``/``content`` or with an unknown role.  The readers and
these checks live in :mod:`.prompt_files`.

:func:`split_prompts` makes a deterministic train/held-out split, :func:`builtin_prompts`
returns the packaged set (or one of its default splits), :func:`prompt_text` gives the text
that objectives score for a prompt, and :func:`prompts_hash` fingerprints a prompt list so that
a run or evaluation can record which prompts it used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Literal

from paretoalign.data.hub_datasets import load_hub_dataset, parse_hub_name
from paretoalign.data.prompt_files import (
    FORMATS,
    VALID_ROLES,
    Prompt,
    parse_prompt_jsonl,
    prompts_from_values,
    read_prompt_file,
)
from paretoalign.errors import ConfigError, DataError

__all__ = [
    "BUILTIN",
    "FORMATS",
    "VALID_ROLES",
    "Prompt",
    "PromptList",
    "builtin_prompts",
    "load_prompts",
    "prompt_text",
    "prompts_hash",
    "split_prompts",
]

BUILTIN = "builtin"
DEFAULT_HELDOUT_FRACTION = 0.15
DEFAULT_SEED = 0

_BUILTIN_PACKAGE = "paretoalign.resources"
_BUILTIN_FILE = "prompts.jsonl"
_FORMATS_TEXT = ", ".join(FORMATS)


# ---------------------------------------------------------------------------------------------
# Public API


class PromptList(list):
    """The prompts of a Hugging Face dataset; ``source`` records what was loaded (name, config, split,
    revision, fingerprint, rows: :meth:`.hub_datasets.HubDataset.record`)."""

    def __init__(self, prompts: Sequence[Prompt] = (), source: dict | None = None):
        super().__init__(prompts)
        self.source = dict(source or {})


def load_prompts(
    source: str | Path | None = None, column: str = "prompt", split: str | None = None,
    allow_download: bool = False,
) -> list[Prompt]:
    """Load and validate prompts from the packaged set, a local file or a Hugging Face dataset (see the module doc).

    ``source`` is ``None`` or ``"builtin"`` for the packaged prompts, the path of a ``.jsonl``,
    ``.json``, ``.csv``, ``.txt`` or ``.parquet`` file or of a ``save_to_disk`` folder, or a dataset
    name ``owner/name[:config[:split]]`` (when no such path exists).  ``column`` names the field
    holding the prompt (ignored for ``.txt``); ``split`` picks a split of a saved ``DatasetDict`` or
    of the dataset.  A dataset is read from the local cache unless ``allow_download``, which lets it
    come from the Hub.  Raises :class:`DataError` on any problem.
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
    if path.exists():
        return read_prompt_file(path, column, split)
    name = parse_hub_name(source)
    if name is None:
        raise DataError(
            f"{source}: no such file or folder; give a local file ({_FORMATS_TEXT}) "
            "or a Hugging Face dataset name such as trl-lib/tldr"
        )
    loaded = load_hub_dataset(name, split, allow_download, what="prompts")
    columns = list(loaded.dataset.column_names)
    if column not in columns:
        raise DataError(
            f"{loaded.name}: missing column '{column}' (columns present: "
            f"{', '.join(repr(c) for c in columns) or 'none'}); choose one with --prompt-column"
        )
    return PromptList(prompts_from_values(loaded.dataset[column], loaded.name, column), loaded.record())


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
    return tuple(parse_prompt_jsonl(text, f"<builtin {_BUILTIN_FILE}>", column))
