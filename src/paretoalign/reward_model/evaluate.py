"""Evaluating a multi-objective reward model: pairwise accuracy and each head's correlation.

Pairwise accuracy is counted as RewardBench does (Lambert et al. 2024): a pair is right when the
chosen response scores strictly higher than the rejected one (a tie is wrong).  Per objective, a
pair counts when it has a strict label for that objective, and that objective's head must order it
the way the label says; "overall" is the gated score on the pairs' preference label.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import torch

from paretoalign.data.preference_pairs import load_preference_data, read_jsonl
from paretoalign.data.schemas import HELPSTEER2_ATTRIBUTES, check_prompt_field
from paretoalign.errors import DataError
from paretoalign.reward_model.armo import spearman


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[float, int]:
    """Fraction of pairs with ``chosen > rejected`` (``labels`` ±1 flips the expected order; 0/NaN drop the pair)."""
    d = (chosen - rejected).double()
    if labels is not None:
        keep = torch.isfinite(labels) & (labels != 0)
        d, lab = d[keep], labels[keep].double()
        d = d * lab
    n = int(d.numel())
    return (float((d > 0).double().mean()) if n else math.nan), n


@torch.no_grad()
def evaluate_reward_model(model, pairs: Sequence, chosen_features=None, rejected_features=None, prompt_features=None) -> dict:
    """Accuracy on preference ``pairs`` (already oriented: ``chosen`` is preferred on the preference
    label): overall (the gated score) and per objective (its head, on the pairs labelled for it).
    Features are computed with the model's extractor unless given."""
    if chosen_features is None:
        ex = model.extractor()
        prompts = [p.prompt for p in pairs]
        chosen_features = ex.features(prompts, [p.chosen for p in pairs])
        rejected_features = ex.features(prompts, [p.rejected for p in pairs])
        prompt_features = ex.prompt_features(prompts)
    model.eval()
    oc, orr = model(chosen_features, prompt_features), model(rejected_features, prompt_features)
    acc, n = pairwise_accuracy(oc.score, orr.score)
    out = {"overall": {"accuracy": acc, "pairs": n}, "per_objective": {}}
    for k, name in enumerate(model.objectives):
        labels = torch.tensor([float(p.labels.get(name, math.nan)) for p in pairs])
        a, m = pairwise_accuracy(oc.rewards[:, k], orr.rewards[:, k], labels)
        out["per_objective"][name] = {"accuracy": a, "pairs": m}
    out["mean_gates"] = dict(zip(model.objectives, oc.gates.mean(0).tolist())) if len(pairs) else {}
    return out


def head_correlations(predicted: torch.Tensor, targets: torch.Tensor, names: Sequence[str]) -> dict:
    """Per objective, on its rated rows: Pearson and Spearman correlation and MSE of the head's
    prediction with the (scaled) rating."""
    out = {}
    for k, name in enumerate(names):
        y = targets[:, k].double()
        keep = torch.isfinite(y)
        p, y = predicted[keep, k].double(), y[keep]
        n = int(keep.sum())
        if n < 2:
            out[name] = {"n": n, "pearson": math.nan, "spearman": math.nan, "mse": math.nan}
            continue
        pc, yc = p - p.mean(), y - y.mean()
        den = float(pc.norm() * yc.norm())
        out[name] = {"n": n, "pearson": float(pc @ yc) / den if den > 0 else math.nan,
                     "spearman": spearman(p, y), "mse": float(((p - y) ** 2).mean())}
    return out


def read_score_input(path: str | Path):
    """What ``reward-model score --input`` reads: ``("rows", [(prompt, response), ...])`` from a JSONL file of
    ``{prompt, response}`` rows, else ``("pairs", PreferenceData)`` from anything ``train --pairs`` reads.
    Every problem is a :class:`~paretoalign.errors.DataError` naming the file and the row."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"--input {str(path)!r} does not exist")
    lines = read_jsonl(path) if path.is_file() and path.suffix not in (".json", ".parquet", ".csv") else None
    if lines == []:
        raise DataError(f"{path}: no rows (the file is empty)")
    first = lines[0][1] if lines else None
    if isinstance(first, dict) and "response" in first and "prompt" in first and "chosen" not in first \
            and not all(a in first for a in HELPSTEER2_ATTRIBUTES):  # plain rows, not HelpSteer2's rated ones
        return "rows", [_score_row(r, f"{path}, line {n}") for n, r in lines]
    return "pairs", load_preference_data(str(path))


def _score_row(r, where: str) -> tuple:
    if not isinstance(r, dict):
        raise DataError(f"{where}: expected an object with 'prompt' and 'response', got {type(r).__name__}")
    for key in ("prompt", "response"):
        if r.get(key) is None:
            raise DataError(f"{where}: missing field {key!r} (fields present: {', '.join(map(repr, r)) or 'none'})")
    if not isinstance(r["response"], str):
        raise DataError(f"{where}, field 'response': expected a string, got {type(r['response']).__name__}")
    return check_prompt_field(r["prompt"], where, "prompt"), r["response"]
