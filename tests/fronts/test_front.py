"""`paretoalign front` / `compare` / `report`: sweeps of run folders, indicators, resumption, bad input."""

import json

import numpy as np
import pytest

from paretoalign import run_dir
from paretoalign.cli import main
from paretoalign.errors import ConfigError, FrontError, RunDirError
from paretoalign.fronts import front as front_mod
from paretoalign.fronts import sweep as sweep_mod
from paretoalign.fronts.front import compare_fronts, make_front
from paretoalign.fronts.metrics import hypervolume, pareto_mask
from paretoalign.fronts.sweep import FrontConfig, run_front

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
TRAIN = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
             learning_rate=5e-2, max_steps=1, save_steps=1, seed=0)
FAST_EVAL = dict(eval_num_prompts=4, eval_batch_size=4)


@pytest.fixture(autouse=True)
def eval_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))


def _meta(names=("a", "b"), directions=("maximize", "maximize"), sha="p1", decoding=None):
    return {"names": list(names), "prompts_sha256": sha, "prompts": {"n": 3},
            "decoding": decoding or {"seed": 1}, "objectives": [
                {"name": n, "direction": d, "bounds": None} for n, d in zip(names, directions)]}


def _points(means):
    return [{"label": f"p{i}", "preference": [0.5, 0.5], "mean": list(m), "stderr": [0.0] * len(m), "samples": []}
            for i, m in enumerate(means)]


def test_make_front_marks_dominated_points_and_computes_the_hypervolume_on_oriented_values():
    means = [[1.0, 5.0], [0.8, 5.5], [3.0, 7.0], [0.5, 4.0]]  # 'b' is minimised: lower is better
    f = make_front(_points(means), "m", "morlhf", _meta(directions=("maximize", "minimize")), reference_point=[0.0, 10.0])
    oriented = np.array(means) * np.array([1.0, -1.0])
    assert [p["dominated"] for p in f["points"]] == (~pareto_mask(oriented)).tolist() == [False, True, False, False]
    assert f["hypervolume"] == pytest.approx(hypervolume(oriented, np.array([0.0, -10.0])))
    # by hand: staircase of (0.5,-4), (1,-5), (3,-7) above (0,-10)
    assert f["hypervolume"] == pytest.approx(0.5 * 6 + 0.5 * 5 + 2 * 3)
    assert f["reference_point"] == [0.0, 10.0] and f["reference_point_source"] == "given"


def test_automatic_reference_point_is_dominated_by_every_point_and_recorded():
    means = [[1.0, 5.0], [2.0, 3.0]]
    f = make_front(_points(means), "m", "pama", _meta())
    ref = np.array(f["reference_point"])
    assert (np.array(means) > ref).all() and "automatic" in f["reference_point_source"]
    assert f["hypervolume"] > 0


def test_comparison_uses_one_reference_point_for_all_fronts_and_checks_they_are_comparable():
    a = make_front(_points([[1.0, 2.0], [2.0, 1.0]]), "A", "pama", _meta())
    b = make_front(_points([[3.0, 3.0]]), "B", "morlhf", _meta())
    cmp_ = compare_fronts([a, b])
    ref = np.array(cmp_["reference_point"])
    assert cmp_["fronts"][0]["reference_point"] == cmp_["fronts"][1]["reference_point"] == ref.tolist()
    assert cmp_["hypervolumes"]["A"] == pytest.approx(hypervolume(np.array([[1.0, 2.0], [2.0, 1.0]]), ref))
    assert cmp_["hypervolumes"]["B"] == pytest.approx(hypervolume(np.array([[3.0, 3.0]]), ref))
    assert cmp_["hypervolumes"]["B"] > cmp_["hypervolumes"]["A"]
    with pytest.raises(FrontError, match="different objectives"):
        compare_fronts([a, make_front(_points([[1.0, 1.0]]), "C", "x", _meta(names=("a", "c")))])
    with pytest.raises(FrontError, match="different prompts or decoding"):
        compare_fronts([a, make_front(_points([[1.0, 1.0]]), "C", "x", _meta(sha="p2"))])
    with pytest.raises(FrontError, match="share a name"):
        compare_fronts([a, a])


