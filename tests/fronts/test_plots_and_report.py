"""Plots and report.html: exact helpers, non-blank images, escaped and self-contained HTML, Chromium render."""

import os
import re
import shutil

import numpy as np
import pytest

from paretoalign.errors import ConfigError, ParetoAlignError
from paretoalign.fronts.html_report import find_browser, screenshot, write_report
from paretoalign.fronts.plots import (
    curves_from_metrics,
    parallel_coordinates,
    plot_front,
    plot_parallel,
    plot_training_curves,
    staircase,
)


def _front(name, means, K=2, directions=None, hv=0.5):
    names = ["a", "b", "c", "d", "e"][:K]
    directions = directions or ["maximize"] * K
    return {
        "name": name, "method": name, "names": names, "hypervolume": hv, "prompts_sha256": "abc",
        "objectives": [{"name": n, "direction": d, "spec": n} for n, d in zip(names, directions)],
        "decoding": {"seed": 1}, "reference_point": [0.0] * K,
        "points": [{"label": f"w{i}", "preference": [1 / K] * K, "mean": list(m), "stderr": [0.05] * K,
                    "dominated": False, "samples": [{"prompt": f"prompt {j}", "completion": f"{name} says {j} <script>alert(1)</script>",
                                                     "scores": list(m)} for j in range(3)],
                    "win_rate": {n: {"win_rate": 0.6, "ci95": [0.4, 0.8], "wins": 6, "ties": 0, "losses": 4} for n in names}}
                   for i, m in enumerate(means)],
    }


def _image(path):
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    assert img[..., :3].std() > 0.05, "blank image"
    return img


def test_staircase_vertices_exactly():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.5, 1.5], [2.0, 2.0]])  # a dominated point, a duplicate
    np.testing.assert_allclose(staircase(pts), [[1, 3], [1, 2], [2, 2], [2, 1], [3, 1]])
    np.testing.assert_allclose(staircase(pts, ref=[0, 0]), [[0, 3], [1, 3], [1, 2], [2, 2], [2, 1], [3, 1], [3, 0]])
    # a minimised second objective: orient, draw, map back
    raw = np.array([[1.0, 2.0], [2.0, 3.0]])  # more of 'a' costs more of 'b'
    np.testing.assert_allclose(staircase(raw * [1, -1]) * [1, -1], [[1, 2], [1, 3], [2, 3]])


def test_parallel_coordinates_scale_to_unit_with_up_as_better():
    v = np.array([[0.0, 10.0, 5.0], [1.0, 20.0, 5.0]])
    np.testing.assert_allclose(parallel_coordinates(v, [1, -1, 1]), [[0, 1, 0.5], [1, 0, 0.5]])


@pytest.mark.parametrize("K", [2, 3, 5])
def test_front_and_parallel_plots_are_drawn(tmp_path, K):
    rng = np.random.default_rng(K)
    fronts = [_front("A", rng.random((4, K)), K, directions=["maximize"] * (K - 1) + ["minimize"]),
              _front("B", rng.random((3, K)), K, directions=["maximize"] * (K - 1) + ["minimize"])]
    base = {"label": "base", "mean": [0.5] * K, "stderr": [0.0] * K, "samples": []}
    _image(plot_front(fronts, tmp_path / "sub" / "front.png", base=base, reference_point=[0.0] * K))
    _image(plot_parallel(fronts, tmp_path / "par.png", base=base))


def test_plot_errors():
    with pytest.raises(ConfigError, match="different objectives"):
        plot_front([_front("A", [[1, 2]]), dict(_front("B", [[1, 2]]), names=["x", "y"])], "x.png")
    with pytest.raises(ConfigError, match="at least 2 objectives"):
        plot_front([dict(_front("A", [[1, 2]]), names=["a"])], "x.png")
    with pytest.raises(ConfigError, match="has no points"):
        plot_front([dict(_front("A", [[1, 2]]), points=[])], "x.png")


