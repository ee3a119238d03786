"""The PAMA paper's table, small: PAMA vs MORLHF vs MGDA-UB on SmolLM2, sentiment + length, several seeds.

    .venv/bin/python bench/pama_table.py                 # 2-core size: 4 variants x 3 seeds, ~60 min
    .venv/bin/python bench/pama_table.py --full          # GPU size (longer runs, longer completions)
    .venv/bin/python bench/pama_table.py --model tiny --seeds 0 --steps 1 --batch-size 2 --tokens 4   # seconds

He & Maghsudi (PAMA, ECML/PKDD 2025, §5) train GPT-2 on IMDb prompts with a sentiment classifier
and the clipped length reward r = clip(len/140, 0.5, 1.5), KL 0.2, clip 0.2, and report test-set
means with MGDA-UB < MORLHF < PAMA on both objectives (sentiment 1.47 / 1.62 / 2.32, length
1.19 / 1.23 / 1.42).  Here: SmolLM2-135M-Instruct + LoRA, VADER sentiment and the same length
reward (characters), the built-in prompts split 60/40 so that the held-out part has >= 128
prompts, every variant with the same steps, batch, completions, length, learning rate and seed:

* ``PAMA (paper)`` - the demo's ``--paper`` reading (``paretoalign.demo.PAPER``): K value heads + GAE,
  Theorem-1 weights per batch, ratio vs the reference, Noon-PPO, KL 0.2;
* ``PAMA (demo)`` - the demo's variant (``paretoalign.demo.RECIPE``, taken from there so the two cannot
  drift apart): group baselines, weights per completion, PPO ratio, no Noon, KL 0.1; at the equal
  preference the paper compares methods at (the demo itself tilts 0.75/0.25 toward sentiment);
* ``MORLHF`` - equal linear weights, K value heads + GAE, KL 0.2;
* ``MGDA-UB`` - min-norm weights on last-hidden-state gradients, K value heads + GAE, KL 0.2.

Each trained policy and the base model answer every held-out prompt once with the same decoding
seed.  Reported per variant: the mean over seeds of the held-out mean of each objective, with a
95 % t-interval over seeds, and its mean paired difference from the base model (pooled over
seeds x prompts) with a 95 % interval; then whether the paper's ordering PAMA > MORLHF > MGDA-UB
holds on both objectives, for each PAMA variant.  Prints a markdown table and writes
bench/out/pama_table.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

from paretoalign import demo  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
OBJECTIVES = ["sentiment", "length"]
# the demo's two PAMA readings, minus its 0.75/0.25 tilt (equal preference here, as the paper compares)
VARIANTS = {
    "PAMA (paper)": dict(method="pama", **{k: v for k, v in demo.PAPER.items() if k != "weights"}),
    "PAMA (demo)": dict(method="pama", **{k: v for k, v in demo.RECIPE.items() if k != "weights"}),
    "MORLHF": dict(method="morlhf", advantage="gae", kl_coef=0.2),
    "MGDA-UB": dict(method="mgda-ub", advantage="gae", kl_coef=0.2),
}
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
Z95 = 1.959963984540054


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8, help="prompts per step")
    p.add_argument("--generations", type=int, default=4, help="completions per prompt")
    p.add_argument("--tokens", type=int, default=40, help="max new tokens (training and evaluation)")
    p.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate (all variants)")
    p.add_argument("--heldout-fraction", type=float, default=0.4, help="of the built-in prompts (0.4: 142 held out)")
    p.add_argument("--full", action="store_true", help="GPU size: 200 steps x 16 prompts x 4, 64 tokens, 5 seeds")
    p.add_argument("--out", default=str(OUT_DIR / "pama_table.json"))
    args = p.parse_args(argv)
    if args.full:
        args.steps, args.batch_size, args.tokens, args.seeds = 200, 16, 64, [0, 1, 2, 3, 4]
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return args


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval (nan for one value)."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, float("nan")
    return m, T95.get(len(values) - 1, 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def run(args) -> dict:
    import torch

    from paretoalign.data.prompts import builtin_prompts, split_prompts
    from paretoalign.evaluation import evaluate_policy
    from paretoalign.models import (
        build_tiny_model,
        build_tiny_tokenizer,
        load_causal_lm,
        load_tokenizer,
        release_memory,
    )
    from paretoalign.objectives import build_objective_set
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    tiny = args.model == "tiny"
    tok = build_tiny_tokenizer() if tiny else load_tokenizer(args.model)
    objectives = build_objective_set(OBJECTIVES, tok)
    train, heldout = split_prompts(builtin_prompts("all"), args.heldout_fraction, seed=0)
    eval_kw = dict(max_new_tokens=args.tokens, seed=1234)
    scores: dict[str, dict[int, list]] = {v: {} for v in ["base", *args.variants]}
    seconds: dict[str, list[float]] = {v: [] for v in args.variants}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            base = build_tiny_model(tok, seed=seed) if tiny else load_causal_lm(args.model, tok, seed=seed)
            if seed == args.seeds[0] or tiny:
                base_eval = evaluate_policy(base, tok, heldout, objectives, **eval_kw)["scores"]
            scores["base"][seed] = base_eval  # the base model does not depend on the training seed
            for name in args.variants:
                print(f"[pama_table] seed {seed}: {name} ...", file=sys.stderr, flush=True)
                cfg = OnlineConfig(model="tiny" if tiny else args.model, objectives=OBJECTIVES, max_steps=args.steps,
                                   batch_size=args.batch_size, num_generations=args.generations,
                                   max_new_tokens=args.tokens, learning_rate=args.lr, seed=seed, progress=False,
                                   save_steps=args.steps, output_dir=str(Path(tmp) / f"{name}-{seed}".replace(" ", "_")),
                                   **VARIANTS[name])
                t = time.perf_counter()
                trainer = OnlineTrainer(cfg, model=copy.deepcopy(base), tokenizer=tok, objectives=objectives,
                                        prompts=train)
                trainer.train()
                seconds[name].append(time.perf_counter() - t)
                scores[name][seed] = evaluate_policy(trainer.unwrapped.policy, tok, heldout, objectives, **eval_kw)["scores"]
                del trainer
                release_memory()  # glibc keeps a dropped trainer's heap otherwise (bench/memory_release.py)
            del base
    names = list(objectives.names)
    rows = {}
    for v in ["base", *args.variants]:
        per_seed = {s: torch.tensor(sc, dtype=torch.float64) for s, sc in scores[v].items()}
        row = {}
        for k, obj in enumerate(names):
            m, h = mean_ci([float(x[:, k].mean()) for x in per_seed.values()])
            row[obj] = {"mean": m, "ci95": h, "per_seed": [float(x[:, k].mean()) for x in per_seed.values()]}
            if v != "base":
                d = torch.cat([per_seed[s][:, k] - torch.tensor(scores["base"][s], dtype=torch.float64)[:, k]
                               for s in per_seed])
                se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else float("nan")
                row[obj].update(diff_vs_base=float(d.mean()), diff_ci95=Z95 * se)
        if v != "base":
            row["train_seconds_median"] = statistics.median(seconds[v])
        rows[v] = row
    ordering = {}
    for pama in [v for v in args.variants if v.startswith("PAMA")]:
        if {"MORLHF", "MGDA-UB"} <= set(args.variants):
            ordering[pama] = {obj: rows[pama][obj]["mean"] > rows["MORLHF"][obj]["mean"] > rows["MGDA-UB"][obj]["mean"]
                              for obj in names}
    return {"rows": rows, "ordering": ordering, "objectives": names, "heldout_prompts": len(heldout),
            "train_prompts": len(train)}


def table(res: dict, args) -> str:
    names = res["objectives"]
    head = "| variant | " + " | ".join(f"{n} (mean ± 95% CI over seeds) | {n} vs base (paired, 95% CI)" for n in names) \
        + " | train s/run |"
    lines = [f"SmolLM2 ({args.model}) + LoRA, {len(args.seeds)} seeds x {args.steps} steps x {args.batch_size} prompts x "
             f"{args.generations} completions, {args.tokens} tokens, lr {args.lr}; {res['heldout_prompts']} held-out prompts.",
             "", head, "|---|" + "---:|---:|" * len(names) + "---:|"]
    for v, row in res["rows"].items():
        cells = []
        for n in names:
            c = row[n]
            cells.append(f"{c['mean']:.3f} ± {c['ci95']:.3f}")
            cells.append(f"{c['diff_vs_base']:+.3f} ± {c['diff_ci95']:.3f}" if "diff_vs_base" in c else "-")
        secs = f"{row['train_seconds_median']:.0f}" if "train_seconds_median" in row else "-"
        lines.append(f"| {v} | " + " | ".join(cells) + f" | {secs} |")
    for pama, holds in res["ordering"].items():
        verdict = ", ".join(f"{obj}: {'holds' if ok else 'does not hold'}" for obj, ok in holds.items())
        lines.append(f"\nPaper's ordering {pama} > MORLHF > MGDA-UB (means): {verdict}.")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    t = time.perf_counter()
    res = run(args)
    res["table"] = table(res, args)
    res["command"] = "bench/pama_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
    res["wall_seconds"] = time.perf_counter() - t
    print(res["table"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
