"""PAMA vs MORLHF vs MGDA-UB fronts on the bundled SmolLM2-135M-Instruct: sentiment and length.

    python bench/smol_front.py                 # reduced default: 3 preferences x 8 steps per method (~15 min, 2 CPU cores)
    python bench/smol_front.py --quick         # smoke size (tiny steps; minutes)
    python bench/smol_front.py --full          # the full-size comparison (hours on CPU; use a GPU)
    python bench/smol_front.py --model tiny --steps 1 --prefs grid:2 --eval-prompts 4   # seconds, tests the script

Mirrors the PAMA paper's GPT-2 experiment (He & Maghsudi 2025, §5: sentiment and the clipped
length reward r = clip(len/140, 0.5, 1.5), KL 0.2, clip 0.2) on the model we can run offline.  Every
method trains one run per preference vector with the *same* steps, prompts per step, completions
per prompt, completion length, learning rate and seed, through ``paretoalign front`` (so each point
is an ordinary run folder, evaluated by ``paretoalign evaluate`` on the same held-out prompts with
the same decoding).  PAMA and MGDA-UB follow the preference through the scaled weight solve
(:func:`paretoalign.combiners.preference_scales`); MORLHF through linear weights.

Reported: each method's hypervolume against ONE shared reference point (automatic, printed),
its non-dominated points, its training wall-clock (sum over points, and seconds per step,
median), and the base model's hypervolume for scale.  Prints a markdown table and writes
bench/out/smol_front.json; the front folders (plots, report.html) go to bench/out/smol_front/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"
METHODS = ("pama", "morlhf", "mgda-ub")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--prefs", default="grid:3", help="preference vectors (grid:N, random:N, or a list)")
    p.add_argument("--steps", type=int, default=8, help="training steps per point")
    p.add_argument("--batch-size", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=2, help="completions per prompt")
    p.add_argument("--tokens", type=int, default=32, help="max new tokens (training and evaluation)")
    p.add_argument("--advantage", default="gae", choices=("gae", "group"),
                   help="gae: K value heads (the paper's PPO setting); group: critic-free group baselines")
    p.add_argument("--lr", type=float, default=3e-4, help="LoRA learning rate")
    p.add_argument("--kl", type=float, default=0.2, help="KL coefficient (paper: 0.2)")
    p.add_argument("--eval-prompts", type=int, default=32, help="held-out prompts per evaluation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="2 preferences x 2 steps, 16 tokens, 16 eval prompts")
    p.add_argument("--full", action="store_true",
                   help="grid:5, 100 steps, 8 prompts x 2 completions, 48 tokens, all 53 held-out prompts")
    p.add_argument("--out", default=str(OUT_DIR / "smol_front"))
    p.add_argument("--json", default=str(OUT_DIR / "smol_front.json"), help="where the results JSON goes")
    p.add_argument("--resume", action="store_true", help="continue an interrupted benchmark in --out")
    a = p.parse_args(argv)
    if a.quick:
        a.prefs, a.steps, a.tokens, a.eval_prompts = "grid:2", 2, 16, 16
    if a.full:
        a.prefs, a.steps, a.batch_size, a.generations, a.tokens, a.eval_prompts = "grid:5", 100, 8, 2, 48, None
    if a.advantage == "group" and a.generations < 2:
        p.error("--advantage group needs --generations >= 2")
    return a


def main(argv=None) -> dict:
    from paretoalign.config_utils import config_to_dict
    from paretoalign.fronts.front import compare_fronts, load_front, write_outputs
    from paretoalign.fronts.sweep import FrontConfig, run_front
    from paretoalign.run_dir import read_metrics
    from paretoalign.trainers.online_config import OnlineConfig

    a = parse_args(argv)
    out = Path(a.out)
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    train = config_to_dict(OnlineConfig(
        model=a.model, objectives=["sentiment", "length"], max_steps=a.steps, batch_size=a.batch_size,
        num_generations=a.generations, max_new_tokens=a.tokens, advantage=a.advantage, learning_rate=a.lr,
        kl_coef=a.kl, seed=a.seed, save_steps=max(1, a.steps // 2), progress=False,
    ))
    rows, fronts = [], []
    for i, m in enumerate(methods):
        fcfg = FrontConfig(method=[m], preferences=a.prefs, output_dir=str(out / m), include_base=(i == 0),
                           eval_num_prompts=a.eval_prompts, report=False, resume=a.resume and (out / m).exists())
        t0 = time.perf_counter()
        run_front(fcfg, train, progress=lambda s: print(s, flush=True))
        wall = time.perf_counter() - t0
        front = load_front(out / m)
        fronts.append(front)
        step_times = [r["time_step"] for p in front["points"] for r in read_metrics(out / m / p["run_dir"])]
        rows.append({"method": m, "wall_s": wall, "train_s": sum(p.get("train_seconds") or 0 for p in front["points"]),
                     "step_s_median": statistics.median(step_times) if step_times else float("nan"),
                     "points": len(front["points"])})
    result = compare_fronts(fronts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.json").write_text(json.dumps({k: v for k, v in result.items()}, indent=1, default=str))
    write_outputs(result, out, runs={f"{f['name']} {p['label']}": out / f["method"] / p["run_dir"]
                                     for f in result["fronts"] for p in f["points"]})
    for r, f in zip(rows, result["fronts"]):
        r["hypervolume"] = f["hypervolume"]
        r["non_dominated"] = sum(not p["dominated"] for p in f["points"])
        r["means"] = {p["label"]: p["mean"] for p in f["points"]}

    names = result["names"]
    ref = ", ".join(f"{x:.3f}" for x in result["reference_point"])
    print(f"\n## SmolLM2 front: {', '.join(methods)}  ({a.model}; {a.prefs}; {a.steps} steps x {a.batch_size} prompts x "
          f"{a.generations} completions, {a.tokens} tokens, advantage {a.advantage}, lr {a.lr}, KL {a.kl})")
    print(f"shared reference point ({', '.join(names)}): {ref}; base model HV {result.get('base_hypervolume', float('nan')):.4f}")
    base_hv = result.get("base_hypervolume") or float("nan")
    print("\n| method | HV | HV / base HV | non-dominated / points | train s (all points) | s per step (median) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["hypervolume"] / base_hv if base_hv and base_hv == base_hv and base_hv > 0 else float("nan")
        print(f"| {r['method']} | {r['hypervolume']:.4f} | {ratio:.2f} | {r['non_dominated']}/{r['points']} | "
              f"{r['train_s']:.0f} | {r['step_s_median']:.2f} |")
    print("\nper point (held-out means):")
    for r in rows:
        for lab, mean in r["means"].items():
            print(f"  {r['method']:8s} {lab:18s} " + "  ".join(f"{n} {v:.3f}" for n, v in zip(names, mean)))
    base = result.get("base")
    if base:
        print(f"  {'base':8s} {'':18s} " + "  ".join(f"{n} {v:.3f}" for n, v in zip(names, base["mean"])))
    res = {"args": vars(a), "rows": rows, "reference_point": result["reference_point"],
           "base_hypervolume": result.get("base_hypervolume"), "python": sys.version.split()[0],
           "machine": platform.machine(), "front_dir": str(out)}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2, default=float))
    print(f"\n-> {out}/report.html, {a.json}")
    return res


if __name__ == "__main__":
    main()
