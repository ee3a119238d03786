"""Generate on a fixed prompt set with fixed decoding settings and score every objective."""

from __future__ import annotations

import math

import torch

from paretoalign.data import prompts_hash
from paretoalign.rollout import generate


def summarize_scores(scores: torch.Tensor, names: list[str]) -> dict:
    """Per objective: mean, standard error of the mean, and quartiles over samples (``scores [N, K]``)."""
    out = {}
    for k, name in enumerate(names):
        col = scores[:, k].double()
        col = col[torch.isfinite(col)]
        n = col.numel()
        if n == 0:
            out[name] = {"mean": float("nan"), "stderr": float("nan"), "n": 0}
            continue
        q = torch.quantile(col, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=col.dtype)).tolist()
        sd = float(col.std(unbiased=True)) if n > 1 else 0.0
        out[name] = {
            "mean": float(col.mean()),
            "stderr": sd / math.sqrt(n) if n > 1 else 0.0,
            "n": n,
            "quantiles": dict(zip(["q10", "q25", "q50", "q75", "q90"], q)),
        }
    return out


@torch.no_grad()
def evaluate_policy(
    model,
    tokenizer,
    prompts: list,
    objectives,
    seed: int = 1234,
    batch_size: int = 16,
    max_new_tokens: int = 48,
    temperature: float = 0.7,
    top_p: float = 1.0,
    do_sample: bool = True,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
) -> dict:
    """Completions and scores of ``model`` on ``prompts`` with a fixed seed (the caller's RNG is untouched).

    Returns ``{"summary": {...per objective...}, "scores": [[...K...] per prompt], "samples": [...],
    "decoding": {...}, "prompts_sha256": ...}``.  Scores are the raw (unoriented) objective values.
    """
    names = list(objectives.names)
    completions: list[str] = []
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            r = generate(
                model, tokenizer, prompts[i : i + batch_size], num_generations=1,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, do_sample=do_sample,
                use_chat_template=use_chat_template, system_prompt=system_prompt,
            )
            completions += r.completions
            texts += r.prompt_texts
    scores = objectives.raw_scores(texts, completions)
    return {
        "summary": summarize_scores(scores, names),
        "scores": scores.tolist(),
        "samples": [{"prompt": p, "completion": c} for p, c in zip(texts, completions)],
        "decoding": {
            "seed": seed, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
            "do_sample": do_sample, "use_chat_template": use_chat_template, "system_prompt": system_prompt,
        },
        "prompts_sha256": prompts_hash(prompts),
        "objectives": names,
    }
