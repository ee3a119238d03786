"""Steerable targets (paretoalign.steering), without a browser: a DPA run's system message for a preference is
`evaluate --direction`'s, a front folder's nearest point (Euclidean on the simplex, ties to the first listed),
the checks on weights, prompts and targets, the registration hook, and the streamed answer; Rewarded Soups and MOD
fronts (the endpoints merged, or decoded together, at the preference; equal to merging.soup and to the MOD decoder)."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from paretoalign import run_dir, steering
from paretoalign.errors import ConfigError, FrontError, RunDirError
from paretoalign.preferences import preference_slug
from paretoalign.steering import (
    Decoding,
    DPATarget,
    FrontTarget,
    SteerableTarget,
    Steering,
    TargetOptions,
    nearest_point,
    register_steerable,
    resolve_steerable,
    stream_answer,
)

OBJ = ["length(name=chars,scale=10,low=0,high=100)",
       "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
TEMPLATE = "Answer so as to maximise {weighted_rating}."


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    f = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Say something.", "Tell me a story."] * 4))
    return str(f)


@pytest.fixture(scope="module")
def dpa_front(tmp_path_factory, prompt_file):
    """A DPA front (one tiny model, three evaluated directions) with its own direction template."""
    import os

    from paretoalign.fronts.sweep import build_front_config, run_front

    out = tmp_path_factory.mktemp("dpa") / "front"
    old = os.environ.get("PARETOALIGN_CACHE")
    os.environ["PARETOALIGN_CACHE"] = str(out.parent / "cache")
    try:
        front, train = build_front_config(None, dict(
            method="dpa", preferences="grid:3", output_dir=str(out), report=False, eval_num_prompts=2,
            eval_max_new_tokens=3, model="tiny", objectives=OBJ, prompts=prompt_file, rounds=1, prompts_per_round=2,
            num_candidates=2, max_new_tokens=3, progress=False, direction_template=TEMPLATE))
        run_front(front, train, progress=lambda s: None)
    finally:
        if old is None:
            os.environ.pop("PARETOALIGN_CACHE", None)
        else:
            os.environ["PARETOALIGN_CACHE"] = old
    return out


def _fake_run(folder, method="morlhf"):
    (folder / "final" / "policy").mkdir(parents=True)
    run_dir.save_config(folder, {"method": method, "model": "tiny", "objectives": OBJ})
    return folder


def _front(folder, prefs, method="morlhf", names=("chars", "words"), runs=True, specs=True):
    """A front folder written by the front code (make_front + save_result) over points that are run folders
    holding only a config (nothing here loads them)."""
    from paretoalign.fronts.front import make_front, save_result

    k = len(names)
    points = [{"label": "w=(" + ",".join(f"{x:.2f}" for x in w) + ")", "preference": list(w),
               "run_dir": f"points/p{i}", "mean": [float(i + 1), float(len(prefs) - i)] + [1.0] * (k - 2),
               "stderr": [0.0] * k, "samples": [], "win_rate": None} for i, w in enumerate(prefs)]
    objectives = [{"name": n, "direction": "maximize", "bounds": None} for n in names]
    if specs:
        for o in objectives:
            o["spec"] = f"length(name={o['name']})"
    meta = {"names": list(names), "objectives": objectives, "prompts_sha256": "x", "prompts": {"n": 1},
            "decoding": {"system_prompt": "Be brief.", "use_chat_template": True, "max_new_tokens": 9}}
    save_result(folder / "front.json", make_front(points, method, method, meta))
    if runs:
        for p in points:
            _fake_run(folder / p["run_dir"], method)
    return folder


# ---------------------------------------------------------------------------------------------
# DPA: the preference becomes evaluate --direction's system message


def test_a_dpa_front_steers_its_model_with_the_system_message_evaluate_wrote_for_each_point(dpa_front):
    t = resolve_steerable(dpa_front)
    assert isinstance(t, DPATarget) and t.kind == "dpa" and t.names == ["chars", "words"]
    assert t.path == dpa_front / "model" and t.front["method"] == "dpa"
    for i, p in enumerate(t.front["points"]):
        ev = json.loads((dpa_front / "points" / preference_slug(p["preference"]) / "eval.json").read_text())
        s = t.steer(p["preference"])
        # what `front --method dpa` evaluated at this point: evaluate --direction's message and direction
        assert s.system_prompt == ev["decoding"]["system_prompt"]
        assert list(s.direction) == pytest.approx(ev["direction"])
        assert s.point == i and s.distance == pytest.approx(0.0) and s.model_key == str(dpa_front / "model")
        assert s.system_prompt in s.note and "nearest evaluated direction" in s.note
    # the run's own template, not the default one
    assert t.steer([0.6, 0.8]).system_prompt == "Answer so as to maximise chars*60 + words*80."
    # the model folder of the sweep (or its final/, final/policy) is the same target, with its front drawn
    for where in ("model", "model/final", "model/final/policy"):
        again = resolve_steerable(dpa_front / where)
        assert isinstance(again, DPATarget) and again.front is not None and again.path == dpa_front / "model"
        assert again.steer([0.3, 0.7]).system_prompt == t.steer([0.3, 0.7]).system_prompt


@pytest.mark.parametrize("weights", [[0.3, 0.7], [1.0, 0.0], [3.0, 1.0], "0.25,0.75"])
def test_the_dpa_system_message_is_evaluate_directions(dpa_front, weights, tmp_path):
    from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target

    t = resolve_steerable(dpa_front / "model")
    s = t.steer(weights)
    w = [float(x) for x in (weights.split(",") if isinstance(weights, str) else weights)]
    assert list(s.weights) == pytest.approx([x / sum(w) for x in w]) and sum(s.weights) == pytest.approx(1.0)
    ev = evaluate_target(EvalConfig(target=str(dpa_front / "model"), direction=list(s.weights), split="all",
                                    num_prompts=1, max_new_tokens=2, baseline="none", cache=False,
                                    output=str(tmp_path / "e.json")), quiet=True)
    assert s.system_prompt == ev["decoding"]["system_prompt"]
    assert list(s.direction) == pytest.approx(ev["direction"])


# ---------------------------------------------------------------------------------------------
# fronts of methods that are not steerable: the nearest trained point


def test_nearest_point_is_euclidean_on_the_simplex_and_ties_go_to_the_first_listed():
    rng = np.random.default_rng(0)
    prefs = rng.dirichlet(np.ones(3), size=7)
    for w in rng.dirichlet(np.ones(3), size=50):
        i, d, tied = nearest_point(w, prefs.tolist())
        assert i == int(np.argmin(np.linalg.norm(prefs - w, axis=1))) and tied == [i]
        assert d == pytest.approx(float(np.linalg.norm(prefs[i] - w)))
    grid = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert nearest_point([0.25, 0.75], grid) == (1, pytest.approx(math.sqrt(0.125)), [1, 2])
    assert nearest_point([0.25, 0.75], grid[::-1])[0] == 0  # listed first: [0, 1] now
    assert nearest_point([0.5, 0.5], grid)[:2] == (1, 0.0)
    with pytest.raises(FrontError, match="no points"):
        nearest_point([0.5, 0.5], [])


def test_a_front_folder_answers_with_its_nearest_point_and_says_so(tmp_path):
    folder = _front(tmp_path / "f", [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    t = resolve_steerable(folder)
    assert isinstance(t, FrontTarget) and t.kind == "front" and t.names == ["chars", "words"]
    assert t.objective_specs == ["length(name=chars)", "length(name=words)"] and t.max_new_tokens == 9
    t.check()  # every point's run folder is there
    s = t.steer([0.5, 0.5])
    assert s.point == 1 and s.model_key == str(folder / "points/p1") and s.system_prompt == "Be brief."
    assert "your preference (0.50, 0.50) is a trained point: w=(0.50,0.50) (points/p1) answers" in s.note
    assert "morlhf is not steerable" in s.note and "Be brief." in s.note
    s = t.steer([9, 1])  # normalised: (0.9, 0.1), nearest (1, 0) at distance 0.1*sqrt(2)
    assert s.point == 0 and s.weights == pytest.approx((0.9, 0.1))
    assert f"at distance {0.1 * math.sqrt(2):.3f}" in s.note and "w=(1.00,0.00) (points/p0)" in s.note
    s = t.steer([0.25, 0.75])
    assert s.point == 1 and "w=(0.00,1.00) is as near; the point listed first in front.json answers" in s.note
    # a point whose run folder went missing: one error at start-up, naming it
    import shutil

    shutil.rmtree(folder / "points/p2")
    with pytest.raises(RunDirError, match=r"point 2 \(w=\(0.00,1.00\)\) names the run folder .* does not exist"):
        resolve_steerable(folder).check()
    import shutil as _sh

    _sh.rmtree(folder / "points/p1/final")
    with pytest.raises(RunDirError, match=r"point 1 \(w=\(0.50,0.50\)\): run .* has no final model"):
        resolve_steerable(folder).check()


def test_a_front_of_a_steerable_method_without_a_registered_kind(tmp_path, monkeypatch):
    # e.g. Rewarded Soups' front: a merged model per point; the nearest answers until a soups kind is registered
    monkeypatch.setattr(steering, "_steerable_method", lambda m: m in ("dpa", "soup"))
    t = resolve_steerable(_front(tmp_path / "rs", [[1.0, 0.0], [0.0, 1.0]], method="soup"))
    assert isinstance(t, FrontTarget) and "soup is steered here by its points only" in t.steer([0.9, 0.1]).note
    # one model shared by every point, but no kind that knows how to steer it: refused
    shared = _front(tmp_path / "shared", [[1.0, 0.0], [0.0, 1.0]], method="soup")
    data = json.loads((shared / "front.json").read_text())
    for p in data["points"]:
        p["run_dir"] = "model"
    (shared / "front.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="whose points share one model; `serve` cannot steer it yet"):
        resolve_steerable(shared)
    # points that are evaluations only (decoded at each preference, e.g. MOD): refused until its kind is registered
    decoded = _front(tmp_path / "decoded", [[1.0, 0.0], [0.0, 1.0]], method="soup", runs=False)
    for p in ("p0", "p1"):
        (decoded / "points" / p).mkdir(parents=True)
        (decoded / "points" / p / "eval.json").write_text("{}")
    with pytest.raises(ConfigError, match="whose points are evaluations, not models"):
        resolve_steerable(decoded)


def test_a_front_point_off_the_simplex_or_without_objective_specs_is_an_error(tmp_path):
    folder = _front(tmp_path / "f", [[1.0, 0.0], [0.5, 0.5]])
    data = json.loads((folder / "front.json").read_text())
    data["points"][1]["preference"] = [0.5, 0.7]
    (folder / "front.json").write_text(json.dumps(data))
    with pytest.raises(FrontError, match=r"point 1 \(w=\(0.50,0.50\)\): its preference is not a point of the simplex"):
        resolve_steerable(folder)
    bare = _front(tmp_path / "g", [[1.0, 0.0]], specs=False)
    with pytest.raises(FrontError, match="cannot tell how to score"):
        resolve_steerable(bare)


# ---------------------------------------------------------------------------------------------
# checks


@pytest.mark.parametrize("weights, match", [
    ([0, 0], "all weights are zero"),
    ([0.5, -0.1], "negative"),
    ([1.0], r"expected 2 weights \(one per objective: chars, words\)"),
    ([float("nan"), 1.0], "NaN"),
    ("a,b", "is not a number"),
])
def test_weights_that_cannot_be_normalised_are_one_clear_error(tmp_path, weights, match):
    t = resolve_steerable(_front(tmp_path / "f", [[1.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ConfigError, match=match):
        t.steer(weights)


def test_targets_that_are_not_steerable_are_one_clear_error(tmp_path):
    plain = _fake_run(tmp_path / "plain")
    with pytest.raises(ConfigError, match="is a morlhf run, trained at one preference: not steerable; give a front "
                       r"folder \(`paretoalign front`\) or a DPA run \(`paretoalign chat"):
        resolve_steerable(plain)
    folder = _front(tmp_path / "f", [[1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ConfigError, match="is one point of the front .* serve the front folder"):
        resolve_steerable(folder / "points" / "p0")
    cmp_ = tmp_path / "cmp"
    _front(cmp_ / "pama", [[1.0, 0.0]], method="pama")
    (cmp_ / "comparison.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"holds a comparison of fronts \(pama\), not one front: serve one of them"):
        resolve_steerable(cmp_)
    ckpt = tmp_path / "run" / "checkpoints" / "step-000001"
    (ckpt / "policy").mkdir(parents=True)
    run_dir.save_config(tmp_path / "run", {"method": "pama"})
    (ckpt / run_dir.STATE_FILE).write_text("{}")
    run_dir.save_config(ckpt, {"method": "pama"})  # even with a config beside it, a checkpoint is refused
    with pytest.raises(ConfigError, match="is a checkpoint: not steerable"):
        resolve_steerable(ckpt)
    with pytest.raises(ConfigError, match="no such folder"):
        resolve_steerable(tmp_path / "nowhere")
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "front_config.yaml").write_text("front: {}\n")
    with pytest.raises(ConfigError, match=r"holds a front sweep that has not finished \(no front.json yet\)"):
        resolve_steerable(tmp_path / "sweep")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        resolve_steerable(tmp_path / "file.txt")
    with pytest.raises(ConfigError, match="serve needs a TARGET"):
        resolve_steerable("  ")
    with pytest.raises(ConfigError, match="neither a front folder nor a run of a steerable method"):
        resolve_steerable(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "front.json").write_text("{not json")
    with pytest.raises(FrontError, match="front.json"):
        resolve_steerable(broken)


# ---------------------------------------------------------------------------------------------
# registration: how a soups endpoint set or MOD plugs in


class _Soup(SteerableTarget):
    kind = "soup"

    def __init__(self, path, options, names):
        super().__init__(path, options)
        self.names, self.directions, self.objective_specs = list(names), ["maximize"] * len(names), []

    def steer(self, weights):
        w = self.normalise(weights)
        return Steering(w, "soup@" + ",".join(f"{x:.3f}" for x in w), None, f"merged at {steering.fmt_weights(w)}")


def soup_resolver(path, options):
    if not (path / "soup.json").is_file():
        return None
    spec = json.loads((path / "soup.json").read_text())
    if len(set(spec["bases"])) != 1:
        raise ConfigError(f"{path}: the endpoints have different base models ({', '.join(spec['bases'])}); "
                          "a soup merges endpoints of one base")
    return _Soup(path, options, spec["names"])


@pytest.fixture
def registry(monkeypatch):
    from collections import OrderedDict

    monkeypatch.setattr(steering, "_REGISTERED", OrderedDict())
    return steering._REGISTERED


@pytest.mark.parametrize("how", ["function", "string"])
def test_a_registered_kind_is_tried_first_and_its_errors_are_one_line(tmp_path, registry, how):
    register_steerable("soup", soup_resolver if how == "function" else f"{__name__}:soup_resolver")
    soup = tmp_path / "soup"
    soup.mkdir()
    (soup / "soup.json").write_text(json.dumps({"bases": ["tiny", "tiny"], "names": ["a", "b"]}))
    t = resolve_steerable(soup, TargetOptions(max_models=1))
    assert isinstance(t, _Soup) and t.kind == "soup" and t.options.max_models == 1
    assert t.steer([1, 3]).model_key == "soup@0.250,0.750"
    (soup / "soup.json").write_text(json.dumps({"bases": ["tiny", "smollm2-135m-instruct"], "names": ["a", "b"]}))
    with pytest.raises(ConfigError, match="different base models"):
        resolve_steerable(soup)
    # a folder that is not a soup still goes to the built-in kinds
    assert isinstance(resolve_steerable(_front(tmp_path / "f", [[1.0, 0.0]])), FrontTarget)
    register_steerable("broken", "paretoalign.nowhere:resolver")
    with pytest.raises(ConfigError, match="steerable kind 'broken': cannot load its resolver"):
        resolve_steerable(tmp_path / "f")


# ---------------------------------------------------------------------------------------------
# answers: streamed token by token, equal to what the model gives


def test_the_answer_streams_token_by_token_and_ends_with_what_rollout_generates(dpa_front):
    from paretoalign.data.prompts import prompt_text
    from paretoalign.inference import generate_rows, load_policy
    from paretoalign.preferences import conditioned_prompt

    t = resolve_steerable(dpa_front / "model")
    t.prepare([0.5, 0.5])
    model, tok = load_policy(dpa_front / "model")
    prompt = "Tell me a story."
    for decoding in (Decoding(max_new_tokens=24, do_sample=True, temperature=1.0, seed=3),
                     Decoding(max_new_tokens=8, do_sample=False)):
        s = t.steer([0.2, 0.8])
        texts = list(t.generate_stream(prompt, [0.2, 0.8], decoding))
        rows = list(generate_rows(model, tok, [conditioned_prompt(prompt, s.system_prompt)], t.objective_set,
                                  max_new_tokens=decoding.max_new_tokens, temperature=decoding.temperature,
                                  do_sample=decoding.do_sample, seed=decoding.seed, generation_backend="hf-generate"))
        assert texts[-1] == rows[0]["completion"]
        assert t.score(prompt, texts[-1]) == pytest.approx(rows[0]["scores"])
        assert rows[0]["prompt"] == prompt_text(prompt)
        if decoding.do_sample:  # one value per new token that changed the text, then the final answer
            assert len(texts) >= 3 and texts[-2].strip() == texts[-1]
            assert all(b.startswith(a.rstrip("\ufffd")) for a, b in zip(texts, texts[1:-1]))
    # the same preference and seed give the same answer
    d = Decoding(max_new_tokens=24, do_sample=True, temperature=1.0, seed=3)
    assert list(t.generate_stream(prompt, [1, 4], d))[-1] == list(t.generate_stream(prompt, [0.2, 0.8], d))[-1]


def test_a_prompt_longer_than_the_context_or_empty_is_refused(dpa_front):
    t = resolve_steerable(dpa_front / "model")
    model, tok, system, _ = t.model_for([0.5, 0.5])
    with pytest.raises(ConfigError, match=r"the prompt is too long: \d+ tokens .* exceed the model's context of 512"):
        list(stream_answer(model, tok, "word " * 600, system, Decoding(max_new_tokens=8)))
    with pytest.raises(ConfigError, match="write a prompt first"):
        list(stream_answer(model, tok, "  ", system, Decoding(max_new_tokens=8)))


def test_closing_the_stream_early_stops_the_generation(dpa_front):
    t = resolve_steerable(dpa_front / "model")
    model, tok, system, _ = t.model_for([0.5, 0.5])
    gen = stream_answer(model, tok, "Tell me a story.", system, Decoding(max_new_tokens=400, temperature=1.0))
    next(gen)
    gen.close()  # joins the worker, which stops at its next token
    import threading

    assert not any(th.name == "paretoalign-serve-generate" for th in threading.enumerate())


# ---------------------------------------------------------------------------------------------
# fronts made from K endpoints: Rewarded Soups merges them at w, MOD decodes them together at w

FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
            learning_rate=5e-2, max_steps=1, save_steps=1, seed=0)


@pytest.fixture(scope="module")
def endpoint_fronts(tmp_path_factory):
    """`front --method rs,mod` on the tiny model (grid:2, one step per endpoint): FRONT/rs and FRONT/mod."""
    import os

    from paretoalign.fronts.sweep import build_front_config, run_front

    out = tmp_path_factory.mktemp("rsmod") / "front"
    old = os.environ.get("PARETOALIGN_CACHE")
    os.environ["PARETOALIGN_CACHE"] = str(out.parent / "cache")
    try:
        front, train = build_front_config(None, dict(method="rs,mod", preferences="grid:2", output_dir=str(out),
                                                     report=False, eval_num_prompts=2, eval_batch_size=2, **FAST))
        run_front(front, train, progress=lambda s: None)
    finally:
        if old is None:
            os.environ.pop("PARETOALIGN_CACHE", None)
        else:
            os.environ["PARETOALIGN_CACHE"] = old
    return out


def _endpoints_of(front_dir):
    """[(name, folder)] of a front's endpoints, read from front.json as a person would."""
    data = json.loads((front_dir / "front.json").read_text())
    return [(e["name"], str(front_dir / e["run_dir"])) for e in data["training"]["endpoints"]]


