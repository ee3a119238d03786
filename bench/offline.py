"""MODPO's front vs a sweep of scalarised DPO on the bundled SmolLM2-135M-Instruct (sentiment, length).

    python bench/offline.py                # reduced default: 48 prompts x 4 samples of pairs, 3 preferences x 24 steps (~15-20 min, 2 CPU cores)
    python bench/offline.py --full         # grid:5, 200 prompts x 6 samples, 200 steps x 8 pairs (hours on CPU; use a GPU)
    python bench/offline.py --model tiny --pair-prompts 8 --steps 2 --eval-prompts 4 --reps 1   # seconds, tests the script

The offline route of the issue, end to end, on the model we can run offline:

1. ``paretoalign pairs``: sample completions of the policy on the training prompts, score them
   with ``sentiment`` and ``length``, pair every two completions of a prompt (per-objective labels
   and per-response scores).  Done once; both methods train on this one dataset.
2. Two fronts at the same preference vectors, with the same number of updates of the same batch
   size, learning rate, β, LoRA and seed, through ``paretoalign front`` (ordinary run folders,
   evaluated on the same held-out prompts with the same decoding):
   - **scalarised DPO**: one DPO run per w on the labels of the scalarised score wᵀs;
   - **MODPO** (Zhou et al. 2023): DPO on the sentiment pairs with ``length`` as margin reward (the
     explicit scorer: the same signal the DPO labels come from), w_k = 0 vertex relabelled.
   Reported: hypervolume of each against one shared reference point, non-dominated points,
   training wall-clock.
3. **Per-step overhead of MODPO's margins vs plain DPO**, side by side in one process: one DPO
   trainer and two MODPO trainers on the same model and data, steps interleaved (round robin),
   medians of ``--reps`` repetitions.  MODPO's margins come (a) from the scorer and (b) from an
   implicit DPO reward β·log(π_adapter/π_ref), the paper's margin model, loaded as a frozen
   adapter on the policy's own base (the adapter is the DPO sweep's length vertex).  Margins are
   computed once per example and cached, so each MODPO step is timed with the cache cleared (the
   first epoch's cost, the worst case) and with it warm (every later epoch).

Prints markdown tables and writes bench/out/offline.json; the front folders go to bench/out/offline/.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"
OBJECTIVES = "sentiment,length"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--objectives", default=OBJECTIVES,
                   help="the two objectives (the first labels MODPO's pairs, the second is its margin)")
    p.add_argument("--prefs", default="grid:3", help="preference vectors (grid:N, random:N, or a list)")
    p.add_argument("--pair-prompts", type=int, default=48, help="training prompts sampled for pairs")
    p.add_argument("--samples", type=int, default=4, help="completions per prompt (all n(n-1)/2 pairs are kept)")
    p.add_argument("--tokens", type=int, default=32, help="max new tokens (pairs and evaluation)")
    p.add_argument("--steps", type=int, default=24, help="updates per point (both methods)")
    p.add_argument("--batch-size", type=int, default=4, help="pairs per update")
    p.add_argument("--lr", type=float, default=5e-4, help="LoRA learning rate")
    p.add_argument("--beta", type=float, default=0.1, help="DPO/MODPO beta")
    p.add_argument("--eval-prompts", type=int, default=32, help="held-out prompts per evaluation")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of the per-step comparison (after 1 warm-up)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full", action="store_true",
                   help="grid:5, 200 prompts x 6 samples, 48 tokens, 200 steps x 8 pairs, all held-out prompts")
    p.add_argument("--out", default=str(OUT_DIR / "offline"))
    p.add_argument("--json", default=str(OUT_DIR / "offline.json"), help="where the results JSON goes")
    p.add_argument("--resume", action="store_true", help="reuse the pairs and continue interrupted fronts in --out")
    a = p.parse_args(argv)
    from paretoalign.objectives.spec import split_objective_specs

    a.objectives = split_objective_specs(a.objectives)
    if len(a.objectives) != 2:
        p.error(f"--objectives needs exactly two objectives; got {a.objectives}")
    if a.full:
        a.prefs, a.pair_prompts, a.samples, a.tokens, a.steps, a.batch_size, a.eval_prompts = \
            "grid:5", 200, 6, 48, 200, 8, None
    return a


def make_pairs(a, out: Path) -> dict:
    from paretoalign.pairs import CARD_FILE, PairsConfig
    from paretoalign.pairs import make_pairs as _make

    folder = out / "pairs"
    if a.resume and (folder / CARD_FILE).is_file():
        return json.loads((folder / CARD_FILE).read_text())
    return _make(PairsConfig(model=a.model, objectives=a.objectives, max_prompts=a.pair_prompts, num_completions=a.samples,
                             pairing="all", max_new_tokens=a.tokens, seed=a.seed, output_dir=str(folder),
                             overwrite=True, progress=False, force=True))  # its table reports the untied counts


def train_options(a, out: Path) -> dict:
    from paretoalign.config_utils import config_to_dict
    from paretoalign.trainers.offline_config import OfflineConfig

    return config_to_dict(OfflineConfig(
        method="dpo", model=a.model, pairs=[str(out / "pairs")], objectives=a.objectives, beta=a.beta,
        max_steps=a.steps, batch_size=a.batch_size, max_response_length=a.tokens + 8, learning_rate=a.lr,
        seed=a.seed, save_steps=a.steps, progress=False,
    ))


def run_fronts(a, out: Path, train: dict) -> tuple[list[dict], dict]:
    from paretoalign.fronts.front import compare_fronts, load_front, write_outputs
    from paretoalign.fronts.sweep import FrontConfig, run_front
    from paretoalign.run_dir import read_metrics

    rows, fronts = [], []
    for i, m in enumerate(("dpo", "modpo")):
        folder = out / m
        fcfg = FrontConfig(method=[m], preferences=a.prefs, output_dir=str(folder), include_base=(i == 0),
                           eval_num_prompts=a.eval_prompts, eval_max_new_tokens=a.tokens, report=False,
                           resume=a.resume and folder.exists(), overwrite=not a.resume)
        t0 = time.perf_counter()
        run_front(fcfg, train, progress=lambda s: print(s, flush=True))
        wall = time.perf_counter() - t0
        front = load_front(folder)
        fronts.append(front)
        steps = [r["time_step"] for p in front["points"] for r in read_metrics(folder / p["run_dir"])]
        rows.append({"method": m, "wall_s": wall,
                     "train_s": sum(p.get("train_seconds") or 0 for p in front["points"]),
                     "step_s_median": statistics.median(steps) if steps else float("nan"),
                     "points": len(front["points"])})
    result = compare_fronts(fronts)
    (out / "comparison.json").write_text(json.dumps(result, indent=1, default=str))
    write_outputs(result, out, runs={f"{f['name']} {p['label']}": out / f["method"] / p["run_dir"]
                                     for f in result["fronts"] for p in f["points"]})
    for r, f in zip(rows, result["fronts"]):
        r["hypervolume"] = f["hypervolume"]
        r["non_dominated"] = sum(not p["dominated"] for p in f["points"])
        r["means"] = {p["label"]: p["mean"] for p in f["points"]}
        r["stderr"] = {p["label"]: p.get("stderr") for p in f["points"]}
    return rows, result


def length_adapter(out: Path) -> Path:
    """The DPO sweep's (0, 1) vertex: a LoRA adapter trained by DPO on the second objective's labels."""
    from paretoalign.fronts.front import load_front

    front = load_front(out / "dpo")
    for p in front["points"]:
        if p["preference"] == [0.0, 1.0]:
            return (out / "dpo" / p["run_dir"] / "final" / "policy").resolve()
    raise SystemExit("the DPO sweep has no (0, 1) point to serve as MODPO's implicit length reward; use --prefs grid:N")


def step_overhead(a, out: Path) -> dict:
    """Interleaved steps of DPO, MODPO (scorer margin) and MODPO (implicit-adapter margin)."""
    import torch

    from paretoalign.trainers.offline_config import OfflineConfig
    from paretoalign.trainers.offline_trainer import OfflineTrainer

    adapter = length_adapter(out)
    scratch = out / "overhead"
    shutil.rmtree(scratch, ignore_errors=True)
    common = dict(model=a.model, pairs=[str(out / "pairs")], beta=a.beta, max_steps=10_000, batch_size=a.batch_size,
                  max_response_length=a.tokens + 8, learning_rate=a.lr, seed=a.seed, progress=False)
    variants = {
        "dpo": dict(method="dpo", objectives=a.objectives, weights=[0.5, 0.5]),
        "modpo (scorer margin)": dict(method="modpo", objectives=a.objectives, weights=[0.5, 0.5]),
        "modpo (implicit-adapter margin)": dict(
            method="modpo", objectives=[a.objectives[0], f"implicit_dpo:{adapter}(name=margin_dpo,beta={a.beta})"],
            weights=[0.5, 0.5]),
    }
    trainers = {k: OfflineTrainer(OfflineConfig(**common, **v, output_dir=str(scratch / str(i))))
                for i, (k, v) in enumerate(variants.items())}
    times = {k: [] for k in trainers}
    times.update({f"{k}, margins cached": [] for k in trainers if k != "dpo"})
    margin_s = {k: [] for k in trainers if k != "dpo"}
    for rep in range(a.reps + 1):  # rep 0 warms up
        step = rep + 1
        for k, tr in trainers.items():
            tr._margin_cache.clear()
            torch.manual_seed(a.seed + rep)
            row = tr.step(step)
            if rep:
                times[k].append(row["time_step"])
                if k != "dpo":
                    margin_s[k].append(row["time_margins"])
            if k != "dpo":  # the same pairs again, margins now cached
                row = tr.step(step)
                if rep:
                    times[f"{k}, margins cached"].append(row["time_step"])
    med = {k: statistics.median(v) for k, v in times.items()}
    base = med["dpo"]
    rows = [{"variant": k, "step_s_median": m, "iqr": _iqr(times[k]), "ratio_vs_dpo": m / base,
             "margin_s_median": statistics.median(margin_s[k]) if k in margin_s else 0.0} for k, m in med.items()]
    shutil.rmtree(scratch, ignore_errors=True)
    return {"rows": rows, "adapter": str(adapter), "reps": a.reps}


def _iqr(v: list[float]) -> list[float]:
    if len(v) < 2:
        return [v[0], v[0]] if v else [float("nan")] * 2
    q = statistics.quantiles(v, n=4)
    return [q[0], q[2]]


def main(argv=None) -> dict:
    a = parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    card = make_pairs(a, out)
    pairs_s = time.perf_counter() - t0
    train = train_options(a, out)
    rows, result = run_fronts(a, out, train)
    over = step_overhead(a, out)

    names = result["names"]
    counts = card["label_counts"]
    print(f"\n## Offline front on {a.model}: MODPO vs scalarised DPO ({a.prefs}; {a.steps} updates x {a.batch_size} pairs, "
          f"lr {a.lr}, beta {a.beta})")
    print(f"pairs: {card['pairs']} from {card['prompts']['count']} prompts x {a.samples} samples, {a.tokens} tokens "
          f"({pairs_s:.0f} s); label ties: " + ", ".join(f"{n} {counts[n]['tie']}" for n in names))
    print(f"shared reference point ({', '.join(names)}): {', '.join(f'{x:.3f}' for x in result['reference_point'])}; "
          f"base model HV {result.get('base_hypervolume') or float('nan'):.4f}")
    print("\n| method | HV | non-dominated / points | train s (all points) | s per update (median) | wall s (train + eval) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['hypervolume']:.4f} | {r['non_dominated']}/{r['points']} | {r['train_s']:.0f} | "
              f"{r['step_s_median']:.2f} | {r['wall_s']:.0f} |")
    print("\nper point (held-out means ± standard error):")
    for r in rows:
        for lab, mean in r["means"].items():
            se = r["stderr"].get(lab) or [float("nan")] * len(mean)
            print(f"  {r['method']:6s} {lab:14s} " + "  ".join(f"{n} {v:.3f} ± {e:.3f}" for n, v, e in zip(names, mean, se)))
    if result.get("base"):
        print(f"  {'base':6s} {'':14s} " + "  ".join(f"{n} {v:.3f}" for n, v in zip(names, result["base"]["mean"])))
    print(f"\nper-update cost, interleaved, median of {a.reps} (IQR):")
    print("\n| variant | s per update | IQR | margins s | / DPO |")
    print("|---|---:|---:|---:|---:|")
    for r in over["rows"]:
        print(f"| {r['variant']} | {r['step_s_median']:.3f} | {r['iqr'][0]:.3f}–{r['iqr'][1]:.3f} | "
              f"{r['margin_s_median']:.3f} | {r['ratio_vs_dpo']:.2f} |")
    res = {"args": vars(a), "pairs": {k: card[k] for k in ("pairs", "samples", "label_counts")}, "pairs_s": pairs_s,
           "rows": rows, "reference_point": result["reference_point"], "base_hypervolume": result.get("base_hypervolume"),
           "overhead": over, "python": sys.version.split()[0], "machine": platform.machine(), "front_dir": str(out)}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2, default=float))
    print(f"\n-> {out}/report.html, {a.json}")
    return res


if __name__ == "__main__":
    main()
