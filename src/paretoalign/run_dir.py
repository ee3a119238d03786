"""The run folder: everything a later command needs, in one directory, and what it promises.

Layout::

    RUN/
      paretoalign-run.json   the marker: written by paretoalign, with the version and the folder's kind
      .paretoalign.lock      held (flock) by the one process writing the run; the OS releases it on exit
      config.yaml            resolved configuration (what was actually run)
      metrics.jsonl          one JSON object per step (rewards per objective, weights, KL, loss...)
      checkpoints/step-000010/
          policy/            save_pretrained of the adapter (LoRA) or the full model
          value_head.safetensors
          optimizer.safetensors + optimizer.json
          rng_state_<rank>.json
          trainer_state.json the step and a manifest (size + sha256 of every file above)
      final/                 the trained policy (from_pretrained / PEFT), tokenizer, value head
      summary.json           first vs last rewards per objective, wall-clock

Promises (README "Run folders"):

- A folder is a paretoalign folder only if it holds the marker.  ``--overwrite`` removes only the
  entries paretoalign writes and refuses a non-empty folder without the marker.
- One writer per folder: an exclusive lock for the run's life; a second writer is refused with the
  holder's pid.  A killed process never leaves a stale lock (the OS drops it with the process).
- Checkpoints and ``final/`` are written to ``*.tmp`` folders and renamed when complete, so a kill
  never leaves a half-written one under its real name; every file of a checkpoint is checked against
  its manifest before a resume uses it, and a damaged newest checkpoint makes resume fall back to
  the newest valid one.
- Nothing here unpickles: checkpoints are safetensors and JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import yaml

from paretoalign import __version__
from paretoalign.errors import RunDirError

try:
    import fcntl
except ImportError:  # not POSIX: lock() does nothing (documented)
    fcntl = None

MARKER_FILE = "paretoalign-run.json"
LOCK_FILE = ".paretoalign.lock"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
METRICS_CORRUPT_FILE = "metrics.corrupt.jsonl"
CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
FINAL = "final"
POLICY = "policy"            # the saved model inside a checkpoint or final/
FINAL_META = "paretoalign.json"  # final/: what was trained (method, objectives, step)
SUMMARY_FILE = "summary.json"
TMP_SUFFIX = ".tmp"
# Everything a training run writes at its top level (``--overwrite`` removes these and nothing else).
RUN_ENTRIES = (CONFIG_FILE, METRICS_FILE, METRICS_CORRUPT_FILE, CHECKPOINTS, FINAL, FINAL + TMP_SUFFIX,
               FINAL + ".old", SUMMARY_FILE, "eval.json", CONFIG_FILE + TMP_SUFFIX, METRICS_FILE + TMP_SUFFIX)
# Options that may differ between the original run and its resumption.
RESUME_MUTABLE = {"resume", "overwrite", "max_steps", "rounds", "online_rounds", "save_steps", "save_total_limit", "progress",
                  "output_dir"}


# ---------------------------------------------------------------------------------------------
# atomic writes


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers see the old or the
    new content, never a cut one."""
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


def read_json_object(f: Path, error=RunDirError, what: str = "the file is damaged") -> dict:
    """A JSON object from ``f``, or one ``error`` naming the file and what is wrong with it."""
    try:
        text = Path(f).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{f}: not UTF-8 text (byte {e.start}); {what}") from None
    except OSError as e:
        raise error(f"{f}: cannot be read ({e.strerror or e})") from None
    if not text.strip():
        raise error(f"{f}: the file is empty; {what} (an interrupted write or copy?)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{f}: not valid JSON ({e.msg}, line {e.lineno} column {e.colno}); the file is damaged "
                    "or cut short") from None
    if not isinstance(data, dict):
        raise error(f"{f}: expected a JSON object, got {type(data).__name__}")
    return data


