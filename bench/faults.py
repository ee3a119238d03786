"""Fault injection: kill -9 a real ``paretoalign train`` at random moments, ``--resume`` it, and compare
the result with an uninterrupted run.

    .venv/bin/python bench/faults.py                         # 20 kills: pama on the tiny model, 8 steps, a checkpoint every 2 (~5 min, 2 CPU cores)
    .venv/bin/python bench/faults.py --kills 40 --seed 1     # more kills, other moments
    .venv/bin/python bench/faults.py --kills 2 --steps 4 --output /tmp/faults.json   # seconds: tests the script

What it does:

1. A **reference run**, uninterrupted: ``python -m paretoalign.cli train --model tiny --method pama
   --max-steps S --save-steps K ...`` in a subprocess.  Its timeline is recorded by polling the run
   folder: when ``config.yaml`` appears (the run has claimed its folder), when each metrics row,
   ``checkpoints/step-N.tmp``, ``checkpoints/step-N`` and ``final.tmp``/``final`` appear, and when
   the process exits.
2. **N trials**, each a fresh run folder with the same command, killed with SIGKILL once:
   - *timed* trials: at an offset drawn uniformly (``--seed``) from the reference's training window,
     from its first metrics row to the moment ``summary.json`` appeared (every later step, every
     checkpoint write and the final save), measured from the trial's own first metrics row.  The
     start-up before it (imports, model loading: several seconds, most of an uninterrupted run on the
     tiny model) is left out of this window: timing a kill from the process start would put most
     kills there, and its duration varies more between runs than the whole training lasts;
   - *targeted* trials (``--targeted`` of them, default a quarter), one target drawn at random:
     the moment a temporary folder the run writes appears (``checkpoints/step-N.tmp`` of any
     checkpoint, or ``final.tmp``), found by busy-polling (where the folder lived shorter than one
     poll, the kill comes the moment its complete version, ``step-N`` or ``final``, appears, and the
     trial is marked "missed"); or ``setup``: a uniform moment between the run claiming its folder
     (``config.yaml`` written) and its first metrics row (a kill before any checkpoint).
   Then the same command with ``--resume`` runs to completion (not killed).
3. **Comparison** with the reference: ``final/policy/adapter_model.safetensors`` tensor by tensor,
   bit for bit, and the ``metrics.jsonl`` rows (step numbers and every ``reward/*``, ``reward_std/*``
   value, exactly; timing fields differ and are ignored).

Each trial is classified:

| outcome | meaning |
|---|---|
| ``resumed-identical`` | resume exited 0; weights and metrics identical to the reference |
| ``fell-back-identical`` | as above, and the resume said it fell back from a damaged newest checkpoint |
| ``complete-at-kill`` | the kill came after ``final/`` was in place; resume refused (exit 2, nothing to do) and the folder matches the reference |
| ``refused`` | resume exited 2 for another reason (its error line is recorded) |
| ``mismatch`` | **bug**: resume exited 0 but the weights or a metrics value differ |
| ``lost-metrics-row`` | **bug**: a step's metrics row is missing or duplicated |
| ``crash`` | **bug**: resume exited with another status (a traceback) |
| ``finished-before-kill`` | the run ended before the kill landed (nothing tested) |

All subprocesses run with ``OMP_NUM_THREADS=1`` (results are bit-reproducible on one machine only
with a fixed thread count).  Prints a markdown table and writes the trials as JSON (``--output``,
default ``bench/out/faults.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = REPO / "bench" / "out" / "faults.json"
OBJECTIVES = "length(name=chars,scale=40,low=0,high=100),length(name=words,unit=words,scale=8,low=0,high=100,direction=minimize)"
FALLBACK = re.compile(r"newest valid|fall(s|ing)? back|older checkpoint", re.I)
BUGS = ("mismatch", "lost-metrics-row", "crash")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="trials: one kill -9 and one --resume each")
    p.add_argument("--targeted", type=float, default=0.25,
                   help="fraction of the trials killed the moment a checkpoint's or final's temporary folder appears")
    p.add_argument("--steps", type=int, default=8, help="--max-steps of every run")
    p.add_argument("--save-steps", type=int, default=2, help="--save-steps of every run")
    p.add_argument("--method", default="pama", help="online method (pama uses value heads: value_head.safetensors)")
    p.add_argument("--model", default="tiny")
    p.add_argument("--objectives", default=OBJECTIVES)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-generations", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--train-seed", type=int, default=0, help="--seed of the runs themselves")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--timeout", type=float, default=600, help="seconds before a run that does not finish is a failure")
    p.add_argument("--workdir", default=None, help="where the run folders go (default: a temporary folder, removed)")
    p.add_argument("--keep", action="store_true", help="keep the run folders (always kept when a trial shows a bug)")
    p.add_argument("--output", default=str(DEFAULT_OUTPUT), help="the results JSON")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# running paretoalign


def train_cmd(a, out: Path, resume: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "paretoalign.cli", "train", "--model", a.model, "--method", a.method,
           "--objectives", a.objectives, "--max-steps", str(a.steps), "--save-steps", str(a.save_steps),
           "--batch-size", str(a.batch_size), "--num-generations", str(a.num_generations),
           "--max-new-tokens", str(a.max_new_tokens), "--seed", str(a.train_seed), "--progress", "false",
           "--output-dir", str(out)]
    return cmd + (["--resume"] if resume else [])


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}


def spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    fh = open(log, "w")
    proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, env=env(), start_new_session=True)
    proc._log = fh  # noqa: SLF001 - closed by finish()
    return proc


def finish(proc: subprocess.Popen, timeout: float) -> int:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    proc._log.close()  # noqa: SLF001
    return rc


def ckpt_steps(a) -> list[int]:
    steps = list(range(a.save_steps, a.steps + 1, a.save_steps))
    return steps if steps and steps[-1] == a.steps else [*steps, a.steps]


def metrics_rows(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return fh.read().count(b"\n")
    except OSError:
        return 0


def events_of(out: Path, a) -> dict[str, Path]:
    """What to watch for in a run folder, in the order a run writes it."""
    ev = {"config.yaml": out / "config.yaml"}
    for s in ckpt_steps(a):
        ev[f"step-{s:06d}.tmp"] = out / "checkpoints" / f"step-{s:06d}.tmp"
        ev[f"step-{s:06d}"] = out / "checkpoints" / f"step-{s:06d}" / "trainer_state.json"
    ev["final.tmp"] = out / "final.tmp"
    ev["final"] = out / "final" / "paretoalign.json"
    ev["summary.json"] = out / "summary.json"
    return ev


def reference_run(a, out: Path, logs: Path) -> dict:
    """The uninterrupted run, with the moments (seconds after the anchor) at which its files appeared."""
    ev = events_of(out, a)
    seen: dict[str, float] = {}
    rows_at: list[float] = []
    t0 = time.perf_counter()
    proc = spawn(train_cmd(a, out), logs / "reference.log")
    while proc.poll() is None:
        now = time.perf_counter() - t0
        for name, path in ev.items():
            if name not in seen and os.path.exists(path):
                seen[name] = now
        if "config.yaml" in seen and len(rows_at) < metrics_rows(out / "metrics.jsonl"):
            rows_at.append(now)
        if time.perf_counter() - t0 > a.timeout:
            break
        time.sleep(0.0005)
    rc = finish(proc, a.timeout)
    end = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"the reference run failed (exit {rc}); see {logs / 'reference.log'}:\n"
                         + (logs / "reference.log").read_text()[-3000:])
    anchor = seen.get("config.yaml", 0.0)
    return {"seconds_total": end, "anchor_s": anchor, "window_s": end - anchor,
            "events_s": {k: round(v - anchor, 4) for k, v in seen.items()},
            "metrics_rows_s": [round(t - anchor, 4) for t in rows_at]}


# ---------------------------------------------------------------------------------------------
# one trial


def state_of(out: Path, a) -> dict:
    """What the killed run left: complete checkpoints, temporary folders, metrics rows."""
    ck = out / "checkpoints"
    names = sorted(p.name for p in ck.iterdir()) if ck.is_dir() else []
    return {
        "checkpoints": [n for n in names if n.startswith("step-") and not n.endswith(".tmp")
                        and (ck / n / "trainer_state.json").is_file()],
        "temporary": [f"checkpoints/{n}" for n in names if n.endswith((".tmp", ".old"))]
        + [n for n in ("final.tmp", "final.old") if (out / n).exists()],
        "final": (out / "final" / "paretoalign.json").is_file(),
        "summary": (out / "summary.json").is_file(),
        "metrics_lines": metrics_rows(out / "metrics.jsonl"),
    }


def wait_for(proc: subprocess.Popen, path: Path, timeout: float) -> bool:
    t0 = time.perf_counter()
    while proc.poll() is None:
        if os.path.exists(path):
            return True
        if time.perf_counter() - t0 > timeout:
            return False
        time.sleep(0.0005)
    return os.path.exists(path)


def busy_wait_for(proc: subprocess.Popen, paths: list[Path], timeout: float) -> str | None:
    """Spin until one of ``paths`` exists; returns which (None if the process ended first)."""
    t0 = time.perf_counter()
    exists = os.path.exists
    while proc.poll() is None:
        for p in paths:
            if exists(p):
                return str(p)
        if time.perf_counter() - t0 > timeout:
            return None
    return None


def kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def first_row(proc: subprocess.Popen, metrics: Path, timeout: float) -> bool:
    t0 = time.perf_counter()
    while proc.poll() is None:
        if metrics_rows(metrics) >= 1:
            return True
        if time.perf_counter() - t0 > timeout:
            return False
        time.sleep(0.0005)
    return False


def sleep_while_alive(proc: subprocess.Popen, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while proc.poll() is None and time.perf_counter() < end:
        time.sleep(0.0005)


def trial(a, i: int, plan: dict, work: Path, logs: Path) -> dict:
    out = work / f"trial-{i:03d}"
    rec = {"trial": i, **plan}
    t0 = time.perf_counter()
    proc = spawn(train_cmd(a, out), logs / f"trial-{i:03d}-killed.log")
    if not wait_for(proc, out / "config.yaml", a.timeout):
        finish(proc, a.timeout)
        rec.update(outcome="finished-before-kill", detail="the run ended before it claimed its folder")
        return rec
    landed = None
    if plan["kind"] == "timed":
        first_row(proc, out / "metrics.jsonl", a.timeout)
        sleep_while_alive(proc, plan["offset_s"])
    elif plan["target"] == "setup":
        sleep_while_alive(proc, plan["offset_s"])
    else:
        target = out / plan["target"]
        done = target.with_name(target.name[: -len(".tmp")])  # the name it is renamed to when complete
        landed = busy_wait_for(proc, [target, done], a.timeout)
        if landed == str(done):  # the temporary folder lived shorter than one poll: killed right after it
            landed = "missed (killed after it)"
    alive = proc.poll() is None
    if alive:
        kill(proc)
    rc_killed = finish(proc, a.timeout)
    rec["killed_at_s"] = round(time.perf_counter() - t0, 4)  # seconds after the process started
    rec["seen"] = landed
    rec["left"] = state_of(out, a)
    if not alive:
        rec.update(outcome="finished-before-kill", killed_exit=rc_killed)
        return rec
    rec["killed_exit"] = rc_killed

    res = subprocess.run(train_cmd(a, out, resume=True), capture_output=True, text=True, cwd=REPO, env=env(),
                         timeout=a.timeout)
    said = res.stdout + res.stderr
    (logs / f"trial-{i:03d}-resume.log").write_text(said)
    rec["resume_exit"] = res.returncode
    rec["resume_s"] = round(time.perf_counter() - t0, 2)
    notices = [ln for ln in said.splitlines() if ln.startswith("[paretoalign]") or ln.startswith("error:")]
    rec["resume_said"] = notices[:4]
    rec["fell_back"] = bool(FALLBACK.search(said))
    rec["resume_error"] = next((ln for ln in said.splitlines() if ln.startswith("error:")), None)
    return rec


# ---------------------------------------------------------------------------------------------
# comparing with the reference


def adapter(out: Path) -> dict | None:
    from safetensors.torch import load_file

    f = out / "final" / "policy" / "adapter_model.safetensors"
    if not f.is_file():
        f = out / "final" / "policy" / "model.safetensors"
    return load_file(f) if f.is_file() else None


def weights_equal(a: dict | None, b: dict | None) -> tuple[bool, str]:
    if a is None or b is None:
        return False, "no final weights"
    if a.keys() != b.keys():
        return False, f"different tensors: {sorted(set(a) ^ set(b))[:3]}"
    for k in a:
        if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype or not bool((a[k] == b[k]).all()):
            diff = float((a[k].float() - b[k].float()).abs().max()) if a[k].shape == b[k].shape else float("nan")
            return False, f"{k} differs (max abs diff {diff:.3g})"
    return True, ""


def metric_rows(out: Path) -> list[dict]:
    from paretoalign import run_dir

    return run_dir.read_metrics(out)


def compared_fields(row: dict) -> dict:
    return {k: v for k, v in row.items() if k == "step" or k.startswith(("reward/", "reward_std/"))}


def compare(ref_rows: list[dict], ref_w: dict, out: Path) -> dict:
    rows = metric_rows(out)
    steps, ref_steps = [r.get("step") for r in rows], [r["step"] for r in ref_rows]
    same_w, why = weights_equal(ref_w, adapter(out))
    values_equal = steps == ref_steps and all(compared_fields(x) == compared_fields(y) for x, y in zip(rows, ref_rows))
    first_diff = None
    if steps == ref_steps and not values_equal:
        for x, y in zip(rows, ref_rows):
            if compared_fields(x) != compared_fields(y):
                first_diff = {"step": x.get("step"), "ran": compared_fields(x), "reference": compared_fields(y)}
                break
    return {"steps": steps, "steps_ok": steps == ref_steps, "metrics_equal": values_equal, "weights_equal": same_w,
            "weights_detail": why, "first_metrics_diff": first_diff}


def classify(rec: dict, cmp: dict | None) -> str:
    if rec.get("outcome"):
        return rec["outcome"]
    rc = rec["resume_exit"]
    if rc == 2:
        if rec["left"]["final"] and cmp and cmp["steps_ok"] and cmp["metrics_equal"] and cmp["weights_equal"]:
            return "complete-at-kill"
        return "refused"
    if rc != 0:
        return "crash"
    if not cmp["steps_ok"]:
        return "lost-metrics-row"
    if not (cmp["weights_equal"] and cmp["metrics_equal"]):
        return "mismatch"
    return "fell-back-identical" if rec["fell_back"] else "resumed-identical"


# ---------------------------------------------------------------------------------------------


def plan_trials(a, ref: dict) -> list[dict]:
    rng = random.Random(a.seed)
    n_targeted = round(a.kills * a.targeted)
    ev = ref["events_s"]
    rows = ref["metrics_rows_s"]
    first = rows[0] if rows else 0.0
    end = ev.get("summary.json", ref["window_s"])
    window = max(end - first, 0.0)
    targets = [f"checkpoints/step-{s:06d}.tmp" for s in ckpt_steps(a)] + ["final.tmp", "setup"]
    plans = [{"kind": "timed", "offset_s": round(rng.uniform(0.0, window), 4)} for _ in range(a.kills - n_targeted)]
    for _ in range(n_targeted):
        t = rng.choice(targets)
        plans.append({"kind": "targeted", "target": t, **({"offset_s": round(rng.uniform(0.0, first), 4)}
                                                          if t == "setup" else {})})
    rng.shuffle(plans)
    return plans


def describe_kill(plan: dict) -> str:
    if plan["kind"] == "timed":
        return f"first row +{plan['offset_s']:.2f} s"
    if plan["target"] == "setup":
        return f"setup, claim +{plan['offset_s']:.2f} s"
    return f"at {plan['target']}"


def phase_of(rec: dict) -> str:
    """Where the kill landed, from what the run left behind."""
    left = rec.get("left")
    if not left:
        return "-"
    if left["temporary"]:
        return "writing " + ", ".join(left["temporary"])
    if left["summary"]:
        return "after summary.json"
    if left["final"]:
        return "final/ written"
    last = left["checkpoints"][-1] if left["checkpoints"] else "no checkpoint"
    return f"training ({left['metrics_lines']} rows; {last})"


def main(argv=None) -> dict:
    a = parse_args(argv)
    if a.kills < 1 or a.steps < 1 or a.save_steps < 1:
        raise SystemExit("--kills, --steps and --save-steps must be >= 1")
    work = Path(a.workdir) if a.workdir else Path(tempfile.mkdtemp(prefix="paretoalign-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    ref_out = work / "reference"
    if ref_out.exists():
        shutil.rmtree(ref_out)
    print(f"[faults] reference run -> {ref_out}", flush=True)
    ref = reference_run(a, ref_out, logs)
    ref_rows = metric_rows(ref_out)
    ref_w = adapter(ref_out)
    rows_s = ref["metrics_rows_s"]
    print(f"[faults] reference: {ref['seconds_total']:.1f} s in all; after it claimed its folder (s): first metrics row "
          f"{rows_s[0] if rows_s else float('nan'):.2f}, " + ", ".join(f"{k} {v:.2f}" for k, v in ref["events_s"].items()
                                                                  if k != "config.yaml"), flush=True)

    trials = []
    for i, plan in enumerate(plan_trials(a, ref)):
        rec = trial(a, i, plan, work, logs)
        out = work / f"trial-{i:03d}"
        cmp = compare(ref_rows, ref_w, out) if "resume_exit" in rec else None
        rec["comparison"] = cmp
        rec["outcome"] = classify(rec, cmp)
        rec["phase"] = phase_of(rec)
        trials.append(rec)
        what = describe_kill(plan)
        print(f"[faults] trial {i + 1}/{a.kills}: {plan['kind']} {what}: {rec['phase']} -> {rec['outcome']}", flush=True)
        if rec["outcome"] not in BUGS and not a.keep:
            shutil.rmtree(out, ignore_errors=True)

    counts: dict[str, int] = {}
    for t in trials:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    print(f"\n## kill -9 during `paretoalign train --method {a.method} --model {a.model} --max-steps {a.steps} "
          f"--save-steps {a.save_steps}`, then --resume ({a.kills} trials, seed {a.seed})\n")
    print("| # | kill | where it landed | resume exit | outcome | note |")
    print("|---:|---|---|---:|---|---|")
    for t in trials:
        kill_s = describe_kill(t) + (" (missed)" if str(t.get("seen", "")).startswith("missed") else "")
        note = t.get("resume_error") or ""
        if t.get("fell_back"):
            note = next((s for s in t.get("resume_said", []) if FALLBACK.search(s)), "fell back")
        c = t.get("comparison") or {}
        if t["outcome"] in BUGS:
            note = c.get("weights_detail") or (f"steps {c.get('steps')}" if not c.get("steps_ok") else "metrics differ")
            note = note or (t.get("resume_said") or [""])[-1]
        note = note.replace("|", "/")[:110]
        print(f"| {t['trial']} | {kill_s} | {t['phase']} | {t.get('resume_exit', '-')} | {t['outcome']} | {note} |")
    print("\n| outcome | trials |\n|---|---:|")
    for k in ("resumed-identical", "fell-back-identical", "complete-at-kill", "refused", "finished-before-kill",
              *BUGS):
        if counts.get(k):
            print(f"| {k}{' (bug)' if k in BUGS else ''} | {counts[k]} |")
    bugs = sum(counts.get(k, 0) for k in BUGS)
    print(f"\n{bugs} trial(s) show a bug" + (f"; their run folders are kept in {work}" if bugs else ""))

    res = {"args": vars(a), "reference": ref, "reference_steps": [r["step"] for r in ref_rows], "counts": counts,
           "bugs": bugs, "trials": trials, "workdir": str(work), "python": sys.version.split()[0],
           "machine": platform.machine()}
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(res, indent=2, default=str))
    print(f"-> {a.output}")
    if not a.workdir and not a.keep and not bugs:
        shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
