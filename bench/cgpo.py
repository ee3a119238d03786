"""CGPO (CRPG, CODPO, CRRAFT) vs MORLHF on a task with a hard constraint, on the bundled SmolLM2-135M-Instruct.

    python bench/cgpo.py                                   # the reported run (~15-20 min on 2 CPU cores)
    python bench/cgpo.py --model tiny --steps 1 --eval-prompts 4    # seconds: checks the script

CGPO: Xu et al. 2024, "The Perfect Blend: Redefining RLHF with Mixture of Judges", arXiv 2409.20370.

Task: maximise sentiment (VADER compound, the ``sentiment`` objective) subject to a word-count window judge,
``length(min=LO,max=HI,unit=words)`` (every completion must have LO..HI words).

Training, the same for every method: LoRA (r 16), learning rate ``--lr``, ``--steps`` steps of ``--batch-size``
builtin training prompts x ``--k`` samples (temperature 0.9, ``--tokens`` new tokens), seed 0; so the same
number of sampled completions and optimiser steps.
- ``cgpo-crpg`` / ``cgpo-codpo`` / ``cgpo-crraft``: ``train --method cgpo`` with reward = sentiment, judges =
  the window, calibration against the base model's greedy answer, the paper's hard KL gate at ``--kl-threshold``
  (CRPG: PR #2190's batch-mean baseline; CODPO: beta 0.1, lambda 5).
- ``morlhf``: ``train --method morlhf --advantage group`` (critic-free, the same k) with linear weights 0.5/0.5 on
  sentiment and the window as a 0/1 objective (``in_window`` below), and a k3 KL penalty ``--morlhf-kl``: the
  constraint folded into a weighted reward, the practice CGPO argues against.

Evaluation on held-out builtin prompts (the split every run uses, never trained on): ``--samples`` completions per
prompt sampled at temperature 0.7 (seed 1234) from the base model and each trained policy; per method the mean
sentiment, the window pass rate, the mean sentiment of the passing completions, and KL = E_y~pi[log pi(y|x) -
log pi_ref(y|x)] over the sampled completions (tempered log-probabilities of both). Intervals: 95%, mean +- 1.96 SE
with the SE over prompts (per-prompt means), Wilson for the pass rate (over completions).

Prints a markdown table and writes bench/out/cgpo.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"
HERE = Path(__file__).resolve()


def in_window(prompts, completions, lo: int = 8, hi: int = 24):
    """1.0 when the completion has lo..hi whitespace-separated words, else 0.0 (MORLHF's constraint objective)."""
    return [1.0 if lo <= len(c.split()) <= hi else 0.0 for c in completions]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--methods", default="cgpo-crpg,cgpo-codpo,cgpo-crraft,morlhf")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--k", type=int, default=4, help="completions per prompt")
    p.add_argument("--tokens", type=int, default=40, help="max new tokens (training and evaluation)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--window", default="8,24", help="the judge's word-count window LO,HI")
    p.add_argument("--kl-threshold", type=float, default=10.0)
    p.add_argument("--morlhf-kl", type=float, default=0.05)
    p.add_argument("--eval-prompts", type=int, default=40)
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT_DIR / "cgpo"))
    return p.parse_args(argv)


def mean_ci(per_prompt: list[float]) -> tuple[float, float]:
    n = len(per_prompt)
    m = sum(per_prompt) / n
    se = math.sqrt(sum((x - m) ** 2 for x in per_prompt) / max(n - 1, 1) / n)
    return m, 1.96 * se


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return p, c - h, c + h


def evaluate(policy, tok, prompts, args, lo, hi, adapter: bool) -> dict:
    """Sample the held-out prompts and score them (see the module docstring)."""
    import contextlib

    import torch

    from paretoalign.judges import build_judge
    from paretoalign.models import completion_logits
    from paretoalign.objectives import build_objective
    from paretoalign.rollout import generate, token_logprobs

    sentiment, judge = build_objective("sentiment"), build_judge(f"length(min={lo},max={hi},unit=words)")
    T = 0.7
    rows = []
    for i in range(0, len(prompts), 8):
        chunk = prompts[i: i + 8]
        with torch.random.fork_rng():
            torch.manual_seed(1234 + i)
            ctx = contextlib.nullcontext() if adapter else policy.disable_adapter()
            with ctx:
                r = generate(policy, tok, chunk, num_generations=args.samples, max_new_tokens=args.tokens,
                             temperature=T, do_sample=True)
        with torch.no_grad():
            args_ = (r.input_ids, r.attention_mask, r.prompt_length)
            if adapter:
                lp = token_logprobs(completion_logits(policy, *args_), r.completion_ids, T)
                with policy.disable_adapter():
                    ref = token_logprobs(completion_logits(policy, *args_), r.completion_ids, T)
                kl = ((lp - ref) * r.completion_mask).sum(1).tolist()
            else:
                kl = [0.0] * len(r.completions)
        s = sentiment.score(r.prompt_texts, r.completions).tolist()
        v = judge(r.prompt_texts, r.completions)
        for j in range(len(r.completions)):
            rows.append({"prompt": i + j // args.samples, "sentiment": s[j], "pass": v[j] == 1, "kl": kl[j],
                         "words": len(r.completions[j].split()), "text": r.completions[j]})
    return summarise(rows)


