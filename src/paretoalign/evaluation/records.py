"""Typed records of an evaluation: what ``eval.json`` holds, key by key, with units and shapes.

They are ``TypedDict``s: the JSON files stay plain JSON (readable by any tool, and by older
versions), while code and readers get one documented definition of every field.
"""

from __future__ import annotations

from typing import Optional, TypedDict


class ObjectiveSummary(TypedDict, total=False):
    """One objective's scores over the evaluated prompts (finite samples only), in its own units."""

    mean: float
    stderr: float  # standard error of the mean (sample std / sqrt(n))
    n: int  # finite samples
    quantiles: dict[str, float]  # q10, q25, q50, q75, q90


class WinRate(TypedDict):
    """Paired comparison against a baseline on the same prompts (oriented: higher is better)."""

    win_rate: float  # (wins + ties / 2) / n
    ci95: list[float]  # Wilson 95% interval [low, high]
    wins: int
    ties: int
    losses: int
    n: int


class Sample(TypedDict):
    prompt: str  # the rendered prompt text the model saw
    completion: str
    scores: list[float]  # [K], one per objective in ``names`` order, raw units


class EvalResult(TypedDict, total=False):
    """The content of ``eval.json`` (:func:`paretoalign.evaluation.evaluate.evaluate_target`)."""

    paretoalign_eval: int  # format version
    target: str  # run folder, checkpoint folder or model name
    kind: str  # 'run' | 'checkpoint' | 'model'
    model: dict  # base_model, fingerprint (sha256 of weights), policy folder, method, weights
    objectives: list[dict]  # each objective's description (name, direction, bounds, spec)
    names: list[str]  # [K] objective names
    signs: list[float]  # [K] +1 maximise, -1 minimise
    prompts: dict  # source, split, n, sha256, ...
    prompts_sha256: str
    decoding: dict  # seed, batch_size, max_new_tokens, temperature, top_p, ...
    direction: Optional[list[float]]  # DPA: the unit direction evaluated, else None
    cache_key: str
    summary: dict[str, ObjectiveSummary]  # by objective name
    scores: list[list[float]]  # [N, K] raw scores, prompt order
    prompt_texts: list[str]  # [N]
    completions: list[str]  # [N]
    samples: list[Sample]  # the first few, for reports
    baseline: Optional[str]  # what win rates are against
    win_rate: Optional[dict[str, WinRate]]  # by objective name
    cached: dict  # whether completions / scores came from the cache
    seconds: dict  # generate, score
    output: str  # where eval.json was written


__all__ = ["ObjectiveSummary", "WinRate", "Sample", "EvalResult"]


def describe_prompts(p: dict) -> str:
    """One line on which prompts were scored, from eval.json's ``prompts`` record: how many, which part
    of which set, and the split (printed by evaluate, front and the demo, so their numbers can be matched)."""
    n, split, source = p.get("n", "?"), p.get("split", "heldout"), p.get("prompts", "builtin")
    part = {"heldout": "held-out", "train": "training", "all": "all"}.get(split, split)
    text = f"{n} {part} prompts of {source!r}"
    if split != "all" and p.get("heldout_fraction") is not None:
        text += f" ({p['heldout_fraction']:.0%} held out, split seed {p.get('split_seed', 0)})"
    if p.get("num_prompts"):
        text += f", the first {p['num_prompts']}"
    return text
