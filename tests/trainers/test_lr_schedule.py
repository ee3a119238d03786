"""--lr-scheduler-type / --warmup-steps / --warmup-ratio: the lr column is transformers' schedule, stepped
once per optimiser step, and --resume continues it exactly (its state is JSON in trainer_state.json)."""

import json

import pytest
import torch
from transformers import get_scheduler

from paretoalign import run_dir
from paretoalign.data.preference_pairs import PreferencePair, save_preference_data
from paretoalign.errors import ConfigError
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.offline_config import OfflineConfig
from paretoalign.trainers.offline_trainer import OfflineTrainer
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

LR = 5e-3


def reference_lrs(kind: str, warmup: int, total: int) -> list[float]:
    """The rate of each of ``total`` optimiser steps under transformers' schedule."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched = get_scheduler(kind, opt, num_warmup_steps=warmup, num_training_steps=total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.fixture
def pairs_file(tmp_path):
    pairs = [PreferencePair(f"question {i}?", f"yes yes {i} indeed", f"no {i}", {"helpful": 1.0}) for i in range(8)]
    return str(save_preference_data(pairs, tmp_path / "pairs.jsonl"))


def offline(tmp_path, pairs_file, name="run", **kw):
    opts = dict(model="tiny", method="dpo", objectives=["helpful"], pairs=[pairs_file], batch_size=2,
                max_response_length=8, progress=False, learning_rate=LR, output_dir=str(tmp_path / name))
    return OfflineTrainer(OfflineConfig(**{**opts, **kw}))


@pytest.mark.parametrize("kind, kw, warmup", [
    ("cosine", {"warmup_steps": 2}, 2),
    ("linear", {"warmup_ratio": 0.3}, 2),  # ceil(0.3 x 5)
    ("constant_with_warmup", {"warmup_steps": 3}, 3),
    ("constant", {}, 0),
])
def test_the_lr_column_is_transformers_schedule(tmp_path, pairs_file, kind, kw, warmup):
    tr = offline(tmp_path, pairs_file, max_steps=5, lr_scheduler_type=kind, **kw)
    tr.train()
    assert [r["lr"] for r in run_dir.read_metrics(tr.out)] == reference_lrs(kind, warmup, 5)


def test_online_steps_the_schedule_once_per_optimiser_step(tmp_path):
    """--ppo-epochs 2: two optimiser steps per step; the row shows its first one's rate."""
    obj = ["length(name=chars,scale=10)", "length(name=words,unit=words,scale=1,direction=minimize)"]
    cfg = OnlineConfig(model="tiny", objectives=obj, batch_size=2, num_generations=2, max_new_tokens=4, progress=False,
                       learning_rate=LR, method="morlhf", ppo_epochs=2, max_steps=3, lr_scheduler_type="linear",
                       warmup_steps=3, output_dir=str(tmp_path / "run"))
    tr = OnlineTrainer(cfg)
    tr.train()
    want = reference_lrs("linear", 3, 6)
    assert [r["lr"] for r in run_dir.read_metrics(tr.out)] == want[0::2]


def test_resume_mid_warmup_continues_the_same_lr_sequence(tmp_path, pairs_file, killed_at):
    kw = dict(max_steps=6, save_steps=2, lr_scheduler_type="linear", warmup_steps=4)
    full = offline(tmp_path, pairs_file, "full", **kw)
    full.train()
    want = run_dir.read_metrics(full.out)

    crashed = offline(tmp_path, pairs_file, "crash", **kw)
    killed_at(OfflineTrainer, "step", 4, crashed.train)
    state = json.loads((ckpt_lib.checkpoint_dir(crashed.out, 2) / run_dir.STATE_FILE).read_text())
    assert state["lr_scheduler"]["last_epoch"] == 2  # plain JSON numbers, mid-warm-up

    resumed = offline(tmp_path, pairs_file, "crash", resume=True, **kw)
    assert resumed.start_step == 2 and resumed.current_lr() == want[2]["lr"]
    resumed.train()
    got = run_dir.read_metrics(resumed.out)
    assert [r["lr"] for r in got] == [r["lr"] for r in want] == reference_lrs("linear", 4, 6)
    for a, b in zip(got, want):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)


def test_a_run_from_before_schedules_resumes_at_its_constant_rate(tmp_path, pairs_file):
    """A checkpoint without schedule state and a config without the new options: still resumable."""
    tr = offline(tmp_path, pairs_file, max_steps=2, save_steps=2)
    tr.train()
    ckpt = ckpt_lib.checkpoint_dir(tr.out, 2)
    state = json.loads((ckpt / run_dir.STATE_FILE).read_text())
    del state["lr_scheduler"]
    (ckpt / run_dir.STATE_FILE).write_text(json.dumps(state))
    saved = run_dir.load_config(tr.out)
    for key in ("lr_scheduler_type", "warmup_steps", "warmup_ratio", "gradient_accumulation_steps", "report_to",
                "eval_steps", "eval_prompts", "eval_samples", "push_to_hub", "hub_model_id"):
        del saved[key]
    run_dir.save_config(tr.out, saved)
    resumed = offline(tmp_path, pairs_file, max_steps=3, resume=True)
    assert resumed.start_step == 2 and resumed.current_lr() == LR
    resumed.train()
    with pytest.raises(Exception, match="configuration differs.*lr_scheduler_type"):
        offline(tmp_path, pairs_file, max_steps=4, resume=True, lr_scheduler_type="cosine", warmup_steps=1)


def test_dpa_counts_its_fine_tuning_steps(tmp_path):
    from paretoalign.trainers.dpa_config import DPAConfig
    from paretoalign.trainers.dpa_trainer import DPATrainer

    obj = ["length(name=chars,scale=10)", "length(name=words,unit=words,scale=1,direction=minimize)"]
    cfg = DPAConfig(model="tiny", objectives=obj, rounds=2, prompts_per_round=4, num_candidates=2, batch_size=2,
                    max_new_tokens=4, progress=False, learning_rate=LR, lr_scheduler_type="linear", warmup_steps=3,
                    output_dir=str(tmp_path / "dpa"))
    assert cfg.updates_per_step == 2
    tr = DPATrainer(cfg)
    tr.train()
    assert [r["lr"] for r in run_dir.read_metrics(tr.out)] == reference_lrs("linear", 3, 4)[0::2]


@pytest.mark.parametrize("kw, match", [
    ({"warmup_steps": 2}, "constant has no warm-up"),
    ({"lr_scheduler_type": "linear", "warmup_steps": 2, "warmup_ratio": 0.1}, "both set"),
    ({"lr_scheduler_type": "linear", "warmup_ratio": 1.0}, r"warmup_ratio: must be in \[0, 1\)"),
    ({"lr_scheduler_type": "linear", "warmup_steps": -1}, "warmup_steps: must be >= 0"),
    ({"lr_scheduler_type": "polynomial"}, "option lr_scheduler_type: expected one of"),
])
def test_schedule_options_are_checked(kw, match):
    with pytest.raises(ConfigError, match=match):
        OnlineConfig(**kw)
