"""Cost of computing the combiner weights: PAMA (K scalars) vs MGDA's min-norm (K gradients).

    python bench/combiners.py            # 5 repetitions, medians
    python bench/combiners.py --quick    # 2 repetitions
    python bench/combiners.py --reps 9

PAMA's weights come from K scalar terms in closed form (:func:`paretoalign.combiners.pama_weights`);
MGDA's need the K×K Gram matrix of K gradient vectors of dimension d (O(K²d)) and then a small
quadratic programme (:func:`paretoalign.combiners.min_norm_weights_from_gram`).  d is the number of
trainable LoRA parameters of SmolLM2-135M with paretoalign's default LoRA.  Only the weight
computation is timed here: producing the K per-objective gradients (K backward passes) is not,
and would add to MGDA's side.  Prints a markdown table and writes bench/out/combiners.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from paretoalign.combiners import gram_matrix, min_norm_weights_from_gram, pama_weights

KS = (2, 4, 8, 16, 32)

# SmolLM2-135M: 30 layers, hidden 576, intermediate 1536, k/v projection width 192 (3 KV heads of 64).
LAYERS, HIDDEN, INTERMEDIATE, KV_DIM, LORA_R = 30, 576, 1536, 192, 16


def lora_dim() -> int:
    """Trainable LoRA parameters: r·(in + out) per adapted linear layer, 7 per decoder layer."""
    shapes = {
        "q_proj": (HIDDEN, HIDDEN),
        "k_proj": (HIDDEN, KV_DIM),
        "v_proj": (HIDDEN, KV_DIM),
        "o_proj": (HIDDEN, HIDDEN),
        "gate_proj": (HIDDEN, INTERMEDIATE),
        "up_proj": (HIDDEN, INTERMEDIATE),
        "down_proj": (INTERMEDIATE, HIDDEN),
    }
    return LAYERS * LORA_R * sum(i + o for i, o in shapes.values())


def _median_time(fn, reps: int, inner: int = 1) -> float:
    """Median over ``reps`` of the mean time (seconds) of ``inner`` back-to-back calls."""
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner)
    return statistics.median(times)


def bench_weights(reps: int = 5, ks=KS, d: int | None = None, seed: int = 0) -> list[dict]:
    """One row per K: median seconds for PAMA's weights and for MGDA's (Gram + solve)."""
    d = lora_dim() if d is None else d
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for K in ks:
        terms = torch.randn(K, generator=gen)
        grads = torch.randn(K, d, generator=gen)  # float32, like the gradients of a float32 LoRA
        # all K use the same repetition count: the largest Gram matrix (K=32: 625 MB of float32
        # gradients, 10 GFLOP) takes about a second here, so no reduction is needed
        t_pama = _median_time(lambda t=terms: pama_weights(t), reps, inner=200)
        t_gram = _median_time(lambda g=grads: gram_matrix(g), reps)
        gram = gram_matrix(grads)
        t_solve = _median_time(lambda g=gram: min_norm_weights_from_gram(g), reps, inner=20)
        t_mgda = t_gram + t_solve
        rows.append(
            {
                "K": K,
                "d": d,
                "reps": reps,
                "pama_s": t_pama,
                "gram_s": t_gram,
                "solve_s": t_solve,
                "mgda_s": t_mgda,
                "ratio_mgda_over_pama": t_mgda / t_pama,
                "ratio_solve_over_pama": t_solve / t_pama,
            }
        )
        del grads
    return rows


# ---- full-step comparison -------------------------------------------------------------------
STEP_KS = (2, 4, 8)
STEP_METHODS = ("morlhf", "pama", "mgda-ub")


def step_objectives(k: int) -> list[str]:
    """sentiment and length, plus k-2 more length objectives at other scales (their scores only
    need to differ; the scoring itself is outside the timed region)."""
    extra = [f"length(name=len{i},scale={60 + 20 * i},unit=chars)" for i in range(k - 2)]
    return ["sentiment", "length", *extra]


def bench_step(model: str = "smollm2-135m-instruct", ks=STEP_KS, reps: int = 3, seed: int = 0) -> list[dict]:
    """Median time of one optimisation update (reference forward, policy forward with K value
    heads, advantages, the combiner, backward, optimiser step) of each method on the *same*
    scored batch, with LoRA.  Methods are interleaved round-robin so machine noise hits all alike.
    Generation is excluded: it is identical for every method."""
    import tempfile

    from paretoalign.models import load_causal_lm, load_tokenizer
    from paretoalign.objectives import build_objective_set
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    tok = load_tokenizer(model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rollout = None
        for k in ks:
            specs = step_objectives(k)
            trainers = {}
            for m in STEP_METHODS:
                cfg = OnlineConfig(method=m, model=model, objectives=specs, batch_size=4, num_generations=2,
                                   max_new_tokens=48, min_new_tokens=48, output_dir=f"{tmp}/{m}-{k}",
                                   progress=False, seed=seed)
                trainers[m] = OnlineTrainer(cfg, model=load_causal_lm(model, tok, seed=seed), tokenizer=tok)
            if rollout is None:  # one batch for every method and K
                torch.manual_seed(seed)
                rollout, _, _, _ = trainers["morlhf"].rollout(1)
            objectives = build_objective_set(specs, tok)
            scores, valid = objectives.rewards(rollout.prompt_texts, rollout.completions)
            times = {m: [] for m in STEP_METHODS}
            for m in STEP_METHODS:  # warm-up
                trainers[m].update(rollout, scores, valid)
            for _ in range(reps):
                for m in STEP_METHODS:
                    t0 = time.perf_counter()
                    trainers[m].update(rollout, scores, valid)
                    times[m].append(time.perf_counter() - t0)
            med = {m: statistics.median(v) for m, v in times.items()}
            rows.append({
                "K": k, "samples": int(rollout.input_ids.shape[0]),
                "tokens": int(rollout.completion_mask.sum()),
                **{f"{m}_s": med[m] for m in STEP_METHODS},
                "pama_over_morlhf": med["pama"] / med["morlhf"],
                "mgda_over_morlhf": med["mgda-ub"] / med["morlhf"],
                "mgda_over_pama": med["mgda-ub"] / med["pama"],
            })
            print(f"  K={k}: " + ", ".join(f"{m} {_fmt_time(med[m])}" for m in STEP_METHODS), flush=True)
    return rows


def step_table(rows: list[dict]) -> str:
    lines = [
        "| K | morlhf step | pama step | mgda-ub step | pama/morlhf | mgda-ub/morlhf | mgda-ub/pama |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['K']} | {_fmt_time(r['morlhf_s'])} | {_fmt_time(r['pama_s'])} | {_fmt_time(r['mgda-ub_s'])} "
            f"| {r['pama_over_morlhf']:.2f}× | {r['mgda_over_morlhf']:.2f}× | {r['mgda_over_pama']:.2f}× |"
        )
    return "\n".join(lines)


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| K | PAMA weights | MGDA Gram (K×K, d-dim) | MGDA solve | MGDA total | MGDA/PAMA | solve/PAMA |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['K']} | {_fmt_time(r['pama_s'])} | {_fmt_time(r['gram_s'])} | {_fmt_time(r['solve_s'])} "
            f"| {_fmt_time(r['mgda_s'])} | {r['ratio_mgda_over_pama']:,.0f}× | {r['ratio_solve_over_pama']:,.1f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=None, help="repetitions per timing (default 5; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help="2 repetitions instead of 5")
    parser.add_argument("--step-model", default="smollm2-135m-instruct",
                        help="model for the full-step comparison ('tiny' for a fast check)")
    parser.add_argument("--step-reps", type=int, default=None, help="repetitions of each full step (default 3; 1 with --quick)")
    parser.add_argument("--skip-step", action="store_true", help="only time the weight computation")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "out" / "combiners.json")
    args = parser.parse_args(argv)
    reps = args.reps if args.reps is not None else (2 if args.quick else 5)

    d = lora_dim()
    print(
        f"d = {LAYERS} layers · r={LORA_R} · Σ(in+out) over q,k,v,o,gate,up,down = {d:,} trainable LoRA "
        f"parameters (SmolLM2-135M)"
    )
    print(f"medians of {reps} repetitions; torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    rows = bench_weights(reps, d=d)
    print(markdown_table(rows))
    print(
        "\nPAMA: closed form on K scalars. MGDA: float64 Gram matrix of K float32 gradients (chunked), "
        "then Wolfe's exact min-norm solve (closed form for K=2). The K backward passes that produce "
        "MGDA's gradients are not included."
    )
    step_rows = []
    if not args.skip_step:
        step_reps = args.step_reps if args.step_reps is not None else (1 if args.quick else 3)
        print(f"\nFull update step on one fixed batch ({args.step_model}, LoRA, 4 prompts x 2 completions x 48 tokens), "
              f"medians of {step_reps}:")
        step_rows = bench_step(args.step_model, reps=step_reps)
        print(step_table(step_rows))
        print("\nIncluded: reference forward, policy forward (+K value heads), advantages, combiner "
              "(MGDA-UB: K backward passes to the last hidden states + Gram + solve), backward, "
              "optimiser step. Excluded: generation and scoring (identical for every method).")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": "python " + " ".join(["bench/combiners.py", *(argv if argv is not None else __import__("sys").argv[1:])]),
        "step_model": None if args.skip_step else args.step_model,
        "d": d,
        "reps": reps,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "processor": platform.processor(),
    }
    args.out.write_text(json.dumps({"meta": meta, "weights": rows, "step": step_rows}, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
