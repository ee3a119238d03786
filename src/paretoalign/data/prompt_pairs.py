"""MAPL's prompt-side preference data: the files ``paretoalign pairs --mapl`` writes and what reads them.

MAPL (Sun et al. 2025, "Multi-Level Aware Preference Learning", arXiv 2505.12845) compares *prompts*
for a fixed response: the prompt whose appended instructions the response satisfies (``prompt_w``)
is preferred to one whose instructions it violates (``prompt_l``).  The instructions and their
verdicts come from :mod:`paretoalign.instructions`; this module only holds the schema, the writer
and the reader (no instruction logic), so the trainers and the reward-model trainer share it.

A MAPL dataset is a folder:

- ``intra.jsonl`` (required): the intra-sample level, one prompt-side pair a line::

      {"prompt": <the original request: a string or a conversation>,
       "response": "<y>",
       "prompt_w": <the request plus instructions y satisfies (same type as prompt)>,
       "prompt_l": <the request plus instructions y violates>,
       "instructions_w": [{"kind", "text", "judge"}, ...], "instructions_l": [...],
       "verified_w": [true, ...], "verified_l": [false, ...],   # each instruction's verifier verdict on y
       "rule": "all_vs_some" | "some_vs_none",
       "source": "chosen" | "rejected" | "response"}            # where y came from

  ``prompt``, ``response``, ``prompt_w`` and ``prompt_l`` are what training reads; the rest records
  how the pair was made.  For a conversation the instructions are appended to its last user message.
- ``inter.jsonl`` (optional): the inter-sample level as this library reconstructs it [R]: an
  ordinary pair on an instruction-augmented prompt::

      {"prompt": <x+I>, "original_prompt": <x>, "chosen": "<y_c>", "rejected": "<y_r>",
       "instructions": [...], "conflict": false, "label": "<the label that chose y_c>"}

  ``conflict`` is true when the instructions are satisfied by the rejected response and violated by
  the chosen one (compliance and the original label disagree; the trainer's conflict rule decides).
  These rows are in TRL's schema, so any offline method also reads ``inter.jsonl`` as plain pairs.
- ``pairs.jsonl`` (optional): the original pairs (L_0 of MAPL's total loss), as ``paretoalign pairs``
  writes them, so ``--pairs <folder>`` also trains plain DPO/MODPO on the same data.
- ``card.json`` and ``README.md``: how it was made.

``load_mapl_data`` also takes an ``intra.jsonl``-style file on its own.  A file or folder without
the prompt-side fields is refused in one line naming what is missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from paretoalign.data.preference_pairs import PAIRS_FILE, PreferenceData, load_preference_data, read_rows
from paretoalign.data.prompt_files import Prompt, validate_conversation
from paretoalign.errors import DataError

INTRA_FILE = "intra.jsonl"
INTER_FILE = "inter.jsonl"
INTRA_FIELDS = ("prompt", "response", "prompt_w", "prompt_l")
INTER_FIELDS = ("prompt", "chosen", "rejected")

__all__ = ["INTER_FILE", "INTRA_FIELDS", "INTRA_FILE", "InterPair", "MaplData", "PromptPair", "last_user_text",
           "load_mapl_data", "replace_last_user_text", "write_jsonl"]


@dataclass
class PromptPair:
    """One intra-sample triple: ``prompt_w`` ≻ ``prompt_l`` given ``response`` (``prompt``: the request
    both were built from, which decides the held-out split)."""

    prompt: Prompt
    response: str
    prompt_w: Prompt
    prompt_l: Prompt
    rule: str = ""
    source: str = ""


@dataclass
class InterPair:
    """One inter-sample pair [R]: (``prompt``, ``chosen``) ≻ (``prompt``, ``rejected``) unless ``conflict``."""

    prompt: Prompt
    chosen: str
    rejected: str
    conflict: bool = False
    original_prompt: Prompt = ""


@dataclass
class MaplData:
    """What ``--method mapl`` and ``reward-model train --rc-bt`` read from a MAPL folder.

    ``objectives`` are the labels of the original pairs (empty without them): what the trainers
    check ``--objectives`` against for the L_0 term."""

    intra: list
    inter: list = field(default_factory=list)
    pairs: PreferenceData | None = None
    name: str = ""

    @property
    def objectives(self) -> list:
        return list(self.pairs.objectives) if self.pairs is not None else []

    def __len__(self) -> int:
        return len(self.intra)


# ---------------------------------------------------------------------------------------------
# conversations: instructions go into the last user message
# ---------------------------------------------------------------------------------------------


def last_user_text(prompt: Prompt) -> str:
    """The text instructions are appended to: the prompt itself, or a conversation's last user message."""
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def replace_last_user_text(prompt: Prompt, text: str) -> Prompt:
    """``prompt`` with :func:`last_user_text` replaced by ``text`` (a copy)."""
    if isinstance(prompt, str):
        return text
    msgs = [dict(m) for m in prompt]
    last = max(i for i, m in enumerate(msgs) if m["role"] == "user")
    msgs[last]["content"] = text
    return msgs


