"""Training an ArmoRM-style reward model end to end on the tiny backbone and the fixture data in the
HelpSteer2 and UltraFeedback schemas; save/load; objectives; the CLI; bad input."""

import json
from pathlib import Path

import pytest
import torch

from paretoalign.errors import ConfigError, DataError, RunDirError
from paretoalign.reward_model.features import FeatureExtractor
from paretoalign.reward_model.model import MultiObjectiveRewardModel
from paretoalign.trainers.reward_model_config import RewardModelConfig
from paretoalign.trainers.reward_model_trainer import train_reward_model

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "reward"
HS2 = str(FIX / "helpsteer2_small.jsonl")
UF = str(FIX / "ultrafeedback_small.jsonl")


def _cfg(tmp_path, name="rm", **kw):
    base = dict(ratings=[HS2], backbone="tiny", pooling="mean", gate_hidden=32, gate_layers=1, gate_steps=60,
                gate_batch_size=64, output_dir=str(tmp_path / name), feature_cache=str(tmp_path / "features"),
                progress=False, temperature=1.0, dropout=0.0)
    base.update(kw)
    return RewardModelConfig(**base)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rm")
    model, report = train_reward_model(_cfg(tmp))
    return tmp, model, report


def test_two_stages_train_save_and_report(trained):
    tmp, model, rep = trained
    assert model.objectives == ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
    assert rep["rating_ranges"]["helpfulness"] == [0.0, 4.0] and rep["preference_label"] == "helpfulness"
    assert set(rep["stage1"]["alpha"]) == set(model.objectives)
    ev = rep["evaluation"]
    assert ev["test_pairs"] > 0 and ev["train_pairs"] > 0
    # the heads fit their ratings (mean-pooled features of the tiny model carry the words)
    for o in ("verbosity", "correctness", "helpfulness"):
        assert ev["heads_train"][o]["spearman"] > 0.5, o
    assert ev["pairs_train"]["overall"]["accuracy"] > 0.6
    assert rep["stage2"]["loss_last"] < rep["stage2"]["loss_first"]
    for f in ("config.json", "model.safetensors", "report.json"):
        assert (tmp / "rm" / f).is_file()


