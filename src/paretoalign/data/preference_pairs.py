"""Preference pairs with per-objective labels, from the schemas users have.

One in-memory shape for every source: :class:`PreferencePair` (prompt, chosen, rejected, a label
per objective, optional per-objective scores of each response).  Loaders:

- ``trl``: TRL's ``prompt``/``chosen``/``rejected`` (plain strings or conversations; also the
  implicit-prompt form where chosen/rejected are whole conversations), optional ``labels``
  ({objective: +1/-1/0}) and ``chosen_scores``/``rejected_scores`` ({objective: float});
- ``hh-rlhf`` (Anthropic/hh-rlhf): ``chosen``/``rejected`` transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ...");
- ``pku-saferlhf`` (PKU-Alignment/PKU-SafeRLHF): ``response_0``/``response_1`` with
  ``better_response_id`` (label ``better``: helpfulness) and ``safer_response_id`` (label ``safer``: harmlessness);
- ``helpsteer2`` (nvidia/HelpSteer2): one row per response with helpfulness, correctness, coherence,
  complexity, verbosity (0–4); the responses of one prompt are paired;
- ``ultrafeedback`` (openbmb/UltraFeedback): ``instruction`` + ``completions`` with fine-grained
  ratings (helpfulness, honesty, instruction_following, truthfulness; "N/A" = unknown); every two
  completions of a prompt are paired.

Several pair sets, one per objective, are given as ``["helpful=a.jsonl", "harmless=b.jsonl"]``.
Errors name the file, the row and the field.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from paretoalign.data.prompts import Prompt, _validate_conversation, prompt_text
from paretoalign.errors import DataError

FORMATS = ("trl", "hh-rlhf", "pku-saferlhf", "helpsteer2", "ultrafeedback")
HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")
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
    from paretoalign.data.prompts import decode_text

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
    from paretoalign.data.prompts import _read_text

    text = _read_text(path)
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
        from paretoalign.data.prompts import _read_text

        _read_text(path)  # bytes that are not UTF-8 (or a binary file) named by line, before pandas sees them
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
        from paretoalign.data.prompts import first_line

        cause = (e.__cause__ or e.__context__ or e) if type(e).__name__ == "DatasetGenerationError" else e
        raise DataError(f"{path}: cannot read it as a dataset ({first_line(cause)})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _read_rows(path: Path, max_rows: int | None) -> list[tuple[str, dict]]:
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


def detect_format(record: dict) -> str:
    keys = set(record)
    if {"response_0", "response_1", "better_response_id"} <= keys:
        return "pku-saferlhf"
    if "completions" in keys and "instruction" in keys:
        return "ultrafeedback"
    if {"prompt", "response", "helpfulness"} <= keys:
        return "helpsteer2"
    if {"chosen", "rejected"} <= keys:
        if "prompt" not in keys and isinstance(record["chosen"], str) and "\n\nAssistant:" in record["chosen"]:
            return "hh-rlhf"
        return "trl"
    raise DataError(f"cannot detect the schema from the fields {sorted(keys)}; expected one of {', '.join(FORMATS)} "
                    "(pass --pairs-format)")


def _need(rec: dict, key: str, where: str):
    if key not in rec or rec[key] is None:
        raise DataError(f"{where}: missing field {key!r} (fields present: {', '.join(map(repr, rec))})")
    return rec[key]


def _text(value, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}, field {key!r}: expected a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}, field {key!r}: the response is empty")
    return value


def _prompt(value, where: str, key: str) -> Prompt:
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}, field {key!r}: the prompt is empty")
        return value
    if isinstance(value, list):
        return _validate_conversation(value, f"{where}, field {key!r}")
    raise DataError(f"{where}, field {key!r}: expected a string or a conversation, got {type(value).__name__}")


def _assistant_text(value, where: str, key: str) -> str:
    """TRL's conversational chosen/rejected: a list holding the assistant message."""
    if isinstance(value, list):
        msgs = _validate_conversation_any(value, f"{where}, field {key!r}")
        if not msgs or msgs[-1]["role"] != "assistant":
            raise DataError(f"{where}, field {key!r}: the conversation does not end with an assistant message")
        return _text(msgs[-1]["content"], where, key)
    return _text(value, where, key)


