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
    assert set(rows) == {"exact", "morlhf", "pama", "mgda-ub"}
    assert rows["exact"]["hv_ratio"] == pytest.approx(res["ceiling_hv_ratio"], abs=1e-4)
    for r in rows.values():
        # the dense grid is a discretisation of the front: allow its resolution, nothing more
        assert r["max_violation"] < 1e-3, r["method"]
        assert 0.0 <= r["hv_ratio"] <= 1.0 + 1e-9
        assert np.asarray(r["front_points"]).shape == (5, 2)  # --quick: 5 preferences
