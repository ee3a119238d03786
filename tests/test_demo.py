import json

import pytest

from paretoalign.cli import main


def test_demo_runs_end_to_end_on_the_tiny_model(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--model", "tiny", "--steps", "2", "--eval-prompts", "3", "--batch-size", "2",
               "--max-new-tokens", "6", "--output-dir", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "before (mean ± s.e.)" in printed and "sentiment" in printed and "length" in printed
    assert "--- prompt:" in printed
    result = json.loads((out / "demo.json").read_text())
    for side in ("before", "after"):
        assert set(result[side]["summary"]) == {"sentiment", "length"}
        assert len(result[side]["samples"]) == 3
    # same prompts, same decoding settings before and after
    assert result["before"]["prompts_sha256"] == result["after"]["prompts_sha256"]
    assert result["before"]["decoding"] == result["after"]["decoding"]
    assert (out / "final" / "policy" / "adapter_config.json").is_file()
    assert result["training"]["steps"] == 2


@pytest.mark.parametrize("args, says", [
    (["--eval-prompts", "0"], "--eval-prompts must be an integer >= 1; got 0"),
    (["--steps", "-3"], "--steps must be an integer >= 1; got -3"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1; got 0"),
    (["--num-generations", "0"], "--num-generations must be an integer >= 1; got 0"),
    (["--num-generations", "1"], "--num-generations must be >= 2 with --advantage group"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be an integer >= 1; got 0"),
    (["--learning-rate", "0"], "--learning-rate must be a finite number > 0; got 0.0"),
    (["--learning-rate=-1e-4"], "--learning-rate must be a finite number > 0; got -0.0001"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number > 0; got inf"),
    (["--learning-rate", "nan"], "--learning-rate must be a finite number > 0; got nan"),
    (["--samples", "-1"], "--samples must be an integer >= 0; got -1"),
    (["--seed", "-1"], "--seed must be an integer in [0, 4294967295]; got -1"),
    (["--model", " "], "--model must name a model"),
])
def test_bad_demo_arguments_fail_before_any_model_loads(tmp_path, monkeypatch, capsys, args, says):
    import paretoalign.models

    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(paretoalign.models, "load_tokenizer", no_loading)
    monkeypatch.setattr(paretoalign.models, "load_causal_lm", no_loading)
    rc = main(["demo", "--model", "tiny", "--output-dir", str(tmp_path / "demo"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {says}") and err.count("\n") == 1, err
    assert not (tmp_path / "demo").exists()


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path, capsys):
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    assert main(["demo", "--model", "tiny", "--output-dir", str(tmp_path / "demo")]) == 2
    assert "--output-dir" in capsys.readouterr().err and (tmp_path / "demo" / "notes.txt").read_text() == "mine"
