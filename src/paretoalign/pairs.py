"""``paretoalign pairs``: preference pairs made by sampling a model and scoring with the objectives.

The offline route when no human preference data exists: for each training prompt, sample
``num_completions`` completions, score every objective, and pair them up.  Each pair carries both
responses' scores (oriented so that higher is better) and a label per objective (the sign of the
score difference), so one dataset serves DPO (scalarised labels), MODPO (pairs labelled for one
objective, the other objectives' scores as margins), MOPO (the completions of a prompt are its
candidate pool) and AMoPO (one label per dimension).  Held-out prompts are never used, so the
evaluation prompts stay unseen.

Writes ``<output_dir>/pairs.jsonl`` (readable by ``--pairs <output_dir>``), ``card.json`` and a
``README.md`` dataset card recording how it was made.

With ``--mapl`` it also writes MAPL's prompt-side pairs (Sun et al. 2025, "Multi-Level Aware
Preference Learning", arXiv 2505.12845): ``intra.jsonl`` (for each distinct response, a prompt whose
appended instructions it satisfies vs one it violates, labels from the instructions' verifiers
only; :func:`paretoalign.instructions.build_intra_pairs`) and ``inter.jsonl`` (the pairs on
instruction-augmented prompts, this library's reconstruction of the inter-sample level;
:func:`paretoalign.instructions.build_inter_pairs`).  The folder's schema is documented in
:mod:`paretoalign.data.prompt_pairs`.  ``--pairs-in`` takes the responses from an existing pairs or
response file instead of sampling.  Everything is deterministic given ``--seed`` (each row's
instructions are drawn from a generator seeded by the seed, the request and the response).
"""

from __future__ import annotations

import datetime
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from paretoalign import __version__, run_dir
from paretoalign.config_utils import config_to_dict
from paretoalign.data.preference_pairs import (
    PAIRS_FILE,
    PreferencePair,
    load_preference_data,
    prompt_key,
    save_preference_data,
    source_rows,
)
from paretoalign.data.prompt_pairs import INTER_FILE, INTRA_FILE, last_user_text, replace_last_user_text, write_jsonl
from paretoalign.data.prompts import load_prompts, prompts_hash, split_prompts
from paretoalign.data.schemas import check_prompt_field, detect_format
from paretoalign.errors import ConfigError, DataError, RunDirError
from paretoalign.instructions import build_inter_pairs, build_intra_pairs
from paretoalign.models import check_batch_fits, kv_bytes_per_token, load_causal_lm, load_tokenizer
from paretoalign.objectives import build_objective_set
from paretoalign.pairs_config import PairsConfig
from paretoalign.rollout import generate

CARD_FILE = "card.json"
README_FILE = "README.md"
OUTPUT_FILES = (PAIRS_FILE, CARD_FILE, README_FILE, INTRA_FILE, INTER_FILE)  # what --overwrite may replace


def _pair_indices(scores: np.ndarray, pairing: str) -> list[tuple[int, int]]:
    n = scores.shape[0]
    if pairing == "all":
        return list(itertools.combinations(range(n), 2))
    if pairing == "adjacent":
        return [(i, i + 1) for i in range(0, n - 1, 2)]
    out = []
    for k in range(scores.shape[1]):
        col = np.nan_to_num(scores[:, k], nan=-np.inf)
        i, j = int(np.argmax(col)), int(np.argmin(np.where(np.isinf(col), np.inf, col)))
        if i != j and (min(i, j), max(i, j)) not in out:
            out.append((min(i, j), max(i, j)))
    return out