def _prefixes_ok(texts):
    """Every streamed value but the last is a prefix of the final answer (an unfinished character aside)."""
    final = texts[-1]
    return all(final.startswith(t.strip().rstrip("\ufffd")) for t in texts[:-1])


def test_weights_round_to_a_step_and_still_sum_to_one():
    assert steering.round_to_step([0.3, 0.7]) == (0.3, 0.7)
    assert steering.round_to_step([1 / 3, 2 / 3]) == (0.333, 0.667)
    assert steering.round_to_step([1 / 3] * 3) == (0.334, 0.333, 0.333)  # the unit left over: first listed
    assert steering.round_to_step([0.0004, 0.9996]) == (0.0, 1.0)
    rng = np.random.default_rng(1)
    for w in rng.dirichlet(np.ones(4), size=200):
        r = steering.round_to_step(w)
        assert sum(round(x * 1000) for x in r) == 1000 and max(abs(a - b) for a, b in zip(r, w)) < 1e-3


def test_rs_and_mod_fronts_are_served_by_their_endpoints(endpoint_fronts):
    rs = resolve_steerable(endpoint_fronts / "rs")
    assert isinstance(rs, steering.SoupTarget) and rs.kind == "rs" and rs.names == ["chars", "words"]
    assert rs.endpoint_names == ["w1.00-0.00", "w0.00-1.00"] and rs.mode == "delta" and rs.rank == "exact"
    s = rs.steer([1, 2])
    assert s.weights == pytest.approx((1 / 3, 2 / 3)) and s.model_key == "rs@0.333,0.667"
    assert s.note.startswith("Rewarded Soups: the 2 endpoints merged at w=(0.333, 0.667)")
    assert "rounded to steps of 0.001" in s.note and "Rewarded Soups front" in rs.describe()
    assert s.point == 0 and s.point_label == "nearest evaluated merge"  # w=(0, 1) is the nearer evaluated merge
    assert rs.steer([0.3004, 0.6996]).model_key == rs.steer([0.3, 0.7]).model_key == "rs@0.300,0.700"
    mod = resolve_steerable(endpoint_fronts / "mod")
    assert isinstance(mod, steering.ModTarget) and mod.kind == "mod" and mod.divergence == "reverse_kl"
    s = mod.steer([3, 1])
    assert s.model_key is None and s.weights == pytest.approx((0.75, 0.25)) and s.point == 1
    assert s.note.startswith("MOD: the 2 endpoints decoded together at w=(0.750, 0.250)") and "reverse KL" in s.note
    # the comparison folder itself is not one front: it names both
    with pytest.raises(ConfigError, match=r"holds a comparison of fronts \(mod, rs\), not one front"):
        resolve_steerable(endpoint_fronts)
    # the plot rings the nearest evaluated merge, saying what it is
    from paretoalign.serve import preference_figure

    fig = preference_figure(rs, rs.steer([0.3, 0.7]))
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(t.startswith("nearest evaluated merge") for t in legend) and "(0.30, 0.70)" in fig._suptitle.get_text()


