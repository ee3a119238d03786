import json

import pytest

from paretoalign.cli import main


def test_demo_runs_end_to_end_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--model", "tiny", "--steps", "2", "--eval-prompts", "3", "--eval-samples", "2",
               "--batch-size", "2", "--max-new-tokens", "6", "--output-dir", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "change [95% CI]" in printed and "sentiment" in printed and "concise" in printed
    assert "--- prompt:" in printed and "standard errors" in printed
    result = json.loads((out / "demo.json").read_text())
    assert set(result["objectives"]) == {"sentiment", "concise"}
    for st in result["objectives"].values():
        assert {"before", "after", "diff", "diff_se"} <= set(st) and st["prompts"] == 3
        assert st["diff"] == pytest.approx(st["after"] - st["before"])
    assert result["run"] == str(out / "run") and result["wall_seconds"] > 0
    # same prompts, same decoding settings before and after; each prompt answered twice
    assert result["before"]["prompts_sha256"] == result["after"]["prompts_sha256"]
    assert result["before"]["decoding"] == result["after"]["decoding"]
    assert len(result["before"]["scores"]) == 6
    assert (out / "run" / "final" / "policy" / "adapter_config.json").is_file()
    assert result["training"]["steps"] == 2
    assert result["recipe"]["pama_granularity"] == "sequence" and not result["recipe"]["paper"]
    assert result["recipe"]["weights"] == [0.75, 0.25]  # the demo's tilt toward sentiment (README "The demo")
    assert result["recipe"]["generation_backend"] == "hf" == result["before"]["decoding"]["generation_backend"]
    assert "look like reward gaming" in printed
    for when in ("before", "after"):
        assert set(result["degenerate"][when]) == {"repeated_lines", "mostly_symbols", "answers"}
        assert result["degenerate"][when]["answers"] == 6


def test_degenerate_answers_flags_repeated_lines_and_emoji_not_ordinary_text():
    from paretoalign.demo import degenerate_answers

    texts = ["Dear Sarah,\n\nDear Sarah,\nDear Sarah,\nDear Sar",  # the same line 3 times (the cut-off 4th differs)
             "\U0001f60a\U0001f44f\U0001f44f great \U0001f308\U0001f496\U0001f496",  # 6 emoji, 5 letters
             "A calm reply.\nIt has two lines.",
             "Yes.\nYes.\nNo.",  # a line twice: not flagged
             "", "\U0001f60a is how I feel about this lovely film"]
    assert degenerate_answers(texts) == {"repeated_lines": 1, "mostly_symbols": 1, "answers": 6}


def test_paper_flag_runs_the_papers_reading(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "tiny", "--paper", "--steps", "1", "--eval-prompts", "2", "--eval-samples", "1",
                 "--batch-size", "2", "--max-new-tokens", "4", "--samples", "0", "--output-dir", str(out)]) == 0
    recipe = json.loads((out / "demo.json").read_text())["recipe"]
    assert (recipe["advantage"], recipe["pama_granularity"], recipe["pama_ratio"], recipe["kl_coef"]) == \
        ("gae", "batch", "reference", 0.2)


def test_paired_differences_average_each_prompts_completions_then_pair():
    from paretoalign.demo import paired_differences

    # 3 prompts x 2 completions, K = 2 (the second objective is minimised)
    before = [[0.0, 1.0], [0.2, 1.0], [0.5, 1.2], [0.5, 1.2], [0.1, 0.9], [0.3, 0.9]]
    after = [[0.4, 0.8], [0.6, 0.8], [0.9, 1.0], [0.7, 0.8], [0.2, 0.9], [0.4, 0.5]]
    s, c = paired_differences(before, after, ["maximize", "minimize"], reps=2)
    # per-prompt differences: sentiment 0.4, 0.3, 0.1; concise -0.2, -0.3, -0.2
    assert s["diff"] == pytest.approx(0.8 / 3) and c["diff"] == pytest.approx(-0.7 / 3)
    sd = (sum((x - 0.8 / 3) ** 2 for x in (0.4, 0.3, 0.1)) / 2) ** 0.5
    assert s["diff_se"] == pytest.approx(sd / 3 ** 0.5)
    assert s["improvement_in_se"] > 0 and c["improvement_in_se"] > 0  # lower is better for concise
    assert s["ci95"][0] == pytest.approx(s["diff"] - 1.959963984540054 * s["diff_se"])


@pytest.mark.parametrize("args, says", [
    (["--eval-prompts", "0"], "--eval-prompts must be an integer >= 1; got 0"),
    (["--steps", "-3"], "--steps must be an integer >= 1; got -3"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1; got 0"),
    (["--num-generations", "0"], "--num-generations must be an integer >= 1; got 0"),
    (["--num-generations", "1"], "--num-generations must be >= 2 with the demo's group baselines"),
    (["--eval-samples", "0"], "--eval-samples must be an integer >= 1; got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1; got 0"),
    (["--learning-rate", "0"], "--learning-rate must be a finite number > 0; got 0.0"),
    (["--learning-rate=-1e-4"], "--learning-rate must be a finite number > 0; got -0.0001"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number > 0; got inf"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number > 0; got nan"),
    (["--samples", "-1"], "--samples must be an integer >= 0; got -1"),
    (["--seed", "-1"], "--seed must be an integer in [0, 4294967295]; got -1"),
    (["--model", " "], "--model must name a model"),
    (["--generation-backend", "vllm"], "--generation-backend vllm needs vLLM"),
])
def test_bad_demo_arguments_fail_before_any_model_loads(tmp_path, monkeypatch, capsys, args, says):
    import paretoalign.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(paretoalign.models, "load_tokenizer", no_loading)
    monkeypatch.setattr(paretoalign.models, "load_causal_lm", no_loading)
    monkeypatch.setitem(__import__("sys").modules, "vllm", None)  # no vLLM, wherever this runs
    rc = main(["demo", "--model", "tiny", "--output-dir", str(tmp_path / "demo"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {says}") and err.count("\n") == 1, err
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    assert main(["demo", "--model", "tiny", "--output-dir", str(tmp_path / "demo")]) == 2
    assert "--output-dir" in capsys.readouterr().err and (tmp_path / "demo" / "notes.txt").read_text() == "mine"


def test_demo_backend_choices_are_rollouts():
    """The demo's --generation-backend choices are spelled out in cli.py (importing rollout would import torch
    at --help); they must stay rollout.BACKENDS."""
    from paretoalign.cli import build_parser
    from paretoalign.rollout import BACKENDS

    demo = next(a for a in build_parser()._actions if a.dest == "command").choices["demo"]
    (action,) = [a for a in demo._actions if a.dest == "generation_backend"]
    assert tuple(action.choices) == tuple(BACKENDS) and action.default == "hf"
