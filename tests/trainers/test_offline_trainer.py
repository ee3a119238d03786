"""The offline trainer: every method trains a tiny model from pairs, learns what the pairs say,
resumes after a kill exactly, shares one base model with implicit-reward adapters, runs under
two processes, and rejects bad input with clear errors."""

import json
import math

import pytest
import torch

from paretoalign import run_dir
from paretoalign.data.preference_pairs import PreferencePair, save_preference_data
from paretoalign.errors import ConfigError, DataError, RunDirError
from paretoalign.trainers.offline_config import OfflineConfig
from paretoalign.trainers.offline_trainer import OfflineTrainer


def _pairs(n_prompts=6):
    """'helpful' prefers the long answer; 'short' prefers the short one; scores for both."""
    out = []
    for i in range(n_prompts):
        long_, short_, mid = f"yes yes yes {i} indeed yes", f"no {i}", f"maybe {i} yes"
        for a, b in ((long_, short_), (mid, short_), (long_, mid)):
            out.append(PreferencePair(f"question {i}?", a, b, {"helpful": 1.0, "short": -1.0},
                                      {"helpful": float(len(a)), "short": -float(len(a))},
                                      {"helpful": float(len(b)), "short": -float(len(b))}))
    return out


@pytest.fixture
def pairs_file(tmp_path):
    return str(save_preference_data(_pairs(), tmp_path / "pairs.jsonl"))


def _cfg(tmp_path, pairs_file, name="run", **kw):
    base = dict(model="tiny", pairs=[pairs_file], max_steps=3, batch_size=3, output_dir=str(tmp_path / name),
                progress=False, save_steps=2, max_response_length=16)
    base.update(kw)
    return OfflineConfig(**base)


@pytest.mark.parametrize("method, extra, keys", [
    ("dpo", {"objectives": ["helpful"]}, ["rewards/accuracy", "rewards/margin"]),
    ("dpo", {"objectives": ["helpful", "short"], "weights": [0.7, 0.3]}, ["rewards/accuracy"]),
    ("modpo", {"objectives": ["helpful", "short"], "weights": [0.6, 0.4]}, ["margin/short", "time_margins"]),
    ("modpo", {"objectives": ["helpful", "short", "length(scale=10,name=len)"], "weights": [0.5, 0.3, 0.2]},
     ["margin/short", "margin/len"]),
    ("amopo", {"objectives": ["helpful", "short"], "sft_coef": 0.1}, ["weight/helpful", "accuracy/short"]),
    ("mopo", {"objectives": ["helpful", "short"], "constraints": ["short>=0.6"]}, ["lambda/short", "win/short"]),
    ("mopo", {"objectives": ["helpful", "short"], "constraints": ["short>=0.6"], "mopo_form": "robust",
              "refresh_every": 2}, ["chi/short", "bound/short"]),
])
def test_every_method_trains_and_logs(tmp_path, pairs_file, method, extra, keys):
    cfg = _cfg(tmp_path, pairs_file, method=method, **extra)
    tr = OfflineTrainer(cfg)
    before = {n: p.detach().clone() for n, p in tr.unwrapped.named_parameters() if p.requires_grad}
    summary = tr.train()
    rows = run_dir.read_metrics(cfg.output_dir)
    assert [r["step"] for r in rows] == [1, 2, 3] and summary["steps"] == 3
    for k in keys:
        assert all(math.isfinite(r[k]) for r in rows), k
    after = dict(tr.unwrapped.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before)
    assert (tmp_path / "run" / "final" / "policy" / "adapter_config.json").is_file()
    meta = json.loads((tmp_path / "run" / "final" / "paretoalign.json").read_text())
    assert meta["method"] == method and meta["lora"]


def test_dpo_learns_the_preference(tmp_path, pairs_file):
    cfg = _cfg(tmp_path, pairs_file, method="dpo", objectives=["helpful"], max_steps=30, learning_rate=3e-3,
               save_steps=30, beta=0.5)
    OfflineTrainer(cfg).train()
    rows = run_dir.read_metrics(cfg.output_dir)
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert min(r["rewards/accuracy"] for r in rows[-5:]) == 1.0


def test_modpo_margins_shift_the_learned_preference(tmp_path, pairs_file):
    """With a heavy weight on the 'short' margin, MODPO must raise the short answers relative to
    DPO on the same 'helpful' pairs: the implicit reward margin (long minus short) shrinks."""
    margins = {}
    for name, method, objs, w in (("dpo", "dpo", ["helpful"], None),
                                  ("modpo", "modpo", ["helpful", "short"], [0.3, 0.7])):
        cfg = _cfg(tmp_path, pairs_file, name=name, method=method, objectives=objs, weights=w, max_steps=20,
                   learning_rate=3e-3, save_steps=20, beta=0.5)
        OfflineTrainer(cfg).train()
        margins[name] = run_dir.read_metrics(cfg.output_dir)[-1]["rewards/margin"]
    assert margins["modpo"] < margins["dpo"]