def test_the_rs_target_answers_with_the_soup_merged_at_w(endpoint_fronts, monkeypatch):
    from paretoalign import merging
    from paretoalign.inference import generate_rows
    from paretoalign.models import load_tokenizer
    from paretoalign.objectives import build_objective_set

    t = resolve_steerable(endpoint_fronts / "rs")
    t.prepare([0.3, 0.7])
    eps = _endpoints_of(endpoint_fronts / "rs")
    soup = merging.soup(eps, [0.3, 0.7], rank="exact")
    tok = load_tokenizer(str(Path(eps[0][1]) / "final" / "policy"))
    objectives = build_objective_set(OBJ, tok, "skip")
    prompt = "Tell me a story."
    # the model that answers is that soup: the same logits (and not those of another preference's merge)
    import torch

    served, _, _, _ = t.model_for([0.3, 0.7])
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = served(ids).logits
        assert torch.equal(logits, soup(ids).logits)
        assert not torch.allclose(logits, merging.soup(eps, [0.9, 0.1], rank="exact")(ids).logits)
    for decoding in (Decoding(max_new_tokens=12, do_sample=False), Decoding(max_new_tokens=16, temperature=1.0, seed=3)):
        texts = list(t.generate_stream(prompt, [0.3, 0.7], decoding))
        (row,) = generate_rows(soup, tok, [prompt], objectives, max_new_tokens=decoding.max_new_tokens,
                               temperature=decoding.temperature, do_sample=decoding.do_sample, seed=decoding.seed,
                               generation_backend="hf-generate")
        assert texts[-1] == row["completion"] and _prefixes_ok(texts)
        assert t.score(prompt, texts[-1]) == pytest.approx(row["scores"])
    # merges are cached by the rounded weights: a nearby slider position merges nothing, another one merges once
    merges = []
    real = merging.merge
    monkeypatch.setattr(merging, "merge", lambda *a, **k: merges.append(a[2]) or real(*a, **k))
    d = Decoding(max_new_tokens=4, do_sample=False)
    list(t.generate_stream(prompt, [0.3004, 0.6996], d))
    assert merges == []
    list(t.generate_stream(prompt, [0.6, 0.4], d))
    assert merges == [[0.6, 0.4]]


