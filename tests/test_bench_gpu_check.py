"""bench/gpu_check.py's parts on the tiny model on a CPU: what a GPU run would do, minus the GPU, so a broken
check is found here and not on a lent machine."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_gpu_check", Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py")
gc = importlib.util.module_from_spec(spec)
sys.modules["bench_gpu_check"] = gc
spec.loader.exec_module(gc)

TINY = ["--model", "tiny", "--backend", "hf", "--prompts", "2", "--generations", "2", "--tokens", "5", "--steps", "2",
        "--warmup", "1", "--reps", "1", "--rows", "4", "8"]


def test_our_trainer_part_times_each_step():
    res = gc.child_ours(gc.parse_args(TINY))
    assert len(res["step_s"]) == len(res["generate_s"]) == 2
    assert res["tokens_per_step"] == [2 * 2 * 5] * 2  # forced length: every completion has exactly --tokens
    assert all(0 < g < s for g, s in zip(res["generate_s"], res["step_s"]))


def test_trl_part_times_each_step_with_the_same_batch():
    pytest.importorskip("trl")
    res = gc.child_trl(gc.parse_args(TINY))
    assert len(res["step_s"]) == 2 and all(g > 0 for g in res["generate_s"])
    assert res["tokens_per_step"] == [2 * 2 * 5] * 2


def test_gen_part_and_the_table():
    args = gc.parse_args(TINY)
    gen = gc.child_gen(args)
    assert set(gen) == {"float32/4", "float32/8", "bfloat16/4", "bfloat16/8"}
    assert all(v["hf"] > 0 and v["hf-eager"] > 0 and v["hf-generate"] > 0 for v in gen.values())
    ours = {"step_s": [2.0, 2.0], "generate_s": [1.0, 1.0], "tokens_per_step": [20, 20], "peak_gib": math.nan}
    lines = gc.table(args, "cpu", {"ours": ours, "trl": None, "gen": gen})
    assert any(line.startswith("| paretoalign PAMA (--generation-backend hf") and "| 20 | 1.000 | 2.000 |" in line
               for line in lines)
    assert any(line.startswith("| TRL GRPOTrainer") and "failed" in line for line in lines)
    assert sum(line.startswith("| float32 |") or line.startswith("| bfloat16 |") for line in lines) == 4


def test_no_gpu_is_one_clear_error(capsys):
    if gc.torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    assert gc.main(["--backend", "hf"]) == 2
    assert capsys.readouterr().err.startswith("error: bench/gpu_check.py needs a CUDA device")