def test_bad_fronts_give_clear_errors(tmp_path):
    with pytest.raises(FrontError, match="at least 2 objectives"):
        make_front(_points([[1.0]]), "m", "x", _meta(names=("a",), directions=("maximize",)))
    with pytest.raises(FrontError, match="non-finite mean for objective 'b'"):
        make_front(_points([[1.0, float("nan")]]), "m", "x", _meta())
    with pytest.raises(FrontError, match="no point dominates the reference point"):
        make_front(_points([[1.0, 2.0]]), "m", "x", _meta(), reference_point=[5.0, 5.0])
    with pytest.raises(ConfigError, match="2 objectives"):
        run_front(FrontConfig(method=["morlhf"], output_dir=str(tmp_path / "f")), {**TRAIN, "objectives": ["length"]})
    with pytest.raises(ConfigError, match="unknown method"):
        run_front(FrontConfig(method=["ppo"], output_dir=str(tmp_path / "f")), TRAIN)
    rf = tmp_path / "rf.json"
    rf.write_text("[[1, 2, 3]]")
    with pytest.raises(ConfigError, match="2-value points"):
        make_front(_points([[1.0, 2.0]]), "m", "x", _meta(), reference_front=str(rf))


def test_igd_against_a_reference_front_is_recorded_with_its_normalisation(tmp_path):
    rf = tmp_path / "rf.json"
    rf.write_text(json.dumps([[0.0, 2.0], [2.0, 0.0]]))
    f = make_front(_points([[0.0, 2.0], [2.0, 0.0]]), "m", "x", _meta(), reference_front=str(rf))
    assert f["igd"] == pytest.approx(0.0) and f["igd_plus"] == pytest.approx(0.0)
    assert f["igd_normalization"]["lower"] == [0.0, 0.0] and f["igd_normalization"]["upper"] == [2.0, 2.0]
    g = make_front(_points([[0.0, 1.0]]), "m", "x", _meta(), reference_front=str(rf))
    assert g["igd_plus"] > 0


def test_a_sweep_trains_one_run_per_preference_evaluates_them_and_draws_the_front(tmp_path):
    out = tmp_path / "front"
    res = run_front(FrontConfig(method=["morlhf"], preferences="grid:2", output_dir=str(out), **FAST_EVAL),
                    TRAIN, progress=lambda s: None)
    saved = json.loads((out / "front.json").read_text())
    assert saved["hypervolume"] == pytest.approx(res["hypervolume"])
    assert [p["preference"] for p in saved["points"]] == [[0.0, 1.0], [1.0, 0.0]]
    for p in saved["points"]:
        run = out / p["run_dir"]
        assert (run / "final" / "policy").is_dir() and (run / "eval.json").is_file()
        cfg = json.loads(json.dumps(__import__("yaml").safe_load((run / "config.yaml").read_text())))
        assert cfg["weights"] == p["preference"] and cfg["method"] == "morlhf"
        assert set(p["win_rate"]) == {"chars", "words"}
    assert saved["base"]["label"] == "base" and (out / "base" / "eval.json").is_file()
    assert saved["prompts"]["n"] == 4
    for name in ("front.png", "front_parallel.png", "curves.png", "report.html"):
        assert (out / name).is_file(), name
    html = (out / "report.html").read_text()
    assert "w=(0.00,1.00)" in html or "0.00" in html


def test_an_interrupted_sweep_resumes_where_it_stopped(tmp_path, monkeypatch):
    out = tmp_path / "front"
    calls = []
    real = sweep_mod._train_online

    def flaky(method, pref, train, folder, resume, acc):
        calls.append((tuple(pref), resume))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(method, pref, train, folder, resume, acc)

    monkeypatch.setitem(sweep_mod.POINT_MAKERS, "pama", flaky)
    cfg = dict(method=["pama"], preferences="grid:2", output_dir=str(out), report=False, **FAST_EVAL)
    with pytest.raises(KeyboardInterrupt):
        run_front(FrontConfig(**cfg), TRAIN, progress=lambda s: None)
    with pytest.raises(RunDirError, match="already holds a sweep; pass --resume"):
        run_front(FrontConfig(**cfg), TRAIN, progress=lambda s: None)
    with pytest.raises(RunDirError, match="train.max_steps: sweep has 1, now 2"):
        run_front(FrontConfig(**cfg, resume=True), {**TRAIN, "max_steps": 2}, progress=lambda s: None)
    res = run_front(FrontConfig(**cfg, resume=True), TRAIN, progress=lambda s: None)
    assert [c[0] for c in calls] == [(0.0, 1.0), (1.0, 0.0), (1.0, 0.0)]  # the finished point was not retrained
    assert len(res["points"]) == 2 and (out / "front.json").is_file()