def _validate_conversation_any(value: list, where: str) -> list[dict]:
    for i, m in enumerate(value, start=1):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}, message {i}: expected a {{'role': ..., 'content': ...}} object")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _label(v, where: str, key: str) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise DataError(f"{where}, field {key!r}: label {v!r} is not a number (use 1, -1 or 0)") from None
    if f not in (1.0, -1.0, 0.0):
        raise DataError(f"{where}, field {key!r}: label {v!r} must be 1 (chosen better), -1 (rejected better) or 0 (tie)")
    return f


def _scores(v, where: str, key: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, Mapping):
        raise DataError(f"{where}, field {key!r}: expected an object {{objective: score}}, got {type(v).__name__}")
    out = {}
    for k, s in v.items():
        if s is None:
            out[str(k)] = math.nan
            continue
        try:
            out[str(k)] = float(s)
        except (TypeError, ValueError):
            raise DataError(f"{where}, field {key!r}: score of {k!r} is not a number: {s!r}") from None
    return out


def _sign(x: float) -> float:
    return 1.0 if x > 0 else -1.0 if x < 0 else 0.0


# ---------------------------------------------------------------------------------------------
# schemas
# ---------------------------------------------------------------------------------------------


def _from_trl(rec, where, objective):
    chosen_raw, rejected_raw = _need(rec, "chosen", where), _need(rec, "rejected", where)
    if "prompt" in rec and rec["prompt"] is not None:
        prompt = _prompt(rec["prompt"], where, "prompt")
    else:  # implicit prompt: whole conversations sharing everything but the last answer
        if not (isinstance(chosen_raw, list) and isinstance(rejected_raw, list)):
            raise DataError(f"{where}: missing field 'prompt' (fields present: {', '.join(map(repr, rec))})")
        c = _validate_conversation_any(chosen_raw, f"{where}, field 'chosen'")
        prompt = _prompt(c[:-1], where, "chosen")
    pair = PreferencePair(prompt, _assistant_text(chosen_raw, where, "chosen"),
                          _assistant_text(rejected_raw, where, "rejected"), source=where)
    if rec.get("labels") is not None:
        if not isinstance(rec["labels"], Mapping):
            raise DataError(f"{where}, field 'labels': expected an object {{objective: 1|-1|0}}")
        pair.labels = {str(k): _label(v, where, "labels") for k, v in rec["labels"].items()}
    pair.chosen_scores = _scores(rec.get("chosen_scores"), where, "chosen_scores")
    pair.rejected_scores = _scores(rec.get("rejected_scores"), where, "rejected_scores")
    for k in [k for k in pair.chosen_scores if k in pair.rejected_scores]:  # keep the file's order
        c, r = pair.chosen_scores[k], pair.rejected_scores[k]
        if k not in pair.labels and math.isfinite(c) and math.isfinite(r):
            pair.labels[k] = _sign(c - r)
    if not pair.labels:
        pair.labels = {objective or DEFAULT_LABEL: 1.0}
    elif objective:
        pair.labels.setdefault(objective, 1.0)
    return [pair]


_HUMAN, _ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def _hh_split(text: str, where: str, key: str) -> tuple[list, str]:
    if _ASSISTANT not in text:
        raise DataError(f"{where}, field {key!r}: no '\\n\\nAssistant:' turn in the transcript")
    head, _, answer = text.rpartition(_ASSISTANT)
    msgs = []
    for chunk in head.split(_HUMAN)[1:]:
        parts = chunk.split(_ASSISTANT)
        msgs.append({"role": "user", "content": parts[0].strip()})
        for a in parts[1:]:
            msgs.append({"role": "assistant", "content": a.strip()})
    if not msgs:
        raise DataError(f"{where}, field {key!r}: no '\\n\\nHuman:' turn before the last answer")
    return msgs, answer.strip()


def _from_hh(rec, where, objective):
    pc, chosen = _hh_split(_text(_need(rec, "chosen", where), where, "chosen"), where, "chosen")
    _pr, rejected = _hh_split(_text(_need(rec, "rejected", where), where, "rejected"), where, "rejected")
    return [PreferencePair(_prompt(pc, where, "chosen"), _text(chosen, where, "chosen"),
                           _text(rejected, where, "rejected"), {objective or DEFAULT_LABEL: 1.0}, source=where)]