def summarise(rows: list[dict]) -> dict:
    by: dict[int, list[dict]] = {}
    for r in rows:
        by.setdefault(r["prompt"], []).append(r)
    out = {}
    for key in ("sentiment", "kl", "words"):
        m, h = mean_ci([sum(r[key] for r in rs) / len(rs) for rs in by.values()])
        out[key] = {"mean": m, "ci95": h}
    k = sum(r["pass"] for r in rows)
    p, lo, hi = wilson(k, len(rows))
    out["pass_rate"] = {"mean": p, "lo": lo, "hi": hi, "n": len(rows)}
    passing = [r["sentiment"] for r in rows if r["pass"]]
    out["sentiment_if_pass"] = sum(passing) / len(passing) if passing else float("nan")
    out["examples"] = [r["text"] for r in rows[:2]]
    return out


def train(method: str, args, lo: int, hi: int, out: Path):
    from paretoalign.trainers.cgpo_config import CGPOConfig
    from paretoalign.trainers.cgpo_trainer import CGPOTrainer
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    common = dict(model=args.model, batch_size=args.batch_size, num_generations=args.k, max_new_tokens=args.tokens,
                  temperature=0.9, learning_rate=args.lr, max_steps=args.steps, save_steps=args.steps, seed=args.seed,
                  progress=False, overwrite=True, output_dir=str(out / method))
    if method.startswith("cgpo-"):
        cfg = CGPOConfig(**common, objectives=["sentiment"], cgpo_optimizer=method.split("-", 1)[1],
                         judges=[f"length(min={lo},max={hi},unit=words)"], kl_threshold=args.kl_threshold)
        return CGPOTrainer(cfg)
    if method == "morlhf":
        window = f"python:{HERE}:in_window(name=window,lo={lo},hi={hi})"
        cfg = OnlineConfig(**common, method="morlhf", advantage="group", objectives=["sentiment", window],
                           weights=[0.5, 0.5], kl_coef=args.morlhf_kl)
        return OnlineTrainer(cfg)
    raise SystemExit(f"unknown method {method!r}")


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from paretoalign.data.prompts import builtin_prompts
    from paretoalign.models import load_tokenizer

    torch.set_num_threads(max(1, torch.get_num_threads()))
    lo, hi = (int(x) for x in args.window.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    held = builtin_prompts("heldout")[: args.eval_prompts]
    results, t0 = {}, time.perf_counter()
    base_done = False
    for method in args.methods.split(","):
        t = time.perf_counter()
        tr = train(method, args, lo, hi, out)
        tr.train()
        t_train = time.perf_counter() - t
        policy, tok = tr.unwrapped.policy, tr.tokenizer
        policy.eval()
        if not base_done:
            results["base"] = evaluate(policy, tok, held, args, lo, hi, adapter=False)
            base_done = True
        results[method] = evaluate(policy, tok, held, args, lo, hi, adapter=True)
        results[method]["train_seconds"] = t_train
        print(f"[{method}] trained in {t_train:.0f} s; eval {json.dumps({k: v for k, v in results[method].items() if k != 'examples'})}",
              flush=True)
        del tr, policy
    _ = load_tokenizer  # the trainers load it
    print()
    print(f"held-out: {len(held)} prompts x {args.samples} samples; window {lo}..{hi} words; {args.steps} steps x "
          f"{args.batch_size} prompts x k={args.k}; {args.model}")
    print("| method | sentiment (95% CI) | window pass rate (95% CI) | sentiment if pass | KL to base (95% CI) | words |")
    print("|---|---|---|---|---|---|")
    for m, r in results.items():
        s, p, k = r["sentiment"], r["pass_rate"], r["kl"]
        print(f"| {m} | {s['mean']:.3f} ± {s['ci95']:.3f} | {p['mean']:.2f} [{p['lo']:.2f}, {p['hi']:.2f}] | "
              f"{r['sentiment_if_pass']:.3f} | {k['mean']:.2f} ± {k['ci95']:.2f} | {r['words']['mean']:.1f} |")
    meta = {"args": vars(args), "seconds": time.perf_counter() - t0, "python": sys.version.split()[0],
            "machine": platform.platform(), "torch_threads": torch.get_num_threads()}
    (OUT_DIR / "cgpo.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