def test_several_methods_in_one_command_and_compare_of_separate_fronts(tmp_path, capsys):
    out = tmp_path / "both"
    rc = main(["front", "--method", "pama,morlhf", "--preferences", "grid:2", "--output-dir", str(out),
               "--eval-num-prompts", "4", "--model", "tiny", "--objectives", ",".join(OBJ),
               "--max-steps", "1", "--batch-size", "2", "--max-new-tokens", "8", "--progress", "false",
               "--report", "false"])
    assert rc == 0, capsys.readouterr().err
    cmp_ = json.loads((out / "comparison.json").read_text())
    assert [f["name"] for f in cmp_["fronts"]] == ["pama", "morlhf"]
    assert (out / "pama" / "points").is_dir() and (out / "morlhf" / "points").is_dir()
    assert "hypervolume pama" in capsys.readouterr().out
    # each method's front also stands alone; compare works on front folders made by separate commands
    assert json.loads((out / "morlhf" / "front.json").read_text())["name"] == "morlhf"
    a, b = tmp_path / "a", tmp_path / "b"
    for d, m in ((a, "morlhf"), (b, "mgda-ub")):
        run_front(FrontConfig(method=[m], preferences="grid:2", output_dir=str(d), report=False, **FAST_EVAL),
                  TRAIN, progress=lambda s: None)
    rc = main(["compare", str(a), str(b), "--output-dir", str(tmp_path / "ab"), "--labels", "lin,mgda"])
    assert rc == 0, capsys.readouterr().err
    ab = json.loads((tmp_path / "ab" / "comparison.json").read_text())
    assert set(ab["hypervolumes"]) == {"lin", "mgda"} and (tmp_path / "ab" / "report.html").is_file()
    assert main(["report", str(tmp_path / "ab")]) == 0
    assert main(["compare", str(a), "--output-dir", str(tmp_path / "x")]) == 2
    assert "at least two fronts" in capsys.readouterr().err


def test_front_cli_rejects_options_the_sweep_sets(tmp_path, capsys):
    cfg = tmp_path / "f.yaml"
    cfg.write_text("model: tiny\nweights: [0.5, 0.5]\n")
    assert main(["front", "--config", str(cfg), "--output-dir", str(tmp_path / "f")]) == 2
    assert "set by the front sweep itself" in capsys.readouterr().err
    cfg.write_text("model: tiny\nmax_step: 3\n")
    assert main(["front", "--config", str(cfg), "--output-dir", str(tmp_path / "f")]) == 2
    assert "did you mean 'max_steps'" in capsys.readouterr().err


