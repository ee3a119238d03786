"""bench/memory_release.py on the tiny model: both modes run in their own child process and are tabulated."""

import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_memory_release",
                                              Path(__file__).resolve().parents[1] / "bench" / "memory_release.py")
bm = importlib.util.module_from_spec(spec)
sys.modules["bench_memory_release"] = bm
spec.loader.exec_module(bm)


def test_tiny_run_reports_both_modes(capsys):
    assert bm.main(["--model", "tiny", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert len(rows) == 2 and rows[0].startswith("| `gc.collect()`") and "malloc_trim" in rows[1]
    for row in rows:
        values = [float(x) for x in row.strip("|").split("|")[1:]]
        assert len(values) == 3 and all(v > 0 for v in values)  # start + after each run, in GiB
