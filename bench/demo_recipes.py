"""The demo under other recipes: ``paretoalign demo`` with the preference, KL coefficient and steps changed.

    .venv/bin/python bench/demo_recipes.py --seed 2 --weight 0.65 --out /tmp/demo-w065-s2
    .venv/bin/python bench/demo_recipes.py --seed 0 --weight 0.7 --steps 25 --out /tmp/demo-w07-s0

Runs :func:`paretoalign.demo.run_demo` (the demo's own code, evaluation and demo.json) with the recipe's
``weights`` set to (w, 1 - w) for (sentiment, concise) (0.5: the uniform preference, no weights) and its
``kl_coef`` replaced; prints each objective's paired difference and its size in standard errors.  Each
run is one row of BENCHMARKS.md "The demo".
"""

from __future__ import annotations

import argparse
import json
import sys

import paretoalign.demo as demo


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weight", type=float, default=0.75, help="sentiment's preference w (concise gets 1 - w)")
    p.add_argument("--kl", type=float, default=demo.RECIPE["kl_coef"], help="KL coefficient")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the demo's)")
    p.add_argument("--eval-samples", type=int, default=None, help="completions per held-out prompt (default: the demo's)")
    p.add_argument("--out", required=True, help="output folder (must not exist)")
    args = p.parse_args(argv)
    recipe = {k: v for k, v in demo.RECIPE.items() if k != "weights"}
    recipe["kl_coef"] = args.kl
    if args.weight != 0.5:
        recipe["weights"] = [args.weight, round(1 - args.weight, 6)]
    demo.RECIPE = recipe
    given = {k: v for k, v in (("steps", args.steps), ("eval_samples", args.eval_samples)) if v is not None}
    r = demo.run_demo(seed=args.seed, output_dir=args.out, samples=0, **given)
    print(json.dumps({"recipe": recipe, **given, "seed": args.seed, "wall_seconds": round(r["wall_seconds"]),
                      "s.e.": {k: round(abs(v["diff"]) / v["diff_se"], 1) for k, v in r["objectives"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