def test_full_finetuning_keeps_a_frozen_reference(tmp_path, pairs_file):
    cfg = _cfg(tmp_path, pairs_file, method="modpo", objectives=["helpful", "short"], use_lora=False, max_steps=2)
    tr = OfflineTrainer(cfg)
    ref = {n: p.detach().clone() for n, p in tr.ref_model.named_parameters()}
    tr.train()
    assert all(torch.equal(ref[n], p) for n, p in tr.ref_model.named_parameters())
    assert (tmp_path / "run" / "final" / "policy" / "config.json").is_file()


def test_implicit_adapter_margin_shares_the_base_and_matches_the_standalone_objective(tmp_path, pairs_file):
    from paretoalign.objectives import build_objective

    dpo = _cfg(tmp_path, pairs_file, name="dpo-short", method="dpo", objectives=["short"], max_steps=4,
               learning_rate=3e-3)
    OfflineTrainer(dpo).train()
    adapter = tmp_path / "dpo-short" / "final" / "policy"
    spec = f"implicit_dpo:{adapter}(beta=0.5,name=short)"
    cfg = _cfg(tmp_path, pairs_file, name="modpo", method="modpo", objectives=["helpful", spec], max_steps=1)
    tr = OfflineTrainer(cfg)
    host, name, beta = tr.margin_adapters[1]
    assert host is tr.unwrapped and tr.ref_model is None  # one base model in memory
    assert not any(p.requires_grad for n, p in host.named_parameters() if "margin_" in n)
    tr.train()
    assert all(p.requires_grad for n, p in tr.unwrapped.named_parameters() if "lora_" in n and "margin_" not in n)
    i = tr.indices_for_step(1)[0]
    pair = tr.examples[i]
    got = tr._margin_cache[i][0, 0].item()  # chosen response's margin reward
    standalone = build_objective(spec).score([pair.prompt], [pair.chosen]).item()
    assert got == pytest.approx(standalone, abs=1e-4) and abs(got) > 1e-6


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path, pairs_file, killed_at):
    kw = dict(method="mopo", objectives=["helpful", "short"], constraints=["short>=0.6"], max_steps=4, save_steps=2,
              refresh_every=2)
    OfflineTrainer(_cfg(tmp_path, pairs_file, name="full", **kw)).train()
    full = run_dir.read_metrics(tmp_path / "full")

    killed_at(OfflineTrainer, "step", 3, lambda: OfflineTrainer(_cfg(tmp_path, pairs_file, name="cut", **kw)).train())
    with pytest.raises(RunDirError, match="already holds a run"):
        OfflineTrainer(_cfg(tmp_path, pairs_file, name="cut", **kw))
    tr = OfflineTrainer(_cfg(tmp_path, pairs_file, name="cut", resume=True, **kw))
    assert tr.start_step == 2 and tr.ref_snapshot is not None
    tr.train()
    cut = run_dir.read_metrics(tmp_path / "cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]
    for a, b in zip(full, cut):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["lambda/short"] == pytest.approx(b["lambda/short"], rel=1e-5)


def test_small_pools_warn_and_guards_hold(tmp_path, pairs_file):
    cfg = _cfg(tmp_path, pairs_file, method="mopo", objectives=["helpful", "short"], constraints=["short>=0.95"],
               min_pool=4, lam_max=2.0, dual_lr=5.0, max_steps=3, max_weight=1.5)
    with pytest.warns(UserWarning, match="fewer than 4 candidates"):
        tr = OfflineTrainer(cfg)
    with pytest.warns(UserWarning, match="reached lam_max"):
        tr.train()
    rows = run_dir.read_metrics(cfg.output_dir)
    assert max(r["lambda/short"] for r in rows) <= 2.0
    assert min(r["ess_fraction"] for r in rows) > 0.5  # tempered, not one-hot


def test_mopo_refresh_follows_the_achieved_win_rate_with_your_threshold_as_floor(tmp_path, pairs_file):
    tr = OfflineTrainer(_cfg(tmp_path, pairs_file, method="mopo", objectives=["helpful", "short"],
                             constraints=["short>=0.6"], bound_relax=0.9, refresh_every=1))
    tr._mopo_refresh({"win/short": 0.9})
    assert float(tr.bounds[0]) == pytest.approx(0.81)  # ratchets up with the policy
    assert tr.ref_snapshot is not None  # and the reference becomes the current policy
    tr._mopo_refresh({"win/short": 0.5})
    assert float(tr.bounds[0]) == pytest.approx(0.6)  # never below the threshold you set
    tr._mopo_refresh({"win/short": 0.8})
    assert float(tr.bounds[0]) == pytest.approx(0.72)  # the paper's b <- relax * achieved, not a max over time


def test_amopo_dimension_prompt_rewrites_the_last_user_turn(tmp_path, pairs_file):
    from paretoalign.trainers.offline_config import DEFAULT_DIMENSION_TEMPLATE

    tr = OfflineTrainer(_cfg(tmp_path, pairs_file, method="amopo", objectives=["helpful", "short"]))
    plain = tr.dimension_prompt("How do I boil an egg?", "short")
    assert plain == DEFAULT_DIMENSION_TEMPLATE.format(prompt="How do I boil an egg?", dimension="short")
    assert "focus on the short dimension" in plain and plain.endswith("How do I boil an egg?")
    chat = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi {there}"},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Boil an egg?"}]
    out = tr.dimension_prompt(chat, "helpful")
    assert out[:3] == chat[:3] and chat[3]["content"] == "Boil an egg?"  # the input is not mutated
    assert "helpful dimension" in out[3]["content"] and out[3]["content"].endswith("Boil an egg?")
    custom = OfflineTrainer(_cfg(tmp_path, pairs_file, name="c", method="amopo", objectives=["helpful", "short"],
                                 dimension_template="[{dimension}] {prompt}"))
    assert custom.dimension_prompt("Q", "short") == "[short] Q"
    with pytest.raises(ConfigError, match="dimension_template must contain"):
        _cfg(tmp_path, pairs_file, name="d", method="amopo", dimension_template="{prompt} only")