# ---------------------------------------------------------------------------------------------
# writing and reading
# ---------------------------------------------------------------------------------------------


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


def _prompt(value, where: str, key: str) -> Prompt:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list):
        return validate_conversation(value, f"{where}, field {key!r}")
    raise DataError(f"{where}, field {key!r}: expected a non-empty string or a conversation, got {value!r:.40}")


def _text(value, where: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}, field {key!r}: expected a non-empty string, got {value!r:.40}")
    return value


def _intra_rows(path: Path, max_rows: int | None) -> list[PromptPair]:
    rows = read_rows(path, max_rows)
    missing = [k for k in INTRA_FIELDS if k not in rows[0][1]]
    if missing:
        raise DataError(
            f"{path.name}: not MAPL prompt-side pairs: {rows[0][0]} has no field(s) {', '.join(map(repr, missing))} "
            f"(fields present: {', '.join(map(repr, rows[0][1])) or 'none'}); make them with `paretoalign pairs --mapl`")
    out = []
    for where, r in rows:
        where = f"{path.name}, {where}"
        for k in INTRA_FIELDS:
            if k not in r:
                raise DataError(f"{where}: missing field {k!r}")
        pw, pl = _prompt(r["prompt_w"], where, "prompt_w"), _prompt(r["prompt_l"], where, "prompt_l")
        if pw == pl:
            raise DataError(f"{where}: prompt_w and prompt_l are the same prompt; a prompt-side pair needs two")
        out.append(PromptPair(_prompt(r["prompt"], where, "prompt"), _text(r["response"], where, "response"), pw, pl,
                              str(r.get("rule", "")), str(r.get("source", ""))))
    return out


def _inter_rows(path: Path, max_rows: int | None) -> list[InterPair]:
    out = []
    for where, r in read_rows(path, max_rows):
        where = f"{path.name}, {where}"
        for k in INTER_FIELDS:
            if k not in r:
                raise DataError(f"{where}: missing field {k!r} of an inter-sample pair")
        conflict = r.get("conflict", False)
        if not isinstance(conflict, bool):
            raise DataError(f"{where}, field 'conflict': expected true or false, got {conflict!r}")
        prompt = _prompt(r["prompt"], where, "prompt")
        out.append(InterPair(prompt, _text(r["chosen"], where, "chosen"), _text(r["rejected"], where, "rejected"),
                             conflict, r.get("original_prompt") or prompt))
    return out


def load_mapl_data(paths: str | Path | Sequence, max_rows: int | None = None) -> MaplData:
    """A MAPL folder (or several, concatenated), or an ``intra.jsonl``-style file (see the module docstring)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DataError("no MAPL data given; make a folder with `paretoalign pairs --mapl`")
    intra, inter, pair_sets, names = [], [], [], []
    for p in paths:
        path = Path(str(p)).expanduser()
        if "=" in str(p) and not path.exists():
            raise DataError(f"{p}: MAPL data is one folder per path (no objective=path sets)")
        if not path.exists():
            raise DataError(f"{path}: no such file or folder")
        names.append(str(path))
        if path.is_file():
            intra += _intra_rows(path, max_rows)
            continue
        if not (path / INTRA_FILE).is_file():
            has = sorted(f.name for f in path.iterdir())[:6]
            raise DataError(f"{path}: no {INTRA_FILE} (the prompt-side pairs; the folder holds "
                            f"{', '.join(has) or 'nothing'}); make them with `paretoalign pairs --mapl`")
        intra += _intra_rows(path / INTRA_FILE, max_rows)
        if (path / INTER_FILE).is_file():
            inter += _inter_rows(path / INTER_FILE, max_rows)
        if (path / PAIRS_FILE).is_file():
            pair_sets.append(load_preference_data(path, max_rows=max_rows))
    pairs = None
    if pair_sets:
        pairs = pair_sets[0] if len(pair_sets) == 1 else PreferenceData(
            [q for d in pair_sets for q in d.pairs], list(dict.fromkeys(o for d in pair_sets for o in d.objectives)),
            ", ".join(d.name for d in pair_sets), "+".join(dict.fromkeys(d.format for d in pair_sets)))
    return MaplData(intra, inter, pairs, ", ".join(names))