def test_training_curves_read_metrics_including_a_cut_last_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"step": s, "reward/a": 0.1 * s, "reward/b": -s, "kl": 0.01 * s} for s in range(1, 5)]
    import json

    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "rew')
    from paretoalign.run_dir import read_metrics

    curves = curves_from_metrics(read_metrics(run), ["a", "b"])
    assert set(curves) == {"a", "b", "kl"}
    np.testing.assert_allclose(curves["a"][0], [1, 2, 3, 4])
    np.testing.assert_allclose(curves["a"][1], [0.1, 0.2, 0.3, 0.4])
    smoothed = curves_from_metrics(read_metrics(run), ["a"], smooth=2)
    np.testing.assert_allclose(smoothed["a"][1], [0.15, 0.25, 0.35])
    _image(plot_training_curves({"r": run}, tmp_path / "c.png", names=["a", "b"]))
    with pytest.raises(ParetoAlignError, match="no training metrics"):
        plot_training_curves({"empty": tmp_path / "none"}, tmp_path / "d.png")


def test_offline_runs_plot_their_loss_and_implicit_reward_curves(tmp_path):
    # DPO/MODPO/MOPO/AMoPO runs log no per-objective batch rewards; a front of them must still plot
    import json

    from paretoalign.run_dir import read_metrics

    run = tmp_path / "dpo"
    run.mkdir()
    rows = [{"step": s, "loss": 0.7 - 0.1 * s, "rewards/accuracy": 0.25 * s, "rewards/margin": 0.01 * s,
             "time_step": 1.0} for s in range(1, 4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    curves = curves_from_metrics(read_metrics(run), ["sentiment", "length"])
    assert set(curves) == {"loss", "rewards/accuracy", "rewards/margin"}
    np.testing.assert_allclose(curves["rewards/accuracy"][1], [0.25, 0.5, 0.75])
    _image(plot_training_curves({"w0.5": run}, tmp_path / "c.png", names=["sentiment", "length"]))


def test_report_is_self_contained_escaped_and_complete(tmp_path):
    a, b = _front("A", [[1, 2], [2, 1]]), _front("B", [[1.5, 1.5]], hv=0.25)
    img = plot_front([a, b], tmp_path / "front.png")
    base = {"label": "base", "mean": [1, 1], "stderr": [0.1, 0.1],
            "samples": [{"prompt": f"prompt {j}", "completion": "base text", "scores": [1, 1]} for j in range(3)]}
    cmp_ = {"names": ["a", "b"], "objectives": a["objectives"], "prompts_sha256": "abc", "decoding": {"seed": 1},
            "reference_point": [0, 0], "reference_point_source": "given", "fronts": [a, b], "base": base,
            "base_hypervolume": 1.0}
    html = write_report(cmp_, tmp_path / "report.html", images={"front": img}, max_samples=2).read_text()
    assert "data:image/png;base64," in html
    assert not re.search(r"(src|href)=['\"]https?://", html), "the report must not load anything from the network"
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "0.5" in html and "0.25" in html  # both hypervolumes
    assert html.count("<tr class='nd'>") + html.count("<tr>") >= 3
    # side by side: 2 prompts x (3 points + base) cells
    sample_table = html.split("Sample completions")[1]
    assert sample_table.count("<td class='sample'>") == 2 * (1 + 4)
    single = write_report(a, tmp_path / "one.html").read_text()
    assert "Pareto front: A" in single and "w0" in single and "win rate" not in single


@pytest.mark.skipif(find_browser() is None, reason="headless Chromium not installed (Debian: apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    a = _front("A", [[1, 2], [2, 1]])
    img = plot_front([a], tmp_path / "front.png")
    page = write_report(a, tmp_path / "report.html", images={"front": img})
    shot = _image(screenshot(page, tmp_path / "report.png", width=1024, height=1400))
    assert shot.shape[1] == 1024 and shot.shape[0] == 1400
    if os.environ.get("PARETOALIGN_KEEP_SCREENSHOTS"):
        shutil.copy(tmp_path / "report.png", os.environ["PARETOALIGN_KEEP_SCREENSHOTS"])


def test_screenshot_without_a_browser_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PARETOALIGN_CHROMIUM", raising=False)
    with pytest.raises(ParetoAlignError, match="apt-get install chromium"):
        screenshot(tmp_path / "r.html", tmp_path / "r.png")
