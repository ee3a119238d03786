"""bench/offline.py on the tiny model: the pipeline runs end to end and its numbers mean something."""

import importlib.util
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

spec = importlib.util.spec_from_file_location("bench_offline", Path(__file__).resolve().parents[1] / "bench" / "offline.py")
bo = importlib.util.module_from_spec(spec)
sys.modules["bench_offline"] = bo
spec.loader.exec_module(bo)


def test_tiny_run_compares_fronts_and_times_the_margins(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "bench"
    res = bo.main(["--model", "tiny", "--objectives", "length(scale=20),keywords(words=e,whole_words=false)",
                   "--pair-prompts", "6", "--samples", "3", "--tokens", "10", "--steps", "2", "--eval-prompts", "3",
                   "--reps", "1", "--out", str(out), "--json", str(tmp_path / "r.json")])
    assert res["pairs"]["pairs"] > 0 and (out / "pairs" / "card.json").is_file()
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"dpo", "modpo"}
    for r in rows.values():
        assert r["points"] == 3 and 1 <= r["non_dominated"] <= 3
        assert r["hypervolume"] >= 0 and r["train_s"] > 0 and r["step_s_median"] > 0
    assert (out / "report.html").is_file() and (out / "curves.png").is_file()

    # at a vertex MODPO's margin weight is 0 and its loss is DPO's: the same pairs, seed and steps
    # must give the same adapter as the scalarised-DPO run at that vertex
    for label in ("w1.00-0.00", "w0.00-1.00"):
        a = load_file(out / "dpo" / "points" / label / "final" / "policy" / "adapter_model.safetensors")
        b = load_file(out / "modpo" / "points" / label / "final" / "policy" / "adapter_model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k] - b[k]).abs().max() < 1e-6, (label, k)

    over = {r["variant"]: r for r in res["overhead"]["rows"]}
    assert set(over) == {"dpo", "modpo (scorer margin)", "modpo (implicit-adapter margin)",
                         "modpo (scorer margin), margins cached", "modpo (implicit-adapter margin), margins cached"}
    assert over["dpo"]["ratio_vs_dpo"] == pytest.approx(1.0)
    # the implicit margin runs the adapter forward on both responses: real, measured work
    assert over["modpo (implicit-adapter margin)"]["margin_s_median"] > 0
    for r in over.values():
        assert r["step_s_median"] > 0 and r["ratio_vs_dpo"] > 0
    assert Path(res["overhead"]["adapter"]).name == "policy"