def test_amopo_integrate_all_prompt_is_built_and_trained_when_on(tmp_path, pairs_file, monkeypatch):
    """--amopo-integrate-all adds the reference code's "integrate all dimensions" row: its prompt is the
    template on the last user turn, it is encoded with the pair's own chosen over rejected, weighted and in
    the loss; off, no such prompt is built; --amopo-reduction sum is D times the (default) mean."""
    import paretoalign.trainers.offline_methods.amopo as ot  # the AMoPO strategy calls amopo_loss
    from paretoalign.trainers.offline_config import DEFAULT_INTEGRATE_TEMPLATE

    dims = ["helpful", "short"]
    on = OfflineTrainer(_cfg(tmp_path, pairs_file, name="on", method="amopo", objectives=dims, amopo_integrate_all=True))
    text = on.integrate_prompt("How do I boil an egg?")
    assert text == DEFAULT_INTEGRATE_TEMPLATE.format(dimensions="helpful, short", prompt="How do I boil an egg?")
    assert text.startswith("You are an expert in question answering, and you need to respond to me by integrating "
                           "the dimensions of helpful, short.") and text.endswith("\n\nHow do I boil an egg?")
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Egg?"}]
    out = on.integrate_prompt(chat)
    assert out[:2] == chat[:2] and chat[2]["content"] == "Egg?"  # the input is not mutated
    assert out[2]["content"] == DEFAULT_INTEGRATE_TEMPLATE.format(dimensions="helpful, short", prompt="Egg?")

    def spy(trainer):
        seen = {}
        real_encode, real_loss = trainer._encode, ot.amopo_loss

        def encode(prompts, responses):
            seen.setdefault("prompts", prompts)
            seen.setdefault("responses", responses)
            return real_encode(prompts, responses)

        def loss(c, r, w, valid, *a, **k):
            seen.update(c=c, w=w, valid=valid)
            return real_loss(c, r, w, valid, *a, **k)

        monkeypatch.setattr(trainer, "_encode", encode)
        monkeypatch.setattr(ot, "amopo_loss", loss)
        return seen

    seen = spy(on)
    pairs = [on.examples[i] for i in on.indices_for_step(1)]
    B, R = len(pairs), len(dims) + 1
    row = on.step(1)
    prompts, responses = seen["prompts"], seen["responses"]
    assert len(prompts) == 2 * B * R
    for b, p in enumerate(pairs):
        assert prompts[b * R + R - 1] == on.integrate_prompt(p.prompt)
        assert responses[b * R + R - 1] == p.chosen and responses[B * R + b * R + R - 1] == p.rejected
    assert seen["w"].shape == (B, R) and bool(seen["valid"][:, -1].all()) and bool((seen["w"][:, -1] > 0).all())
    assert seen["c"].shape == (B, R) and seen["c"].requires_grad  # the row is in the graph: it is trained
    assert math.isfinite(row["weight/integrate_all"]) and math.isfinite(row["accuracy/integrate_all"])

    off = OfflineTrainer(_cfg(tmp_path, pairs_file, name="off", method="amopo", objectives=dims))
    seen_off = spy(off)
    assert "weight/integrate_all" not in off.step(1)
    assert len(seen_off["prompts"]) == 2 * B * len(dims)
    assert not any("integrating the dimensions" in str(q) for q in seen_off["prompts"])

    # same seed, same first batch and weights: the 'sum' loss is D (= 3 rows) times the 'mean' loss
    summed = OfflineTrainer(_cfg(tmp_path, pairs_file, name="sum", method="amopo", objectives=dims,
                                 amopo_integrate_all=True, amopo_reduction="sum"))
    assert summed.step(1)["loss"] == pytest.approx(R * row["loss"], rel=1e-4)
    with pytest.raises(ConfigError, match="integrate_template"):
        _cfg(tmp_path, pairs_file, name="e", method="amopo", integrate_template="{dimensions} only")