def test_forward_contract_and_save_load_roundtrip(trained):
    tmp, model, _ = trained
    prompts = ["Explain rain.", "What is ice?", "Explain lava."]
    responses = ["Rain works because of heat.", "Ice is a thing. This is wrong but stated anyway.", "Lava is a thing."]
    out = model.score(prompts, responses)
    assert out.rewards.shape == (3, 5) and out.gates.shape == (3, 5) and out.score.shape == (3,)
    torch.testing.assert_close(out.gates.sum(-1), torch.ones(3))  # over objectives, every sample
    torch.testing.assert_close(out.score, model.gate.logit_scale * (out.gates * out.debiased).sum(-1))
    loaded = MultiObjectiveRewardModel.from_pretrained(tmp / "rm")
    loaded.set_extractor(FeatureExtractor("tiny", "mean", cache_dir=tmp / "features"))
    again = loaded.score(prompts, responses)
    for a, b in ((out.rewards, again.rewards), (out.gates, again.gates), (out.score, again.score)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert loaded.verbosity == "verbosity" and float(loaded.debias_lambda[loaded.verbosity_index]) == 1.0
    with pytest.raises(ConfigError, match="not a paretoalign reward model"):
        MultiObjectiveRewardModel.from_pretrained(tmp)


def test_debiasing_is_recorded_and_decorrelates_on_the_reference_set(trained):
    _, model, rep = trained
    d = rep["debias"]
    assert d["objective"] == "verbosity" and d["lambda"]["verbosity"] == 1.0
    biased = [o for o, r in d["spearman_before"].items() if o != "verbosity" and r > d["threshold"]]
    assert "helpfulness" in biased  # the fixture's helpfulness rises with verbosity
    for o in biased:
        assert d["lambda"][o] > 0
        assert d["spearman_after"][o] <= d["threshold"] or d["lambda"][o] == 1.0
    lam = torch.tensor([d["lambda"][o] for o in model.objectives])
    torch.testing.assert_close(model.debias_lambda, lam)


def test_features_are_cached_on_disk(trained, tmp_path):
    tmp, _, _ = trained
    ex = FeatureExtractor("tiny", "mean", cache_dir=tmp / "features")
    train_reward_model(_cfg(tmp_path, name="again", feature_cache=str(tmp / "features")), extractor=ex)
    assert ex.calls == 0  # every text was in the cache of the first run


def test_ultrafeedback_with_missing_ratings(tmp_path):
    model, rep = train_reward_model(_cfg(tmp_path, ratings=[UF], gate_steps=20))
    assert rep["rating_ranges"]["honesty"] == [1.0, 5.0]
    assert rep["stage1"]["labelled"]["honesty"] < rep["stage1"]["labelled"]["truthfulness"]  # N/A ignored
    assert rep["debias"] is None and model.verbosity is None  # no verbosity objective: nothing to debias
    assert rep["evaluation"]["heads_train"]["truthfulness"]["spearman"] > 0.5


def test_objectives_share_one_forward_pass(trained):
    from paretoalign.objectives import build_objective_set
    from paretoalign.objectives.mo_reward_model import clear_shared_models

    tmp, model, _ = trained
    clear_shared_models()
    folder = tmp / "rm"
    objs = build_objective_set([f"reward_model:{folder}", f"reward_model:{folder}#verbosity",
                                f"reward_model:{folder}#correctness"], None)
    assert objs.names == ["reward", "verbosity", "correctness"]
    prompts, responses = ["Explain rain."] * 2, ["Rain is a thing.", "Rain works because of heat. It is common."]
    shared = objs.objectives[0].model
    shared.set_extractor(FeatureExtractor("tiny", "mean", keep_in_memory=False))
    scores, valid = objs.rewards(prompts, responses)
    assert scores.shape == (2, 3) and bool(valid.all())
    assert shared.extractor().calls == 2  # conversations + prompts, once for all three objectives
    direct = model.score(prompts, responses)
    torch.testing.assert_close(scores[:, 0], direct.score, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores[:, 1], direct.rewards[:, 4], atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="no objective 'nope'"):
        build_objective_set([f"reward_model:{folder}#nope"], None)
    clear_shared_models()


def test_bad_input_is_a_clear_error(trained, tmp_path):
    tmp, _, _ = trained
    with pytest.raises(RunDirError, match="already holds a paretoalign reward-model folder"):
        train_reward_model(_cfg(tmp))
    with pytest.raises(ConfigError, match=r"\['kindness'\] have no ratings"):
        train_reward_model(_cfg(tmp_path, objectives=["helpfulness", "kindness"]))
    with pytest.raises(ConfigError, match="not of the form"):
        _cfg(tmp_path, rating_ranges=["helpfulness=4:0"])
    with pytest.raises(ConfigError, match="--ratings is required"):
        RewardModelConfig()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "response": "r", "helpfulness": 9, "correctness": 1, "coherence": 1,
                               "complexity": 1, "verbosity": 1}) + "\n" +
                   json.dumps({"prompt": "p", "response": "s", "helpfulness": 1, "correctness": 1, "coherence": 1,
                               "complexity": 1, "verbosity": 2}) + "\n")
    with pytest.raises(ValueError, match="helpfulness: rating 9 is outside its range"):
        train_reward_model(_cfg(tmp_path, name="b", ratings=[str(bad)]))
    with pytest.raises(DataError, match="line 1.*'prompt'"):
        (tmp_path / "broken.jsonl").write_text('{"response": "x", "helpfulness": 1}\n')
        train_reward_model(_cfg(tmp_path, name="c", ratings=[str(tmp_path / "broken.jsonl")], ratings_format="helpsteer2"))


