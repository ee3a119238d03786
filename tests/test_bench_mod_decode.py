"""bench/mod_decode.py on the tiny model: every path runs, MOD's tokens agree across paths, the JSON has its fields."""

import importlib.util
import json
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_mod_decode", Path(__file__).resolve().parents[1] / "bench" / "mod_decode.py")
bm = importlib.util.module_from_spec(spec)
sys.modules["bench_mod_decode"] = bm
spec.loader.exec_module(bm)


def test_tiny_run_times_every_path_and_writes_json(tmp_path):
    out = tmp_path / "m.json"
    res = bm.main(["--model", "tiny", "--rows", "2", "3", "--tokens", "4", "--reps", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert {"command", "model", "k", "tokens", "reps", "threads", "rows", "target", "target_met"} <= set(saved)
    assert saved["model"] == "tiny" and saved["k"] == 2 and set(saved["rows"]) == {"2", "3"}
    for r in res["rows"].values():
        assert set(r["seconds"]) == set(bm.PATHS) and min(r["seconds"].values()) > 0
        assert set(r["vs_single"]) == set(bm.PATHS) and r["vs_single"]["single"] == 1.0
        assert r["vs_single_per_k"]["mod"] == r["vs_single"]["mod"] / 2
        assert r["mod_equals_separate"] and r["mod_equals_peft_loop"]  # one decoding, three ways to run it
    assert isinstance(saved["target_met"], bool)
