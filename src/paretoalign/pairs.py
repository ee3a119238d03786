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
from paretoalign.data.preference_pairs import PAIRS_FILE, PreferencePair, save_preference_data
from paretoalign.data.prompts import load_prompts, prompts_hash, split_prompts
from paretoalign.errors import DataError, RunDirError
from paretoalign.models import check_batch_fits, kv_bytes_per_token, load_causal_lm, load_tokenizer
from paretoalign.objectives import build_objective_set
from paretoalign.pairs_config import PairsConfig
from paretoalign.rollout import generate

CARD_FILE = "card.json"
README_FILE = "README.md"


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
    tokenizer = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
    check_batch_fits(cfg.batch_size * cfg.num_completions, cfg.max_prompt_length + cfg.max_new_tokens,
                     kv_bytes_per_token(cfg.model, cfg.allow_download), "--batch-size x --num-completions")
    run_dir.claim(out, "pairs", cfg.overwrite, (PAIRS_FILE, CARD_FILE, README_FILE))
    objectives = build_objective_set(cfg.objectives, tokenizer, nan_policy="skip")
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
    (out / CARD_FILE).write_text(json.dumps(card, indent=2))
    (out / README_FILE).write_text(_card_markdown(card))
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
