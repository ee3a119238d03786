"""bench/rollout.py on the tiny model: both generation paths timed side by side, the step cut into phases with ideals."""

import importlib.util
import json
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_rollout", Path(__file__).resolve().parents[1] / "bench" / "rollout.py")
br = importlib.util.module_from_spec(spec)
sys.modules["bench_rollout"] = br
spec.loader.exec_module(br)


def test_flop_counts_follow_the_model_shapes():
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, vocab_size=10)
    # q 8, k 4, v 4 outputs of 8 inputs; o 8x8; gate/up/down 3 x 8 x 16; attention: 2 heads x 4 dims x 2 (QK, AV)
    proj = 2 * 8 * (8 + 4 + 4) + 2 * 8 * 8 + 2 * 3 * 8 * 16
    assert br.layer_flops_per_token(cfg, context=3) == proj + 2 * 2 * 2 * 4 * 3
    fwd = br.forward_flops(cfg, rows=2, seq=3, logit_positions=1)
    assert fwd == 2 * (2 * sum(br.layer_flops_per_token(cfg, t + 1) for t in range(3)) + 2 * 8 * 10)
    # one prompt pass per distinct prompt: with no two rows sharing one, the full rows but their last token
    assert br.shared_forward_flops(cfg, [5, 5, 5], rows=3, prompt_len=5, tokens=4) == br.forward_flops(cfg, 3, 8, 4)
    # two rows sharing a prompt of 5: its first 4 tokens once, not twice
    saved = br.forward_flops(cfg, 2, 8, 4) - br.shared_forward_flops(cfg, [5], rows=2, prompt_len=5, tokens=4)
    assert saved == 2 * sum(br.layer_flops_per_token(cfg, t + 1) for t in range(4))


def test_tiny_run_reports_both_paths_the_phases_and_writes_json(tmp_path):
    out = tmp_path / "r.json"
    res = br.main(["--model", "tiny", "--sections", "gen", "step", "--rows", "4", "8", "--demo-rows", "8",
                   "--step-rows", "8", "--tokens", "5", "--reps", "1", "--out", str(out)])
    gen = res["generation"]
    assert set(gen["rows"]) == {4, 8, 16}
    for r in gen["rows"].values():
        assert set(r["tokens_per_s"]) == {"hf-generate", "hf"} and min(r["tokens_per_s"].values()) > 0
    assert gen["demo"]["old_rows"] == 16 and gen["demo"]["new_rows"] == 8
    step = res["step"]
    assert set(step["phases"]) == {"generation", "scoring", "reference forward", "policy forward", "backward",
                                   "optimiser"}
    assert step["rows"] == 8 and step["completion_tokens"] == 5 and step["matmul_rate_gflops"] > 0
    assert step["phases"]["backward"]["gflop"] > step["phases"]["reference forward"]["gflop"] > 0
    assert step["over_ideal"] > 0 and step["distinct_prompts"] == 2
    for k in ("reference forward", "policy forward", "backward"):  # both paths timed, the minimal ideal below the issue's
        p = step["phases"][k]
        assert p["full_rows_median_s"] > 0 and len(p["full_rows_times"]) == len(p["times"]) == 1
        assert 0 < p["minimal_gflop"] < p["gflop"]
    assert step["over_minimal"] > step["over_ideal"] and step["full_rows_total_s"] > 0
    assert json.loads(out.read_text())["step"]["rows"] == 8


def test_generation_table_with_the_vllm_column():
    res = {"paths": ["hf-generate", "hf", "vllm"], "rows": {32: {"tokens_per_s": {"hf-generate": 100.0, "hf": 350.0,
                                                                                  "vllm": 280.0}, "speedup": 3.5}},
           "demo": {"old_rows": 16, "new_rows": 32, "old_tokens_per_s": 100.0, "new_tokens_per_s": 350.0, "speedup": 3.5}}
    lines = br.generation_table(res, 48).splitlines()
    assert lines[0].endswith("`vllm` tok/s | `vllm` / `hf` |")
    assert lines[2] == "| 32 | 100 | 350 | 3.50x | 280 | 0.80x |"
    del res["paths"]  # a run without --vllm: no vLLM column
    assert "vllm" not in br.generation_table(res, 48).splitlines()[0]
