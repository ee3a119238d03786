"""RiC on the tiny model: the offline stage trains on score-conditioned prompts with the statistics saved
beside the model, online rounds keep the quantile-filtered samples, a killed run resumes exactly, and
evaluate/front steer the one model by the targets a preference maps to."""

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from paretoalign import run_dir
from paretoalign.errors import ConfigError, DataError
from paretoalign.evaluation import scoring
from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target
from paretoalign.ric import RewardStats, fit_stats, map_preference, parse_scores
from paretoalign.trainers.ric_config import RicConfig
from paretoalign.trainers.ric_trainer import RicTrainer

OBJ = ["sentiment", "length"]
POS, NEG, NEU = ["great", "wonderful", "happy", "love"], ["bad", "awful", "sad", "hate"], ["the", "cat", "sat", "on"]


def _response(rng):
    return " ".join(rng.choice(rng.choice([POS, NEG, NEU, NEU])) for _ in range(rng.randint(2, 30)))


@pytest.fixture
def data(tmp_path):
    rng = random.Random(1)
    pairs, scored = tmp_path / "pairs.jsonl", tmp_path / "scored.jsonl"
    rows = [{"prompt": f"Tell me about {i}.", "chosen": _response(rng), "rejected": _response(rng)} for i in range(24)]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with_scores = [{**r, "chosen_scores": {"sentiment": i / 24, "length": (i % 5) / 5},
                    "rejected_scores": {"sentiment": -i / 24, "length": (i % 3) / 3}} for i, r in enumerate(rows)]
    scored.write_text("".join(json.dumps(r) + "\n" for r in with_scores))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Say something about {i}."}) + "\n" for i in range(40)))
    return {"pairs": str(pairs), "scored": str(scored), "prompts": str(prompts)}


def _cfg(tmp_path, data, name="ric", **kw):
    base = dict(model="tiny", objectives=OBJ, pairs=[data["pairs"]], prompts=data["prompts"], offline_steps=4,
                online_rounds=2, online_prompts=6, online_steps=2, max_new_tokens=5, batch_size=4, save_steps=2,
                output_dir=str(tmp_path / name), progress=False)
    return RicConfig(**{**base, **kw})


