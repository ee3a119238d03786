"""`paretoalign front --method rs`: Rewarded Soups trains one endpoint per objective once, merges them at
every preference, evaluates each merge with the evaluate machinery (cached on the merged weights), records
the training cost as K trainings, and resumes without retraining or re-merging."""

import json

import pytest

from paretoalign import cli, merging, run_dir
from paretoalign.errors import ConfigError
from paretoalign.fronts import sweep as sweep_mod
from paretoalign.fronts.sweep import build_front_config, run_front

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
TRAIN = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
             learning_rate=5e-2, max_steps=1, save_steps=1, seed=0)
FAST_EVAL = dict(eval_num_prompts=4, eval_batch_size=4)


@pytest.fixture(autouse=True)
def eval_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def counted(monkeypatch):
    """How often the online trainer trains, and how often a merge is computed."""
    from paretoalign.trainers.online_trainer import OnlineTrainer

    calls = {"train": [], "merge": 0}
    real_train, real_merge = OnlineTrainer.train, merging.merge

    def train(self):
        calls["train"].append(list(self.config.weights))
        return real_train(self)

    def merge(*args, **kwargs):
        calls["merge"] += 1
        return real_merge(*args, **kwargs)

    monkeypatch.setattr(OnlineTrainer, "train", train)
    monkeypatch.setattr(merging, "merge", merge)
    return calls


def _front(out, **kw):
    front, train = build_front_config(None, {"method": "rs", "preferences": "grid:3", "output_dir": str(out),
                                             "report": True, **FAST_EVAL, **TRAIN, **kw})
    return front, train


def test_rs_trains_each_endpoint_once_merges_per_preference_and_resumes(tmp_path, counted, capsys):
    out = tmp_path / "rs"
    front, train = _front(out)
    assert train["method"] == "morlhf"  # rs takes its endpoint method's training options
    res = run_front(front, train, progress=lambda s: None)
    # K = 2 trainings, one per objective with one-hot weights, for 3 preferences
    assert sorted(counted["train"]) == [[0.0, 1.0], [1.0, 0.0]]
    assert counted["merge"] == 3
    saved = json.loads((out / "front.json").read_text())
    assert saved["method"] == "rs" and [p["preference"] for p in saved["points"]] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    t = saved["training"]
    assert t["cost"] == "one training per objective" and t["trainings"] == 2
    assert t["endpoint_method"] == "morlhf" and t["train_seconds"] > 0
    assert [e["objective"] for e in t["endpoints"]] == ["chars", "words"]
    assert [e["weights"] for e in t["endpoints"]] == [[1.0, 0.0], [0.0, 1.0]]
    for e in t["endpoints"]:
        assert (out / e["run_dir"] / "final" / "policy" / "adapter_config.json").is_file()
    for p in saved["points"]:
        folder = out / p["run_dir"]
        rec = json.loads((folder / "merge.json").read_text())
        assert rec["weights"] == p["preference"] and rec["mode"] == "delta" and rec["rank"] == "exact"
        assert p["train_seconds"] == 0.0 and p["merge"]["merged_now"]
        ev = json.loads((folder / "eval.json").read_text())
        assert ev["target"] == str(folder) and ev["prompts"]["n"] == 4
        assert p["mean"] == [ev["summary"][n]["mean"] for n in ("chars", "words")]
    assert res["hypervolume"] == pytest.approx(saved["hypervolume"]) and (out / "report.html").is_file()
    # the merge's evaluation is the ordinary one: the same prompts and decoding as the base model's
    assert saved["prompts_sha256"] == json.loads((out / "base" / "eval.json").read_text())["prompts_sha256"]

    # resume: nothing is trained or merged again, and every evaluation comes from the cache
    counted["train"].clear()
    counted["merge"] = 0
    front, train = _front(out, resume=True)
    again = run_front(front, train, progress=lambda s: None)
    assert counted["train"] == [] and counted["merge"] == 0
    assert [p["mean"] for p in again["points"]] == [p["mean"] for p in saved["points"]]
    assert all(not p["merge"]["merged_now"] for p in again["points"])
    for p in again["points"]:
        assert json.loads((out / p["run_dir"] / "eval.json").read_text())["cached"]["completions"]

    # given endpoints: nothing is trained; the same merges (same content) are cached evaluations
    given = tmp_path / "given"
    ends = ",".join(f"{e['objective']}={out / e['run_dir']}" for e in t["endpoints"])
    front, train = _front(given, endpoints=ends, include_base=False)
    res = run_front(front, train, progress=lambda s: None)
    assert counted["train"] == [] and res["training"]["endpoints_trained"] == "given (--endpoints)"
    assert [p["mean"] for p in res["points"]] == [p["mean"] for p in saved["points"]]
    # endpoints listed against the order of --objectives are refused
    wrong = ",".join(f"{e['objective']}={out / e['run_dir']}" for e in reversed(t["endpoints"]))
    front, train = _front(tmp_path / "wrong", endpoints=wrong)
    with pytest.raises(ConfigError, match="list --endpoints in the order of --objectives"):
        run_front(front, train, progress=lambda s: None)
    front, train = build_front_config(None, {"method": "rs", "output_dir": str(tmp_path / "other-model"),
                                             "endpoints": ends, **{**TRAIN, "model": "smollm2-135m-instruct"}})
    with pytest.raises(ConfigError, match="was trained from 'tiny', the front's --model is 'smollm2-135m-instruct'"):
        run_front(front, {**train, "model": "smollm2-135m-instruct"}, progress=lambda s: None)

    # the endpoints are ordinary runs: `paretoalign merge` takes them, and the result loads
    import paretoalign

    merged = tmp_path / "merged"
    assert cli_main(["merge", "--endpoints", ends, "--weights", "0.5,0.5", "--rank", "exact",
                     "--output-dir", str(merged)]) == 0, capsys.readouterr().err
    model, tok = paretoalign.load_policy(merged)
    assert model is not None and run_dir.read_marker(merged)["kind"] == "merge"
    assert json.loads((merged / "merge.json").read_text())["endpoints"][0]["method"] == "morlhf"