@pytest.mark.parametrize("kw, err, match", [
    ({"method": "modpo", "objectives": ["helpful", "short"], "weights": [0.0, 1.0]}, ConfigError, "w_k"),
    ({"method": "modpo", "objectives": ["helpful", "short"], "weights": [0.5, 0.3, 0.2]}, ConfigError,
     "expected 2 weights"),
    ({"method": "dpo", "objectives": ["helpful", "short"], "weights": [float("nan"), 1.0]}, ConfigError, "NaN"),
    ({"method": "dpo", "objectives": ["honest"]}, ConfigError, r"not labelled in .*helpful, short"),
    ({"method": "mopo", "objectives": ["helpful", "short"], "constraints": ["harmless>=0.5"]}, ConfigError,
     "constraint on unknown objective 'harmless'"),
    ({"method": "mopo", "objectives": ["helpful", "short"], "constraints": ["short>=1.5"]}, ConfigError,
     r"outside \[0, 1\]"),
    ({"method": "mopo", "objectives": ["helpful", "short"], "constraints": ["short=>0.5"]}, ConfigError,
     "objective>=threshold"),
    ({"method": "modpo", "objectives": ["helpful", "verbosity"]}, DataError, "margin objective 'verbosity' has no score"),
    ({"method": "modpo", "pairs": []}, ConfigError, "--pairs is required"),
])
def test_bad_input_is_a_clear_error(tmp_path, pairs_file, kw, err, match):
    if kw.get("objectives") == ["helpful", "verbosity"]:
        data = _pairs()
        for p in data:
            p.labels["verbosity"] = 1.0  # labelled but not scored
        pairs_file = str(save_preference_data(data, tmp_path / "v.jsonl"))
    with pytest.raises(err, match=match):
        OfflineTrainer(_cfg(tmp_path, pairs_file, **kw))
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_two_processes_under_accelerate(tmp_path, pairs_file):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541",
           "-m", "paretoalign.cli", "train", "--method", "modpo", "--pairs", pairs_file, "--objectives", "helpful,short",
           "--weights", "0.5,0.5", "--model", "tiny", "--max-steps", "2", "--batch-size", "2", "--output-dir", str(out),
           "--progress", "false"]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = run_dir.read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())["num_processes"] == 2


def test_modpo_front_sweep_relabels_the_zero_weight_vertex(tmp_path, monkeypatch):
    from paretoalign.fronts.sweep import build_front_config, run_front

    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    data = []
    for p in _pairs():
        lab = {"length": p.labels["helpful"], "keywords": p.labels["short"]}
        data.append(PreferencePair(p.prompt, p.chosen, p.rejected, lab,
                                   {"length": p.chosen_scores["helpful"], "keywords": p.chosen_scores["short"]},
                                   {"length": p.rejected_scores["helpful"], "keywords": p.rejected_scores["short"]}))
    f = str(save_preference_data(data, tmp_path / "lk.jsonl"))
    front, train = build_front_config(None, dict(
        method="modpo", preferences="grid:2", output_dir=str(tmp_path / "front"), report=False, eval_num_prompts=3,
        eval_max_new_tokens=6, model="tiny", pairs=[f], objectives=["length(scale=20)", "keywords(words=yes)"],
        max_steps=1, batch_size=2, progress=False))
    result = run_front(front, train, progress=lambda s: None)
    assert [p["preference"] for p in result["points"]] == [[0.0, 1.0], [1.0, 0.0]]
    swapped = run_dir.load_config(tmp_path / "front" / "points" / "w0.00-1.00")
    assert swapped["objectives"] == ["keywords(words=yes)", "length(scale=20)"] and swapped["weights"] == [1.0, 0.0]
    with pytest.raises(ConfigError, match="mixes method families"):
        build_front_config(None, dict(method="pama,modpo", pairs=[f]))