def _from_pku(rec, where, objective):
    prompt = _prompt(_need(rec, "prompt", where), where, "prompt")
    r0 = _text(_need(rec, "response_0", where), where, "response_0")
    r1 = _text(_need(rec, "response_1", where), where, "response_1")
    labels = {}
    for key, name in (("better_response_id", "better"), ("safer_response_id", "safer")):
        v = _need(rec, key, where)
        if v not in (0, 1):
            raise DataError(f"{where}, field {key!r}: must be 0 or 1, got {v!r}")
        labels[name] = 1.0 if v == 0 else -1.0  # chosen = response_0
    return [PreferencePair(prompt, r0, r1, labels, source=where)]


def _helpsteer_groups(rows, name):
    groups: dict[str, list] = {}
    order = []
    for where, rec in rows:
        prompt = _prompt(_need(rec, "prompt", where), f"{name}, {where}", "prompt")
        resp = _text(_need(rec, "response", f"{name}, {where}"), f"{name}, {where}", "response")
        scores = {}
        for a in HELPSTEER2_ATTRIBUTES:
            v = _need(rec, a, f"{name}, {where}")
            try:
                scores[a] = float(v)
            except (TypeError, ValueError):
                raise DataError(f"{name}, {where}, field {a!r}: not a number: {v!r}") from None
        k = prompt_key(prompt)
        if k not in groups:
            groups[k] = []
            order.append(k)
        groups[k].append((where, prompt, resp, scores))
    return [groups[k] for k in order]


def _pairs_from_scored(prompt, items, source_name):
    out = []
    for (wa, _p, a, sa), (wb, _q, b, sb) in itertools.combinations(items, 2):
        if a == b:
            continue
        labels = {k: _sign(sa[k] - sb[k]) for k in sa if k in sb and math.isfinite(sa[k]) and math.isfinite(sb[k])}
        out.append(PreferencePair(prompt, a, b, labels, dict(sa), dict(sb), f"{source_name}, {wa} vs {wb}"))
    return out


def _ultrafeedback_rows(rows, name):
    out = []
    for w, prompt, items in _ultrafeedback_items(rows, name):
        out.extend(_pairs_from_scored(prompt, items, w))
    return out


def _ultrafeedback_items(rows, name):
    """Per row: (where, prompt, [(where, prompt, response, {aspect: rating or NaN})])."""
    out = []
    for where, rec in rows:
        w = f"{name}, {where}"
        prompt = _prompt(_need(rec, "instruction", w), w, "instruction")
        comps = _need(rec, "completions", w)
        if not isinstance(comps, list):
            raise DataError(f"{w}, field 'completions': expected a list, got {type(comps).__name__}")
        items = []
        for i, c in enumerate(comps, start=1):
            cw = f"{w}, completions[{i}]"
            if not isinstance(c, Mapping):
                raise DataError(f"{cw}: expected an object")
            resp = _text(_need(c, "response", cw), cw, "response")
            ann = _need(c, "annotations", cw)
            scores = {}
            for a in ULTRAFEEDBACK_ASPECTS:
                r = ann.get(a) if isinstance(ann, Mapping) else None
                rating = r.get("Rating") if isinstance(r, Mapping) else None
                if rating is None or str(rating).strip().upper() == "N/A":
                    scores[a] = math.nan
                    continue
                try:
                    scores[a] = float(rating)
                except (TypeError, ValueError):
                    raise DataError(f"{cw}, field 'annotations.{a}.Rating': not a number: {rating!r}") from None
            items.append((f"completion {i}", prompt, resp, scores))
        out.append((w, prompt, items))
    return out


def _load_one(path: Path, fmt: str, objective: str | None, max_rows: int | None) -> tuple[list, str]:
    rows = _read_rows(path, max_rows)
    name = path.name
    if fmt == "auto":
        fmt = detect_format(rows[0][1])
    if fmt not in FORMATS:
        raise DataError(f"unknown preference format {fmt!r}; known: auto, {', '.join(FORMATS)}")
    if fmt == "helpsteer2":
        pairs = []
        for items in _helpsteer_groups(rows, name):
            pairs.extend(_pairs_from_scored(items[0][1], items, name))
    elif fmt == "ultrafeedback":
        pairs = _ultrafeedback_rows(rows, name)
    else:
        conv = {"trl": _from_trl, "hh-rlhf": _from_hh, "pku-saferlhf": _from_pku}[fmt]
        pairs = []
        for where, rec in rows:
            pairs.extend(conv(rec, f"{name}, {where}", objective))
    pairs = _drop_identical(pairs, path)
    if objective and fmt in ("helpsteer2", "ultrafeedback", "pku-saferlhf"):
        for p in pairs:
            if objective not in p.labels:
                raise DataError(f"{name}: objective {objective!r} is not one of this {fmt} set's labels "
                                f"({', '.join(sorted(p.labels))})")
    return pairs, fmt


