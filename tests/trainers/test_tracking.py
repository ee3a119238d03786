"""--report-to: every numeric metrics.jsonl field reaches the trackers under its name at its step; a
missing tracker library is refused before any work, in one line."""

import math
import sys

import numpy as np
import pytest

from paretoalign import run_dir
from paretoalign.errors import ConfigError
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer
from paretoalign.trainers.tracking import numeric_fields

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=6, progress=False,
            learning_rate=1e-2, save_steps=2)


def make(tmp_path, name="run", **kw):
    return OnlineTrainer(OnlineConfig(**{**FAST, "output_dir": str(tmp_path / name), **kw}))


def scalars(logdir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def assert_logged_like_metrics(logdir, rows):
    """Each numeric field of each row is a scalar of that name at that step, with its value (float32)."""
    got = scalars(logdir)
    want_tags = set().union(*(numeric_fields(r) for r in rows))
    assert set(got) == want_tags
    for row in rows:
        for name, value in numeric_fields(row).items():
            logged = got[name][row["step"]]
            if math.isnan(value):
                assert math.isnan(logged), name
            else:
                assert logged == float(np.float32(value)), (name, row["step"], logged, value)
    for name, by_step in got.items():  # one value per step, no step without a row
        assert set(by_step) <= {r["step"] for r in rows}, name


def test_numeric_fields_flatten_nested_dicts_and_keep_only_numbers():
    row = {"step": 3, "loss": 0.5, "kl": None, "samples": 4, "method": "pama", "flag": True,
           "weights": {"sentiment": 0.25, "length": {"chars": 1}}}
    assert numeric_fields(row) == {"loss": 0.5, "samples": 4.0, "weights/sentiment": 0.25, "weights/length/chars": 1.0}


def test_tensorboard_scalars_equal_metrics_jsonl_step_by_step(tmp_path):
    tr = make(tmp_path, report_to=["tensorboard"], max_steps=3, eval_steps=2, eval_prompts=3)
    tr.train()
    rows = run_dir.read_metrics(tr.out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert "eval/chars" in rows[1] and "eval/words_se" in rows[2]  # the held-out evaluation is tracked too
    assert "reward/chars" in rows[0] and "lr" in rows[0]
    assert_logged_like_metrics(tr.out / "logs", rows)


def test_a_resumed_run_logs_each_step_once(tmp_path, killed_at):
    """Steps redone after the checkpoint replace the crashed run's events (TensorBoard's purge)."""
    crashed = make(tmp_path, report_to="tensorboard", max_steps=4)
    killed_at(OnlineTrainer, "step", 4, crashed.train)
    assert scalars(crashed.out / "logs")["loss"].keys() == {1, 2, 3}  # step 3 was logged, not checkpointed
    resumed = make(tmp_path, report_to="tensorboard", max_steps=4, resume=True)
    assert resumed.start_step == 2
    resumed.train()
    rows = run_dir.read_metrics(resumed.out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert_logged_like_metrics(resumed.out / "logs", rows)  # step 3 holds the resumed run's value


def test_overwrite_removes_the_logs_with_the_run(tmp_path):
    tr = make(tmp_path, report_to="tensorboard", max_steps=1)
    tr.train()
    assert any((tr.out / "logs").iterdir())
    make(tmp_path, max_steps=1, overwrite=True)
    assert not (tr.out / "logs").exists()


@pytest.mark.parametrize("tracker", ["wandb", "tensorboard", "mlflow", "trackio"])
def test_a_missing_tracker_library_is_refused_before_any_work(tmp_path, monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # as if not installed: importing it fails
    cfg = OnlineConfig(**{**FAST, "output_dir": str(tmp_path / "run"), "report_to": tracker})
    with pytest.raises(ConfigError) as err:
        OnlineTrainer(cfg)
    assert str(err.value) == f"--report-to {tracker} needs the {tracker} package: pip install 'paretoalign[{tracker}]'"
    assert not (tmp_path / "run").exists()  # nothing was claimed


def test_the_command_line_says_it_in_one_line(tmp_path, monkeypatch, capsys):
    from paretoalign.cli import main

    monkeypatch.setitem(sys.modules, "wandb", None)
    rc = main(["train", "--model", "tiny", "--objectives", ",".join(OBJ), "--report_to", "tensorboard,wandb",
               "--output-dir", str(tmp_path / "run"), "--progress", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["error: --report-to wandb needs the wandb package: pip install 'paretoalign[wandb]'"]


@pytest.mark.parametrize("value, match", [
    ("tensorbord", "unknown tracker.*'tensorbord'.*tensorboard, trackio, wandb, mlflow"),
    ("none,wandb", "'none' together with"),
])
def test_report_to_values_are_checked(value, match):
    with pytest.raises(ConfigError, match=match):
        OnlineConfig(report_to=value)


def test_report_to_parses_like_trl():
    assert OnlineConfig().report_to == ["none"] and OnlineConfig().trackers == []
    cfg = OnlineConfig(report_to="tensorboard, wandb,tensorboard")
    assert cfg.report_to == cfg.trackers == ["tensorboard", "wandb"]
    assert OnlineConfig(report_to=[]).report_to == ["none"]
