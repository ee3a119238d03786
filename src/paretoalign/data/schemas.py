"""The public preference-data schemas, row by row into :class:`~.preference_pairs.PreferencePair` records.

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

:func:`detect_format` tells the schema from a row's fields, :func:`pairs_from_rows` turns rows into
pairs, and :func:`load_ratings` reads rated responses unpaired (what reward-model training regresses on).
Errors name the file, the row and the field.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from paretoalign.data.preference_pairs import (
    DEFAULT_LABEL,
    PreferenceData,
    PreferencePair,
    load_preference_data,
    prompt_key,
    source_rows,
)
from paretoalign.data.prompt_files import Prompt, validate_conversation
from paretoalign.errors import DataError

__all__ = ["FORMATS", "HELPSTEER2_ATTRIBUTES", "ULTRAFEEDBACK_ASPECTS", "RatedResponse", "check_prompt_field",
           "detect_format", "load_ratings", "pairs_from_rows"]

FORMATS = ("trl", "hh-rlhf", "pku-saferlhf", "helpsteer2", "ultrafeedback")
HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


def detect_format(record: dict) -> str:
    """The schema a row's fields belong to (one of :data:`FORMATS`)."""
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


# ---------------------------------------------------------------------------------------------
# fields
# ---------------------------------------------------------------------------------------------


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


def check_prompt_field(value, where: str, key: str) -> Prompt:
    """A row's prompt field: a non-empty string or a valid conversation; errors start with ``where``."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}, field {key!r}: the prompt is empty")
        return value
    if isinstance(value, list):
        return validate_conversation(value, f"{where}, field {key!r}")
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
        prompt = check_prompt_field(rec["prompt"], where, "prompt")
    else:  # implicit prompt: whole conversations sharing everything but the last answer
        if not (isinstance(chosen_raw, list) and isinstance(rejected_raw, list)):
            raise DataError(f"{where}: missing field 'prompt' (fields present: {', '.join(map(repr, rec))})")
        c = _validate_conversation_any(chosen_raw, f"{where}, field 'chosen'")
        prompt = check_prompt_field(c[:-1], where, "chosen")
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
    return [PreferencePair(check_prompt_field(pc, where, "chosen"), _text(chosen, where, "chosen"),
                           _text(rejected, where, "rejected"), {objective or DEFAULT_LABEL: 1.0}, source=where)]


def _from_pku(rec, where, objective):
    prompt = check_prompt_field(_need(rec, "prompt", where), where, "prompt")
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
        prompt = check_prompt_field(_need(rec, "prompt", where), f"{name}, {where}", "prompt")
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
        prompt = check_prompt_field(_need(rec, "instruction", w), w, "instruction")
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


def pairs_from_rows(rows: list, fmt: str, name: str, objective: str | None) -> tuple[list, str]:
    """The pairs of the rows of file ``name`` read in schema ``fmt`` (``"auto"``: told from the first row),
    and that schema."""
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
    return pairs, fmt


# ---------------------------------------------------------------------------------------------
# ratings
# ---------------------------------------------------------------------------------------------


@dataclass
class RatedResponse:
    """One rated response (a row of HelpSteer2, a completion of UltraFeedback, or a response of
    pairs that carry per-response scores): ``scores[o]`` is NaN when not rated."""

    prompt: Prompt
    response: str
    scores: dict
    source: str = ""
    format: str = ""  # the schema it was read from (its rating scale)


def load_ratings(paths, format: str = "auto", max_rows: int | None = None,
                 allow_download: bool = False) -> tuple[list, str]:
    """Every rated response of one or several files/folders (or Hugging Face datasets, from the local
    cache or, if ``allow_download``, the Hub), read row by row (a prompt with a single response counts
    too; nothing is paired).  HelpSteer2 and UltraFeedback rows directly; other schemas through their
    pairs' per-response scores (distinct responses per prompt).  Returns (responses, format)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not paths:
        raise DataError("no ratings given")
    out, fmts = [], []
    for raw in paths:
        path = Path(str(raw)).expanduser()
        name, rows, record = source_rows(raw, max_rows, allow_download=allow_download)
        fmt = detect_format(rows[0][1]) if format == "auto" else format
        if fmt not in FORMATS:
            raise DataError(f"unknown format {fmt!r}; known: auto, {', '.join(FORMATS)}")
        if fmt == "helpsteer2":
            for items in _helpsteer_groups(rows, name):
                out.extend(RatedResponse(pr, resp, sc, f"{name}, {w}", fmt) for w, pr, resp, sc in items)
        elif fmt == "ultrafeedback":
            for w, _, items in _ultrafeedback_items(rows, name):
                out.extend(RatedResponse(pr, resp, sc, f"{w}, {cw}", fmt) for cw, pr, resp, sc in items)
        else:
            if record is None:
                data = load_preference_data(str(path), format=fmt, max_rows=max_rows)
            else:  # a Hugging Face dataset: pair the rows already read
                data = PreferenceData(pairs_from_rows(rows, fmt, name, None)[0], [], name, fmt)
            for g in data.groups():
                for i, resp in enumerate(g.responses):
                    out.append(RatedResponse(g.prompt, resp, {k: float(v[i]) for k, v in g.scores.items()},
                                             f"{name}, {prompt_key(g.prompt)[:40]}", fmt))
        fmts.append(fmt)
    if not out:
        raise DataError(f"{', '.join(map(str, paths))}: no rated responses found")
    return out, "+".join(dict.fromkeys(fmts))
