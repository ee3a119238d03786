"""Preference pairs with per-objective labels: the records, reading the files, and :func:`load_preference_data`.

One in-memory shape for every source: :class:`PreferencePair` (prompt, chosen, rejected, a label
per objective, optional per-objective scores of each response), gathered in :class:`PreferenceData`.
Rows are read from ``.jsonl``, ``.json``, ``.parquet``, ``.csv`` or a ``datasets`` folder (also a folder
written by ``paretoalign pairs``), or from one split of a Hugging Face dataset named
``owner/name[:config[:split]]`` (e.g. ``trl-lib/ultrafeedback_binarized``; used only when no local path of
that name exists), and turned into pairs by their schema: TRL, HH-RLHF, PKU-SafeRLHF, HelpSteer2 or
UltraFeedback (:mod:`.schemas`, which documents each).  A dataset is read from the local Hugging Face
cache only, unless ``allow_download=True`` (``--allow-download``) lets it come from the Hub
(:mod:`.hub_datasets`); ``PreferenceData.sources`` records its name, config, split, revision and fingerprint.

Several pair sets, one per objective, are given as ``["helpful=a.jsonl", "harmless=b.jsonl"]``.
Errors name the file, the row and the field.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from paretoalign.data.hub_datasets import load_hub_dataset, parse_hub_name
from paretoalign.data.prompt_files import Prompt
from paretoalign.data.text_files import decode_text, first_line, read_text
from paretoalign.errors import DataError

DEFAULT_LABEL = "preference"
PAIRS_FILE = "pairs.jsonl"


@dataclass
class PreferencePair:
    """One comparison.  ``labels[o]``: +1 chosen better on objective o, -1 rejected better, 0 tie."""

    prompt: Prompt
    chosen: str
    rejected: str
    labels: dict = field(default_factory=dict)
    chosen_scores: dict = field(default_factory=dict)
    rejected_scores: dict = field(default_factory=dict)
    source: str = ""

    def flipped(self) -> "PreferencePair":
        return PreferencePair(self.prompt, self.rejected, self.chosen, {k: -v for k, v in self.labels.items()},
                              dict(self.rejected_scores), dict(self.chosen_scores), self.source)


@dataclass
class ResponseGroup:
    """The distinct responses to one prompt (MOPO's candidate pool) with what is known of them."""

    prompt: Prompt
    responses: list
    scores: dict  # objective -> [score per response] (NaN unknown)
    wins: dict  # objective -> [(winner index, loser index)] from labels


def prompt_key(prompt: Prompt) -> str:
    """A prompt's identity (plain or conversation) as a canonical string: what groups responses."""
    return json.dumps(prompt, sort_keys=True, ensure_ascii=False)


@dataclass
class PreferenceData:
    pairs: list
    objectives: list
    name: str
    format: str
    sources: list = field(default_factory=list)  # a record per Hugging Face dataset read (HubDataset.record)

    def __len__(self) -> int:
        return len(self.pairs)

    def _check(self, objective: str) -> None:
        if objective not in self.objectives:
            raise DataError(f"{self.name}: no labels for objective {objective!r}; labelled objectives: "
                            f"{', '.join(self.objectives) or 'none'}")

    def oriented(self, objective: str) -> list:
        """The pairs with ``chosen`` better on ``objective`` (ties and unknowns dropped)."""
        self._check(objective)
        out = []
        for p in self.pairs:
            lab = p.labels.get(objective)
            if lab == 1.0:
                out.append(p)
            elif lab == -1.0:
                out.append(p.flipped())
        return out

    def scalarized(self, weights: Mapping[str, float]) -> list:
        """Pairs oriented by one scalarised label: Σ w·(score difference) when every pair has the
        weighted scores, else Σ w·label; exact zeros dropped."""
        for k, w in weights.items():
            self._check(k)
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise DataError(f"weight of {k!r} must be a finite number >= 0; got {w!r}")
        active = [k for k, w in weights.items() if w > 0]

        def has_scores(p):
            return all(_finite(p.chosen_scores.get(k)) and _finite(p.rejected_scores.get(k)) for k in active)

        use_scores = all(has_scores(p) for p in self.pairs)
        out = []
        for p in self.pairs:
            if use_scores:
                z = sum(weights[k] * (float(p.chosen_scores[k]) - float(p.rejected_scores[k])) for k in active)
            else:
                z = sum(weights[k] * p.labels.get(k, 0.0) for k in active)
            if z > 0:
                out.append(p)
            elif z < 0:
                out.append(p.flipped())
        return out

    def groups(self) -> list:
        """Per distinct prompt, its distinct responses with scores and label-derived wins."""
        by: dict[str, ResponseGroup] = {}
        index: dict[str, dict[str, int]] = {}
        for p in self.pairs:
            k = prompt_key(p.prompt)
            g = by.setdefault(k, ResponseGroup(p.prompt, [], {}, {}))
            ix = index.setdefault(k, {})
            ids = []
            for text, scores in ((p.chosen, p.chosen_scores), (p.rejected, p.rejected_scores)):
                if text not in ix:
                    ix[text] = len(g.responses)
                    g.responses.append(text)
                    for lst in g.scores.values():
                        lst.append(math.nan)
                i = ix[text]
                for o, v in scores.items():
                    lst = g.scores.setdefault(o, [math.nan] * len(g.responses))
                    if _finite(v):
                        lst[i] = float(v)
                ids.append(i)
            for o, lab in p.labels.items():
                if lab == 1.0:
                    g.wins.setdefault(o, []).append((ids[0], ids[1]))
                elif lab == -1.0:
                    g.wins.setdefault(o, []).append((ids[1], ids[0]))
        return list(by.values())

    def summary(self) -> dict:
        out = {"pairs": len(self.pairs), "prompts": len({prompt_key(p.prompt) for p in self.pairs}), "format": self.format,
               "objectives": {}}
        if self.sources:
            out["sources"] = [dict(s) for s in self.sources]
        for o in self.objectives:
            labs = [p.labels.get(o) for p in self.pairs]
            out["objectives"][o] = {"labelled": sum(v in (1.0, -1.0) for v in labs), "ties": labs.count(0.0),
                                    "unknown": sum(v is None for v in labs)}
        return out


def _finite(v) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False

# ---------------------------------------------------------------------------------------------
# reading rows
# ---------------------------------------------------------------------------------------------


def read_jsonl(path: Path, max_rows: int | None = None) -> list[tuple[int, Any]]:
    """(line number, value) of every non-blank line of a JSONL file; a line that is not UTF-8 or not
    JSON is a :class:`DataError` naming it."""
    rows = []
    try:
        f = path.open("rb")
    except OSError as e:  # unreadable
        raise DataError(f"{path}: cannot be read ({e.strerror or e})") from None
    with f:
        for n, raw in enumerate(f, start=1):
            line = decode_text(raw, path.name, n)
            if not line.strip():
                continue
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise DataError(f"{path.name}, line {n}: not valid JSON ({e.msg})") from None
            if max_rows and len(rows) >= max_rows:
                break
    return rows


def _read_json(path: Path) -> Any:
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path.name}: no rows (the file is empty)")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path.name}: not valid JSON ({e.msg}, line {e.lineno})") from None


