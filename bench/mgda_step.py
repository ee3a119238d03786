"""Online update-step time: MORLHF vs MGDA-UB (one-backward Gram) vs MGDA-UB (K-backward Gram), K = 2, 4, 8.

    .venv/bin/python bench/mgda_step.py                              # SmolLM2-135M-Instruct, 2 prompts x 2, 24 tokens, 1 warm-up + 3 reps
    .venv/bin/python bench/mgda_step.py --model tiny --reps 2 --ks 2 3 # fast check (random 2-layer model)

MGDA-UB needs the Gram matrix G_ij = <g_i, g_j> of the K per-objective gradients w.r.t. the last
hidden states.  ``gram="per_objective"`` (the reference) takes K backward passes through the LM
head; ``gram="factored"`` (the default, :func:`paretoalign.losses.online.mgda_gram_from_token_factors`)
gets the same matrix, exactly, from one backward: G_ij = sum_t a_it a_jt ||v_t||^2.

For each K, three trainers (``OnlineTrainer`` with the same copy of ``--model``, the same seed and
default options: LoRA r=16, GAE with K value heads, kl_coef 0.2 so each step has a reference
forward, one PPO pass) are built; ONE rollout is generated (``--prompts`` x ``--generations``
completions of exactly ``--tokens`` tokens) and scored by K cheap rule objectives with distinct
names (``length`` and ``sentiment`` variants); then ``OnlineTrainer.update`` on that fixed batch
is timed for each trainer, interleaved (the order rotates each repetition).  **Generation and
scoring are excluded**: what is timed is the optimisation part of a step (reference forward,
policy forward, advantages, the combiner incl. MGDA's Gram backward passes, backward, grad clip,
AdamW, metrics) - the part the Gram computation changes.  ``combiner`` is the time inside the
trainer's ``_policy_loss`` (for MGDA-UB: surrogate, Gram backward passes, min-norm solve).

Prints a markdown table (medians over ``--reps``) with the ratios MGDA-UB / MORLHF and writes
bench/out/mgda_step.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
PROMPTS = [
    "Write a short note to a friend about the weekend.",
    "Describe your favourite place in two sentences.",
    "Give one tip for learning a new language.",
    "What makes a good cup of tea?",
]
# (label, method, MGDA gram)
VARIANTS = (("MORLHF", "morlhf", None), ("MGDA-UB", "mgda-ub", "factored"),
            ("MGDA-UB per_objective", "mgda-ub", "per_objective"))


def objective_specs(k: int) -> list[str]:
    """K cheap rule objectives with distinct names: length variants (chars/words, various scales) and sentiment."""
    specs = ["sentiment(name=sent0)"]
    for i in range(1, k):
        if i % 3 == 0:
            specs.append(f"sentiment(name=sent{i})")
        else:
            unit = "words" if i % 2 else "chars"
            specs.append(f"length(name=len{i},unit={unit},scale={10 * i},low=0,high={40 * i})")
    return specs[:k]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="smollm2-135m-instruct (default) or tiny")
    p.add_argument("--ks", type=int, nargs="+", default=[2, 4, 8], help="numbers of objectives")
    p.add_argument("--reps", type=int, default=3, help="timed updates per trainer (medians)")
    p.add_argument("--warmup", type=int, default=1, help="discarded updates per trainer")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--generations", type=int, default=2, help="completions per prompt")
    p.add_argument("--tokens", type=int, default=24, help="completion length (forced: min = max new tokens)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--out", default=str(OUT_DIR / "mgda_step.json"))
    return p.parse_args(argv)


def _timed_policy_loss(trainer, sink: list):
    real = trainer._policy_loss

    def wrapped(*a, **kw):
        t0 = time.perf_counter()
        out = real(*a, **kw)
        sink.append(time.perf_counter() - t0)
        return out

    trainer._policy_loss = wrapped


def bench_k(k: int, base, tokenizer, args, tmp: Path) -> dict:
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    specs = objective_specs(k)
    trainers, combiner = {}, {}
    for label, method, gram in VARIANTS:
        cfg = OnlineConfig(
            model=args.model, objectives=specs, method=method, batch_size=args.prompts,
            num_generations=args.generations, max_new_tokens=args.tokens, min_new_tokens=args.tokens,
            max_prompt_length=64, seed=args.seed, progress=False,
            output_dir=str(tmp / f"k{k}-{method}-{gram}"),
        )
        tr = OnlineTrainer(cfg, model=copy.deepcopy(base), tokenizer=tokenizer, prompts=PROMPTS[: max(args.prompts, 1)])
        if gram is not None:
            tr.mgda_gram = gram
        combiner[label] = []
        _timed_policy_loss(tr, combiner[label])
        trainers[label] = tr
    first = next(iter(trainers.values()))
    rollout, scores, valid, t_gen = first.rollout(1)
    times = {label: [] for label in trainers}
    labels = list(trainers)
    for rep in range(args.warmup + args.reps):
        order = labels[rep % len(labels):] + labels[: rep % len(labels)]
        for label in order:
            t0 = time.perf_counter()
            trainers[label].update(rollout, scores, valid)
            dt = time.perf_counter() - t0
            if rep >= args.warmup:
                times[label].append(dt)
            else:
                combiner[label].clear()
    row = {"k": k, "objectives": specs, "generate_seconds_excluded": t_gen,
           "tokens": int(rollout.completion_mask.sum())}
    for label in labels:
        row[label] = {"median": statistics.median(times[label]), "times": times[label],
                      "median_combiner": statistics.median(combiner[label][-args.reps:])}
    m = row["MORLHF"]["median"]
    row["ratio_mgda_over_morlhf"] = row["MGDA-UB"]["median"] / m
    row["ratio_mgda_per_objective_over_morlhf"] = row["MGDA-UB per_objective"]["median"] / m
    row["ratio_mgda_over_per_objective"] = row["MGDA-UB"]["median"] / row["MGDA-UB per_objective"]["median"]
    return row


def table(rows: list[dict], args) -> str:
    lines = [
        f"model {args.model}, {args.prompts} prompts x {args.generations} completions x {args.tokens} tokens, "
        f"update step only (generation excluded), medians of {args.reps} (after {args.warmup} warm-up), "
        f"{torch.get_num_threads()} torch threads",
        "",
        "| K | MORLHF s | MGDA-UB s (one backward) | MGDA-UB s (K backwards) | MGDA-UB/MORLHF | "
        "per_objective/MORLHF | one/K backwards | combiner s: MORLHF / MGDA-UB / per_objective |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        c = [r[lab]["median_combiner"] for lab, _, _ in VARIANTS]
        lines.append(
            f"| {r['k']} | {r['MORLHF']['median']:.3f} | {r['MGDA-UB']['median']:.3f} | "
            f"{r['MGDA-UB per_objective']['median']:.3f} | {r['ratio_mgda_over_morlhf']:.3f} | "
            f"{r['ratio_mgda_per_objective_over_morlhf']:.3f} | {r['ratio_mgda_over_per_objective']:.3f} | "
            f"{c[0]:.4f} / {c[1]:.4f} / {c[2]:.4f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict:
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    from paretoalign.models import load_causal_lm, load_tokenizer

    t_start = time.perf_counter()
    tokenizer = load_tokenizer(args.model)
    tokenizer.padding_side = "left"
    torch.manual_seed(args.seed)
    base = load_causal_lm(args.model, tokenizer, args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.ks:
            print(f"[mgda_step] K={k} ...", flush=True)
            rows.append(bench_k(k, base, tokenizer, args, Path(tmp)))
    res = {"rows": rows, "config": vars(args)}
    res["environment"] = {
        "python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(),
        "seconds_total": time.perf_counter() - t_start,
    }
    res["included"] = ("OnlineTrainer.update on one fixed scored rollout: reference forward, policy forward, advantages, "
                       "combiner (MGDA's Gram backward passes), backward, grad clip, AdamW step, metrics; "
                       "generation and scoring excluded")
    text = table(rows, args)
    print()
    print(text)
    res["table"] = text
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float))
    print(f"\n[mgda_step] wrote {out}")
    return res


if __name__ == "__main__":
    main()
