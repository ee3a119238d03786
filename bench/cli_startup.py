"""How fast the command line answers: ``--help`` against ``python -c pass``, as ratios.

    .venv/bin/python bench/cli_startup.py                 # 15 repetitions, interleaved
    .venv/bin/python bench/cli_startup.py --reps 3        # fast check
    git worktree add /tmp/old 8a9f1d8 && .venv/bin/python bench/cli_startup.py --old-src /tmp/old/src   # before/after

Each repetition runs, in rotating order, fresh interpreters for: ``python -c pass`` (the floor: the
interpreter alone), ``python -c "import paretoalign"``, and ``python -m paretoalign.cli ... --help``
for the top level and each subcommand.  Wall time per process, median over the repetitions, and
the ratio to the floor.  The floor is measured in the same run because the machine is shared: an
absolute time says little, a ratio to the interpreter's own start-up says how much we add.
Writes bench/out/cli_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ["", "train", "evaluate", "front", "pairs", "reward-model", "demo", "generate", "chat", "merge", "serve"]


def cases(old_src: str | None) -> dict[str, tuple[list[str], dict]]:
    """name -> (argv, environment); ``old_src``: the same commands again from another checkout's src/."""
    py, env = sys.executable, dict(os.environ)
    out = {"python -c pass": ([py, "-c", "pass"], env), "import paretoalign": ([py, "-c", "import paretoalign"], env)}
    for tag, e in [("", env)] + ([(" (old)", {**env, "PYTHONPATH": old_src})] if old_src else []):
        for c in COMMANDS:
            name = f"paretoalign {c} --help".replace("  ", " ") + tag
            out[name] = ([py, "-m", "paretoalign.cli", *([c] if c else []), "--help"], e)
    return out


def measure(reps: int, old_src: str | None = None) -> dict[str, list[float]]:
    todo = cases(old_src)
    times: dict[str, list[float]] = {k: [] for k in todo}
    names = list(todo)
    for r in range(reps):
        for name in names[r % len(names):] + names[: r % len(names)]:  # rotate: drift hits every case alike
            t = time.perf_counter()
            argv, env = todo[name]
            # an old checkout's --help may fail (the top level's did): it is timed all the same
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t)
    return times


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--old-src", default=None, help="Another checkout's src/ folder: its --help timed alongside.")
    ap.add_argument("--out", default="bench/out/cli_startup.json")
    args = ap.parse_args(argv)
    times = measure(args.reps, args.old_src)
    floor = statistics.median(times["python -c pass"])
    rows = {k: {"median_s": statistics.median(v), "ratio_to_python": statistics.median(v) / floor} for k, v in times.items()}
    print("| command | median wall (s) | x `python -c pass` |\n|---|---:|---:|")
    for k, v in rows.items():
        print(f"| `{k}` | {v['median_s']:.3f} | {v['ratio_to_python']:.1f} |")
    result = {"reps": args.reps, "python": platform.python_version(), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
