"""`paretoalign front --method mod`: MOD decodes the same K one-objective endpoints together at every
preference (no merge, no training per point); with `rs,mod` both fronts come from one set of endpoints."""

import json

import pytest

from paretoalign.evaluation.config import EvalConfig
from paretoalign.evaluation.evaluate import evaluate_target
from paretoalign.fronts.sweep import build_front_config, run_front

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
TRAIN = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
             learning_rate=5e-2, max_steps=1, save_steps=1, seed=0)
FAST_EVAL = dict(eval_num_prompts=4, eval_batch_size=4)


@pytest.fixture(autouse=True)
def eval_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))


def test_mod_front_decodes_the_endpoints_at_each_preference(tmp_path):
    out = tmp_path / "mod"
    front, train = build_front_config(None, {"method": "mod", "preferences": "grid:3", "output_dir": str(out),
                                             "report": False, **FAST_EVAL, **TRAIN})
    run_front(front, train, progress=lambda s: None)
    saved = json.loads((out / "front.json").read_text())
    t = saved["training"]
    assert saved["method"] == "mod" and t["trainings"] == 2 and t["decoding"] == {"divergence": "reverse_kl"}
    assert [p["preference"] for p in saved["points"]] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    endpoints = [str(out / e["run_dir"]) for e in t["endpoints"]]
    for p in saved["points"]:
        ev = json.loads((out / p["run_dir"] / "eval.json").read_text())
        assert ev["mod"] is not None and p["mean"] == [ev["summary"][n]["mean"] for n in ("chars", "words")]
        assert p["decoding"] == {"divergence": "reverse_kl"}
    # a vertex of MOD is its endpoint decoded alone: the same scores as evaluating that endpoint's run
    vertex = next(p for p in saved["points"] if p["preference"] == [1.0, 0.0])
    alone = evaluate_target(EvalConfig(target=endpoints[0], objectives=OBJ, num_prompts=4, batch_size=4,
                                       max_new_tokens=8, baseline="none", output=str(tmp_path / "alone.json")),
                            quiet=True)
    assert vertex["mean"] == pytest.approx([alone["summary"][n]["mean"] for n in ("chars", "words")])


def test_rs_and_mod_in_one_command_train_the_endpoints_once(tmp_path, monkeypatch):
    from paretoalign.trainers.online_trainer import OnlineTrainer

    trained = []
    real = OnlineTrainer.train
    monkeypatch.setattr(OnlineTrainer, "train", lambda self: trained.append(list(self.config.weights)) or real(self))
    out = tmp_path / "both"
    front, train = build_front_config(None, {"method": "rs,mod", "preferences": "grid:2", "output_dir": str(out),
                                             "report": False, **FAST_EVAL, **TRAIN})
    res = run_front(front, train, progress=lambda s: None)
    assert sorted(f["name"] for f in res["fronts"]) == ["mod", "rs"]
    assert sorted(trained) == [[0.0, 1.0], [1.0, 0.0]]  # once, for both fronts
    by = {f["name"]: f["training"] for f in res["fronts"]}
    assert by["mod"]["trainings"] == by["rs"]["trainings"] == 2
    # mod's endpoints are rs's runs, recorded relative to mod's own folder
    for e_rs, e_mod in zip(by["rs"]["endpoints"], by["mod"]["endpoints"]):
        assert (out / "mod" / e_mod["run_dir"]).resolve() == (out / "rs" / e_rs["run_dir"]).resolve()
        assert e_mod["run_dir"].startswith("../rs/endpoints/") and not e_mod["trained_now"]
