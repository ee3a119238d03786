"""bench/faults.py at its smallest: a reference run, two kill -9 trials, each resumed and compared."""

import importlib.util
import json
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_faults", Path(__file__).resolve().parents[1] / "bench" / "faults.py")
bf = importlib.util.module_from_spec(spec)
sys.modules["bench_faults"] = bf
spec.loader.exec_module(bf)


def test_two_kills_resume_to_the_reference(tmp_path):
    out = tmp_path / "faults.json"
    res = bf.main(["--kills", "2", "--targeted", "0.5", "--steps", "4", "--save-steps", "2", "--max-new-tokens", "16",
                   "--batch-size", "2", "--seed", "3", "--workdir", str(tmp_path / "work"), "--output", str(out)])
    saved = json.loads(out.read_text())
    assert saved["counts"] == res["counts"] and len(saved["trials"]) == 2
    assert res["reference_steps"] == [1, 2, 3, 4]
    kinds = sorted(t["kind"] for t in res["trials"])
    assert kinds == ["targeted", "timed"]
    for t in res["trials"]:
        assert t["outcome"] in {"resumed-identical", "fell-back-identical", "complete-at-kill", "refused",
                                "finished-before-kill", *bf.BUGS}
        if "resume_exit" in t:  # killed and resumed: the folder was compared with the reference
            assert t["comparison"] is not None and "left" in t
    # no trial may show a bug: a resumed run is the uninterrupted one, bit for bit
    assert res["bugs"] == 0, json.dumps([t for t in res["trials"] if t["outcome"] in bf.BUGS], indent=1, default=str)


def test_classification_and_plan_are_pure():
    """The classifier and the kill plan, without running anything."""
    left = {"final": False, "checkpoints": [], "temporary": [], "summary": False, "metrics_lines": 0}
    ok = {"steps_ok": True, "metrics_equal": True, "weights_equal": True}
    assert bf.classify({"resume_exit": 0, "fell_back": False, "left": left}, ok) == "resumed-identical"
    assert bf.classify({"resume_exit": 0, "fell_back": True, "left": left}, ok) == "fell-back-identical"
    assert bf.classify({"resume_exit": 0, "fell_back": False, "left": left}, {**ok, "steps_ok": False}) == "lost-metrics-row"
    assert bf.classify({"resume_exit": 0, "fell_back": False, "left": left}, {**ok, "weights_equal": False}) == "mismatch"
    assert bf.classify({"resume_exit": 1, "fell_back": False, "left": left}, ok) == "crash"
    assert bf.classify({"resume_exit": 2, "fell_back": False, "left": left}, ok) == "refused"
    assert bf.classify({"resume_exit": 2, "fell_back": False, "left": {**left, "final": True}}, ok) == "complete-at-kill"
    a = bf.parse_args(["--kills", "8", "--targeted", "0.5", "--steps", "4", "--save-steps", "2", "--seed", "1"])
    ref = {"window_s": 3.0, "events_s": {"summary.json": 2.5}, "metrics_rows_s": [1.0, 1.3, 1.6, 1.9]}
    plans = bf.plan_trials(a, ref)
    assert plans == bf.plan_trials(a, ref)  # seeded
    assert sum(p["kind"] == "targeted" for p in plans) == 4
    for p in plans:
        if p["kind"] == "timed":
            assert 0.0 <= p["offset_s"] <= 1.5
        elif p["target"] == "setup":
            assert 0.0 <= p["offset_s"] <= 1.0
        else:
            assert p["target"] in {"checkpoints/step-000002.tmp", "checkpoints/step-000004.tmp", "final.tmp"}
