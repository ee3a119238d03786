"""How long the SmolLM2 examples take: a few steps of each, timed, so example headers state measured times.

    .venv/bin/python bench/examples_time.py                      # 3 steps of each online/offline SmolLM2 example
    .venv/bin/python bench/examples_time.py --steps 2 --only pama_smollm2.yaml

Each example's config is run as written except ``--max-steps`` (``--steps``), a temporary
``--output-dir`` and no checkpoints in between; the step time is the median of the ``time_step``
column of ``metrics.jsonl`` after the first step (which pays one-off costs: packing the decoder,
allocating), and the full run's estimate is that times the example's own ``max_steps`` plus the
measured start-up (loading, the first step's extra).  Examples that need data made by another
command first (MODPO's pairs, DPA's reward model) are skipped when that data is absent, saying so.
Run on an idle machine: other jobs on the cores slow each step.  Writes bench/out/examples_time.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ["pama_smollm2.yaml", "morlhf_smollm2.yaml", "mgda_ub_smollm2.yaml", "modpo_smollm2.yaml"]
NEEDS = {"modpo_smollm2.yaml": "pairs", "dpa_smollm2.yaml": "objectives"}


def missing_data(cfg: dict, name: str) -> str | None:
    """What the example needs that is not there (relative paths are the repository's)."""
    if name == "modpo_smollm2.yaml":
        absent = [p for p in cfg.get("pairs", []) if not (ROOT / p).exists()]
        return f"pairs {absent} not made (see the example's header)" if absent else None
    return None


def time_example(name: str, steps: int) -> dict:
    path = ROOT / "examples" / name
    cfg = yaml.safe_load(path.read_text())
    why = missing_data(cfg, name)
    if why:
        return {"example": name, "skipped": why}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "paretoalign.cli", "train", "--config", str(path), "--max-steps", str(steps),
                        "--save-steps", str(steps), "--output-dir", str(out), "--progress", "false"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    step_times = [r["time_step"] for r in rows if r.get("time_step") is not None]
    per_step = statistics.median(step_times[1:] or step_times)
    startup = wall - per_step * len(step_times)
    full = int(cfg.get("max_steps", steps))
    return {"example": name, "steps_timed": len(step_times), "step_s": per_step, "step_times": step_times,
            "wall_s": wall, "startup_s": startup, "max_steps": full, "full_run_estimate_s": startup + per_step * full}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="Example file names (default: the SmolLM2 ones).")
    ap.add_argument("--out", default=str(ROOT / "bench/out/examples_time.json"))
    args = ap.parse_args(argv)
    results = [time_example(n, args.steps) for n in (args.only or EXAMPLES)]
    print("| example | s/step (median after the first) | start-up (s) | its max_steps | full run (est.) |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        if "skipped" in r:
            print(f"| `{r['example']}` | skipped: {r['skipped']} | | | |")
        else:
            print(f"| `{r['example']}` | {r['step_s']:.1f} | {r['startup_s']:.0f} | {r['max_steps']} | "
                  f"{r['full_run_estimate_s'] / 60:.1f} min |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"python": platform.python_version(), "results": results}, indent=2))
    return results


if __name__ == "__main__":
    main()