def test_cli_train_and_score(tmp_path, capsys):
    from paretoalign.cli import main

    out = tmp_path / "cli-rm"
    assert main(["reward-model", "train", "--ratings", HS2, "--backbone", "tiny", "--pooling", "mean",
                 "--gate-hidden", "16", "--gate-layers", "1", "--gate-steps", "10", "--gate-batch-size", "32",
                 "--output-dir", str(out), "--feature-cache", str(tmp_path / "f"), "--progress", "false"]) == 0
    text = capsys.readouterr().out
    assert "overall (gated score)" in text and "verbosity" in text
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "Explain rain.", "response": "Rain is a thing."}) + "\n")
    assert main(["reward-model", "score", str(out), "--input", str(rows), "--output", str(tmp_path / "s.jsonl")]) == 0
    scored = json.loads((tmp_path / "s.jsonl").read_text())
    assert set(scored["rewards"]) == {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}
    assert sum(scored["gates"].values()) == pytest.approx(1.0)
    capsys.readouterr()
    assert main(["reward-model", "score", str(out), "--input", HS2]) == 0
    assert "overall (helpfulness)" in capsys.readouterr().out
    assert main(["reward-model", "score", str(tmp_path), "--input", HS2]) == 2


def test_ratings_are_read_row_by_row_and_several_files_merge(tmp_path):
    from paretoalign.data.schemas import load_ratings

    hs = tmp_path / "one.jsonl"
    rows = [dict(prompt="p1", response="a", helpfulness=1, correctness=2, coherence=3, complexity=1, verbosity=0),
            dict(prompt="p1", response="b", helpfulness=3, correctness=2, coherence=3, complexity=1, verbosity=2),
            dict(prompt="p2", response="c", helpfulness=4, correctness=4, coherence=4, complexity=0, verbosity=1)]
    hs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rated, fmt = load_ratings([str(hs)])
    assert fmt == "helpsteer2" and [r.response for r in rated] == ["a", "b", "c"]  # p2's single response counts
    both, fmt2 = load_ratings([str(hs), UF])
    assert fmt2 == "helpsteer2+ultrafeedback" and len(both) == 3 + 80
    assert any(r.scores.get("honesty") != r.scores.get("honesty") for r in both)  # N/A -> NaN
    # several plain files for both stages
    model, rep = train_reward_model(_cfg(tmp_path, ratings=[HS2, str(hs)], pairs=[HS2, str(hs)], gate_steps=5))
    assert rep["data"]["rated_responses"] == 90 + 3
    single = tmp_path / "single.jsonl"
    single.write_text(json.dumps(rows[2]) + "\n")
    with pytest.raises(DataError, match="pass --pairs"):
        train_reward_model(_cfg(tmp_path, name="s", ratings=[str(single)]))


def test_objective_options_that_do_not_apply_are_errors(trained):
    from paretoalign.objectives import build_objective
    from paretoalign.objectives.mo_reward_model import clear_shared_models

    tmp, _, _ = trained
    folder = tmp / "rm"
    with pytest.raises(ConfigError, match="index=1 do not apply"):
        build_objective(f"reward_model:{folder}(index=1)")
    obj = build_objective(f"reward_model:{folder}#helpfulness(debiased=true)")
    assert obj.debiased and obj.head == "helpfulness"
    with pytest.raises(ConfigError, match="applies to a head"):
        build_objective(f"reward_model:{folder}(debiased=true)")
    clear_shared_models()


def test_debiasing_on_a_separate_reference_set(tmp_path):
    model, rep = train_reward_model(_cfg(tmp_path, debias_reference=[UF, HS2], gate_steps=5))
    d = rep["debias"]
    assert d["reference"] == f"{UF}, {HS2}" and d["reference_responses"] == 80 + 90
    assert d["lambda"]["verbosity"] == 1.0
    for o in d["lambda"]:
        if o != "verbosity" and o not in d["not_decorrelated"]:
            assert d["spearman_after"][o] <= d["threshold"]


def test_files_of_two_schemas_keep_each_its_rating_scale(tmp_path):
    # HelpSteer2 rates 0-4 and UltraFeedback 1-5, both with a 'helpfulness': each row is scaled by its own schema
    model, rep = train_reward_model(_cfg(tmp_path, ratings=[HS2, UF], pairs=[HS2], gate_steps=5))
    assert rep["rating_ranges"]["helpfulness"] == [[0.0, 4.0], [1.0, 5.0]]
    assert rep["rating_ranges"]["verbosity"] == [0.0, 4.0] and rep["rating_ranges"]["honesty"] == [1.0, 5.0]
    assert model.rating_ranges == rep["rating_ranges"]