def test_offline_then_online_with_the_statistics_saved_beside_the_model(tmp_path, data):
    cfg = _cfg(tmp_path, data)
    trainer = RicTrainer(cfg)
    assert trainer.scored_by == "objectives" and len(trainer.off_responses) == 48  # both sides of every pair
    summary = trainer.train()
    rows = run_dir.read_metrics(cfg.output_dir)
    assert [r["stage"] for r in rows] == ["offline"] * 4 + ["online"] * 2 and [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    on = rows[4:]
    assert all(0 < r["kept"] <= r["samples"] == 6 for r in on)
    assert on[1]["online_set"] == on[0]["kept"] + on[1]["kept"]  # the online set grows
    assert on[0]["lr"] == pytest.approx(cfg.learning_rate / 10)
    final = tmp_path / "ric" / "final"
    stats = RewardStats.load(final)
    assert stats.names == ["sentiment", "length"] and stats.__dict__ == summary["reward_stats"]
    for step in (5, 6):  # every checkpoint carries the statistics too
        assert RewardStats.load(tmp_path / "ric" / "checkpoints" / f"step-{step:06d}") == stats
    meta = json.loads((final / "paretoalign.json").read_text())
    assert meta["method"] == "ric" and meta["ric"]["eos_appended"] and meta["ric"]["mapping"] == "linf"
    assert meta["method_info"]["arxiv"] == "2402.10207"


def test_the_data_scores_are_used_when_every_response_has_them(tmp_path, data):
    t = RicTrainer(_cfg(tmp_path, data, pairs=[data["scored"]], online_rounds=0))
    assert t.scored_by == "data"
    raw = np.array([[i / 24, (i % 5) / 5] for i in range(24)] + [[-i / 24, (i % 3) / 3] for i in range(24)])
    expect = fit_stats(raw, ["sentiment", "length"])
    assert t.stats.mean == pytest.approx(expect.mean) and t.stats.std == pytest.approx(expect.std)
    assert RicTrainer(_cfg(tmp_path, data, name="re", pairs=[data["scored"]], online_rounds=0, rescore=True)).scored_by \
        == "objectives"


def test_training_prompts_carry_each_sample_its_own_scores(tmp_path, data, monkeypatch):
    t = RicTrainer(_cfg(tmp_path, data, online_rounds=0, offline_steps=1))
    seen = {}

    def spy(prompts, responses, scores):
        seen.update(prompts=prompts, responses=responses, scores=scores)
        return 0.0

    monkeypatch.setattr(t, "_sft_step", spy)
    monkeypatch.setattr(t.scheduler, "step", lambda: None)  # no optimiser step was taken
    t.offline_step(1)
    for p, r, s in zip(seen["prompts"], seen["responses"], seen["scores"]):
        i = next(j for j, (pp, rr) in enumerate(zip(t.off_prompts, t.off_responses)) if pp == p and rr == r)
        assert list(s) == t.off_scores[i].tolist()


def _adapter(run):
    return load_file(str(run / "final" / "policy" / "adapter_model.safetensors"))


def test_killed_run_resumes_exactly(tmp_path, data, killed_at):
    full = _cfg(tmp_path, data, name="full")
    RicTrainer(full).train()
    killed_at(RicTrainer, "online_round", 2, lambda: RicTrainer(_cfg(tmp_path, data, name="cut")).train())
    resumed = RicTrainer(_cfg(tmp_path, data, name="cut", resume=True))
    assert resumed.start_step == 5 and len(resumed.online) > 0  # the online set came back from the checkpoint
    resumed.train()
    a, b = run_dir.read_metrics(full.output_dir), run_dir.read_metrics(tmp_path / "cut")
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        for k in ra:
            if isinstance(ra[k], str):
                assert ra[k] == rb[k], k
            elif not k.startswith("time_"):
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
    wa, wb = _adapter(tmp_path / "full"), _adapter(tmp_path / "cut")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


@pytest.mark.parametrize("kw, match", [
    (dict(objectives=["sentiment"]), "at least 2 objectives"),
    (dict(quantile=1.5), "quantile"),
    (dict(offline_steps=0, online_rounds=0), "trains nothing"),
    (dict(online_steps=0), "online_steps"),
    (dict(mapping="l3"), "mapping"),
])
def test_bad_config_is_one_clear_error(tmp_path, data, kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(tmp_path, data, **kw)


def test_missing_pairs_fail_before_anything_is_written(tmp_path, data):
    with pytest.raises(ConfigError, match="--pairs is required"):
        RicTrainer(_cfg(tmp_path, data, pairs=[]))
    assert not (tmp_path / "ric").exists()


def test_evaluate_steers_by_the_mapped_targets(tmp_path, data, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(tmp_path, data, online_rounds=0, offline_steps=2)
    RicTrainer(cfg).train()
    run = tmp_path / "ric"
    stats = RewardStats.load(run / "final")
    seen = []
    real = scoring.generate_completions

    def spy(model, tok, prompts, **kw):
        seen.append(prompts)
        return real(model, tok, prompts, **kw)

    monkeypatch.setattr(scoring, "generate_completions", spy)
    r = evaluate_target(EvalConfig(target=str(run), preference=[0.7, 0.3], num_prompts=3, baseline="none",
                                   max_new_tokens=3), write=False, quiet=True)
    expect = map_preference([0.7, 0.3], stats.low, stats.high, "linf").tolist()
    assert r["steering"]["targets"] == expect and r["steering"]["mapping"] == "linf"
    assert all(parse_scores(p, 2) == expect for p in seen[0])  # generated from the tagged prompts
    assert all("<rm1_score>" not in t for t in r["prompt_texts"])  # scored on the user's prompt
    l2 = evaluate_target(EvalConfig(target=str(run), preference=[0.7, 0.3], mapping="l2", num_prompts=3,
                                    baseline="none", max_new_tokens=3), write=False, quiet=True)
    assert l2["steering"]["targets"] == map_preference([0.7, 0.3], stats.low, stats.high, "l2").tolist()
    assert l2["cache_key"] != r["cache_key"]  # other targets, other completions
    # bad input: one line each
    with pytest.raises(ConfigError, match="needs 2 values"):
        evaluate_target(EvalConfig(target=str(run), targets=[1.0], baseline="none"), write=False, quiet=True)
    with pytest.raises(ConfigError, match="'tiny' is a model"):
        evaluate_target(EvalConfig(target="tiny", objectives=OBJ, preference=[0.5, 0.5]), write=False, quiet=True)
    (run / "final" / "reward_stats.json").unlink()
    with pytest.raises(DataError, match="reward_stats.json: missing"):
        evaluate_target(EvalConfig(target=str(run), preference=[0.5, 0.5], baseline="none"), write=False, quiet=True)


def test_cli_train_and_a_front_of_one_model(tmp_path, data, monkeypatch, capsys):
    from paretoalign.cli import main
    from paretoalign.fronts.sweep import build_front_config, run_front

    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "cli"
    assert main(["train", "--method", "ric", "--model", "tiny", "--objectives", ",".join(OBJ), "--pairs", data["pairs"],
                 "--prompts", data["prompts"], "--offline-steps", "2", "--online-rounds", "1", "--online-prompts", "3",
                 "--online-steps", "1", "--max-new-tokens", "3", "--output-dir", str(run), "--progress", "false"]) == 0
    assert main(["evaluate", str(run), "--preference", "1,0", "--num-prompts", "2", "--max-new-tokens", "3",
                 "--output", str(tmp_path / "e.json")]) == 0
    assert "RiC: preference 1, 0 -> (linf) targets sentiment=" in capsys.readouterr().out
    front, train = build_front_config(None, dict(
        method="ric", preferences="grid:3", output_dir=str(tmp_path / "front"), report=False, eval_num_prompts=2,
        eval_max_new_tokens=3, model="tiny", objectives=OBJ, pairs=[data["pairs"]], prompts=data["prompts"],
        offline_steps=2, online_rounds=0, max_new_tokens=3, progress=False))
    result = run_front(front, train, progress=lambda s: None)
    pts = result["points"]
    assert [p["preference"] for p in pts] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert {p["run_dir"] for p in pts} == {"model"}  # one trained model for every point
    stats = RewardStats.load(tmp_path / "front" / "model" / "final")
    assert [p["targets"] for p in pts] == [map_preference(p["preference"], stats.low, stats.high).tolist() for p in pts]


def test_serve_steers_a_ric_run_by_its_targets(tmp_path, data, monkeypatch):
    """`paretoalign serve RUN`: the answer at w is the model's answer to the prompt with w's targets appended,
    equal to what generation gives for that tagged prompt; the note says which targets."""
    from paretoalign.inference import generate_rows, load_policy
    from paretoalign.steering import Decoding, RicTarget, resolve_steerable

    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    RicTrainer(_cfg(tmp_path, data, online_rounds=0, offline_steps=2)).train()
    run = tmp_path / "ric"
    t = resolve_steerable(run)
    assert isinstance(t, RicTarget) and t.kind == "ric" and t.names == ["sentiment", "length"]
    t.prepare([0.5, 0.5])
    stats = RewardStats.load(run / "final")
    expect = map_preference([0.2, 0.8], stats.low, stats.high).tolist()
    assert t.targets([1, 4]) == expect and "<rm1_score>" in t.steer([0.2, 0.8]).note
    model, tok = load_policy(run)
    d = Decoding(max_new_tokens=6, do_sample=False)
    answer = list(t.generate_stream("Tell me a story.", [0.2, 0.8], d))[-1]
    from paretoalign.ric import reward_prompt

    rows = list(generate_rows(model, tok, [reward_prompt("Tell me a story.", expect)], t.objective_set,
                              max_new_tokens=6, do_sample=False, generation_backend="hf-generate"))
    assert answer == rows[0]["completion"]
    (run / "final" / "reward_stats.json").unlink()
    with pytest.raises(DataError, match="reward_stats.json: missing"):
        resolve_steerable(run)


def test_two_processes_under_accelerate(tmp_path, data):
    """DDP on 2 CPU processes: each process samples its own prompts, the online set is gathered (the same on
    both, and in the checkpoint), the metrics are the processes' means."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29547",
           "-m", "paretoalign.cli", "train", "--method", "ric", "--model", "tiny", "--objectives", ",".join(OBJ),
           "--pairs", data["pairs"], "--prompts", data["prompts"], "--offline-steps", "2", "--online-rounds", "1",
           "--online-prompts", "3", "--online-steps", "1", "--max-new-tokens", "3", "--output-dir", str(out),
           "--progress", "false"]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = run_dir.read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3] and rows[2]["samples"] == 3
    state = json.loads((out / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert state["num_processes"] == 2 and len(state["ric_online"]) == rows[2]["online_set"]
    assert RewardStats.load(out / "final").names == ["sentiment", "length"]
