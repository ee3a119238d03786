"""bench/dpa.py on the tiny model: one model trained, every direction evaluated, the figures computed."""

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_dpa", Path(__file__).resolve().parents[1] / "bench" / "dpa.py")
bd = importlib.util.module_from_spec(spec)
sys.modules["bench_dpa"] = bd
spec.loader.exec_module(bd)


def test_tiny_run_sweeps_directions_of_one_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    res = bd.main(["--model", "tiny", "--objectives", "length(scale=20),keywords(words=e,whole_words=false)",
                   "--rounds", "1", "--prompts-per-round", "2", "--eval-prompts", "3", "--tokens", "6",
                   "--prefs", "grid:3", "--out", str(tmp_path / "front"), "--json", str(tmp_path / "r.json")])
    assert res["angles"] == [0.0, 45.0, 90.0] and len(res["means"]) == 3
    assert res["hypervolume"] >= 0 and set(res["spearman_angle"]) == {"length", "keywords"}
    assert (tmp_path / "front" / "model" / "final" / "policy").is_dir()  # trained once
    assert not (tmp_path / "front" / "points" / "w0.50-0.50" / "final").exists()
