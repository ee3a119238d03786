"""Bad input to every user-facing command: one ``error: ...`` line, exit status 2, nothing on disk changed.

Issue 11.  Each case builds its files in ``tmp_path`` (bad YAML, bad data files, broken copies of a
real tiny run, front, pairs folder and reward model built once per module), snapshots every path
under ``tmp_path`` (sha256, mtime and mode of every file), calls ``paretoalign.cli.main(argv)``
in-process and checks:

- the return code is 2;
- stderr's first line starts with ``error: `` and matches the case's patterns; it is the only
  line on stderr (a ``python:`` objective that raised may add the user's own frames below it:
  ``File ".../usermod.py", line N, in f``, never a paretoalign frame);
- neither stdout nor stderr holds ``Traceback (most recent call last)``;
- every path that existed before still exists, byte-identical (same sha256, mtime and mode);
  new paths appear only under the output the command was asked to create (or nowhere).  The one
  exception is the run folder's lock file (``.paretoalign.lock``): taking the lock rewrites the
  holder's pid into it, which is the lock's own bookkeeping, not the user's data.

Cases whose refusal needs more memory than is safe to try in-process (``--batch-size 100000``)
run in a subprocess under an address-space limit.  The few things that must *succeed* (resume
falling back from a damaged newest checkpoint to an older complete one) are separate tests at
the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import paretoalign
from paretoalign.cli import main

REPO = Path(__file__).resolve().parents[1]
PKG_DIR = str(Path(paretoalign.__file__).resolve().parent)
FIXTURES = REPO / "tests" / "fixtures"
HS2 = FIXTURES / "reward" / "helpsteer2_small.jsonl"

OBJ1 = "length(name=chars,scale=10,low=0,high=100)"
OBJ2 = "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"
OBJ = f"{OBJ1},{OBJ2}"
SMALL = ["--model", "tiny", "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "6",
         "--progress", "false"]
RUN_ARGS = ["--method", "pama", "--objectives", OBJ, *SMALL, "--save-steps", "1"]  # the fixture run (GAE: value heads)
LOCK_FILE = ".paretoalign.lock"
CASE_TIMEOUT_S = 120


# ---------------------------------------------------------------------------------------------
# shared fixtures: built once per module, copied per case


@dataclass
class Built:
    run: Path        # pama (gae), 2 steps, --save-steps 1: checkpoints step-000001 and step-000002, final/
    front: Path      # pama, grid:2, 1 step per point
    pairs: Path      # `paretoalign pairs` folder (labels chars, words)
    rm: Path         # `paretoalign reward-model train` folder (tiny backbone)
    cache: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    root = tmp_path_factory.mktemp("built")
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("PARETOALIGN_CACHE")
    os.environ["PARETOALIGN_CACHE"] = str(cache)
    try:
        b = Built(root / "run", root / "front", root / "pairs", root / "rm", cache)
        assert main(["train", *RUN_ARGS, "--max-steps", "2", "--output-dir", str(b.run)]) == 0
        assert main(["front", "--method", "pama", "--preferences", "grid:2", "--model", "tiny", "--objectives", OBJ,
                     "--max-steps", "1", "--batch-size", "2", "--max-new-tokens", "6", "--eval-num-prompts", "2",
                     "--progress", "false", "--report", "false", "--output-dir", str(b.front)]) == 0
        assert main(["pairs", "--model", "tiny", "--objectives", OBJ, "--num-completions", "2", "--max-prompts", "6",
                     "--max-new-tokens", "6", "--progress", "false", "--force", "--output-dir", str(b.pairs)]) == 0
        assert main(["reward-model", "train", "--ratings", str(HS2), "--backbone", "tiny", "--pooling", "mean",
                     "--gate-hidden", "16", "--gate-layers", "1", "--gate-steps", "10", "--gate-batch-size", "32",
                     "--progress", "false", "--output-dir", str(b.rm)]) == 0
    finally:
        if old is None:
            os.environ.pop("PARETOALIGN_CACHE", None)
        else:
            os.environ["PARETOALIGN_CACHE"] = old
    return b


@pytest.fixture(autouse=True)
def _env(built, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(built.cache))  # caches live outside the snapshotted tmp_path
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a python: objective's module must not leave __pycache__


# ---------------------------------------------------------------------------------------------
# per-case context and helpers


class Ctx:
    def __init__(self, d: Path, b: Built):
        self.d, self.b = d, b
        self.extra_patterns: list[str] = []
        self.finalizers: list[Callable[[], None]] = []

    def p(self, name: str) -> Path:
        return self.d / name

    def write(self, name: str, content: str | bytes) -> Path:
        f = self.d / name
        f.parent.mkdir(parents=True, exist_ok=True)
        (f.write_bytes if isinstance(content, bytes) else f.write_text)(content)
        return f

    def mkdir(self, name: str) -> Path:
        (self.d / name).mkdir(parents=True, exist_ok=True)
        return self.d / name

    def copy(self, src: Path, name: str) -> Path:
        dst = self.d / name
        shutil.copytree(src, dst, symlinks=True)
        return dst

    def run(self, name: str = "run") -> Path:
        return self.copy(self.b.run, name)

    def foreign(self, name: str = "project") -> Path:
        """A user's folder that is not a paretoalign folder (but has a config.yaml)."""
        self.write(f"{name}/config.yaml", "learning_rate: 3\nnotes: my own project\n")
        self.write(f"{name}/src/main.py", "print('hello')\n")
        self.write(f"{name}/README.md", "mine\n")
        return self.d / name

    def hold_lock(self, run: Path) -> int:
        """Another live process holding the run's lock (its pid written into the lock file)."""
        code = ("import fcntl, os, sys, time\n"
                "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
                "fcntl.flock(fd, fcntl.LOCK_EX)\n"
                "os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())\n"
                "print('ready', flush=True)\n"
                "time.sleep(300)\n")
        proc = subprocess.Popen([sys.executable, "-c", code, str(run / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"

        def stop():
            proc.kill()
            proc.wait()

        self.finalizers.append(stop)
        self.extra_patterns.append(rf"\b{proc.pid}\b")
        return proc.pid


def truncate(f: Path) -> Path:
    data = f.read_bytes()
    f.write_bytes(data[: max(1, len(data) // 2)])
    return f


def garble(f: Path) -> Path:
    """Same size, wrong bytes (a safetensors header that is not JSON)."""
    n = f.stat().st_size
    f.write_bytes((b"\xff\x00\x13\x37" * (n // 4 + 1))[:n])
    return f


def first_existing(folder: Path, *names: str) -> Path:
    for n in names:
        if (folder / n).exists():
            return folder / n
    raise AssertionError(f"none of {names} in {folder}: {sorted(p.name for p in folder.iterdir())}")


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step-{step:06d}"


def only_last_checkpoint(run: Path) -> Path:
    """Drop the older checkpoint: step-000002 is the run's only one."""
    shutil.rmtree(ckpt(run, 1))
    return ckpt(run, 2)


def optimizer_file(c: Path) -> Path:
    return first_existing(c, "optimizer.safetensors", "optimizer.pt")


def rng_file(c: Path) -> Path:
    return first_existing(c, "rng_state_0.json", "rng_state_0.pt")


NON_UTF8 = b"\xff\xfe\x00bad \xc3\x28 bytes\n"
TRUNC_JSONL = '{"prompt": "Tell me about rain", "chosen": "It is we'
USER_RAISES = textwrap.dedent("""\
    def helper(x):
        raise ValueError("boom from user code")


    def explode(prompts, completions):
        return [helper(c) for c in completions]
    """)


# ---------------------------------------------------------------------------------------------
# argv builders


def train(c: Ctx, *extra: str, out: str = "out") -> tuple[list[str], Path]:
    o = c.p(out)
    return ["train", "--method", "pama", "--objectives", OBJ, *SMALL, "--max-steps", "1", "--output-dir", str(o),
            *extra], o


def train_yaml(c: Ctx, yaml_text: str | bytes) -> tuple[list[str], Path]:
    cfg = c.write("c.yaml", yaml_text)
    o = c.p("out")
    return ["train", "--config", str(cfg), "--output-dir", str(o), "--progress", "false"], o


BASE_YAML = f"method: pama\nmodel: tiny\nobjectives: ['{OBJ1}', '{OBJ2}']\nbatch_size: 2\nnum_generations: 2\nmax_new_tokens: 6\n"


def resume(c: Ctx, run: Path, *extra: str, max_steps: str = "3") -> tuple[list[str], None]:
    return ["train", *RUN_ARGS, "--max-steps", max_steps, "--output-dir", str(run), "--resume", *extra], None


def dpo(c: Ctx, pairs: Path | str) -> tuple[list[str], Path]:
    o = c.p("out")
    return ["train", "--method", "dpo", "--pairs", str(pairs), "--objectives", "chars", "--model", "tiny",
            "--batch-size", "2", "--max-steps", "1", "--progress", "false", "--output-dir", str(o)], o


def evaluate(c: Ctx, target: Path | str, *extra: str) -> tuple[list[str], None]:
    return ["evaluate", str(target), "--num-prompts", "2", "--max-new-tokens", "4", "--baseline", "none",
            "--output", str(c.p("eval-out.json")), *extra], None


def front(c: Ctx, *extra: str, out: str = "front") -> tuple[list[str], Path]:
    o = c.p(out)
    return ["front", "--method", "pama", "--preferences", "grid:2", "--model", "tiny", "--objectives", OBJ,
            "--max-steps", "1", "--batch-size", "2", "--max-new-tokens", "6", "--eval-num-prompts", "2",
            "--progress", "false", "--report", "false", "--output-dir", str(o), *extra], o


def compare(c: Ctx, other: Path, *extra: str, out: str = "cmp") -> tuple[list[str], Path]:
    a = c.copy(c.b.front, "fa")
    o = c.p(out)
    return ["compare", str(a), str(other), "--labels", "a,b", "--output-dir", str(o), *extra], o


def front_with(c: Ctx, content: str | bytes | None, name: str = "fb") -> Path:
    """A copy of the fixture front whose front.json is replaced (None: removed)."""
    f = c.copy(c.b.front, name)
    if content is None:
        (f / "front.json").unlink()
    else:
        (f / "front.json").write_bytes(content if isinstance(content, bytes) else content.encode())
    return f


def pairs_cmd(c: Ctx, *extra: str, out: str = "pairs") -> tuple[list[str], Path]:
    o = c.p(out)
    return ["pairs", "--model", "tiny", "--objectives", OBJ, "--num-completions", "2", "--max-prompts", "4",
            "--max-new-tokens", "6", "--progress", "false", "--force", "--output-dir", str(o), *extra], o


def rm_train(c: Ctx, *extra: str, ratings: Path | str = HS2, out: str = "rm-out") -> tuple[list[str], Path]:
    o = c.p(out)
    return ["reward-model", "train", "--ratings", str(ratings), "--backbone", "tiny", "--pooling", "mean",
            "--gate-hidden", "16", "--gate-layers", "1", "--gate-steps", "5", "--gate-batch-size", "32",
            "--progress", "false", "--output-dir", str(o), *extra], o


def rows_file(c: Ctx) -> Path:
    return c.write("rows.jsonl", json.dumps({"prompt": "Explain rain.", "response": "Rain is water."}) + "\n")


def rm_score(c: Ctx, model: Path | str, inp: Path | str | None = None, *extra: str) -> tuple[list[str], None]:
    inp = rows_file(c) if inp is None else inp
    return ["reward-model", "score", str(model), "--input", str(inp), *extra], None


def rm_broken(c: Ctx, how: str) -> Path:
    rm = c.copy(c.b.rm, "rm")
    if how == "no-config":
        (rm / "config.json").unlink()
    elif how == "truncated":
        truncate(rm / "model.safetensors")
    return rm


def demo(c: Ctx, *extra: str, out: str = "demo") -> tuple[list[str], Path]:
    o = c.p(out)
    return ["demo", "--model", "tiny", "--steps", "1", "--eval-prompts", "2", "--batch-size", "2",
            "--max-new-tokens", "4", "--output-dir", str(o), *extra], o


def seq(*steps):
    """Run the steps in order (arguments are evaluated left to right); the last one is the case's (argv, new_ok)."""
    return steps[-1]


def drop_flag(argv: list[str], flag: str) -> list[str]:
    """``argv`` without ``flag`` and its value (so a --config value is not overridden)."""
    i = argv.index(flag)
    return argv[:i] + argv[i + 2:]


def existing(built_argv: tuple[list[str], Path | None]) -> tuple[list[str], None]:
    """The output folder existed before the command (a file, a foreign folder, a run): nothing may appear in it."""
    return built_argv[0], None


def pyobj(c: Ctx, filename: str, source: str, func: str) -> tuple[list[str], Path]:
    mod = c.write(filename, source)
    return train(c, "--objectives", f"python:{mod}:{func},length(name=chars,scale=10,low=0,high=100)")


# ---------------------------------------------------------------------------------------------
# the table


@dataclass
class Case:
    id: str
    setup: Callable[[Ctx], tuple[list[str], Path | None]]
    patterns: tuple[str, ...]
    user_frames: str | None = None      # python: objectives: the user's file shown below the error line
    stderr_has: str | None = None       # a pattern anywhere in stderr (e.g. the user's exception text)
    no_stdout: str | None = None        # e.g. the demo must refuse before it loads the model
    nonroot: bool = False               # permissions mean nothing to root
    subprocess_mem_gb: float | None = None  # run in a subprocess under this address-space limit


def C(id, setup, *patterns, **kw) -> Case:  # noqa: A002
    return Case(id, setup, patterns, **kw)


DEMO_LOAD = r"\[demo\] loading"
# an output path that is a file or lies under one: the line must say so (the OS's own words are accepted)
OUT_FILE = r"file|not a directory|not a folder"

CASES = [
    # --- train: configuration values from YAML -------------------------------------------------
    C("train-yaml-max-steps-string", lambda c: train_yaml(c, BASE_YAML + 'max_steps: "two"\n'), r"max.steps"),
    C("train-yaml-learning-rate-string", lambda c: train_yaml(c, BASE_YAML + 'max_steps: 1\nlearning_rate: "abc"\n'),
      r"learning.rate"),
    C("train-yaml-max-steps-float", lambda c: train_yaml(c, BASE_YAML + "max_steps: 2.7\n"), r"max.steps"),
    C("train-yaml-use-lora-maybe", lambda c: train_yaml(c, BASE_YAML + 'max_steps: 1\nuse_lora: "maybe"\n'),
      r"use.lora"),
    C("train-yaml-max-steps-list", lambda c: train_yaml(c, BASE_YAML + "max_steps: [1, 2]\n"), r"max.steps"),
    C("train-yaml-kl-coef-list", lambda c: train_yaml(c, BASE_YAML + "max_steps: 1\nkl_coef: [0.1, 0.2]\n"),
      r"kl.coef"),
    C("train-yaml-seed-string", lambda c: train_yaml(c, BASE_YAML + 'max_steps: 1\nseed: "abc"\n'), r"seed"),
    C("train-yaml-objectives-number", lambda c: train_yaml(c, "model: tiny\nmax_steps: 1\nobjectives: 5\n"),
      r"objectives"),
    C("train-yaml-unknown-key", lambda c: train_yaml(c, BASE_YAML + "max_step: 1\n"), r"unknown.*max_step"),
    C("train-yaml-not-a-mapping", lambda c: train_yaml(c, "- max_steps\n- 1\n"), r"mapping"),
    C("train-yaml-syntax-error", lambda c: train_yaml(c, "max_steps: [1,\n  seed: {\n"), r"yaml"),
    C("train-yaml-non-utf8", lambda c: train_yaml(c, b"max_steps: 1\nsystem_prompt: \xff\xfe\n"), r"c\.yaml"),
    C("train-config-is-a-directory",
      lambda c: (["train", "--config", str(c.mkdir("confdir")), "--output-dir", str(c.p("out"))], c.p("out")),
      r"confdir.*(director|folder|not a file)"),
    # --- train: flags ---------------------------------------------------------------------------
    C("train-temperature-0", lambda c: train(c, "--temperature", "0"), r"temperature"),
    C("train-lora-r-0", lambda c: train(c, "--lora-r", "0"), r"lora.r"),
    C("train-seed-negative", lambda c: train(c, "--seed", "-1"), r"seed"),
    C("train-learning-rate-inf", lambda c: train(c, "--learning-rate", "inf"), r"learning.rate"),
    C("train-learning-rate-nan", lambda c: train(c, "--learning-rate", "nan"), r"learning.rate"),
    C("train-max-grad-norm-nan", lambda c: train(c, "--max-grad-norm", "nan"), r"max.grad.norm"),
    C("train-top-p-5", lambda c: train(c, "--top-p", "5"), r"top.p"),
    C("train-top-p-0", lambda c: train(c, "--top-p", "0"), r"top.p"),
    C("train-batch-size-0", lambda c: train(c, "--batch-size", "0"), r"batch.size"),
    C("train-batch-size-100000-memory", lambda c: train(c, "--batch-size", "100000"), r"memory",
      subprocess_mem_gb=8),
    C("train-max-new-tokens-0", lambda c: train(c, "--max-new-tokens", "0"), r"max.new.tokens"),
    C("train-num-generations-0", lambda c: train(c, "--num-generations", "0"), r"num.generations"),
    C("train-save-steps-0", lambda c: train(c, "--save-steps", "0"), r"save.steps"),
    C("train-heldout-fraction-1.5", lambda c: train(c, "--heldout-fraction", "1.5"), r"heldout.fraction"),
    C("train-method-morlhf-weights-nan", lambda c: train(c, "--method", "morlhf", "--weights", "0.5,nan"),
      r"finite|nan"),
    # --- train: output folder -----------------------------------------------------------------
    C("train-output-dir-is-a-file", lambda c: seq(c.write("f", "mine\n"), existing(train(c, out="f"))), OUT_FILE),
    C("train-output-dir-under-a-file", lambda c: seq(c.write("f", "mine\n"), existing(train(c, out="f/sub"))),
      OUT_FILE),
    C("train-output-dir-read-only", lambda c: seq(os.chmod(c.mkdir("ro"), 0o555), existing(train(c, out="ro"))),
      r"writ|permission|read.only", nonroot=True),
    C("train-overwrite-foreign-folder", lambda c: seq(c.foreign(), existing(train(c, "--overwrite", out="project"))),
      r"not a paretoalign|refus"),
    C("train-overwrite-foreign-folder-with-checkpoints-and-final",
      lambda c: seq(c.write("mine/checkpoints/notes.txt", "my notes\n"), c.write("mine/final/thesis.tex", "x\n"),
                    c.write("mine/metrics.jsonl", '{"my": 1}\n'), existing(train(c, "--overwrite", out="mine"))),
      r"not a paretoalign|refus"),
    C("train-into-non-empty-foreign-folder", lambda c: seq(c.foreign(), existing(train(c, out="project"))),
      r"not a paretoalign|not empty"),
    C("train-existing-run-without-resume", lambda c: seq(c.run(), existing(train(c, out="run"))),
      r"already holds a run"),
    C("train-overwrite-run-locked-by-another-process",
      lambda c: seq(c.hold_lock(c.run()), existing(train(c, "--overwrite", out="run"))), r"pid|in use|lock"),
    # --- train --resume -------------------------------------------------------------------------
    C("resume-empty-folder", lambda c: resume(c, c.mkdir("empty")), r"resume"),
    C("resume-missing-folder", lambda c: resume(c, c.p("nothing-here")), r"resume"),
    C("resume-foreign-folder", lambda c: resume(c, c.foreign()), r"resume"),
    C("resume-only-checkpoint-optimizer-truncated",
      lambda c: seq(r := c.run(), truncate(optimizer_file(only_last_checkpoint(r))), resume(c, r)),
      r"resum", r"refus|no valid|cannot", r"optimizer"),
    C("resume-only-checkpoint-rng-state-missing",
      lambda c: seq(r := c.run(), rng_file(only_last_checkpoint(r)).unlink(), resume(c, r)),
      r"resum", r"refus|no valid|cannot", r"rng_state"),
    C("resume-only-checkpoint-value-head-missing",
      lambda c: seq(r := c.run(), (only_last_checkpoint(r) / "value_head.safetensors").unlink(), resume(c, r)),
      r"resum", r"refus|no valid|cannot", r"value_head"),
    C("resume-only-checkpoint-trainer-state-corrupt",
      lambda c: seq(r := c.run(), (only_last_checkpoint(r) / "trainer_state.json").write_text('{"step": 2, "fi'),
                    resume(c, r)),
      r"resum", r"refus|no valid|cannot", r"trainer_state"),
    C("resume-only-checkpoint-adapter-truncated",
      lambda c: seq(r := c.run(), truncate(only_last_checkpoint(r) / "policy" / "adapter_model.safetensors"),
                    resume(c, r)),
      r"resum", r"refus|no valid|cannot", r"adapter_model|policy"),
    C("resume-every-checkpoint-damaged",
      lambda c: seq(r := c.run(), truncate(optimizer_file(ckpt(r, 2))),
                    garble(ckpt(r, 1) / "policy" / "adapter_model.safetensors"), resume(c, r)),
      r"resum", r"refus|no valid|cannot"),
    C("resume-fewer-max-steps-than-done", lambda c: resume(c, c.run(), max_steps="1"), r"max.steps", r"\b2\b"),
    C("resume-run-locked-by-another-process", lambda c: seq(r := c.run(), c.hold_lock(r), resume(c, r)),
      r"pid|in use|lock"),
    C("resume-run-config-corrupt",
      lambda c: seq(r := c.run(), (r / "config.yaml").write_text("method: [pama\n  {{"), resume(c, r)),
      r"config\.yaml"),
    C("resume-configuration-differs", lambda c: resume(c, c.run(), "--kl-coef", "0.5"), r"differs"),
    # --- train: data -----------------------------------------------------------------------------
    C("train-prompts-non-utf8", lambda c: train(c, "--prompts", str(c.write("bad.jsonl", NON_UTF8))), r"bad\.jsonl"),
    C("train-prompts-truncated-jsonl",
      lambda c: train(c, "--prompts", str(c.write("bad.jsonl", '{"prompt": "a"}\n{"prompt": "Tell me ab'))),
      r"bad\.jsonl"),
    C("train-prompts-truncated-json",
      lambda c: train(c, "--prompts", str(c.write("bad.json", '[{"prompt": "a"}, {"prom'))), r"bad\.json"),
    C("train-prompts-empty", lambda c: train(c, "--prompts", str(c.write("bad.jsonl", ""))), r"bad\.jsonl"),
    C("train-prompts-directory", lambda c: train(c, "--prompts", str(c.mkdir("promptdir"))), r"promptdir"),
    C("train-prompts-missing", lambda c: train(c, "--prompts", str(c.p("nope.jsonl"))), r"nope\.jsonl"),
    C("train-pairs-non-utf8", lambda c: dpo(c, c.write("bad.jsonl", NON_UTF8)), r"bad\.jsonl"),
    C("train-pairs-truncated", lambda c: dpo(c, c.write("bad.jsonl", TRUNC_JSONL)), r"bad\.jsonl"),
    C("train-pairs-empty", lambda c: dpo(c, c.write("bad.jsonl", "")), r"bad\.jsonl"),
    C("train-pairs-empty-directory", lambda c: dpo(c, c.mkdir("pairdir")), r"pairdir"),
    C("train-pairs-missing", lambda c: dpo(c, c.p("nope.jsonl")), r"nope\.jsonl"),
    C("train-pairs-folder-with-truncated-pairs-jsonl",
      lambda c: seq(p := c.copy(c.b.pairs, "pairs"), truncate(p / "pairs.jsonl"), dpo(c, p)), r"pairs\.jsonl"),
    # --- train: objectives -----------------------------------------------------------------------
    C("train-objective-unknown", lambda c: train(c, "--objectives", "sentimnet,length"), r"unknown objective"),
    C("train-python-objective-syntax-error",
      lambda c: pyobj(c, "syntax_mod.py", "def score(prompts, completions)\n    return [0.0] * len(completions)\n",
                      "score"),
      r"syntax_mod", user_frames="syntax_mod.py"),
    C("train-python-objective-missing-import",
      lambda c: pyobj(c, "missing_import_mod.py", "import no_such_pkg_xyz\n\ndef score(p, c):\n    return [0.0] * len(c)\n",
                      "score"),
      r"missing_import_mod|no_such_pkg_xyz", user_frames="missing_import_mod.py", stderr_has=r"no_such_pkg_xyz"),
    C("train-python-objective-raises", lambda c: pyobj(c, "raising_mod.py", USER_RAISES, "explode"),
      r"explode", user_frames="raising_mod.py", stderr_has=r"boom from user code"),
    C("train-python-objective-file-missing", lambda c: train(c, "--objectives", f"python:{c.p('gone.py')}:f,length"),
      r"gone\.py"),
    C("train-python-objective-function-missing",
      lambda c: pyobj(c, "nofn_mod.py", "def other(p, c):\n    return [0.0] * len(c)\n", "score"), r"score"),
    C("train-python-objective-wrong-length",
      lambda c: pyobj(c, "short_mod.py", "def short(p, c):\n    return [1.0]\n", "short"), r"short"),
    C("train-reward-model-objective-missing-config",
      lambda c: train(c, "--objectives", f"reward_model:{rm_broken(c, 'no-config')},length"), r"config\.json"),
    C("train-reward-model-objective-truncated-weights",
      lambda c: train(c, "--objectives", f"reward_model:{rm_broken(c, 'truncated')},length"), r"model\.safetensors"),
    C("train-reward-model-objective-not-a-folder",
      lambda c: train(c, "--objectives", f"reward_model:{c.write('rmfile', 'not a model')},length"), r"rmfile"),
    # --- evaluate ---------------------------------------------------------------------------------
    C("evaluate-batch-size-10M-memory", lambda c: evaluate(c, c.run(), "--batch-size", "10000000"), r"memory",
      subprocess_mem_gb=8),
    C("evaluate-folder-that-is-not-a-run",
      lambda c: evaluate(c, c.write("notarun/notes.txt", "hello\n").parent), r"notarun"),
    C("evaluate-folder-that-is-not-a-run-with-objectives",
      lambda c: evaluate(c, c.write("notarun/notes.txt", "hello\n").parent, "--objectives", OBJ),
      r"notarun", r"not a (paretoalign )?(run|model)|no (run|model)|neither|not found|cannot load"),
    C("evaluate-run-with-half-written-final",
      lambda c: seq(r := c.run(), (r / "final").rename(r / "final.tmp"), evaluate(c, r)), r"final"),
    C("evaluate-checkpoint-with-truncated-adapter",
      lambda c: seq(k := ckpt(c.run(), 2), truncate(k / "policy" / "adapter_model.safetensors"), evaluate(c, k)),
      r"adapter_model|safetensors|corrupt|truncat|damaged"),
    C("evaluate-run-with-garbled-final-adapter",
      lambda c: seq(r := c.run(), garble(r / "final" / "policy" / "adapter_model.safetensors"), evaluate(c, r)),
      r"adapter_model|safetensors|corrupt|damaged"),
    C("evaluate-run-config-corrupt",
      lambda c: seq(r := c.run(), (r / "config.yaml").write_bytes(NON_UTF8), evaluate(c, r)), r"config\.yaml"),
    C("evaluate-prompts-non-utf8", lambda c: evaluate(c, c.run(), "--prompts", str(c.write("bad.jsonl", NON_UTF8))),
      r"bad\.jsonl"),
    C("evaluate-prompts-truncated",
      lambda c: evaluate(c, c.run(), "--prompts", str(c.write("bad.jsonl", '{"prompt": "a'))), r"bad\.jsonl"),
    C("evaluate-prompts-empty", lambda c: evaluate(c, c.run(), "--prompts", str(c.write("bad.jsonl", ""))),
      r"bad\.jsonl"),
    C("evaluate-prompts-directory", lambda c: evaluate(c, c.run(), "--prompts", str(c.mkdir("promptdir"))),
      r"promptdir"),
    C("evaluate-objective-unknown", lambda c: evaluate(c, c.run(), "--objectives", "sentimnet"), r"unknown objective"),
    C("evaluate-top-p-5", lambda c: evaluate(c, c.run(), "--top-p", "5"), r"top.p"),
    C("evaluate-batch-size-0", lambda c: evaluate(c, c.run(), "--batch-size", "0"), r"batch.size"),
    C("evaluate-temperature-0", lambda c: evaluate(c, c.run(), "--temperature", "0"), r"temperature"),
    C("evaluate-output-under-a-file",
      lambda c: existing(evaluate(c, c.run(), "--output", str(c.write("f", "mine\n") / "eval.json"))),
      OUT_FILE),
    C("evaluate-yaml-num-prompts-string",
      lambda c: (["evaluate", str(c.run()), "--config", str(c.write("e.yaml", 'num_prompts: "two"\n')),
                  "--baseline", "none", "--output", str(c.p("eval-out.json"))], None),
      r"num.prompts"),
    # --- front / compare / report ------------------------------------------------------------------
    C("front-yaml-max-steps-string",
      lambda c: (drop_flag(front(c)[0], "--max-steps") + ["--config", str(c.write("f.yaml", 'max_steps: "two"\n'))], c.p("front")),
      r"max.steps"),
    C("front-preferences-wrong-length", lambda c: front(c, "--preferences", "0.2,0.3,0.5"), r"preference"),
    C("front-preferences-grid-0", lambda c: front(c, "--preferences", "grid:0"), r"grid|preference"),
    C("front-reference-point-letters", lambda c: front(c, "--reference-point", "a,b"), r"reference.point"),
    C("front-eval-temperature-0", lambda c: front(c, "--eval-temperature", "0"), r"temperature"),
    C("front-output-dir-under-a-file", lambda c: seq(c.write("f", "x\n"), existing(front(c, out="f/sub"))), OUT_FILE),
    C("front-overwrite-foreign-folder", lambda c: seq(c.foreign(), existing(front(c, "--overwrite", out="project"))),
      r"not a paretoalign|refus"),
    C("compare-front-json-empty", lambda c: compare(c, front_with(c, "")), r"front\.json"),
    C("compare-front-json-truncated",
      lambda c: compare(c, front_with(c, (c.b.front / "front.json").read_text()[:200])), r"front\.json"),
    C("compare-front-json-not-json", lambda c: compare(c, front_with(c, "hello, I am not JSON\n")), r"front\.json"),
    C("compare-front-json-a-list", lambda c: compare(c, front_with(c, "[1, 2, 3]\n")), r"front\.json"),
    C("compare-front-json-non-utf8", lambda c: compare(c, front_with(c, NON_UTF8)), r"front\.json"),
    C("compare-reference-point-letters", lambda c: compare(c, c.copy(c.b.front, "fb"), "--reference-point", "a,b"),
      r"reference.point"),
    C("compare-reference-point-wrong-length",
      lambda c: compare(c, c.copy(c.b.front, "fb"), "--reference-point", "0,0,0"), r"reference.point"),
    C("compare-reference-point-nan",
      lambda c: compare(c, c.copy(c.b.front, "fb"), "--reference-point", "nan,nan"), r"reference.point"),
    C("compare-reference-front-missing",
      lambda c: compare(c, c.copy(c.b.front, "fb"), "--reference-front", str(c.p("opt.json"))), r"opt\.json"),
    C("compare-reference-front-truncated",
      lambda c: compare(c, c.copy(c.b.front, "fb"), "--reference-front", str(c.write("opt.json", "[[1.0, 2"))),
      r"opt\.json"),
    C("compare-output-dir-is-a-file",
      lambda c: seq(c.write("f", "mine\n"), existing(compare(c, c.copy(c.b.front, "fb"), out="f"))), OUT_FILE),
    C("report-front-json-empty", lambda c: (["report", str(front_with(c, ""))], None), r"front\.json"),
    C("report-front-json-truncated",
      lambda c: (["report", str(front_with(c, (c.b.front / "front.json").read_text()[:200]))], None), r"front\.json"),
    C("report-front-json-not-json", lambda c: (["report", str(front_with(c, "not json at all"))], None),
      r"front\.json"),
    C("report-front-json-without-points", lambda c: (["report", str(front_with(c, '{"name": "x"}'))], None),
      r"front\.json"),
    C("report-path-is-a-file", lambda c: (["report", str(c.write("thing.txt", "x\n"))], None), r"thing\.txt"),
    C("report-comparison-json-truncated",
      lambda c: (["report", str(c.write("cmpdir/comparison.json", '{"fronts": [{"name": "a", "poi').parent)], None),
      r"comparison\.json"),
    # --- pairs ------------------------------------------------------------------------------------
    C("pairs-batch-size-10M-memory", lambda c: pairs_cmd(c, "--batch-size", "10000000"), r"memory",
      subprocess_mem_gb=8),
    C("pairs-num-completions-1", lambda c: pairs_cmd(c, "--num-completions", "1"), r"num.completions"),
    C("pairs-temperature-0", lambda c: pairs_cmd(c, "--temperature", "0"), r"temperature"),
    C("pairs-yaml-num-completions-string",
      lambda c: (["pairs", "--config", str(c.write("p.yaml", 'num_completions: "four"\n')), "--model", "tiny",
                  "--max-prompts", "4", "--max-new-tokens", "6", "--progress", "false",
                  "--output-dir", str(c.p("pairs"))], c.p("pairs")),
      r"num.completions"),
    C("pairs-prompts-non-utf8", lambda c: pairs_cmd(c, "--prompts", str(c.write("bad.jsonl", NON_UTF8))),
      r"bad\.jsonl"),
    C("pairs-prompts-truncated", lambda c: pairs_cmd(c, "--prompts", str(c.write("bad.jsonl", '{"prompt": "'))),
      r"bad\.jsonl"),
    C("pairs-prompts-empty", lambda c: pairs_cmd(c, "--prompts", str(c.write("bad.jsonl", ""))), r"bad\.jsonl"),
    C("pairs-prompts-directory", lambda c: pairs_cmd(c, "--prompts", str(c.mkdir("promptdir"))), r"promptdir"),
    C("pairs-objective-unknown", lambda c: pairs_cmd(c, "--objectives", "sentimnet"), r"unknown objective"),
    C("pairs-output-dir-is-a-file", lambda c: seq(c.write("f", "mine\n"), existing(pairs_cmd(c, out="f"))), OUT_FILE),
    C("pairs-overwrite-foreign-folder",
      lambda c: seq(c.foreign(), existing(pairs_cmd(c, "--overwrite", out="project"))), r"not a paretoalign|refus"),
    # --- reward-model train -------------------------------------------------------------------------
    C("rm-train-ratings-non-utf8", lambda c: rm_train(c, ratings=c.write("bad.jsonl", NON_UTF8)), r"bad\.jsonl"),
    C("rm-train-ratings-truncated",
      lambda c: rm_train(c, ratings=c.write("bad.jsonl", '{"prompt": "p", "response": "r", "helpfulness": 3, "cor')),
      r"bad\.jsonl"),
    C("rm-train-ratings-empty", lambda c: rm_train(c, ratings=c.write("bad.jsonl", "")), r"bad\.jsonl"),
    C("rm-train-ratings-directory", lambda c: rm_train(c, ratings=c.mkdir("ratingsdir")), r"ratingsdir"),
    C("rm-train-ratings-missing", lambda c: rm_train(c, ratings=c.p("nope.jsonl")), r"nope\.jsonl"),
    C("rm-train-yaml-gate-steps-string",
      lambda c: (["reward-model", "train", "--config", str(c.write("r.yaml", 'gate_steps: "ten"\n')),
                  "--ratings", str(HS2), "--backbone", "tiny", "--pooling", "mean", "--progress", "false",
                  "--output-dir", str(c.p("rm-out"))], c.p("rm-out")),
      r"gate.steps"),
    C("rm-train-heldout-fraction-2", lambda c: rm_train(c, "--heldout-fraction", "2"), r"heldout.fraction"),
    C("rm-train-output-dir-is-a-file", lambda c: seq(c.write("f", "mine\n"), existing(rm_train(c, out="f"))),
      OUT_FILE),
    C("rm-train-overwrite-foreign-folder",
      lambda c: seq(c.foreign(), existing(rm_train(c, "--overwrite", out="project"))), r"not a paretoalign|refus"),
    # --- reward-model score ---------------------------------------------------------------------------
    C("rm-score-model-missing-config", lambda c: rm_score(c, rm_broken(c, "no-config")), r"config\.json"),
    C("rm-score-model-truncated-weights", lambda c: rm_score(c, rm_broken(c, "truncated")), r"model\.safetensors"),
    C("rm-score-model-is-a-file", lambda c: rm_score(c, c.write("rmfile", "not a model\n")), r"rmfile"),
    C("rm-score-model-missing", lambda c: rm_score(c, c.p("no-rm")), r"no-rm"),
    C("rm-score-input-non-utf8", lambda c: rm_score(c, c.copy(c.b.rm, "rm"), c.write("bad.jsonl", NON_UTF8)),
      r"bad\.jsonl"),
    C("rm-score-input-truncated",
      lambda c: rm_score(c, c.copy(c.b.rm, "rm"), c.write("bad.jsonl", '{"prompt": "Explain rain.", "respo')),
      r"bad\.jsonl"),
    C("rm-score-input-empty", lambda c: rm_score(c, c.copy(c.b.rm, "rm"), c.write("bad.jsonl", "")), r"bad\.jsonl"),
    C("rm-score-input-directory", lambda c: rm_score(c, c.copy(c.b.rm, "rm"), c.mkdir("inputdir")), r"inputdir"),
    C("rm-score-input-missing", lambda c: rm_score(c, c.copy(c.b.rm, "rm"), c.p("nope.jsonl")), r"nope\.jsonl"),
    C("rm-score-output-under-a-file",
      lambda c: rm_score(c, c.copy(c.b.rm, "rm"), None, "--output", str(c.write("f", "mine\n") / "s.jsonl")),
      OUT_FILE),
    # --- demo (refuses before it loads the model) ------------------------------------------------------
    C("demo-eval-prompts-0", lambda c: demo(c, "--eval-prompts", "0"), r"eval.prompts", no_stdout=DEMO_LOAD),
    C("demo-steps-0", lambda c: demo(c, "--steps", "0"), r"steps", no_stdout=DEMO_LOAD),
    C("demo-learning-rate-negative", lambda c: demo(c, "--learning-rate", "-1"), r"learning.rate", no_stdout=DEMO_LOAD),
    C("demo-learning-rate-nan", lambda c: demo(c, "--learning-rate", "nan"), r"learning.rate", no_stdout=DEMO_LOAD),
    C("demo-batch-size-0", lambda c: demo(c, "--batch-size", "0"), r"batch.size", no_stdout=DEMO_LOAD),
    C("demo-max-new-tokens-0", lambda c: demo(c, "--max-new-tokens", "0"), r"max.new.tokens", no_stdout=DEMO_LOAD),
    C("demo-num-generations-1-group-advantage", lambda c: demo(c, "--num-generations", "1"),
      r"num.generations", no_stdout=DEMO_LOAD),
    C("demo-output-dir-is-a-file", lambda c: seq(c.write("f", "mine\n"), existing(demo(c, out="f"))), OUT_FILE),
    C("demo-output-dir-holds-a-run", lambda c: seq(c.run(), existing(demo(c, out="run"))),
      r"already holds a run|not empty|resume|overwrite"),
]

assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


# ---------------------------------------------------------------------------------------------
# running one case


def snapshot(root: Path) -> dict[str, tuple]:
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mtime_ns, stat.S_IMODE(st.st_mode))
    return out


def disk_changes(before: dict, after: dict, root: Path, new_ok: Path | None) -> list[str]:
    problems = []
    for rel, was in before.items():
        if Path(rel).name == LOCK_FILE:
            continue
        now = after.get(rel)
        if now is None:
            problems.append(f"removed: {rel}")
        elif now != was:
            problems.append(f"changed: {rel}")
    ok_rel = None if new_ok is None else new_ok.relative_to(root).as_posix()
    for rel in sorted(set(after) - set(before)):
        if Path(rel).name == LOCK_FILE:
            continue
        if ok_rel is not None and (rel == ok_rel or rel.startswith(ok_rel + "/")):
            continue
        problems.append(f"new: {rel}")
    return problems


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout(f"the command ran longer than {CASE_TIMEOUT_S} s")


MEM_PRELUDE = ("import resource, sys\n"
               "lim = int(float(sys.argv[1]) * 2**30)\n"
               "resource.setrlimit(resource.RLIMIT_AS, (lim, lim))\n"
               "from paretoalign.cli import main\n"
               "sys.exit(main(sys.argv[2:]))\n")


def run_cli(case: Case, argv: list[str], capsys) -> tuple[object, str, str]:
    """(return code or a description of what escaped, stdout, stderr)."""
    if case.subprocess_mem_gb:
        try:
            proc = subprocess.run([sys.executable, "-c", MEM_PRELUDE, str(case.subprocess_mem_gb), *argv],
                                  capture_output=True, text=True, timeout=CASE_TIMEOUT_S, cwd=REPO,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
        except subprocess.TimeoutExpired as e:
            return f"timed out after {CASE_TIMEOUT_S} s", str(e.stdout or ""), str(e.stderr or "")
        return proc.returncode, proc.stdout, proc.stderr
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_TIMEOUT_S)
    try:
        rc: object = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException as e:  # noqa: BLE001 - a bug: report it as the case's failure, with its traceback
        if isinstance(e, KeyboardInterrupt):
            raise
        rc = f"raised {type(e).__name__}"
        sys.stderr.write("".join(traceback.format_exception(e)))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, built, tmp_path, capsys):
    if case.nonroot and os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    c = Ctx(tmp_path, built)
    try:
        argv, new_ok = case.setup(c)
        capsys.readouterr()
        before = snapshot(tmp_path)
        rc, out, err = run_cli(case, argv, capsys)
        after = snapshot(tmp_path)
    finally:
        for f in c.finalizers:
            f()
        for p in tmp_path.rglob("*"):  # undo chmods so tmp_path can be removed
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)

    lines = err.splitlines()
    first = lines[0] if lines else ""
    shown = lines if len(lines) <= 16 else [*lines[:8], "...", *lines[-6:]]
    report = f"\nargv: {' '.join(argv)}\nrc: {rc}\nstderr:\n{textwrap.indent(chr(10).join(shown), '  ')}\n"
    problems = []
    if rc != 2:
        problems.append(f"exit status {rc}, expected 2")
    if not first.startswith("error: "):
        problems.append("stderr's first line does not start with 'error: '")
    for pat in (*case.patterns, *c.extra_patterns):
        if first.startswith("error: ") and not re.search(pat, first, re.I):
            problems.append(f"the error line does not match {pat!r}")
    if "Traceback (most recent call last)" in err or "Traceback (most recent call last)" in out:
        problems.append("a traceback was printed")
    rest = [ln for ln in lines[1:] if ln.strip()]
    if case.user_frames:
        frames = [ln for ln in rest if ln.lstrip().startswith('File "')]
        if not any(case.user_frames in ln for ln in frames):
            problems.append(f"no frame of the user's {case.user_frames} below the error line")
        if any(PKG_DIR in ln for ln in frames):
            problems.append("paretoalign's own frames are shown")
    elif rest:
        problems.append(f"{len(rest)} more line(s) on stderr after the error line")
    if case.stderr_has and not re.search(case.stderr_has, err, re.I):
        problems.append(f"stderr does not mention {case.stderr_has!r}")
    if case.no_stdout and re.search(case.no_stdout, out):
        problems.append(f"stdout shows {case.no_stdout!r}: the refusal came after the work started")
    changes = disk_changes(before, after, tmp_path, new_ok)
    if changes:
        problems.append("files on disk changed: " + ", ".join(changes[:8]) + (" ..." if len(changes) > 8 else ""))
    print(f"{case.id}: rc {rc}: {first}")  # shown by pytest -rP: what each refusal says
    assert not problems, "; ".join(problems) + report


def test_table_is_large_enough():
    assert len(CASES) >= 60
    commands = {c.id.split("-")[0] for c in CASES}
    assert {"train", "resume", "evaluate", "front", "compare", "report", "pairs", "rm", "demo"} <= commands


# ---------------------------------------------------------------------------------------------
# controls: the cases' argv without the bad part is accepted (so a refusal above is the probe's doing)

CONTROLS = [
    ("train-flags", lambda c: train(c)),
    ("train-yaml", lambda c: train_yaml(c, BASE_YAML + "max_steps: 1\n")),
    ("train-resume", lambda c: resume(c, c.run())),
    ("train-dpo-pairs-folder", lambda c: dpo(c, c.copy(c.b.pairs, "pairs"))),
    ("train-python-objective",
     lambda c: pyobj(c, "good_mod.py", "def good(p, c):\n    return [float(len(x)) for x in c]\n", "good")),
    ("train-reward-model-objective", lambda c: train(c, "--objectives", f"reward_model:{c.copy(c.b.rm, 'rm')},length")),
    ("evaluate-run", lambda c: evaluate(c, c.run())),
    ("evaluate-checkpoint", lambda c: evaluate(c, ckpt(c.run(), 2))),
    ("compare", lambda c: compare(c, c.copy(c.b.front, "fb"))),
    ("report", lambda c: (["report", str(c.copy(c.b.front, "fb"))], None)),
    ("pairs", lambda c: pairs_cmd(c)),
    ("rm-train", lambda c: rm_train(c)),
    ("rm-score", lambda c: rm_score(c, c.copy(c.b.rm, "rm"))),
    ("demo", lambda c: demo(c)),
]


@pytest.mark.parametrize("make", [m for _, m in CONTROLS], ids=[n for n, _ in CONTROLS])
def test_control_is_accepted(make, built, tmp_path, capsys):
    argv, _ = make(Ctx(tmp_path, built))
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err[-3000:]


# ---------------------------------------------------------------------------------------------
# what must succeed: resume falls back from a damaged newest checkpoint to an older complete one


def _damage_newest_missing(run: Path) -> None:
    optimizer_file(ckpt(run, 2)).unlink()


def _damage_newest_truncated(run: Path) -> None:
    truncate(ckpt(run, 2) / "policy" / "adapter_model.safetensors")


@pytest.mark.parametrize("damage", [_damage_newest_missing, _damage_newest_truncated], ids=["missing-file", "truncated-file"])
def test_resume_falls_back_to_the_newest_complete_checkpoint(built, tmp_path, capsys, damage):
    from safetensors.torch import load_file

    from paretoalign import run_dir

    run = shutil.copytree(built.run, tmp_path / "run")
    damage(run)
    capsys.readouterr()
    rc = main(["train", *RUN_ARGS, "--max-steps", "2", "--output-dir", str(run), "--resume"])
    cap = capsys.readouterr()
    said = cap.out + cap.err
    assert rc == 0, cap.err[-3000:]
    assert "Traceback" not in said
    notices = [ln for ln in said.replace(str(tmp_path), "<tmp>").splitlines()
               if re.search(r"newest valid|falls? back|older (complete |valid )?checkpoint", ln, re.I)]
    assert len(notices) == 1, said[-3000:]
    assert [r["step"] for r in run_dir.read_metrics(run)] == [1, 2]
    # continued from step 1 exactly as the uninterrupted run did
    a = load_file(built.run / "final" / "policy" / "adapter_model.safetensors")
    b = load_file(run / "final" / "policy" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    old = [r.get(k) for r in run_dir.read_metrics(built.run) for k in sorted(r) if k.startswith("reward/")]
    new = [r.get(k) for r in run_dir.read_metrics(run) for k in sorted(r) if k.startswith("reward/")]
    assert old == new