def test_the_mod_target_streams_what_the_decoder_generates_at_w(endpoint_fronts):
    import torch

    from paretoalign.mod import MultiObjectiveDecoder

    t = resolve_steerable(endpoint_fronts / "mod")
    t.prepare([0.3, 0.7])
    eps = _endpoints_of(endpoint_fronts / "mod")
    dec = MultiObjectiveDecoder.from_runs([p for _, p in eps], [0.3, 0.7], "reverse_kl", names=[n for n, _ in eps])
    prompt = "Tell me a story."
    for decoding in (Decoding(max_new_tokens=12, do_sample=False), Decoding(max_new_tokens=24, temperature=1.0, seed=3)):
        texts = list(t.generate_stream(prompt, [0.3, 0.7], decoding))
        streamed = []
        runs = []
        for cb in (None, streamed.append):  # the callback changes nothing that is decoded
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(decoding.seed)
                runs.append(dec.generate([prompt], max_new_tokens=decoding.max_new_tokens, do_sample=decoding.do_sample,
                                         temperature=decoding.temperature, top_p=decoding.top_p, on_token=cb))
        plain, ro = runs
        assert torch.equal(plain.input_ids, ro.input_ids)
        assert torch.cat(streamed).tolist() == ro.input_ids[0, ro.prompt_length:].tolist()  # one call per new token
        assert texts[-1] == ro.completions[0] and len(ro.completions[0]) > 3
        assert len(texts) >= 3 and _prefixes_ok(texts)  # more than one partial answer, each a prefix of the final one
        assert t.score(prompt, texts[-1]) == pytest.approx(
            dict(zip(t.names, t.objective_set.raw_scores([prompt], [ro.completions[0]])[0].tolist())))
    # other weights: the decoder is reused, set to them (a vertex is that endpoint decoded alone)
    d = Decoding(max_new_tokens=8, do_sample=False)
    dec.set_weights([1.0, 0.0])
    assert list(t.generate_stream(prompt, [1, 0], d))[-1] == dec.generate([prompt], max_new_tokens=8,
                                                                          do_sample=False).completions[0]
    # closing the stream early stops the decoding (the worker ends at its next token)
    gen = t.generate_stream(prompt, [0.5, 0.5], Decoding(max_new_tokens=400, temperature=1.0))
    next(gen)
    gen.close()
    import threading

    assert not any(th.name == "paretoalign-serve-generate" for th in threading.enumerate())
    assert list(t.generate_stream(prompt, [1, 0], d))[-1]  # the lock was released
    with pytest.raises(ConfigError, match=r"the prompt is too long: \d+ tokens .* exceed the model's context of 512"):
        list(t.generate_stream("word " * 600, [0.5, 0.5], d))
    with pytest.raises(ConfigError, match="write a prompt first"):
        list(t.generate_stream("  ", [0.5, 0.5], d))


