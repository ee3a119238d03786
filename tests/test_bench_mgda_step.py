"""bench/mgda_step.py on the tiny model: three trainers per K time their update on one batch, ratios reported."""

import importlib.util
import json
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_mgda_step", Path(__file__).resolve().parents[1] / "bench" / "mgda_step.py")
bm = importlib.util.module_from_spec(spec)
sys.modules["bench_mgda_step"] = bm
spec.loader.exec_module(bm)


def test_objective_specs_have_distinct_names():
    from paretoalign.models import build_tiny_tokenizer
    from paretoalign.objectives import build_objective_set

    for k in (2, 4, 8):
        names = build_objective_set(bm.objective_specs(k), build_tiny_tokenizer()).names
        assert len(names) == len(set(names)) == k


def test_tiny_run_times_the_three_variants_and_writes_json(tmp_path):
    out = tmp_path / "m.json"
    res = bm.main(["--model", "tiny", "--ks", "2", "3", "--reps", "2", "--tokens", "6", "--out", str(out)])
    assert [r["k"] for r in res["rows"]] == [2, 3]
    for r in res["rows"]:
        for label, _, _ in bm.VARIANTS:
            assert len(r[label]["times"]) == 2 and r[label]["median"] > 0 and r[label]["median_combiner"] > 0
        assert r["ratio_mgda_over_morlhf"] > 0 and r["tokens"] == 2 * 2 * 6
    assert "MGDA-UB/MORLHF" in res["table"]
    assert json.loads(out.read_text())["rows"][1]["k"] == 3
