import json

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