def test_endpoints_that_cannot_be_combined_are_one_error_line(endpoint_fronts, tmp_path, capsys):
    import importlib.util
    import shutil

    from paretoalign.models import build_tiny_model, build_tiny_tokenizer

    # Rewarded Soups: an endpoint fine-tuned from another base (its weights differ)
    rs = tmp_path / "rs"
    shutil.copytree(endpoint_fronts / "rs", rs)
    build_tiny_model(build_tiny_tokenizer(), seed=1).save_pretrained(rs / "endpoints" / "w0.00-1.00" / "final" / "base")
    # MOD: an endpoint trained from another base (its reference); in an rs,mod sweep mod's endpoints are
    # rs's runs (../rs/endpoints), so the whole sweep is copied
    shutil.copytree(endpoint_fronts, tmp_path / "sweep-mod")
    mod = tmp_path / "sweep-mod" / "mod"
    run = tmp_path / "sweep-mod" / "rs" / "endpoints" / "w0.00-1.00"
    run_dir.save_config(run, {**run_dir.load_config(run), "seed": 1})
    # an endpoint folder that is gone
    shutil.copytree(endpoint_fronts, tmp_path / "sweep-gone")
    gone = tmp_path / "sweep-gone" / "mod"
    shutil.rmtree(tmp_path / "sweep-gone" / "rs" / "endpoints" / "w1.00-0.00")
    cases = [(rs, ConfigError, "have different base models"), (mod, ConfigError, "must share one base model"),
             (gone, RunDirError, r"endpoint 'w1.00-0.00' \(chars\) names the folder .* which does not exist")]
    for folder, err, match in cases:
        with pytest.raises(err, match=match) as info:
            resolve_steerable(folder)
        assert "\n" not in str(info.value) and str(info.value).startswith(str(folder / "front.json"))
    if importlib.util.find_spec("gradio") is not None:  # the command: one `error:` line, no server
        from paretoalign.serve import main

        capsys.readouterr()  # what building the test's models printed
        for folder, _, match in cases:
            rc = main([str(folder), "--port", "0"])
            lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
            assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: ")
            assert re.search(match, lines[0]), lines
    # a front.json whose endpoints record is damaged
    data = json.loads((gone / "front.json").read_text())
    data["training"]["endpoints"] = data["training"]["endpoints"][:1]
    (gone / "front.json").write_text(json.dumps(data))
    with pytest.raises(FrontError, match=r"1 endpoint\(s\) for 2 objectives"):
        resolve_steerable(gone)