def test_a_sweep_under_accelerate_with_two_processes(tmp_path):
    """Both processes train every point (DDP over gloo); only the main process evaluates and writes."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from paretoalign import run_dir

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "ddp-front"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PARETOALIGN_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29534",
           "-m", "paretoalign.cli", "front", "--method", "pama", "--preferences", "grid:2", "--output-dir", str(out),
           "--eval-num-prompts", "4", "--report", "false", "--model", "tiny", "--objectives", ",".join(OBJ),
           "--max-steps", "1", "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "6", "--progress", "false"]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    front = json.loads((out / "front.json").read_text())
    assert len(front["points"]) == 2
    for p in front["points"]:
        assert run_dir.read_metrics(out / p["run_dir"])[0]["samples"] == 2 * 2 * 2


# --- damaged front.json / comparison.json and bad reference points: one error line -------------


def _front_dir(tmp_path, name, means):
    """A front folder as `paretoalign front` writes it (without the runs and plots)."""
    points = [dict(p, run_dir=f"points/{p['label']}", win_rate=None) for p in _points(means)]
    d = tmp_path / name
    front_mod.save_result(d / front_mod.FRONT_FILE, make_front(points, name, "morlhf", _meta()))
    return d


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


# probe -> (how the front.json is damaged, what the message says after the file's path)
DAMAGED_FRONT = {
    "empty": (lambda f: f.write_text(""), ": the file is empty"),
    "truncated": (lambda f: f.write_bytes(f.read_bytes()[: f.stat().st_size // 2]), ": not valid JSON ("),
    "not JSON": (lambda f: f.write_text("front: yes\n"), ": not valid JSON (Expecting value, line 1 column 1)"),
    "not UTF-8": (lambda f: f.write_bytes(b'{"names": ["\xff"]}'), ": not UTF-8 text (byte 12)"),
    "a list": (lambda f: f.write_text("[1, 2]"), ": expected a JSON object, got list"),
    "missing key": (lambda f: _edit(f, lambda d: d.pop("points")), ": points must be a non-empty list of points; got nothing"),
    "wrong type": (lambda f: _edit(f, lambda d: d["points"][0].update(mean=["high", 2.0])),
                   ': points[0].mean must be a list of 2 numbers; got ["high", 2.0]'),
    "wrong length": (lambda f: _edit(f, lambda d: d.update(reference_point=[0.0])),
                     ": reference_point must be a list of 2 numbers; got [0.0]"),
}


@pytest.mark.parametrize("probe", sorted(DAMAGED_FRONT))
@pytest.mark.parametrize("command", ["compare", "report"])
def test_damaged_front_json_is_one_error_line_naming_the_file(tmp_path, capsys, probe, command):
    a, b = _front_dir(tmp_path, "a", [[1.0, 2.0], [2.0, 1.0]]), _front_dir(tmp_path, "b", [[3.0, 3.0]])
    damage, says = DAMAGED_FRONT[probe]
    damage(b / "front.json")
    argv = ["compare", str(a), str(b), "--output-dir", str(tmp_path / "ab")] if command == "compare" else ["report", str(b)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {b / 'front.json'}{says}") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "ab").exists() and not (b / "report.html").exists()


@pytest.mark.parametrize("probe, says", [
    ("truncated", ": not valid JSON ("),
    ("front missing key", ": fronts[1].hypervolume must be a number; got nothing"),
    ("front wrong type", ': fronts[0].points[0].label must be a string; got 3'),
    ("fronts not a list", ': fronts must be a non-empty list of fronts; got {"a": 1}'),
])
def test_damaged_comparison_json_is_one_error_line_naming_the_file(tmp_path, capsys, probe, says):
    a, b = _front_dir(tmp_path, "a", [[1.0, 2.0], [2.0, 1.0]]), _front_dir(tmp_path, "b", [[3.0, 3.0]])
    assert main(["compare", str(a), str(b), "--labels", "A,B", "--output-dir", str(tmp_path / "ab")]) == 0
    assert main(["report", str(tmp_path / "ab")]) == 0
    f = tmp_path / "ab" / "comparison.json"
    {"truncated": lambda: f.write_bytes(f.read_bytes()[:-40]),
     "front missing key": lambda: _edit(f, lambda d: d["fronts"][1].pop("hypervolume")),
     "front wrong type": lambda: _edit(f, lambda d: d["fronts"][0]["points"][0].update(label=3)),
     "fronts not a list": lambda: _edit(f, lambda d: d.update(fronts={"a": 1}))}[probe]()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "ab")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {f}{says}") and err.count("\n") == 1, err


@pytest.mark.parametrize("value, says", [
    ("a,b", "--reference-point 'a,b': expected numbers separated by commas"),
    ("0,nan", "--reference-point '0,nan': every value must be a finite number; got 'nan'"),
    ("-inf,0", "--reference-point '-inf,0': every value must be a finite number; got '-inf'"),
    ("0,0,0", "reference point [0.0, 0.0, 0.0] has 3 value(s) for 2 objectives (a, b)"),
    ("0", "reference point [0.0] has 1 value(s) for 2 objectives (a, b)"),
])
def test_bad_reference_point_is_one_error_line(tmp_path, capsys, value, says):
    a, b = _front_dir(tmp_path, "a", [[1.0, 2.0], [2.0, 1.0]]), _front_dir(tmp_path, "b", [[3.0, 3.0]])
    assert main(["compare", str(a), str(b), f"--reference-point={value}", "--output-dir", str(tmp_path / "ab")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {says}") and err.count("\n") == 1, err
    assert not (tmp_path / "ab").exists()


def test_report_of_a_folder_without_a_front(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {str(tmp_path)!r} holds neither front.json nor comparison.json\n"
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


@pytest.mark.parametrize("value, says", [("0,nan", "reference_point must be finite numbers; got [0.0, nan]"),
                                         ("0,0,0", "reference_point has 3 value(s) for 2 objectives")])
def test_front_refuses_a_bad_reference_point_before_training(tmp_path, capsys, value, says):
    out = tmp_path / "f"
    assert main(["front", "--method", "morlhf", "--preferences", "grid:2", f"--reference-point={value}", "--model", "tiny",
                 "--objectives", ",".join(OBJ), "--max-steps", "1", "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {says}") and err.count("\n") == 1, err
    assert not out.exists()


def test_front_and_compare_never_replace_a_folder_paretoalign_did_not_write(tmp_path, capsys):
    a, b = _front_dir(tmp_path, "a", [[1, 2], [2, 1]]), _front_dir(tmp_path, "b", [[1.5, 1.5]])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my own report")
    assert main(["compare", str(a), str(b), "--output-dir", str(mine)]) == 2
    assert "not a paretoalign folder" in capsys.readouterr().err
    assert (mine / "report.html").read_text() == "my own report"
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--output-dir", str(out)]) == 0
    assert main(["compare", str(a), str(b), "--output-dir", str(out)]) == 0  # our own comparison: replaced
    assert run_dir.read_marker(out)["kind"] == "comparison"
    cfg = dict(method=["pama"], preferences="grid:2", output_dir=str(mine), report=False, overwrite=True, **FAST_EVAL)
    with pytest.raises(RunDirError, match="not a paretoalign folder"):
        run_front(FrontConfig(**cfg), TRAIN, progress=lambda s: None)
    assert sorted(p.name for p in mine.iterdir()) == ["report.html"]


def test_front_overwrite_keeps_the_users_own_files(tmp_path):
    out = tmp_path / "front"
    cfg = dict(method=["pama"], preferences="1,0", output_dir=str(out), report=False, **FAST_EVAL)
    run_front(FrontConfig(**cfg), TRAIN, progress=lambda s: None)
    assert run_dir.read_marker(out)["kind"] == "front"
    (out / "notes.md").write_text("keep")
    run_front(FrontConfig(**cfg, overwrite=True), TRAIN, progress=lambda s: None)
    assert (out / "notes.md").read_text() == "keep" and (out / "front.json").is_file()


def test_compare_shows_each_fronts_own_hypervolume_beside_the_shared_one(capsys):
    """The same automatic rule as `front`, over every point compared: the shared reference point differs
    from each front's own, and the table says so with both numbers."""
    a = make_front(_points([[1.0, 2.0], [2.0, 1.0]]), "A", "pama", _meta())
    b = make_front(_points([[3.0, 3.0]]), "B", "morlhf", _meta())
    c = compare_fronts([a, b])
    own = {f["name"]: f["own"] for f in c["fronts"]}
    assert own["A"]["hypervolume"] == a["hypervolume"] and own["A"]["reference_point"] == a["reference_point"]
    # the shared point is the rule over the union of both fronts' points
    union = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, 3.0]])
    assert c["reference_point"] == front_mod.automatic_reference_point(union).tolist()
    assert c["hypervolumes"]["A"] == pytest.approx(hypervolume(union[:2], np.array(c["reference_point"])))
    front_mod.print_front(c)
    out = capsys.readouterr().out
    assert "shared by all fronts" in out and f"A: {a['hypervolume']:.4f} in its front.json" in out
    front_mod.print_front(a)  # a single front: nothing to explain
    assert "shared by all fronts" not in capsys.readouterr().out


def test_bounds_give_the_same_reference_point_in_memory_and_from_json():
    """Objective.bounds is a tuple in memory and a list in front.json: `front` (in memory) and `compare`
    (from the files) must pick the same automatic reference point from the same points."""
    meta = _meta()
    for o in meta["objectives"]:
        o["bounds"] = (-1.0, 1.0)
    mem = make_front(_points([[0.2, 0.5], [0.4, 0.1]]), "m", "pama", meta)
    back = json.loads(json.dumps(meta))
    disk = make_front(_points([[0.2, 0.5], [0.4, 0.1]]), "m", "pama", back)
    assert mem["reference_point"] == disk["reference_point"] == [-1.0, -1.0]
    assert mem["hypervolume"] == pytest.approx(disk["hypervolume"])