def cli_main(argv):
    """`paretoalign ...` with the merge command registered (a no-op once cli.py registers it itself)."""
    real = cli.build_parser

    def build():
        parser = real()
        sub = next(a for a in parser._actions if a.dest == "command")
        if "merge" not in sub.choices:
            merging.add_merge_parser(sub)
        return parser

    cli.build_parser = build
    try:
        return cli.main(argv)
    finally:
        cli.build_parser = real


def test_rs_options_are_checked_before_anything_trains(tmp_path):
    with pytest.raises(ConfigError, match="--endpoint-method 'dpa'"):
        _front(tmp_path / "a", endpoint_method="dpa")
    with pytest.raises(ConfigError, match="belong to methods made from K endpoints"):
        build_front_config(None, dict(method="morlhf", endpoints="a,b", **TRAIN))
    with pytest.raises(ConfigError, match="--merge-rank 'two'"):
        _front(tmp_path / "a", merge_rank="two")
    # rs takes its endpoint method's training options, so it sweeps beside that family in one command
    front, train = build_front_config(None, dict(method="rs,morlhf", **TRAIN))
    assert front.method == ["rs", "morlhf"] and train["method"] == "morlhf"
    with pytest.raises(ConfigError, match="mixes method families"):
        build_front_config(None, dict(method="rs,dpo", **TRAIN))
    front, train = build_front_config(None, dict(method="rs,dpo", endpoint_method="dpo", pairs=["x.jsonl"],
                                                 model="tiny", objectives=["a", "b"]))
    assert train["method"] == "dpo"
    assert not (tmp_path / "a").exists()


def test_rs_with_a_truncated_rank_records_the_error_per_point(tmp_path, monkeypatch):
    out = tmp_path / "rs1"
    front, train = _front(out, preferences="0.5,0.5", merge_rank="2", include_base=False, report=False)
    res = run_front(front, train, progress=lambda s: None)
    p = res["points"][0]
    rec = json.loads((out / p["run_dir"] / "merge.json").read_text())
    assert rec["rank"] == 2 and rec["truncation"]["rank"] == 2 and rec["truncation"]["lost"] >= 0.0
    assert p["merge"]["truncation_relative"] == rec["truncation"]["relative"]
    assert res["training"]["merge"] == {"mode": "delta", "rank": 2}
    assert sweep_mod.ENDPOINT_EVALUATORS["rs"].evaluate is sweep_mod._evaluate_merge
