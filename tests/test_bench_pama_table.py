"""bench/pama_table.py on the tiny model: every variant trains per seed, is scored against the base, ordering checked."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("bench_pama_table", Path(__file__).resolve().parents[1] / "bench" / "pama_table.py")
bp = importlib.util.module_from_spec(spec)
sys.modules["bench_pama_table"] = bp
spec.loader.exec_module(bp)


def test_mean_ci_is_a_t_interval():
    m, h = bp.mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(4.303 * 1.0 / 3 ** 0.5)
    assert bp.mean_ci([5.0])[0] == 5.0


def test_tiny_table_has_every_variant_and_the_ordering(tmp_path):
    out = tmp_path / "t.json"
    res = bp.main(["--model", "tiny", "--seeds", "0", "1", "--steps", "1", "--batch-size", "2", "--generations", "2",
                   "--tokens", "4", "--out", str(out)])
    assert set(res["rows"]) == {"base", *bp.VARIANTS}
    for v in bp.VARIANTS:
        for obj in ("sentiment", "length"):
            cell = res["rows"][v][obj]
            assert len(cell["per_seed"]) == 2 and "diff_vs_base" in cell
    assert set(res["ordering"]) == {"PAMA (paper)", "PAMA (demo)"}
    assert res["heldout_prompts"] >= 128
    assert "Paper's ordering" in res["table"] and json.loads(out.read_text())["rows"]["base"]
    with pytest.raises(SystemExit, match="unknown variant"):
        bp.parse_args(["--variants", "PAMA,nope"])
