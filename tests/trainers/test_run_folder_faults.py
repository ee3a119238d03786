"""Run folders under faults and hostile files: no code from a checkpoint, resume exact or refused,
one writer, --overwrite removes only our files, atomic final/, NaN stops before saving."""

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from paretoalign import run_dir
from paretoalign.cli import main
from paretoalign.errors import ParetoAlignError, RunDirError
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
            learning_rate=1e-2, save_steps=1, save_total_limit=3)


def make(out, **kw):
    return OnlineTrainer(OnlineConfig(**{**FAST, "output_dir": str(out), **kw}))


def adapter(out):
    return load_file(out / "final" / "policy" / "adapter_model.safetensors")


def assert_same_adapter(a, b):
    wa, wb = adapter(a), adapter(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A 3-step run (checkpoints 1, 2, 3) and an uninterrupted 5-step run of the same config."""
    root = tmp_path_factory.mktemp("runs")
    make(root / "three", max_steps=3).train()
    make(root / "five", max_steps=5).train()
    return root


@pytest.fixture
def three(runs, tmp_path):
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(runs / "three", dst)
    return dst


def ckpt(out, step):
    return ckpt_lib.checkpoint_dir(out, step)


def test_a_run_folder_is_marked_and_its_checkpoints_are_data(three):
    marker = run_dir.read_marker(three)
    assert marker["kind"] == "train" and "paretoalign" in marker
    files = sorted(p.name for p in ckpt(three, 3).iterdir())
    assert files == ["optimizer.json", "optimizer.safetensors", "policy", "rng_state_0.json", "trainer_state.json",
                     "value_head.safetensors"]
    state = json.loads((ckpt(three, 3) / "trainer_state.json").read_text())
    assert state["step"] == 3 and "optimizer.safetensors" in state["files"]
    assert not list(three.rglob("*.pt")) and not list(three.rglob("*.tmp"))


class Payload:
    """Unpickling this creates a file: the test's witness that code ran."""

    def __init__(self, witness):
        self.witness = str(witness)

    def __reduce__(self):
        return (open, (self.witness, "w"))


@pytest.mark.parametrize("name", ["optimizer.safetensors", "optimizer.json", "rng_state_0.json",
                                  "value_head.safetensors", "policy/adapter_model.safetensors",
                                  "trainer_state.json"])
def test_a_pickle_planted_in_any_checkpoint_file_never_runs(three, tmp_path, name, capsys):
    witness = tmp_path / "PWNED"
    for step in (1, 2, 3):  # every checkpoint, so there is no valid one to fall back to
        (ckpt(three, step) / name).write_bytes(pickle.dumps(Payload(witness)))
    code = main(["train", "--model", "tiny", "--output-dir", str(three), "--resume", "--max-steps", "5"])
    assert not witness.exists()
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_legacy_pickle_checkpoints_are_read_with_the_weights_only_loader(three, tmp_path):
    """A checkpoint from before safetensors (optimizer.pt, no manifest): a payload is refused, not run."""
    witness = tmp_path / "PWNED"
    c = ckpt(three, 3)
    for f in ("optimizer.safetensors", "optimizer.json"):
        (c / f).unlink()
    torch.save(Payload(witness), c / "optimizer.pt")
    state = json.loads((c / "trainer_state.json").read_text())
    del state["files"]
    (c / "trainer_state.json").write_text(json.dumps(state))
    tr = None
    with pytest.raises(RunDirError, match=r"optimizer.pt: refused .*never run as code"):
        tr = make(three, max_steps=5, resume=True)
    assert tr is None and not witness.exists()


def test_a_damaged_newest_checkpoint_falls_back_and_the_run_still_matches(three, runs, capsys):
    opt = ckpt(three, 3) / "optimizer.safetensors"
    opt.write_bytes(opt.read_bytes()[: opt.stat().st_size // 2])
    tr = make(three, max_steps=5, resume=True)
    assert tr.start_step == 2
    assert "step-000003: optimizer.safetensors is truncated" in capsys.readouterr().out
    tr.train()
    assert_same_adapter(three, runs / "five")
    assert [r["step"] for r in run_dir.read_metrics(three)] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("name, match", [("rng_state_0.json", "rng_state_0.json is missing"),
                                         ("value_head.safetensors", "value_head.safetensors is missing")])
def test_a_missing_state_is_never_silently_reinitialised(three, name, match):
    for step in (1, 2, 3):
        (ckpt(three, step) / name).unlink()
    with pytest.raises(RunDirError, match=f"no valid checkpoint.*{match}"):
        make(three, max_steps=5, resume=True)
    # without a manifest (an older checkpoint), the loader itself refuses
    for step in (1, 2, 3):
        f = ckpt(three, step) / "trainer_state.json"
        state = json.loads(f.read_text())
        del state["files"]
        f.write_text(json.dumps(state))
    with pytest.raises(RunDirError, match=match):
        make(three, max_steps=5, resume=True)


def test_a_corrupt_metrics_line_keeps_every_valid_row(three, runs, capsys):
    f = three / "metrics.jsonl"
    lines = f.read_text().splitlines()
    f.write_text("\n".join([lines[0], '{"step": 2, "loss": 0.1', *lines[1:]]) + "\n")
    tr = make(three, max_steps=5, resume=True)
    assert "skipped 1 corrupt line" in capsys.readouterr().out
    assert [r["step"] for r in run_dir.read_metrics(three)] == [1, 2, 3]
    assert (three / "metrics.corrupt.jsonl").read_text() == '{"step": 2, "loss": 0.1\n'
    tr.train()
    assert [r["step"] for r in run_dir.read_metrics(three)] == [1, 2, 3, 4, 5]


def test_resume_that_contradicts_the_checkpoint_is_refused_and_changes_nothing(three):
    before = (three / "config.yaml").read_text()
    with pytest.raises(RunDirError, match="has done 3 steps.*--max-steps 2 is fewer"):
        make(three, max_steps=2, resume=True)
    with pytest.raises(RunDirError, match="is complete \\(3 steps"):
        make(three, max_steps=3, resume=True)
    assert (three / "config.yaml").read_text() == before


def test_overwrite_removes_only_what_paretoalign_wrote(three, tmp_path):
    (three / "notes.txt").write_text("mine")
    make(three, max_steps=1, overwrite=True).train()
    assert (three / "notes.txt").read_text() == "mine"
    assert [s for s, _ in run_dir.list_checkpoints(three)] == [1]

    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "main.py").write_text("print('hi')")
    (project / "config.yaml").write_text("method: pama\n")
    with pytest.raises(RunDirError, match="not a paretoalign folder"):
        make(project, max_steps=1, overwrite=True)
    assert sorted(p.name for p in project.rglob("*")) == ["config.yaml", "main.py", "src"]


def test_output_dir_that_is_a_file_or_under_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    for out, what in ((f, "is a file"), (f / "run", "is under")):
        with pytest.raises(RunDirError, match=what):
            make(out, max_steps=1)
    assert f.read_text() == "x"


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_dead_holder_leaves_no_lock(three):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(three / run_dir.LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"in use by another paretoalign process \\(pid {holder.pid}\\)"):
            make(three, max_steps=5, resume=True)
    finally:
        holder.kill()
        holder.wait()
    make(three, max_steps=5, resume=True)  # killed holder: the OS released its lock


def test_a_kill_during_the_final_save_leaves_no_half_written_final(three, monkeypatch, capsys):
    tr = make(three, max_steps=4, resume=True)
    real = tr.tokenizer.save_pretrained

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(tr.tokenizer, "save_pretrained", killed)
    with pytest.raises(KeyboardInterrupt):
        tr.train()
    assert (three / "final").is_dir()  # the previous final/ (3 steps) is intact, not half replaced
    assert (three / "final.tmp").is_dir()
    monkeypatch.setattr(tr.tokenizer, "save_pretrained", real)
    make(three, max_steps=4, resume=True).train()
    assert not (three / "final.tmp").exists() and (three / "final" / "policy" / "tokenizer.json").is_file()
    assert json.loads((three / "summary.json").read_text())["steps"] == 4


def test_nan_parameters_stop_the_run_before_a_checkpoint(tmp_path, monkeypatch):
    tr = make(tmp_path / "nan", max_steps=3)
    real_step = OnlineTrainer.step

    def diverging_step(self, step):  # an update that leaves a NaN weight behind
        row = real_step(self, step)
        with torch.no_grad():
            next(p for n, p in self.unwrapped.named_parameters() if "lora_A" in n).view(-1)[0] = float("nan")
        return row

    monkeypatch.setattr(OnlineTrainer, "step", diverging_step)
    with pytest.raises(ParetoAlignError, match=r"step 1: parameter .*lora_A.* is not finite"):
        tr.train()
    assert run_dir.list_checkpoints(tmp_path / "nan") == []
    with pytest.raises(ParetoAlignError, match="step 7: the loss is nan"):
        ckpt_lib.check_finite(7, float("nan"), tr.model)


def test_cli_resume_fallback_says_so_in_one_line(three, capsys):
    (ckpt(three, 3) / "rng_state_0.json").unlink()
    assert main(["train", "--model", "tiny", "--objectives", ",".join(OBJ), "--batch-size", "2", "--num-generations", "2",
                 "--max-new-tokens", "8", "--learning-rate", "0.01", "--save-steps", "1", "--save-total-limit", "3",
                 "--progress", "false", "--output-dir", str(three), "--resume", "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "step-000003: rng_state_0.json is missing; resuming from the newest valid one, step 2" in out
    assert not os.path.exists(three / "final.tmp")


def test_a_run_folder_written_before_the_safetensors_checkpoints_still_resumes_exactly(three, runs):
    """An older run folder (no marker, optimizer.pt and rng_state_0.pt from torch.save, no manifest)
    resumes through torch's weights-only loader and continues exactly."""
    import numpy as np

    c = ckpt(three, 3)
    probe = make(three, max_steps=5, resume=True)  # loads the new-format checkpoint
    torch.save(probe.optimizer.state_dict(), c / "optimizer.pt")
    run_dir.unlock(three)
    del probe
    rng = json.loads((c / "rng_state_0.json").read_text())
    version, internal, gauss = rng["python"]
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    torch.save({"torch": torch.tensor(rng["torch"], dtype=torch.uint8), "python": (version, tuple(internal), gauss),
                "numpy": (kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)}, c / "rng_state_0.pt")
    for f in ("optimizer.safetensors", "optimizer.json", "rng_state_0.json"):
        (c / f).unlink()
    state = json.loads((c / "trainer_state.json").read_text())
    del state["files"]
    (c / "trainer_state.json").write_text(json.dumps(state))
    (three / run_dir.MARKER_FILE).unlink()
    tr = make(three, max_steps=5, resume=True)
    assert tr.start_step == 3 and run_dir.read_marker(three)["kind"] == "train"  # adopted
    tr.train()
    assert_same_adapter(three, runs / "five")
