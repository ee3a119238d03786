"""`paretoalign evaluate`: targets, the held-out split, caching, win rates, bad input."""

import json
import math

import pytest
import torch

from paretoalign.cli import main
from paretoalign.data.prompts import builtin_prompts, prompts_hash
from paretoalign.errors import ConfigError, ObjectiveError, RunDirError
from paretoalign.evaluation import evaluate as ev_mod
from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target
from paretoalign.evaluation.scoring import generate_completions, win_rates
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
EVAL = dict(num_prompts=6, max_new_tokens=8, batch_size=4)


@pytest.fixture(autouse=True)
def eval_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny LoRA run that moved (high learning rate) and its in-memory trainer."""
    out = tmp_path_factory.mktemp("runs") / "run"
    trainer = OnlineTrainer(OnlineConfig(
        model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
        learning_rate=5e-2, max_steps=3, save_steps=2, output_dir=str(out), method="morlhf", seed=3,
    ))
    trainer.train()
    return out, trainer


def test_run_evaluation_records_everything_and_matches_the_in_memory_policy(trained):
    run, trainer = trained
    res = evaluate_target(EvalConfig(target=str(run), baseline="none", **EVAL), quiet=True)
    saved = json.loads((run / "eval.json").read_text())
    assert saved["summary"] == res["summary"] and res["kind"] == "run"
    assert res["names"] == ["chars", "words"] and res["signs"] == [1.0, -1.0]
    # the run's own held-out split (its seed is 3), first 6 prompts
    from paretoalign.data.prompts import split_prompts

    held = split_prompts(builtin_prompts("all"), 0.15, 3)[1][:6]
    assert res["prompts"]["n"] == 6 and res["prompts_sha256"] == prompts_hash(held)
    assert res["decoding"]["max_new_tokens"] == 8 and res["decoding"]["seed"] == 1234
    scores = torch.tensor(res["scores"])
    assert scores.shape == (6, 2)
    assert res["summary"]["chars"]["mean"] == pytest.approx(float(scores[:, 0].mean()))
    sd = float(scores[:, 0].std())
    assert res["summary"]["chars"]["stderr"] == pytest.approx(sd / math.sqrt(6))
    assert len(res["samples"]) == 6 and res["samples"][0]["completion"] == res["completions"][0]
    # the adapter loaded from disk generates exactly what the trained policy in memory generates
    policy = trainer.unwrapped.policy.eval()
    _, comps = generate_completions(policy, trainer.tokenizer, held, seed=1234, batch_size=4, max_new_tokens=8)
    assert comps == res["completions"]


def test_reevaluating_an_unchanged_run_loads_nothing_and_a_new_objective_scores_only_itself(trained, monkeypatch):
    run, _ = trained
    first = evaluate_target(EvalConfig(target=str(run), baseline="none", **EVAL), quiet=True)
    assert first["cached"]["completions"] is False or first["cached"]["scores"] == ["chars", "words"]

    def boom(*a, **k):
        raise AssertionError("the model was loaded although the evaluation is cached")

    monkeypatch.setattr(ev_mod, "load_target", boom)
    again = evaluate_target(EvalConfig(target=str(run), baseline="none", **EVAL), quiet=True)
    assert again["cached"] == {"completions": True, "scores": ["chars", "words"]}
    assert again["scores"] == first["scores"] and again["completions"] == first["completions"]
    more = evaluate_target(EvalConfig(target=str(run), baseline="none", objectives=OBJ + ["sentiment"], **EVAL), quiet=True)
    assert more["cached"]["scores"] == ["chars", "words"] and more["names"][-1] == "sentiment"
    # other decoding settings are another evaluation
    with pytest.raises(AssertionError, match="was loaded"):
        evaluate_target(EvalConfig(target=str(run), baseline="none", temperature=0.5, **EVAL), quiet=True)


def test_changed_weights_invalidate_the_cache(tmp_path):
    from paretoalign.models import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    folder = tmp_path / "m"
    build_tiny_model(tok, seed=1).save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = EvalConfig(target=str(folder), objectives=OBJ, output=str(tmp_path / "e.json"), **EVAL)
    a = evaluate_target(cfg, quiet=True)
    assert a["cached"]["completions"] is False and a["baseline"] is None and a["win_rate"] is None
    assert evaluate_target(cfg, quiet=True)["cached"]["completions"] is True
    build_tiny_model(tok, seed=2).save_pretrained(folder)  # retrained in place
    c = evaluate_target(cfg, quiet=True)
    assert c["cached"]["completions"] is False and c["model"]["fingerprint"] != a["model"]["fingerprint"]
    assert evaluate_target(EvalConfig(**{**cfg.__dict__, "cache": False}), quiet=True)["cached"]["completions"] is False


def test_win_rates_against_the_base_model_use_the_same_prompts(trained):
    run, _ = trained
    res = evaluate_target(EvalConfig(target=str(run), **EVAL), quiet=True)
    assert res["baseline"]["target"] == "tiny"
    # the run's tiny base (seed 3) evaluated with the same command and settings
    base = res["baseline"]
    want = win_rates(res["scores"], base["scores"], res["names"], res["signs"])
    assert res["win_rate"] == want
    for name in res["names"]:
        w = res["win_rate"][name]
        assert w["wins"] + w["ties"] + w["losses"] == 6
        assert w["ci95"][0] <= w["win_rate"] <= w["ci95"][1]
    assert base["completions"] != res["completions"], "the trained adapter should change the completions"


def test_checkpoint_folders_are_targets(trained):
    run, _ = trained
    ckpt = sorted((run / "checkpoints").iterdir())[0]
    res = evaluate_target(EvalConfig(target=str(ckpt), baseline="none", **EVAL), quiet=True)
    assert res["kind"] == "checkpoint" and (ckpt / "eval.json").is_file()


def test_win_rates_and_wilson_interval_exactly():
    from paretoalign.evaluation.scoring import wilson_interval

    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # textbook values
    s = [[1.0, 5.0], [2.0, 5.0], [0.0, 1.0], [float("nan"), 0.0]]
    b = [[0.0, 4.0], [2.0, 6.0], [1.0, 1.0], [0.0, 2.0]]
    w = win_rates(s, b, ["up", "down"], [1.0, -1.0])
    assert (w["up"]["wins"], w["up"]["ties"], w["up"]["losses"], w["up"]["n"]) == (1, 1, 1, 3)
    assert w["up"]["win_rate"] == pytest.approx(0.5)
    # 'down' is minimised: 5<6 and 0<2 are wins, 5>4 a loss, 1=1 a tie
    assert (w["down"]["wins"], w["down"]["ties"], w["down"]["losses"]) == (2, 1, 1)
    assert w["down"]["win_rate"] == pytest.approx(2.5 / 4)
    with pytest.raises(ConfigError, match="same prompts"):
        win_rates(s, b[:3], ["up", "down"], [1.0, -1.0])


def test_nan_scores_fail_with_the_objective_named_or_are_skipped(tmp_path, monkeypatch):
    (tmp_path / "eval_nanobj.py").write_text(
        "def half_nan(prompts, completions):\n    return [float('nan') if i % 2 else 1.0 for i in range(len(completions))]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = dict(target="tiny", objectives=["length", "python:eval_nanobj:half_nan"], output=str(tmp_path / "e.json"), **EVAL)
    with pytest.raises(ObjectiveError, match="half_nan"):
        evaluate_target(EvalConfig(**cfg), quiet=True)
    res = evaluate_target(EvalConfig(**cfg, nan_policy="skip"), quiet=True)
    assert res["summary"]["half_nan"]["n"] == 3 and res["summary"]["length"]["n"] == 6


def test_bad_targets_and_options_give_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="--objectives is required"):
        evaluate_target(EvalConfig(target="tiny"), quiet=True)
    with pytest.raises(ConfigError, match="needs a target"):
        EvalConfig(target="")
    with pytest.raises(ConfigError, match="num_prompts must be >= 1"):
        EvalConfig(target="tiny", num_prompts=0)
    run = tmp_path / "unfinished"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: tiny\nobjectives: [length, sentiment]\n")
    with pytest.raises(RunDirError, match="has no final model"):
        evaluate_target(EvalConfig(target=str(run)), quiet=True)
    from paretoalign.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="not found"):
        evaluate_target(EvalConfig(target="no-such/model-xyz", objectives=["length", "sentiment"]), quiet=True)


def test_cli_evaluate(trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "cli.json"
    rc = main(["evaluate", str(run), "--num-prompts", "4", "--max-new-tokens", "8", "--output", str(out), "--baseline", "none"])
    assert rc == 0 and out.is_file()
    text = capsys.readouterr().out
    assert "chars" in text and "words" in text and str(out) in text
    assert main(["evaluate", "tiny"]) == 2
    assert "--objectives is required" in capsys.readouterr().err
