"""bench/exact_front.py: the closed-form front is right and every method stays behind it."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

spec = importlib.util.spec_from_file_location("exact_front", Path(__file__).resolve().parents[1] / "bench" / "exact_front.py")
ef = importlib.util.module_from_spec(spec)
sys.modules["exact_front"] = ef  # dataclasses look their module up
spec.loader.exec_module(ef)


def test_the_closed_form_maximises_the_scalarised_kl_regularised_objective():
    prob = ef.make_problem(x=2, m=6, k=2, beta=0.2, seed=1)
    w = torch.tensor([0.3, 0.7], dtype=torch.float64)
    best = float((w * ef.objectives_of(prob, ef.optimal_logits(prob, w))).sum())
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        noise = 0.3 * torch.randn(2, 6, generator=g, dtype=torch.float64)
        assert float((w * ef.objectives_of(prob, ef.optimal_logits(prob, w) + noise)).sum()) <= best + 1e-12
    cfg = ef.TrainConfig(steps=1500)
    learned = ef.train_exact(prob, w, cfg, 0)
    assert float((w * ef.objectives_of(prob, learned)).sum()) == pytest.approx(best, abs=1e-7)


def test_quick_run_keys_exact_learner_on_the_front_and_nobody_beyond_it():
    res = ef.run(ef.parse_args(["--quick", "--prompts", "2", "--responses", "6", "--steps", "40",
                                "--dense", "401"]))
    assert {"reference_point", "hv_true", "ceiling_hv_ratio", "rows"} <= set(res)
    rows = {r["method"]: r for r in res["rows"]}
    assert set(rows) == {"exact", "morlhf", "pama", "mgda-ub", "soup", "mod", "ric", "hoe", "morlhf-mlp", "soup-mlp",
                         "mod-mlp"}
    assert rows["exact"]["hv_ratio"] == pytest.approx(res["ceiling_hv_ratio"], abs=1e-4)
    for r in rows.values():
        # the dense grid is a discretisation of the front: allow its resolution, nothing more
        assert r["max_violation"] < 1e-3, r["method"]
        assert 0.0 <= r["hv_ratio"] <= 1.0 + 1e-9
        assert np.asarray(r["front_points"]).shape == (5, 2)  # --quick: 5 preferences
    # steering: K = 2 endpoint trainings instead of 5, each at the same budget; with tables soup = MOD
    steps = res["settings"]["steps"]  # (--quick sets 60)
    for m in ("soup", "mod", "soup-mlp", "mod-mlp"):
        assert rows[m]["trainings"] == 2 and rows[m]["samples"] == 2 * steps * 8 * 2
    assert rows["morlhf"]["trainings"] == 5 and rows["morlhf"]["samples"] == 5 * steps * 8 * 2
    # one model for every preference: RiC's offline samples (one run's) + 2 online rounds of 8 x group x prompts;
    # HoE's K endpoints + its 3 routers sharing one run's steps
    assert rows["ric"]["trainings"] == 1 and rows["ric"]["samples"] == steps * 8 * 2 + 2 * (8 * 2 * 8)
    assert rows["hoe"]["trainings"] == 1 and rows["hoe"]["samples"] == (2 * steps + (steps // 3) * 3) * 8 * 2
    np.testing.assert_allclose(rows["soup"]["front_points"], rows["mod"]["front_points"], rtol=0, atol=1e-12)
    # from exact endpoints: tables and MOD reach the ceiling, the MLP soup does not
    exact = {r["method"]: r for r in res["exact_endpoint_rows"]}
    for m in ("soup (table, exact endpoints)", "mod (table, exact endpoints)", "mod (mlp16, exact endpoints)"):
        assert exact[m]["hv_ratio"] == pytest.approx(res["ceiling_hv_ratio"], abs=1e-9)
        assert exact[m]["max_gap"] < 1e-9
    assert exact["soup (mlp16, exact endpoints)"]["max_gap"] > 1e-4
    assert exact["soup (mlp16, exact endpoints)"]["hv_ratio"] < res["ceiling_hv_ratio"]
    assert [r["argmax_equal"] for r in res["two_step"]] == [True] * 3