def make_pairs(cfg: PairsConfig, model=None, tokenizer=None) -> dict:
    """Sample, score and pair; returns the card (also written to ``card.json``)."""
    out = Path(cfg.output_dir)
    if cfg.pairs_in is not None:
        return make_mapl_pairs_from_file(cfg)
    tokenizer = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
    check_batch_fits(cfg.batch_size * cfg.num_completions, cfg.max_prompt_length + cfg.max_new_tokens,
                     kv_bytes_per_token(cfg.model, cfg.allow_download), "--batch-size x --num-completions")
    run_dir.claim(out, "pairs", cfg.overwrite, OUTPUT_FILES)
    objectives = build_objective_set(cfg.objectives, tokenizer, nan_policy="skip")
    if cfg.mapl and cfg.mapl_inter_label and cfg.mapl_inter_label not in objectives.names:
        run_dir.unlock(out)
        raise ConfigError(f"--mapl-inter-label {cfg.mapl_inter_label!r} is not one of the objectives "
                          f"({', '.join(objectives.names)})")
    train, _held = split_prompts(load_prompts(cfg.prompts, column=cfg.prompt_column, allow_download=cfg.allow_download), cfg.heldout_fraction, cfg.seed)
    if cfg.max_prompts:
        train = train[: cfg.max_prompts]
    torch.manual_seed(cfg.seed)
    model = model if model is not None else load_causal_lm(cfg.model, tokenizer, cfg.seed, cfg.allow_download)
    model.eval()
    names = objectives.names
    pairs, t0, n_samples, n_nan = [], time.perf_counter(), 0, 0
    bar = None
    if cfg.progress:
        bar = tqdm(total=len(train), desc="pairs", dynamic_ncols=True, file=sys.stderr)
    G = cfg.num_completions
    for start in range(0, len(train), cfg.batch_size):
        batch = train[start : start + cfg.batch_size]
        ro = generate(model, tokenizer, batch, num_generations=G, max_new_tokens=cfg.max_new_tokens,
                      max_prompt_length=cfg.max_prompt_length, temperature=cfg.temperature, top_p=cfg.top_p,
                      use_chat_template=cfg.use_chat_template, system_prompt=cfg.system_prompt,
                      backend=cfg.generation_backend)
        scores, valid = objectives.rewards(ro.prompt_texts, ro.completions)
        scores = scores.numpy().astype(float)
        scores[~valid.numpy().astype(bool)] = np.nan
        n_samples += len(ro.completions)
        n_nan += int((~valid).sum())
        for b, prompt in enumerate(batch):
            rows = slice(b * G, (b + 1) * G)
            comps, sc = ro.completions[rows], scores[rows]
            for i, j in _pair_indices(sc, cfg.pairing):
                if comps[i] == comps[j] or not comps[i].strip() or not comps[j].strip():
                    continue
                si, sj = sc[i], sc[j]
                labels = {n: float(np.sign(si[k] - sj[k])) for k, n in enumerate(names)
                          if np.isfinite(si[k]) and np.isfinite(sj[k])}
                pairs.append(PreferencePair(prompt, comps[i], comps[j], labels,
                                            {n: float(si[k]) for k, n in enumerate(names)},
                                            {n: float(sj[k]) for k, n in enumerate(names)}))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    if not pairs:
        run_dir.unlock(out)
        raise RunDirError("no pairs could be made (every completion was empty, identical or unscorable)")
    untied = {n: sum(p.labels.get(n) in (1.0, -1.0) for p in pairs) for n in names}
    few = {n: c for n, c in untied.items() if c < cfg.min_untied_pairs}
    if few and not cfg.force:
        run_dir.unlock(out)  # nothing written: the folder holds only its marker, reusable without --overwrite
        counts = ", ".join(f"{n}: {untied[n]} untied" for n in names)
        raise DataError(
            f"too few untied pairs to learn from: {len(pairs)} pairs, {counts} (minimum {cfg.min_untied_pairs}); "
            "sample more or more varied completions (--max-prompts, --num-completions, --temperature) or use "
            "objectives that separate them, or pass --force to write the set anyway")
    save_preference_data(pairs, out / PAIRS_FILE)
    card = {
        "made_by": f"paretoalign {__version__} pairs",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config_to_dict(cfg),
        "objectives": objectives.describe(),
        "scores": "per-response rewards oriented so that higher is better (minimised objectives negated)",
        "labels": "per objective, the sign of the chosen-minus-rejected score (0: tie)",
        "prompts": {"source": cfg.prompts, "split": "train", "count": len(train), "hash": prompts_hash(train)},
        "samples": n_samples, "unscorable_samples": n_nan, "pairs": len(pairs), "untied_pairs": untied,
        "forced_below_minimum": sorted(few),
        "label_counts": {n: {"+1": sum(p.labels.get(n) == 1.0 for p in pairs),
                             "-1": sum(p.labels.get(n) == -1.0 for p in pairs),
                             "tie": sum(p.labels.get(n) == 0.0 for p in pairs)} for n in names},
        "seconds": time.perf_counter() - t0,
    }
    markdown = _card_markdown(card)
    if cfg.mapl:
        responses = [(p.prompt, text, "sample") for p in pairs for text in (p.chosen, p.rejected)]
        card["mapl"] = write_mapl_sets(cfg, out, responses, pairs, cfg.mapl_inter_label or names[0])
        card["seconds"] = time.perf_counter() - t0
        markdown += _mapl_markdown(card["mapl"])
    (out / CARD_FILE).write_text(json.dumps(card, indent=2))
    (out / README_FILE).write_text(markdown)
    run_dir.unlock(out)  # taken by claim() when it replaced an older dataset
    return card


