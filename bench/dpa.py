"""Does one DPA model steer on the bundled SmolLM2-135M-Instruct?  Its front over directions.

    python bench/dpa.py                  # reduced default: 4 rounds x 16 prompts x 4 candidates, 5 directions (~15 min, 2 CPU cores)
    python bench/dpa.py --model tiny --rounds 1 --prompts-per-round 2 --eval-prompts 3 --tokens 6   # seconds, tests the script

DPA (Wang et al. 2024) trains ONE model with the direction in its system message; ``paretoalign
front --method dpa`` evaluates it at each preference's direction w/|w| on the same held-out prompts.
Objectives: sentiment and length (their scales differ, so the selection standardises each over a
prompt's candidates: ``--utility-normalization group``).  Reported: the held-out means at every
direction (with standard errors), the rank correlation between the direction's angle and each
objective (steering moves sentiment down and length up as the angle goes 0 -> 90 degrees), the
front's hypervolume against the base model's (one shared reference point), and the training time.

Prints markdown tables and writes bench/out/dpa.json; the front goes to bench/out/dpa/.
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


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--objectives", default="sentiment,length")
    p.add_argument("--prefs", default="grid:5")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--prompts-per-round", type=int, default=16)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4, help="LoRA learning rate")
    p.add_argument("--sft-epochs", type=int, default=2)
    p.add_argument("--angles", default=None, help="train on these directions only (degrees, e.g. 0,90); default: uniform in [0, 90]")
    p.add_argument("--eval-prompts", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT_DIR / "dpa"))
    p.add_argument("--json", default=str(OUT_DIR / "dpa.json"))
    p.add_argument("--resume", action="store_true", help="continue an interrupted benchmark in --out")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    import torch

    from paretoalign.config_utils import config_to_dict
    from paretoalign.fronts.sweep import FrontConfig, run_front
    from paretoalign.objectives.spec import split_objective_specs
    from paretoalign.reward_model.armo import spearman
    from paretoalign.trainers.dpa_config import DPAConfig

    a = parse_args(argv)
    out = Path(a.out)
    train = config_to_dict(DPAConfig(
        model=a.model, objectives=split_objective_specs(a.objectives), rounds=a.rounds, prompts_per_round=a.prompts_per_round,
        num_candidates=a.candidates, max_new_tokens=a.tokens, learning_rate=a.lr, sft_epochs=a.sft_epochs,
        utility_normalization="group", angles=a.angles, seed=a.seed, progress=False))
    fcfg = FrontConfig(method=["dpa"], preferences=a.prefs, output_dir=str(out), eval_num_prompts=a.eval_prompts,
                       eval_max_new_tokens=a.tokens, resume=a.resume and out.exists(), overwrite=not a.resume)
    t0 = time.perf_counter()
    front = run_front(fcfg, train, progress=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    names = front["names"]
    pts = sorted(front["points"], key=lambda p: math.atan2(p["preference"][1], p["preference"][0]))
    angles = torch.tensor([math.degrees(math.atan2(p["preference"][1], p["preference"][0])) for p in pts])
    corr = {n: spearman(angles, torch.tensor([p["mean"][k] for p in pts])) for k, n in enumerate(names)}
    train_s = sum(p.get("train_seconds") or 0 for p in pts)

    print(f"\n## DPA on {a.model}: one model, {len(pts)} directions ({a.rounds} rounds x {a.prompts_per_round} prompts x "
          f"{a.candidates} candidates, {a.tokens} tokens, lr {a.lr}, {a.sft_epochs} SFT epochs)")
    print("\n| direction (angle) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for ang, p in zip(angles.tolist(), pts):
        print(f"| {ang:.1f} | " + " | ".join(f"{m:.3f} ± {e:.3f}" for m, e in zip(p["mean"], p["stderr"])) + " |")
    if front.get("base"):
        print("| base model | " + " | ".join(f"{m:.3f} ± {e:.3f}" for m, e in zip(front["base"]["mean"], front["base"]["stderr"])) + " |")
    print("\nSpearman(angle, mean): " + ", ".join(f"{n} {c:+.2f}" for n, c in corr.items()))
    print(f"hypervolume: DPA front {front['hypervolume']:.4f}, base model {front.get('base_hypervolume') or float('nan'):.4f} "
          f"(reference point {', '.join(f'{x:.3f}' for x in front['reference_point'])})")
    print(f"training {train_s:.0f} s (one model), whole benchmark {wall:.0f} s")
    res = {"args": vars(a), "names": names, "angles": angles.tolist(), "means": [p["mean"] for p in pts],
           "stderr": [p["stderr"] for p in pts], "spearman_angle": corr, "hypervolume": front["hypervolume"],
           "base_hypervolume": front.get("base_hypervolume"), "reference_point": front["reference_point"],
           "train_s": train_s, "wall_s": wall, "python": sys.version.split()[0], "machine": platform.machine()}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2, default=float))
    print(f"\n-> {out}/report.html, {a.json}")
    return res


if __name__ == "__main__":
    main()