def write_json(path: str | Path, obj, **kwargs) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, **kwargs))


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the complete folder ``tmp`` to ``dest``, replacing a previous ``dest`` (ours)."""
    old = dest.with_name(dest.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    if old.exists():
        shutil.rmtree(old)


# ---------------------------------------------------------------------------------------------
# the marker


def read_marker(path: str | Path) -> dict | None:
    """The marker's content, or None where there is none (or it is not ours)."""
    f = Path(path) / MARKER_FILE
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) and "kind" in data else None


def write_marker(path: str | Path, kind: str) -> None:
    write_json(Path(path) / MARKER_FILE, {"paretoalign": __version__, "kind": kind})


def _legacy_run(path: Path) -> bool:
    """A run folder written before the marker existed: a config with a method and checkpoints or metrics."""
    if not (path / CONFIG_FILE).is_file() or not ((path / CHECKPOINTS).is_dir() or (path / METRICS_FILE).is_file()):
        return False
    try:
        cfg = yaml.safe_load((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return False
    return isinstance(cfg, dict) and "method" in cfg and "output_dir" in cfg


def holds_run(path: str | Path) -> bool:
    """Does ``path`` hold a training run written by paretoalign (marked, or from before the marker)?"""
    path = Path(path)
    if not path.is_dir():
        return False
    marker = read_marker(path)
    return (marker is not None and marker.get("kind") == "train") or (marker is None and _legacy_run(path))


def claim(path: str | Path, kind: str, overwrite: bool, entries: tuple[str, ...]) -> bool:
    """Make ``path`` a folder of ``kind`` this process may write.

    A missing or empty folder is created; a folder with our marker of the same kind is replaced
    (only ``entries`` are removed, under the folder's lock) when ``overwrite``, else refused;
    anything else that is not empty is refused: we never delete what we did not write.  Returns
    True when the folder held a previous result that was removed.
    """
    path = Path(path)
    check_dir_path(path)
    if path.is_dir() and any(path.iterdir()):
        marker = read_marker(path)
        if marker is None or marker.get("kind") != kind:
            what = f"a paretoalign {marker['kind']} folder" if marker else f"not a paretoalign folder (no {MARKER_FILE})"
            raise RunDirError(
                f"{str(path)!r} is not empty and is {what}; choose another --output-dir "
                f"(--overwrite only replaces folders paretoalign wrote)")
        if not overwrite:
            if any(p.name not in (MARKER_FILE, LOCK_FILE) for p in path.iterdir()):
                raise RunDirError(f"{str(path)!r} already holds a paretoalign {kind} folder; pass --overwrite to "
                                  "replace it or choose another --output-dir")
            return False
        lock(path)  # a live writer keeps its folder
        remove_entries(path, entries)
        write_marker(path, kind)
        return True
    path.mkdir(parents=True, exist_ok=True)
    write_marker(path, kind)
    return False


def remove_entries(path: Path, entries) -> None:
    for name in entries:
        p = path / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def check_dir_path(path: Path) -> None:
    for p in (path, *path.parents):
        if p.exists() and not p.is_dir():
            where = "is a file" if p == path else f"is under {str(p)!r}, which is a file"
            raise RunDirError(f"output folder {str(path)!r} {where}; choose another --output-dir")
        if p.exists():
            break


# ---------------------------------------------------------------------------------------------
# the lock: one writer per folder

_HELD: dict[str, int] = {}  # resolved folder -> open lock file descriptor of this process


def lock(path: str | Path) -> None:
    """Take the folder's exclusive lock for this process (re-entrant within a process).

    ``flock`` is released by the OS when the process dies, so a killed run leaves no stale lock;
    the holder's pid is written into the lock file for the refusal message.
    """
    key = str(Path(path).resolve())
    if key in _HELD:
        return
    if fcntl is None:  # not POSIX: no lock (documented)
        return
    fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunDirError(
            f"{str(path)!r} is in use by another paretoalign process (pid {holder}); wait for it to finish or "
            "stop it, then run again") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _HELD[key] = fd


def unlock(path: str | Path) -> None:
    fd = _HELD.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor releases the flock


# ---------------------------------------------------------------------------------------------
# checkpoints


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest(folder: Path) -> dict:
    """Size and sha256 of every file under ``folder`` except the state file."""
    return {str(f.relative_to(folder)): {"size": f.stat().st_size, "sha256": file_digest(f)}
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name != STATE_FILE}


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why ``ckpt`` cannot be resumed from (a missing, truncated or altered file), or None."""
    try:
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
        int(state["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"{STATE_FILE} is missing or unreadable"
    files = state.get("files")
    if not isinstance(files, dict):  # written before manifests: the files must at least be there
        return None if (ckpt / "policy").is_dir() else "policy/ is missing"
    for name, want in files.items():
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != want.get("size"):
            return f"{name} is truncated or altered ({f.stat().st_size} bytes, expected {want.get('size')})"
        if file_digest(f) != want.get("sha256"):
            return f"{name} is altered (checksum differs)"
    return None


def list_checkpoints(path: str | Path) -> list[tuple[int, Path]]:
    """Checkpoints with a state file (not necessarily valid: see :func:`checkpoint_problem`), oldest first."""
    root = Path(path) / CHECKPOINTS
    out = []
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith("step-") and not d.name.endswith(TMP_SUFFIX) and (d / STATE_FILE).is_file():
                try:
                    out.append((int(d.name.split("-", 1)[1]), d))
                except ValueError:
                    continue
    return sorted(out)


def describe_run(path: Path) -> str:
    ckpts = list_checkpoints(path)
    last = f", last checkpoint at step {ckpts[-1][0]}" if ckpts else ", no checkpoint"
    return f"{len(ckpts)} checkpoint(s){last}"


def prune_checkpoints(path: Path, keep: int) -> None:
    for _, d in list_checkpoints(path)[:-keep]:
        shutil.rmtree(d, ignore_errors=True)


def final_step(path: Path) -> int | None:
    """The step ``final/`` was saved at (-1: a final/ from before this was recorded; None: no final/)."""
    f = Path(path) / FINAL / "paretoalign.json"
    if not f.is_file():
        return None
    try:
        return int(json.loads(f.read_text(encoding="utf-8")).get("step", -1))
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def save_config(path: Path, config: dict) -> None:
    atomic_write_text(Path(path) / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def load_config(path: str | Path) -> dict:
    f = Path(path) / CONFIG_FILE
    if not f.is_file():
        raise RunDirError(f"{str(path)!r} has no {CONFIG_FILE}; is it a paretoalign run folder?")
    return load_config_file(f)


def load_config_file(f: Path) -> dict:
    """A YAML mapping we wrote (config.yaml, front_config.yaml); damage is one RunDirError naming the file."""
    try:
        cfg = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{f}: not a readable configuration ({str(exc).splitlines()[0]})") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise RunDirError(f"{f}: expected a mapping of option: value")
    return cfg


# ---------------------------------------------------------------------------------------------
# metrics


def _scan_metrics(path: Path) -> tuple[list[dict], list[str]]:
    f = Path(path) / METRICS_FILE
    if not f.is_file():
        return [], []
    rows, bad = [], []
    for line in f.read_bytes().decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad.append(line)
    return rows, bad


def read_metrics(path: str | Path) -> list[dict]:
    """Every valid row of ``metrics.jsonl`` (a line cut by a kill, or otherwise corrupt, is skipped)."""
    return _scan_metrics(Path(path))[0]


def truncate_metrics(path: Path, last_step: int) -> int:
    """Keep the valid rows of steps <= last_step (those after the checkpoint will be redone); corrupt
    lines are moved to ``metrics.corrupt.jsonl``.  Returns how many corrupt lines there were."""
    rows, bad = _scan_metrics(path)
    if bad:
        with open(Path(path) / METRICS_CORRUPT_FILE, "a", encoding="utf-8") as fh:
            fh.write("".join(b + "\n" for b in bad))
    keep = [r for r in rows if isinstance(r.get("step"), int) and r["step"] <= last_step]
    if (Path(path) / METRICS_FILE).exists():
        atomic_write_text(Path(path) / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in keep))
    return len(bad)


def append_metrics(path: Path, row: dict) -> None:
    with open(Path(path) / METRICS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
