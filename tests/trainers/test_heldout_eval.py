"""--eval-steps: held-out means and standard errors in the metrics rows, the numbers `paretoalign evaluate`
gives, without touching the training (same metrics and weights with it on or off) and across --resume."""

import json

import pytest
import torch

from paretoalign import run_dir
from paretoalign.data.preference_pairs import PreferencePair, save_preference_data
from paretoalign.data.prompts import load_prompts, split_prompts
from paretoalign.errors import ConfigError
from paretoalign.trainers.heldout_eval import eval_due, mean_and_se
from paretoalign.trainers.offline_config import OfflineConfig
from paretoalign.trainers.offline_trainer import OfflineTrainer
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=6, progress=False,
            learning_rate=1e-2, save_steps=2, method="morlhf")
EVAL = dict(eval_steps=2, eval_prompts=4)


def make(tmp_path, name, **kw):
    return OnlineTrainer(OnlineConfig(**{**FAST, "output_dir": str(tmp_path / name), **kw}))


def trainable(tr):
    return {n: p.detach().clone() for n, p in tr.unwrapped.named_parameters() if p.requires_grad}


def training_fields(row):
    return {k: v for k, v in row.items() if not k.startswith(("eval/", "time_"))}


def test_eval_schedule_and_statistics():
    assert [s for s in range(1, 8) if eval_due(s, 3, 7)] == [3, 6, 7]
    assert not any(eval_due(s, n, 7) for s in range(1, 8) for n in (None, 0))
    mean, se, n = mean_and_se(torch.tensor([1.0, 2.0, float("nan"), 3.0]))
    assert (mean, n) == (2.0, 3) and se == pytest.approx(1.0 / 3**0.5)
    assert mean_and_se(torch.tensor([5.0]))[1:] == (0.0, 1)


def test_eval_logs_means_and_errors_and_leaves_training_untouched(tmp_path):
    on = make(tmp_path, "on", max_steps=3, **EVAL)
    on.train()
    off = make(tmp_path, "off", max_steps=3)
    off.train()
    rows_on, rows_off = run_dir.read_metrics(on.out), run_dir.read_metrics(off.out)
    assert [sorted(k for k in r if k.startswith("eval/")) for r in rows_on] == [
        [], ["eval/chars", "eval/chars_se", "eval/words", "eval/words_se"], ["eval/chars", "eval/chars_se",
                                                                            "eval/words", "eval/words_se"]]
    assert rows_on[1]["eval/chars"] > 0 and rows_on[1]["eval/chars_se"] >= 0 and rows_on[2]["time_eval"] > 0
    assert rows_on[1]["eval/words"] > 0  # raw scores, as evaluate reports them (training rewards are oriented)
    assert [training_fields(r) for r in rows_on] == [training_fields(r) for r in rows_off]
    a, b = trainable(on), trainable(off)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_eval_scores_what_paretoalign_evaluate_scores(tmp_path):
    """Step 2's eval/<objective> is evaluate's mean on checkpoint step 2 and the same held-out prompts."""
    from paretoalign.evaluation.config import EvalConfig
    from paretoalign.evaluation.evaluate import evaluate_target

    tr = make(tmp_path, "run", max_steps=2, **EVAL)
    tr.train()
    held = split_prompts(load_prompts("builtin"), 0.15, 0)[1][:4]
    assert tr.heldout_eval.prompts == held
    row = run_dir.read_metrics(tr.out)[1]
    res = evaluate_target(EvalConfig(target=str(tr.out / "checkpoints" / "step-000002"), num_prompts=4,
                                     baseline="none", cache=False), write=False, quiet=True)
    for name in ("chars", "words"):
        assert row[f"eval/{name}"] == pytest.approx(res["summary"][name]["mean"], abs=1e-6)
        assert row[f"eval/{name}_se"] == pytest.approx(res["summary"][name]["stderr"], abs=1e-6)


def test_a_resumed_run_evaluates_as_an_uninterrupted_one(tmp_path, killed_at):
    full = make(tmp_path, "full", max_steps=4, **EVAL)
    full.train()
    crashed = make(tmp_path, "crash", max_steps=4, **EVAL)
    killed_at(OnlineTrainer, "step", 4, crashed.train)
    # --eval-* may change on resume (they do not change the training); here they are the same
    resumed = make(tmp_path, "crash", max_steps=4, resume=True, **EVAL)
    resumed.train()
    got, want = run_dir.read_metrics(resumed.out), run_dir.read_metrics(full.out)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(got, want):
        assert a.keys() == b.keys()
        for k in a:
            if k.startswith("eval/"):
                assert a[k] == pytest.approx(b[k], abs=1e-6), k


def test_eval_prompts_and_samples_set_the_sample(tmp_path):
    tr = make(tmp_path, "run", max_steps=1, eval_steps=1, eval_prompts=3, eval_samples=2, heldout_fraction=0.5)
    texts, completions = tr.heldout_eval.completions(tr.eval_policy, tr.tokenizer)
    assert len(tr.heldout_eval.prompts) == 3 and len(completions) == 6 and texts[0] == texts[1]


@pytest.mark.parametrize("kw, match", [({"eval_steps": -1}, "eval_steps"), ({"eval_prompts": 0}, "eval_prompts"),
                                       ({"eval_samples": 0}, "eval_samples")])
def test_eval_options_are_checked(kw, match):
    with pytest.raises(ConfigError, match=match):
        OnlineConfig(**kw)


# ---- offline: the objectives that score text are evaluated; data labels cannot be ----------------


@pytest.fixture
def pairs_file(tmp_path):
    pairs = [PreferencePair(f"question {i}?", f"yes yes {i} indeed", f"no {i}", {"helpful": 1.0}) for i in range(6)]
    return str(save_preference_data(pairs, tmp_path / "pairs.jsonl"))


def test_offline_eval_scores_its_scoring_objectives(tmp_path, pairs_file):
    cfg = OfflineConfig(model="tiny", method="modpo", pairs=[pairs_file], objectives=["helpful", "length(name=chars)"],
                        max_steps=2, batch_size=2, max_response_length=8, progress=False, eval_steps=1,
                        eval_prompts=2, output_dir=str(tmp_path / "modpo"))
    tr = OfflineTrainer(cfg)
    assert tr.heldout_eval.objectives.names == ["chars"] and tr.heldout_eval.max_new_tokens == 48
    tr.train()
    rows = run_dir.read_metrics(tr.out)
    assert all({"eval/chars", "eval/chars_se"} <= r.keys() and "eval/helpful" not in r for r in rows)
    cfg = OfflineConfig(model="tiny", method="dpo", pairs=[pairs_file], objectives=["helpful"], eval_steps=1,
                        progress=False, output_dir=str(tmp_path / "dpo"))
    with pytest.raises(ConfigError, match="--eval-steps needs objectives that score text.*helpful"):
        OfflineTrainer(cfg)
    assert json.loads(json.dumps(rows))  # the rows stay plain JSON