def _drop_identical(pairs: list, path: Path) -> list:
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
                         max_rows: int | None = None) -> PreferenceData:
    """Load preference pairs (see the module docstring).  ``path`` may be a list of ``name=path``
    sets (one per objective) or a mapping name -> path."""
    if isinstance(path, Mapping):
        specs = [(str(k), Path(v)) for k, v in path.items()]
    elif isinstance(path, (list, tuple)):
        if len(path) == 1 and "=" not in str(path[0]):
            return load_preference_data(path[0], format, split, objective, max_rows)
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
            pairs, fmt = _load_one(Path(text).expanduser(), format, objective, max_rows)
            return _finish(pairs, text, fmt)
    if not specs:
        raise DataError("no preference data given")
    all_pairs, fmts = [], []
    for name, p in specs:
        pairs, fmt = _load_one(p, format, name, max_rows)
        all_pairs.extend(pairs)
        fmts.append(fmt)
    return _finish(all_pairs, ", ".join(f"{n}={p}" for n, p in specs), "+".join(dict.fromkeys(fmts)))


@dataclass
class RatedResponse:
    """One rated response (a row of HelpSteer2, a completion of UltraFeedback, or a response of
    pairs that carry per-response scores): ``scores[o]`` is NaN when not rated."""

    prompt: Prompt
    response: str
    scores: dict
    source: str = ""
    format: str = ""  # the schema it was read from (its rating scale)


def load_ratings(paths, format: str = "auto", max_rows: int | None = None) -> tuple[list, str]:
    """Every rated response of one or several files/folders, read row by row (a prompt with a single
    response counts too; nothing is paired).  HelpSteer2 and UltraFeedback rows directly; other
    schemas through their pairs' per-response scores (distinct responses per prompt).  Returns
    (responses, format)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise DataError("no ratings given")
    out, fmts = [], []
    for raw in paths:
        path = Path(str(raw)).expanduser()
        rows = _read_rows(path, max_rows)
        fmt = detect_format(rows[0][1]) if format == "auto" else format
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; known: auto, {', '.join(FORMATS)}")
        if fmt == "helpsteer2":
            for items in _helpsteer_groups(rows, path.name):
                out.extend(RatedResponse(pr, resp, sc, f"{path.name}, {w}", fmt) for w, pr, resp, sc in items)
        elif fmt == "ultrafeedback":
            for w, _, items in _ultrafeedback_items(rows, path.name):
                out.extend(RatedResponse(pr, resp, sc, f"{w}, {cw}", fmt) for cw, pr, resp, sc in items)
        else:
            data = load_preference_data(str(path), format=fmt, max_rows=max_rows)
            for g in data.groups():
                for i, resp in enumerate(g.responses):
                    out.append(RatedResponse(g.prompt, resp, {k: float(v[i]) for k, v in g.scores.items()},
                                             f"{path.name}, {prompt_key(g.prompt)[:40]}", fmt))
        fmts.append(fmt)
    if not out:
        raise DataError(f"{', '.join(map(str, paths))}: no rated responses found")
    return out, "+".join(dict.fromkeys(fmts))


def merge_preference_data(parts: Sequence[PreferenceData]) -> PreferenceData:
    """Several loaded sets as one (pairs concatenated, labels united)."""
    pairs = [p for d in parts for p in d.pairs]
    return _finish(pairs, ", ".join(d.name for d in parts), "+".join(dict.fromkeys(d.format for d in parts)))


def _finish(pairs: list, name: str, fmt: str) -> PreferenceData:
    if not pairs:
        raise DataError(f"{name}: no preference pairs found")
    objectives = list(dict.fromkeys(k for p in pairs for k in p.labels))
    return PreferenceData(pairs, objectives, name, fmt)


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


__all__ = ["FORMATS", "PreferenceData", "PreferencePair", "ResponseGroup", "detect_format", "load_preference_data",
           "prompt_text", "save_preference_data"]