def _read_dataset(path: Path):
    """A datasets ``save_to_disk`` folder, or a .parquet/.csv file, as a ``Dataset``."""
    import datasets

    if path.is_dir() and not ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        raise DataError(f"{path}: a folder that holds no {PAIRS_FILE} and was not written by datasets' save_to_disk "
                        "(no dataset_dict.json or state.json); give a pairs file or such a folder")
    if path.is_file() and path.suffix not in (".parquet", ".csv"):
        raise DataError(f"{path.name}: unsupported file type {path.suffix!r} (use .jsonl, .json, .parquet, "
                        ".csv or a datasets folder)")
    if path.suffix == ".csv":
            read_text(path)  # bytes that are not UTF-8 (or a binary file) named by line, before pandas sees them
    # quiet: datasets' own "Failed to read" log line and progress bar would come before our one error line
    verbosity, bars = datasets.logging.get_verbosity(), not datasets.are_progress_bars_disabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    datasets.disable_progress_bars()
    try:
        if path.is_dir():
            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
            return ds
        return datasets.load_dataset(path.suffix[1:], data_files=str(path), split="train")
    except Exception as e:  # pyarrow/pandas errors, often wrapped in datasets' own
        cause = (e.__cause__ or e.__context__ or e) if type(e).__name__ == "DatasetGenerationError" else e
        raise DataError(f"{path}: cannot read it as a dataset ({first_line(cause)})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def read_rows(path: Path, max_rows: int | None) -> list[tuple[str, dict]]:
    """(``"line N"``/``"row N"``, record) for every row of a local file or datasets folder."""
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir() and (path / PAIRS_FILE).is_file():  # a folder written by `paretoalign pairs`
        path = path / PAIRS_FILE
    if path.is_file() and path.suffix == ".jsonl":
        rows = [(f"line {n}", r) for n, r in read_jsonl(path, max_rows)]
    elif path.is_file() and path.suffix == ".json":
        data = _read_json(path)
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if not isinstance(data, list):
            raise DataError(f"{path.name}: expected a JSON list of records")
        rows = [(f"row {i}", r) for i, r in enumerate(data[:max_rows] if max_rows else data, start=1)]
    else:
        ds = _read_dataset(path)
        n = len(ds) if not max_rows else min(len(ds), max_rows)
        rows = [(f"row {i + 1}", ds[i]) for i in range(n)]
    if not rows:
        raise DataError(f"{path.name}: no rows (the file is empty)")
    for where, r in rows:
        if not isinstance(r, dict):
            raise DataError(f"{path.name}, {where}: expected a JSON object, got {type(r).__name__}")
    return rows


def source_rows(source, max_rows: int | None, split: str | None = None,
                allow_download: bool = False) -> tuple[str, list[tuple[str, dict]], dict | None]:
    """(name for messages, rows as :func:`read_rows` gives them, record of the Hub dataset or ``None``) of a
    local file or folder, or, when no such path exists, of a Hugging Face dataset ``owner/name[:config[:split]]``."""
    path = Path(str(source)).expanduser()
    hub = None if path.exists() else parse_hub_name(source)
    if hub is None:
        return path.name, read_rows(path, max_rows), None
    loaded = load_hub_dataset(hub, split, allow_download, what="pairs")
    ds = loaded.dataset
    if max_rows:
        ds = ds.select(range(min(len(ds), max_rows)))
    rows = [(f"row {i}", r) for i, r in enumerate(ds, start=1)]
    if not rows:
        raise DataError(f"{loaded.name}: no rows (the split is empty)")
    return loaded.name, rows, loaded.record()


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------


def _load_one(path: Path, fmt: str, objective: str | None, max_rows: int | None, split: str | None = None,
              allow_download: bool = False) -> tuple[list, str, dict | None]:
    # imported here, not at the top: the schemas build this module's PreferencePair records
    from paretoalign.data.schemas import pairs_from_rows

    name, rows, record = source_rows(path, max_rows, split, allow_download)
    pairs, fmt = pairs_from_rows(rows, fmt, name, objective)
    pairs = _drop_identical(pairs, path if record is None else name)
    if objective and fmt in ("helpsteer2", "ultrafeedback", "pku-saferlhf"):
        for p in pairs:
            if objective not in p.labels:
                raise DataError(f"{name}: objective {objective!r} is not one of this {fmt} set's labels "
                                f"({', '.join(sorted(p.labels))})")
    return pairs, fmt, record


def _drop_identical(pairs: list, path: Path | str) -> list:
    """Pairs whose chosen and rejected responses are the same text teach nothing (and give DPO a zero
    margin): dropped, with one warning line; a file of nothing else is an error."""
    kept = [p for p in pairs if p.chosen != p.rejected]
    dropped = len(pairs) - len(kept)
    if dropped and not kept:
        raise DataError(f"{path}: all {dropped} pair(s) have identical chosen and rejected responses; "
                        "nothing is left to learn from")
    if dropped:
        print(f"warning: {path}: dropped {dropped} pair(s) whose chosen and rejected responses are identical",
              file=sys.stderr)
    return kept


def load_preference_data(path, format: str = "auto", split: str | None = None, objective: str | None = None,
                         max_rows: int | None = None, allow_download: bool = False) -> PreferenceData:
    """Load preference pairs (see the module docstring).  ``path`` may be a list of ``name=path``
    sets (one per objective) or a mapping name -> path; each path may be a Hugging Face dataset name,
    read from the local cache, or from the Hub if ``allow_download``.  ``split`` picks a dataset's split."""
    if isinstance(path, Mapping):
        specs = [(str(k), Path(v)) for k, v in path.items()]
    elif isinstance(path, (list, tuple)):
        if len(path) == 1 and "=" not in str(path[0]):
            return load_preference_data(path[0], format, split, objective, max_rows, allow_download)
        specs = []
        for s in path:
            if "=" not in str(s):
                raise DataError(f"several pair sets are given as objective=path; got {s!r}")
            k, _, v = str(s).partition("=")
            specs.append((k.strip(), Path(v.strip()).expanduser()))
    else:
        text = str(path)
        if "=" in text and not Path(text).exists():
            k, _, v = text.partition("=")
            specs = [(k.strip(), Path(v.strip()).expanduser())]
        else:
            pairs, fmt, record = _load_one(Path(text).expanduser(), format, objective, max_rows, split, allow_download)
            return _finish(pairs, text, fmt, [record] if record else [])
    if not specs:
        raise DataError("no preference data given")
    all_pairs, fmts, records = [], [], []
    for name, p in specs:
        pairs, fmt, record = _load_one(p, format, name, max_rows, split, allow_download)
        all_pairs.extend(pairs)
        fmts.append(fmt)
        if record:
            records.append({"objective": name, **record})
    return _finish(all_pairs, ", ".join(f"{n}={p}" for n, p in specs), "+".join(dict.fromkeys(fmts)), records)


def merge_preference_data(parts: Sequence[PreferenceData]) -> PreferenceData:
    """Several loaded sets as one (pairs concatenated, labels united)."""
    pairs = [p for d in parts for p in d.pairs]
    return _finish(pairs, ", ".join(d.name for d in parts), "+".join(dict.fromkeys(d.format for d in parts)),
                   [s for d in parts for s in d.sources])


def _finish(pairs: list, name: str, fmt: str, sources: list | None = None) -> PreferenceData:
    if not pairs:
        raise DataError(f"{name}: no preference pairs found")
    objectives = list(dict.fromkeys(k for p in pairs for k in p.labels))
    return PreferenceData(pairs, objectives, name, fmt, list(sources or []))


def save_preference_data(pairs: Sequence[PreferencePair], path: str | Path) -> Path:
    """Write pairs as TRL-style JSONL with labels and scores (what :func:`load_preference_data` reads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for p in pairs:
            rec = {"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "labels": p.labels}
            if p.chosen_scores:
                rec["chosen_scores"] = {k: (None if not _finite(v) else v) for k, v in p.chosen_scores.items()}
                rec["rejected_scores"] = {k: (None if not _finite(v) else v) for k, v in p.rejected_scores.items()}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


__all__ = ["PAIRS_FILE", "PreferenceData", "PreferencePair", "ResponseGroup", "load_preference_data",
           "merge_preference_data", "prompt_key", "read_jsonl", "read_rows", "save_preference_data", "source_rows"]
