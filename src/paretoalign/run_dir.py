"""The run folder: everything a later command needs, in one directory.

Layout::

    RUN/
      config.yaml            resolved configuration (what was actually run)
      objectives.json        the objectives' descriptions (name, direction, bounds, spec)
      metrics.jsonl          one JSON object per step (rewards per objective, weights, KL, loss...)
      checkpoints/step-000010/
          policy/            save_pretrained of the adapter (LoRA) or the full model
          value_head.safetensors
          optimizer.pt
          rng_state_<rank>.pt
          trainer_state.json written last: a checkpoint without it is incomplete and ignored
      final/                 the trained policy (from_pretrained / PEFT), tokenizer, value head
      summary.json           first vs last rewards per objective, wall-clock

A folder that already holds a run is never overwritten unless asked (``--overwrite``), and
``--resume`` continues from the newest complete checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from paretoalign.errors import RunDirError

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
# Options that may differ between the original run and its resumption.
RESUME_MUTABLE = {"resume", "overwrite", "max_steps", "save_steps", "save_total_limit", "progress", "output_dir"}


def holds_run(path: Path) -> bool:
    return path.is_dir() and any(
        (path / n).exists() for n in (CONFIG_FILE, METRICS_FILE, CHECKPOINTS, "final")
    )


def describe_run(path: Path) -> str:
    ckpts = list_checkpoints(path)
    last = f", last checkpoint at step {ckpts[-1][0]}" if ckpts else ", no checkpoint"
    return f"{len(ckpts)} checkpoint(s){last}"


def list_checkpoints(path: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with trainer_state.json), oldest first."""
    root = Path(path) / CHECKPOINTS
    out = []
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith("step-") and (d / STATE_FILE).is_file():
                try:
                    out.append((int(d.name.split("-", 1)[1]), d))
                except ValueError:
                    continue
    return sorted(out)


def prepare(path: str | Path, config: dict, resume: bool, overwrite: bool, is_main: bool = True,
            barrier=None) -> Path | None:
    """Create or validate the run folder. Returns the checkpoint to resume from, or None.

    Every process validates before any process writes: ``barrier`` (e.g. the accelerator's
    ``wait_for_everyone``) separates the two, so no process sees a folder another just created.
    """
    path = Path(path)
    barrier = barrier or (lambda: None)
    if resume:
        if not holds_run(path):
            raise RunDirError(f"--resume: {str(path)!r} holds no run to resume; drop --resume to start one")
        saved = load_config(path)
        diff = {
            k: (saved.get(k), config.get(k))
            for k in set(saved) | set(config)
            if k not in RESUME_MUTABLE and saved.get(k) != config.get(k)
        }
        if diff:
            lines = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise RunDirError(f"--resume: the configuration differs from the run in {str(path)!r} ({lines})")
        ckpts = list_checkpoints(path)
        barrier()
        if is_main:
            save_config(path, config)
        return ckpts[-1][1] if ckpts else None
    if holds_run(path) and not overwrite:
        raise RunDirError(
            f"run folder {str(path)!r} already holds a run ({describe_run(path)}); "
            "pass --resume to continue it or --overwrite to replace it"
        )
    barrier()
    if is_main:
        if holds_run(path):
            shutil.rmtree(path)
        path.mkdir(parents=True, exist_ok=True)
        save_config(path, config)
    return None


def save_config(path: Path, config: dict) -> None:
    tmp = path / (CONFIG_FILE + ".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path / CONFIG_FILE)


def load_config(path: str | Path) -> dict:
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        raise RunDirError(f"{str(path)!r} has no {CONFIG_FILE}; is it a paretoalign run folder?")
    return yaml.safe_load(f.read_text()) or {}


def read_metrics(path: str | Path) -> list[dict]:
    f = Path(path) / METRICS_FILE
    if not f.is_file():
        return []
    rows = []
    for line in f.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill; everything before it is intact
                break
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep the metrics of steps <= last_step (those after the checkpoint will be redone)."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    f = path / METRICS_FILE
    tmp = f.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(f)


def append_metrics(path: Path, row: dict) -> None:
    with open(path / METRICS_FILE, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()


def prune_checkpoints(path: Path, keep: int) -> None:
    for _, d in list_checkpoints(path)[:-keep]:
        shutil.rmtree(d, ignore_errors=True)
