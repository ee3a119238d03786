"""bench/reward_model.py on the tiny backbone: every figure is produced and the K-head comparison is fair."""

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_reward_model", Path(__file__).resolve().parents[1] / "bench" / "reward_model.py")
brm = importlib.util.module_from_spec(spec)
sys.modules["bench_reward_model"] = brm
spec.loader.exec_module(brm)


def test_tiny_run_measures_extraction_training_and_k_heads_vs_k_models(tmp_path):
    res = brm.main(["--backbones", "tiny", "--reps", "2", "--score-batch", "4", "--gate-steps", "5",
                    "--json", str(tmp_path / "r.json")])
    (r,) = res["rows"]
    assert r["texts"] > 50 and r["samples_per_s"] > 0 and r["extract_s"] > 0 and r["hidden"] == 64
    assert r["stage1_s"] > 0 and r["stage2_s"] > 0 and r["gate_steps"] == 5 and r["objectives"] == 5
    # the K single-objective models compute exactly the heads of the one K-head model ...
    assert r["heads_equal_separate_models"]
    # ... with K backbone passes instead of one
    assert r["k_over_one"] > 1.5 and r["one_model_s"] > 0
    assert (tmp_path / "r.json").is_file()
