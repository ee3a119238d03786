"""Resident memory of one process that trains SmolLM2 PAMA runs one after another (as a `front` sweep does), with
``gc.collect()`` alone between runs and with :func:`paretoalign.models.release_memory` (``gc.collect()`` plus glibc's
``malloc_trim(0)``).

    .venv/bin/python bench/memory_release.py                 # 4 runs per mode, 1 step each; about 2 minutes
    .venv/bin/python bench/memory_release.py --model tiny    # fast check

Each mode runs in a child process of its own (so neither inherits the other's heap); each run loads the model,
trains ``--steps`` steps (LoRA, 4 prompts x 2 completions x 16 tokens) and is dropped; resident memory (``VmRSS``)
is read after each.  Prints a markdown table.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def child(model_name: str, runs: int, steps: int, release: bool) -> list[float]:
    import gc

    from paretoalign.models import load_causal_lm, load_tokenizer, release_memory
    from paretoalign.objectives import build_objective_set
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    tok = load_tokenizer(model_name)
    out = [rss_gib()]
    for i in range(runs):
        with tempfile.TemporaryDirectory() as d:
            cfg = OnlineConfig(method="pama", model=model_name, objectives=["sentiment", "length"], max_steps=steps,
                               batch_size=4, num_generations=2, max_new_tokens=16, output_dir=f"{d}/run",
                               progress=False, save_steps=10**6, seed=i)
            trainer = OnlineTrainer(cfg, model=load_causal_lm(model_name, tok, seed=i), tokenizer=tok,
                                    objectives=build_objective_set(cfg.objectives, tok))
            trainer.train()
            del trainer
        if release:
            release_memory()
        else:
            gc.collect()
        out.append(rss_gib())
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--runs", type=int, default=4)
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--child", choices=["gc", "release"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.model, args.runs, args.steps, args.child == "release")))
        return 0
    rows = {}
    for mode in ("gc", "release"):
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--model", args.model, "--runs",
                               str(args.runs), "--steps", str(args.steps)], capture_output=True, text=True)
        if proc.returncode:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        rows[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"resident memory (GiB) of one process, {args.model}, after each of {args.runs} PAMA runs of {args.steps} "
          "step(s)\n")
    print("| between runs | start | " + " | ".join(f"after run {i + 1}" for i in range(args.runs)) + " |")
    print("|---|" + "---:|" * (args.runs + 1))
    labels = {"gc": "`gc.collect()`", "release": "`release_memory()` (+ `malloc_trim(0)`)"}
    for mode, values in rows.items():
        print(f"| {labels[mode]} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
