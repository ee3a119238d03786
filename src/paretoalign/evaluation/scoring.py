"""Generate on a fixed prompt set with fixed decoding settings and score every objective."""

from __future__ import annotations

import math

import torch

from paretoalign.data.prompts import prompts_hash
from paretoalign.errors import ConfigError
from paretoalign.evaluation.records import ObjectiveSummary, WinRate
from paretoalign.rollout import generate


def summarize_scores(scores: torch.Tensor, names: list[str]) -> dict[str, ObjectiveSummary]:
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


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``successes / n`` (95% by default).

    Better behaved than the normal approximation near 0 and 1 and for small n (Wilson 1927);
    ``successes`` may be fractional (ties counted as half a win), which keeps the interval
    conservative because ties lower the variance.
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def win_rates(scores, base_scores, names: list[str], signs, tie_tol: float = 0.0) -> dict[str, WinRate]:
    """Per objective, how often a model's completion beats the base model's on the same prompt.

    ``scores`` and ``base_scores`` are raw ``[N, K]`` scores on the same prompts in the same order;
    ``signs[k]`` is +1 (maximise) or −1 (minimise).  A prompt is a win when sign·(score − base)
    > ``tie_tol``, a loss when < −``tie_tol``, else a tie; prompts where either score is not
    finite are left out.  ``win_rate = (wins + ties/2) / n`` with a 95% Wilson interval.
    """
    s = torch.as_tensor(scores, dtype=torch.float64)
    b = torch.as_tensor(base_scores, dtype=torch.float64)
    if s.shape != b.shape:
        raise ConfigError(
            f"win rate needs scores of the same prompts: got {tuple(s.shape)} vs the base's {tuple(b.shape)}"
        )
    out = {}
    for k, name in enumerate(names):
        ok = torch.isfinite(s[:, k]) & torch.isfinite(b[:, k])
        d = float(signs[k]) * (s[ok, k] - b[ok, k])
        wins, losses = int((d > tie_tol).sum()), int((d < -tie_tol).sum())
        n = int(ok.sum())
        ties = n - wins - losses
        rate = (wins + 0.5 * ties) / n if n else float("nan")
        out[name] = {
            "win_rate": rate, "ci95": list(wilson_interval(wins + 0.5 * ties, n)),
            "wins": wins, "ties": ties, "losses": losses, "n": n,
        }
    return out


def generate_completions(
    model, tokenizer, prompts: list, seed: int = 1234, batch_size: int = 64, max_new_tokens: int = 48,
    temperature: float = 0.7, top_p: float = 1.0, do_sample: bool = True, use_chat_template: bool = True,
    system_prompt: str | None = None, generation_backend: str = "hf",
) -> tuple[list[str], list[str]]:
    """(rendered prompt texts, completions): one completion per prompt with a fixed seed (the
    caller's RNG is untouched).  The seed is set once, so a completion depends on the batch it is
    generated in: keep ``batch_size`` fixed to reproduce an evaluation."""
    completions: list[str] = []
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            r = generate(
                model, tokenizer, prompts[i : i + batch_size], num_generations=1,
                max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, do_sample=do_sample,
                use_chat_template=use_chat_template, system_prompt=system_prompt, backend=generation_backend,
            )
            completions += r.completions
            texts += r.prompt_texts
    return texts, completions


def generate_mod_completions(
    decoder, tokenizer, prompts: list, seed: int = 1234, batch_size: int = 64, max_new_tokens: int = 48,
    temperature: float = 0.7, top_p: float = 1.0, do_sample: bool = True, use_chat_template: bool = True,
    system_prompt: str | None = None, generation_backend: str = "hf",
) -> tuple[list[str], list[str]]:
    """:func:`generate_completions` for a :class:`~paretoalign.mod.MultiObjectiveDecoder` (MOD decodes with
    its own loop, so ``generation_backend`` is only checked)."""
    if generation_backend != "hf":
        raise ConfigError(f"MOD decodes with paretoalign's own loop; generation backend {generation_backend!r} does not apply")
    completions: list[str] = []
    texts: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(0, len(prompts), batch_size):
            r = decoder.generate(prompts[i : i + batch_size], max_new_tokens=max_new_tokens, do_sample=do_sample,
                                 temperature=temperature, top_p=top_p, use_chat_template=use_chat_template,
                                 system_prompt=system_prompt)
            completions += r.completions
            texts += r.prompt_texts
    return texts, completions


@torch.no_grad()
def evaluate_policy(
    model,
    tokenizer,
    prompts: list,
    objectives,
    seed: int = 1234,
    batch_size: int = 64,
    max_new_tokens: int = 48,
    temperature: float = 0.7,
    top_p: float = 1.0,
    do_sample: bool = True,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
    generation_backend: str = "hf",
) -> dict:
    """Completions and scores of ``model`` on ``prompts`` with a fixed seed (the caller's RNG is untouched).

    Returns ``{"summary": {...per objective...}, "scores": [[...K...] per prompt], "samples": [...],
    "decoding": {...}, "prompts_sha256": ...}``.  Scores are the raw (unoriented) objective values.
    """
    names = list(objectives.names)
    texts, completions = generate_completions(
        model, tokenizer, prompts, seed=seed, batch_size=batch_size, max_new_tokens=max_new_tokens,
        temperature=temperature, top_p=top_p, do_sample=do_sample, use_chat_template=use_chat_template,
        system_prompt=system_prompt, generation_backend=generation_backend,
    )
    scores = objectives.raw_scores(texts, completions)
    return {
        "summary": summarize_scores(scores, names),
        "scores": scores.tolist(),
        "samples": [{"prompt": p, "completion": c} for p, c in zip(texts, completions)],
        "decoding": {
            "seed": seed, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
            "do_sample": do_sample, "use_chat_template": use_chat_template, "system_prompt": system_prompt,
            "batch_size": batch_size, "generation_backend": generation_backend,
        },
        "prompts_sha256": prompts_hash(prompts),
        "objectives": names,
    }