def _card_markdown(card: dict) -> str:
    c = card["config"]
    lines = [
        "# Preference pairs made by paretoalign", "",
        f"- made by: `{card['made_by']}` on {card['created']}",
        f"- model: `{c['model']}`, {c['num_completions']} completions per prompt, temperature {c['temperature']}, "
        f"top_p {c['top_p']}, at most {c['max_new_tokens']} new tokens, seed {c['seed']}",
        f"- prompts: `{card['prompts']['source']}` training split ({card['prompts']['count']} prompts, hash "
        f"{card['prompts']['hash']}); held-out fraction {c['heldout_fraction']} never used",
        f"- objectives: {', '.join('`' + o['name'] + '`' for o in card['objectives'])}",
        f"- pairing: `{c['pairing']}`; {card['pairs']} pairs from {card['samples']} samples "
        f"({card['unscorable_samples']} unscorable)",
        f"- scores: {card['scores']}", f"- labels: {card['labels']}", "",
        "| objective | chosen better | rejected better | tie |", "|---|---|---|---|",
    ]
    for n, cnt in card["label_counts"].items():
        lines.append(f"| {n} | {cnt['+1']} | {cnt['-1']} | {cnt['tie']} |")
    lines += ["", "Load with `paretoalign train --method modpo --pairs <this folder> ...` or "
              "`paretoalign.data.preference_pairs.load_preference_data(<this folder>)`.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# MAPL's prompt-side pairs (--mapl)
# ---------------------------------------------------------------------------------------------


def _oriented(pair: PreferencePair, label: str) -> PreferencePair | None:
    lab = pair.labels.get(label)
    return pair if lab == 1.0 else pair.flipped() if lab == -1.0 else None


def _add(total: dict, stats: dict) -> None:
    for k, v in stats.items():
        total[k] = total.get(k, 0) + int(v)


def write_mapl_sets(cfg: PairsConfig, out: Path, responses: list, pairs: list, inter_label: str | None) -> dict:
    """Build and write ``intra.jsonl`` (and ``inter.jsonl`` when there are pairs and ``--mapl-inter``).

    ``responses``: (prompt, response, source) rows; each distinct (prompt, response) gives its
    prompt-side pairs once.  ``pairs`` (possibly empty) give the inter level, oriented by ``inter_label``.
    Returns the card's ``mapl`` section."""
    seen, intra, stats = set(), [], {}
    for prompt, response, source in responses:
        key = (prompt_key(prompt), response)
        if key in seen or not response.strip():
            continue
        seen.add(key)
        rows, st = build_intra_pairs([(last_user_text(prompt), response)], cfg.instructions,
                                     cfg.instructions_per_prompt, cfg.mapl_rules, cfg.seed)
        _add(stats, st)
        for r in rows:
            r.update(prompt=prompt, prompt_w=replace_last_user_text(prompt, r["prompt_w"]),
                     prompt_l=replace_last_user_text(prompt, r["prompt_l"]), source=source)
            intra.append(r)
    if not intra:
        run_dir.unlock(out)
        raise DataError(f"no prompt-side pairs could be made from {stats.get('rows', 0)} responses with the "
                        f"instructions {', '.join(cfg.instructions)} (none had both a satisfied and a violated "
                        "instruction); try other --instructions")
    write_jsonl(intra, out / INTRA_FILE)
    section = {
        "method": "MAPL (Sun et al. 2025, arXiv 2505.12845): prompt-side pairs, x_w preferred to x_l given y",
        "instructions": list(cfg.instructions), "instructions_per_prompt": cfg.instructions_per_prompt,
        "rules": list(cfg.mapl_rules), "seed": cfg.seed,
        "labels": "from each instruction's verifier (paretoalign.judges) on the response; an instruction whose "
                  "verdict disagreed with the generator's intent was dropped (rejected_by_verifier)",
        "intra": {"file": INTRA_FILE, **stats,
                  "by_rule": {r: sum(x["rule"] == r for x in intra) for r in cfg.mapl_rules}},
    }
    (out / INTER_FILE).unlink(missing_ok=True)  # an older set's inter level must not outlive it
    if cfg.mapl_inter and pairs and inter_label is not None:
        inter, istats = [], {}
        for p in pairs:
            q = _oriented(p, inter_label)
            if q is None:
                continue
            rows, st = build_inter_pairs([(last_user_text(q.prompt), q.chosen, q.rejected)], cfg.instructions,
                                         cfg.instructions_per_prompt, cfg.mapl_inter_tries, cfg.seed)
            _add(istats, st)
            for r in rows:
                r.update(prompt=replace_last_user_text(q.prompt, r["prompt"]), original_prompt=q.prompt,
                         label=inter_label)
                inter.append(r)
        if inter:
            write_jsonl(inter, out / INTER_FILE)
        section["inter"] = {"file": INTER_FILE if inter else None, "label": inter_label, **istats,
                            "note": "reconstruction [R]: the paper's abstract only says it synthesises multi-"
                                    "instruction pairs from each original pair; conflict = the instructions are "
                                    "satisfied by the rejected response and violated by the chosen one"}
    if cfg.progress:
        inter = section.get("inter") or {}
        print(f"[pairs --mapl] {len(intra)} prompt-side pairs from {stats.get('rows', 0)} responses "
              f"({stats.get('skipped_rows', 0)} without instructions) -> {out / INTRA_FILE}"
              + (f"; {inter.get('pairs', 0)} inter pairs ({inter.get('conflicts', 0)} conflicts) -> {out / INTER_FILE}"
                 if inter.get("file") else ""), file=sys.stderr)
    return section


def _read_source(cfg: PairsConfig) -> tuple[list, list, str, str]:
    """(pairs, (prompt, response, source) rows, name, format) of ``--pairs-in``: preference pairs in
    any schema ``train --pairs`` reads, else rows of prompt + response (or completion)."""
    name, rows, _ = source_rows(cfg.pairs_in, None, allow_download=cfg.allow_download)
    first = rows[0][1]
    try:
        detect_format(first)
        is_pairs = True
    except DataError:
        is_pairs = False
    if is_pairs:
        data = load_preference_data(cfg.pairs_in, allow_download=cfg.allow_download)
        responses = [(p.prompt, text, src) for p in data.pairs for text, src in ((p.chosen, "chosen"),
                                                                                   (p.rejected, "rejected"))]
        return list(data.pairs), responses, data.name, data.format
    col = "response" if "response" in first else "completion" if "completion" in first else None
    if "prompt" not in first or col is None:
        raise DataError(f"{name}: neither preference pairs (chosen/rejected, or a public schema) nor rows of prompt + "
                        f"response (or completion); {rows[0][0]} has the fields {', '.join(map(repr, first)) or 'none'}")
    responses = []
    for where, r in rows:
        prompt = check_prompt_field(r.get("prompt"), f"{name}, {where}", "prompt")
        text = r.get(col)
        if not isinstance(text, str):
            raise DataError(f"{name}, {where}, field {col!r}: expected a string, got {type(text).__name__}")
        responses.append((prompt, text, "response"))
    return [], responses, name, "responses"


def make_mapl_pairs_from_file(cfg: PairsConfig) -> dict:
    """``pairs --mapl --pairs-in FILE``: MAPL's sets from existing responses, no model; returns the card."""
    if not cfg.mapl:
        raise ConfigError("--pairs-in builds MAPL's prompt-side pairs from a file: give --mapl too")
    out = Path(cfg.output_dir)
    t0 = time.perf_counter()
    pairs, responses, name, fmt = _read_source(cfg)  # read before claiming: bad input leaves nothing behind
    if cfg.max_prompts:
        keep = list(dict.fromkeys(prompt_key(r[0]) for r in responses))[: cfg.max_prompts]
        keep_set = set(keep)
        responses = [r for r in responses if prompt_key(r[0]) in keep_set]
        pairs = [p for p in pairs if prompt_key(p.prompt) in keep_set]
    labels = list(dict.fromkeys(k for p in pairs for k in p.labels))
    inter_label = cfg.mapl_inter_label or (labels[0] if labels else None)
    if cfg.mapl_inter_label and pairs and cfg.mapl_inter_label not in labels:
        raise ConfigError(f"--mapl-inter-label {cfg.mapl_inter_label!r} is not a label of {name} "
                          f"(its labels: {', '.join(labels) or 'none'})")
    run_dir.claim(out, "pairs", cfg.overwrite, OUTPUT_FILES)
    (out / PAIRS_FILE).unlink(missing_ok=True)
    if pairs:
        save_preference_data(pairs, out / PAIRS_FILE)
    section = write_mapl_sets(cfg, out, responses, pairs, inter_label)
    card = {
        "made_by": f"paretoalign {__version__} pairs --mapl",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config_to_dict(cfg),
        "source": {"path": str(cfg.pairs_in), "name": name, "format": fmt, "responses": len(responses),
                   "pairs": len(pairs)},
        "samples": 0, "pairs": len(pairs), "untied_pairs": {}, "forced_below_minimum": [],
        "label_counts": {n: {"+1": sum(p.labels.get(n) == 1.0 for p in pairs),
                             "-1": sum(p.labels.get(n) == -1.0 for p in pairs),
                             "tie": sum(p.labels.get(n) == 0.0 for p in pairs)} for n in labels},
        "mapl": section,
    }
    card["untied_pairs"] = {n: c["+1"] + c["-1"] for n, c in card["label_counts"].items()}
    card["seconds"] = time.perf_counter() - t0
    (out / CARD_FILE).write_text(json.dumps(card, indent=2))
    head = ["# MAPL prompt-side pairs made by paretoalign", "",
            f"- made by: `{card['made_by']}` on {card['created']}",
            f"- source: `{cfg.pairs_in}` ({fmt}; {len(responses)} responses, {len(pairs)} pairs"
            + (", copied to pairs.jsonl)" if pairs else ")"), ""]
    (out / README_FILE).write_text("\n".join(head) + _mapl_markdown(section))
    run_dir.unlock(out)
    return card


def _mapl_markdown(section: dict) -> str:
    intra = section["intra"]
    lines = ["", "## MAPL prompt-side pairs", "",
             f"- {section['method']}",
             f"- instructions: {', '.join('`' + k + '`' for k in section['instructions'])}, up to "
             f"{section['instructions_per_prompt']} per prompt; rules {', '.join(section['rules'])}; seed {section['seed']}",
             f"- `{intra['file']}`: {intra.get('pairs', 0)} pairs from {intra.get('rows', 0)} distinct responses "
             f"({intra.get('skipped_rows', 0)} had no usable instruction; {intra.get('rejected_by_verifier', 0)} "
             "generated instructions rejected by their verifier)",
             f"- labels: {section['labels']}"]
    inter = section.get("inter")
    if inter and inter.get("file"):
        lines.append(f"- `{inter['file']}`: {inter.get('pairs', 0)} inter-sample pairs oriented by label "
                     f"`{inter['label']}` ({inter.get('conflicts', 0)} conflicts, {inter.get('skipped_rows', 0)} "
                     f"pairs without a separating instruction); {inter['note']}")
    lines += ["", "Train with `paretoalign train --method mapl --pairs <this folder> ...` or "
              "`paretoalign reward-model train --rc-bt --prompt-pairs <this folder> ...`; read with "
              "`paretoalign.data.prompt_pairs.load_mapl_data(<this folder>)`.", ""]
    return "\n".join(lines)
