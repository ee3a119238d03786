"""`paretoalign evaluate --mod`: MOD decoding of K runs as one evaluation target, its cache key, bad input."""

import argparse
import json

import pytest

from paretoalign.config_utils import add_dataclass_arguments, build_config
from paretoalign.decoding import MultiObjectiveDecoder
from paretoalign.errors import ConfigError, RunDirError
from paretoalign.evaluation import evaluate as ev_mod
from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
EVAL = dict(num_prompts=6, max_new_tokens=8, batch_size=4, baseline="none")


@pytest.fixture(autouse=True)
def eval_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a MOD evaluation writes ./eval-mod-*.json by default
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny LoRA endpoints on one base (seed 3): MORLHF at (1, 0) and (0, 1); and one on another base."""
    root = tmp_path_factory.mktemp("mod_runs")
    out = {}
    for name, w, seed in [("a", [1.0, 0.0], 3), ("b", [0.0, 1.0], 3), ("other", [0.5, 0.5], 4)]:
        OnlineTrainer(OnlineConfig(
            model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
            learning_rate=5e-2, max_steps=2, save_steps=1, output_dir=str(root / name), method="morlhf", weights=w,
            seed=seed)).train()
        out[name] = root / name
    return out


def _mod(runs, weights, **kw):
    return EvalConfig(mod=[f"a={runs['a']}", f"b={runs['b']}"], mod_weights=weights, **{**EVAL, **kw})


def test_mod_evaluation_writes_eval_json_is_cached_and_changes_with_the_weights(runs, tmp_path, monkeypatch):
    out = tmp_path / "mod.json"
    first = evaluate_target(_mod(runs, "0.6,0.4", output=str(out)), quiet=True)
    saved = json.loads(out.read_text())
    assert saved["summary"] == first["summary"] and first["kind"] == "mod"
    assert first["names"] == ["chars", "words"]  # the first endpoint's objectives
    assert first["model"]["method"] == "mod" and first["model"]["weights"] == [0.6, 0.4]
    rec = first["mod"]
    assert [e["name"] for e in rec["endpoints"]] == ["a", "b"] and rec["divergence"] == "reverse_kl"
    assert all(e["adapter"] and e["base_model"] == "tiny" and e["beta"] == 0.2 for e in rec["endpoints"])
    assert len(first["completions"]) == 6 and first["cached"]["completions"] is False
    # each endpoint's fingerprint is the one its own evaluation is keyed by
    alone = evaluate_target(EvalConfig(target=str(runs["a"]), **EVAL), quiet=True)
    assert rec["endpoints"][0]["fingerprint"] == alone["model"]["fingerprint"]

    def boom(*a, **k):
        raise AssertionError("a model was loaded although the evaluation is cached")

    load_target = ev_mod.load_target
    monkeypatch.setattr(ev_mod, "load_target", boom)
    again = evaluate_target(_mod(runs, [0.6, 0.4], output=str(out)), quiet=True)
    assert again["cached"] == {"completions": True, "scores": ["chars", "words"]}
    assert again["completions"] == first["completions"] and again["cache_key"] == first["cache_key"]
    # other weights, another rule: other evaluations (the cache key holds both)
    for cfg in (_mod(runs, "0.1,0.9"), _mod(runs, "0.6,0.4", divergence="forward_kl")):
        with pytest.raises(AssertionError, match="was loaded"):
            evaluate_target(cfg, quiet=True)
    monkeypatch.setattr(ev_mod, "load_target", load_target)
    other = evaluate_target(_mod(runs, "0.1,0.9"), quiet=True)
    assert other["cache_key"] != first["cache_key"] and other["completions"] != first["completions"]
    assert other["model"]["fingerprint"] != first["model"]["fingerprint"]


def test_a_one_hot_weight_decodes_exactly_as_that_endpoint_alone(runs):
    for weights, run in (([1.0, 0.0], runs["a"]), ([0.0, 1.0], runs["b"])):
        mod = evaluate_target(_mod(runs, weights, do_sample=False), quiet=True)
        alone = evaluate_target(EvalConfig(target=str(run), do_sample=False, **EVAL), quiet=True)
        assert mod["completions"] == alone["completions"] and mod["prompts_sha256"] == alone["prompts_sha256"]
    assert evaluate_target(_mod(runs, [1.0, 0.0], do_sample=False), quiet=True)["completions"] != \
        evaluate_target(_mod(runs, [0.0, 1.0], do_sample=False), quiet=True)["completions"]


def test_mod_wins_against_the_first_endpoints_base_and_writes_its_default_file(runs, tmp_path):
    res = evaluate_target(_mod(runs, [0.5, 0.5], baseline="auto", num_prompts=4), quiet=True)
    assert res["baseline"]["target"] == "tiny" and set(res["win_rate"]) == {"chars", "words"}
    assert (tmp_path / "eval-mod-a-b-w0.5-0.5-reverse_kl.json").is_file()


def test_from_runs_stacks_adapters_of_one_base_and_takes_final_and_checkpoint_folders(runs):
    ckpt = sorted((runs["b"] / "checkpoints").iterdir())[-1]
    dec = MultiObjectiveDecoder.from_runs([runs["a"] / "final" / "policy", ckpt], [0.5, 0.5], "alpha:0.5")
    assert dec.adapters == ["mod_0", "mod_1"] and dec.K == 2 and dec.rule == "alpha" and dec.alpha == 0.5
    assert dec.names == ["a", ckpt.name]
    r = dec.generate(["hello there"], max_new_tokens=4)
    assert len(r.completions) == 1


def _one_line(exc_info):
    assert "\n" not in str(exc_info.value)


@pytest.mark.parametrize("kw,match", [
    (dict(mod_weights="0.6,0.6"), "sum to 1.2, not 1"),
    (dict(mod_weights="0.6,-0.4"), "negative"),
    (dict(mod_weights="1"), "expected 2 weights"),
    (dict(mod_weights=None), "needs --mod-weights"),
    (dict(divergence="jsd"), "no closed-form MOD rule"),
    (dict(target="tiny"), "--mod replaces the target"),
    (dict(generation_backend="hf-generate"), "does not apply"),
    (dict(direction=[1, 0]), "does not combine with --mod"),
])
def test_bad_mod_options_are_one_line(runs, kw, match):
    base = dict(mod=[f"a={runs['a']}", f"b={runs['b']}"], mod_weights="0.6,0.4", **EVAL)
    with pytest.raises(ConfigError, match=match) as e:
        EvalConfig(**{**base, **kw})
    _one_line(e)


def test_one_endpoint_weights_without_mod_and_mismatched_bases_are_one_line(runs, tmp_path):
    with pytest.raises(ConfigError, match="at least two endpoints") as e:
        EvalConfig(mod=[f"a={runs['a']}"], mod_weights="1", **EVAL)
    _one_line(e)
    with pytest.raises(ConfigError, match="--mod-weights needs --mod") as e:
        EvalConfig(target=str(runs["a"]), mod_weights="0.5,0.5", **EVAL)
    _one_line(e)
    with pytest.raises(ConfigError, match="names must differ") as e:
        EvalConfig(mod=[f"a={runs['a']}", f"a={runs['b']}"], mod_weights="0.5,0.5", **EVAL)
    _one_line(e)
    cfg = EvalConfig(mod=[f"a={runs['a']}", f"o={runs['other']}"], mod_weights="0.5,0.5", **EVAL)
    with pytest.raises(ConfigError, match=r"share one base model.*'a' was trained from tiny \(seed 3\), 'o' from tiny "
                                          r"\(seed 4\)") as e:
        evaluate_target(cfg, quiet=True)
    _one_line(e)
    with pytest.raises(RunDirError, match="no such run folder") as e:
        evaluate_target(EvalConfig(mod=["a=./nowhere", f"b={runs['b']}"], mod_weights="0.5,0.5", **EVAL), quiet=True)
    _one_line(e)


def test_mismatched_tokenizers_are_refused_in_one_line(tmp_path):
    from paretoalign.models import build_tiny_model, build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    build_tiny_model(tok, seed=1).save_pretrained(tmp_path / "one")
    tok.save_pretrained(tmp_path / "one")
    other = build_tiny_tokenizer()
    other.add_tokens(["<extra>"])
    build_tiny_model(other, seed=1).save_pretrained(tmp_path / "two")
    other.save_pretrained(tmp_path / "two")
    with pytest.raises(ConfigError, match="different tokenizers") as e:
        MultiObjectiveDecoder.from_runs([tmp_path / "one", tmp_path / "two"], [0.5, 0.5])
    _one_line(e)
    # whole models with one tokenizer: K separate packed forwards
    build_tiny_model(tok, seed=2).save_pretrained(tmp_path / "three")
    tok.save_pretrained(tmp_path / "three")
    dec = MultiObjectiveDecoder.from_runs([tmp_path / "one", tmp_path / "three"], [0.5, 0.5], "forward_kl")
    assert dec.adapters is None and dec.K == 2


def test_the_evaluate_flags_build_the_mod_config():
    p = argparse.ArgumentParser()
    add_dataclass_arguments(p, EvalConfig)
    args = p.parse_args(["--mod", "a=runs/x,b=runs/y", "--mod-weights", "0.6,0.4", "--divergence", "alpha:0.5"])
    cfg = build_config(EvalConfig, None, vars(args))
    assert cfg.mod == ["a=runs/x", "b=runs/y"] and cfg.mod_weights == [0.6, 0.4] and cfg.divergence == "alpha:0.5"
