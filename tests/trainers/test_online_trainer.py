"""Trainer tests on the tiny random model: parameters move, metrics are logged, runs resume."""

import json

import pytest
import torch

from paretoalign import run_dir
from paretoalign.errors import ObjectiveError, RunDirError
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

# Two conflicting objectives that vary even on the random tiny model's outputs.
OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2,
            max_new_tokens=8, progress=False, learning_rate=1e-2)


def make(tmp_path, name="run", **kw):
    opts = {**FAST, "output_dir": str(tmp_path / name), **kw}
    return OnlineTrainer(OnlineConfig(**opts))


def trainable(trainer):
    return {n: p.detach().clone() for n, p in trainer.unwrapped.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "method, extra",
    [
        ("pama", {}),
        ("pama", {"advantage": "group"}),
        ("pama", {"pama_granularity": "sequence", "pama_ratio": "old"}),
        ("pama", {"pama_granularity": "token", "noon": False}),
        ("morlhf", {"weights": [0.7, 0.3]}),
        ("morlhf", {"advantage": "group", "group_aggregation": "normalize_then_sum"}),
        ("mgda-ub", {}),
        ("mgda-ub", {"advantage": "group", "ppo_epochs": 2, "num_mini_batches": 2}),
        ("mo-grpo", {}),
        ("mo-grpo", {"group_aggregation": "normalize_then_sum", "weights": [0.7, 0.3]}),
    ],
)
def test_methods_update_parameters_and_log_per_objective_metrics(tmp_path, method, extra):
    tr = make(tmp_path, method=method, max_steps=2, **extra)
    before = trainable(tr)
    summary = tr.train()
    after = trainable(tr)
    lora = [n for n in before if "lora_" in n]
    assert lora, "LoRA parameters should be trainable"
    assert any(not torch.equal(before[n], after[n]) for n in lora), "policy parameters did not change"
    rows = run_dir.read_metrics(tr.out)
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for name in ("chars", "words"):
            assert r[f"reward/{name}"] == r[f"reward/{name}"]  # finite, not NaN
            assert 0.0 <= r[f"weight/{name}"] <= 1.0
        assert r["reward/chars"] >= 0 and r["reward/words"] <= 0  # 'words' is minimised: oriented reward
        assert abs(r["weight/chars"] + r["weight/words"] - 1.0) < 1e-5
        for key in ("kl", "loss", "policy_loss", "value_loss", "completion_length", "time_step"):
            assert key in r
        assert r["samples"] == 4 and r["nan_skipped"] == 0
    if method in ("morlhf", "mo-grpo") and "weights" in extra:
        assert rows[0]["weight/chars"] == pytest.approx(0.7)
    if extra.get("advantage") == "group" or method == "mo-grpo":
        assert rows[0]["value_loss"] == 0.0 and tr.unwrapped.value_head is None
    else:
        assert tr.unwrapped.value_head is not None
    assert summary["steps"] == 2 and set(summary["objectives"]) == {"chars", "words"}
    assert (tr.out / "config.yaml").is_file() and (tr.out / "summary.json").is_file()


def test_pama_batch_weights_follow_theorem_one(tmp_path):
    """With Noon-clipped (non-negative) terms the batch weights sit on the smallest term's objective."""
    tr = make(tmp_path, method="pama", max_steps=1, pama_ratio="old")
    tr.train()
    row = run_dir.read_metrics(tr.out)[0]
    w = sorted([row["weight/chars"], row["weight/words"]])
    assert w in ([0.0, 1.0], [0.5, 0.5]) or (w[0] > 0 and abs(sum(w) - 1) < 1e-6)


def test_final_folder_loads_with_peft_and_from_pretrained(tmp_path, monkeypatch):
    tr = make(tmp_path, max_steps=1)
    tr.train()
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    monkeypatch.chdir(tr.out / "final" / "policy")  # the tiny base is recorded as ../base; PEFT reads it from the cwd
    m = AutoPeftModelForCausalLM.from_pretrained(tr.out / "final" / "policy")
    tok = AutoTokenizer.from_pretrained(tr.out / "final" / "policy")
    ids = tok("hello", return_tensors="pt")
    out = m(**ids).logits
    ref = tr.unwrapped.policy(**ids).logits
    torch.testing.assert_close(out, ref)
    meta = json.loads((tr.out / "final" / "paretoalign.json").read_text())
    assert meta["method"] == "pama" and meta["lora"] is True
    assert [o["name"] for o in meta["objectives"]] == ["chars", "words"]


def test_full_finetuning_changes_base_weights_and_keeps_reference_frozen(tmp_path):
    tr = make(tmp_path, use_lora=False, max_steps=1, method="morlhf")
    ref_before = [p.clone() for p in tr.ref_model.parameters()]
    before = trainable(tr)
    tr.train()
    after = trainable(tr)
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("policy."))
    assert all(torch.equal(a, b) for a, b in zip(ref_before, tr.ref_model.parameters()))
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tr.out / "final" / "policy")


def test_existing_run_folder_is_never_overwritten_silently(tmp_path):
    make(tmp_path, max_steps=1).train()
    with pytest.raises(RunDirError, match="already holds a run.*--resume.*--overwrite"):
        make(tmp_path, max_steps=1)
    assert run_dir.read_metrics(tmp_path / "run")  # nothing was lost
    tr = make(tmp_path, max_steps=1, overwrite=True)
    assert not (tr.out / "metrics.jsonl").exists()


def test_resume_requires_a_run_and_a_matching_config(tmp_path):
    with pytest.raises(RunDirError, match="holds no run to resume"):
        make(tmp_path, name="none", resume=True)
    make(tmp_path, max_steps=1).train()
    with pytest.raises(RunDirError, match="configuration differs.*method: run has 'pama', now 'morlhf'"):
        make(tmp_path, method="morlhf", resume=True, max_steps=2)


class _Boom(Exception):
    pass


def test_killed_run_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path, killed_at):
    full = make(tmp_path, name="full", max_steps=4, save_steps=2)
    full.train()
    want = trainable(full)
    want_rows = run_dir.read_metrics(full.out)

    crashed = make(tmp_path, name="crash", max_steps=4, save_steps=2)
    killed_at(OnlineTrainer, "step", 4, crashed.train, _Boom)
    assert [s for s, _ in run_dir.list_checkpoints(crashed.out)] == [2]
    # an incomplete checkpoint (no trainer_state.json) is ignored
    (crashed.out / "checkpoints" / "step-000004").mkdir()

    resumed = make(tmp_path, name="crash", max_steps=4, save_steps=2, resume=True)
    assert resumed.start_step == 2
    resumed.train()
    got = trainable(resumed)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-6, msg=f"{n} differs after resume")
    rows = run_dir.read_metrics(resumed.out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(rows, want_rows):
        assert a["reward/chars"] == pytest.approx(b["reward/chars"])
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)


def _nan_module(tmp_path, monkeypatch):
    (tmp_path / "nanobj.py").write_text(
        "def score(prompts, completions):\n"
        "    return [float('nan') if i % 2 else 0.5 for i in range(len(completions))]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


def test_nan_scores_fail_with_the_objective_name(tmp_path, monkeypatch):
    _nan_module(tmp_path, monkeypatch)
    tr = make(tmp_path, objectives=["length", "python:nanobj:score"], max_steps=1)
    with pytest.raises(ObjectiveError, match="score"):
        tr.train()


def test_nan_scores_skip_policy_drops_samples_and_counts_them(tmp_path, monkeypatch):
    _nan_module(tmp_path, monkeypatch)
    tr = make(tmp_path, objectives=["length", "python:nanobj:score"], max_steps=1, nan_policy="skip")
    with pytest.warns(RuntimeWarning, match="objective .score.: 2 of 4"):
        tr.train()
    row = run_dir.read_metrics(tr.out)[0]
    assert row["nan_skipped"] == 2
    assert row["reward/score"] == pytest.approx(0.5)


def test_mgda_ub_gram_matrix_is_built_from_real_gradients(tmp_path, monkeypatch):
    """The per-objective gradients w.r.t. the last hidden states are non-zero in the real trainer."""
    import paretoalign.losses.online as om

    seen = []
    real = om.min_norm_weights_from_gram

    def spy(gram):
        seen.append(gram.clone())
        return real(gram)

    monkeypatch.setattr(om, "min_norm_weights_from_gram", spy)
    make(tmp_path, method="mgda-ub", max_steps=1).train()
    assert len(seen) == 1 and seen[0].shape == (2, 2)
    assert torch.all(torch.diagonal(seen[0]) > 0), seen[0]


def test_mo_grpo_is_critic_free_and_its_advantages_follow_the_aggregation_rule(tmp_path):
    from paretoalign.combiners import normalize_then_sum, sum_then_normalize
    from paretoalign.errors import ConfigError

    cfg = OnlineConfig(**{**FAST, "method": "mo-grpo", "output_dir": str(tmp_path / "c")})
    assert cfg.advantage == "group" and OnlineConfig(**{**FAST, "output_dir": str(tmp_path / "d")}).advantage == "gae"
    with pytest.raises(ConfigError, match="mo-grpo is critic-free"):
        OnlineConfig(**{**FAST, "method": "mo-grpo", "advantage": "gae"})
    # 2 prompts x 3 completions, objectives on very different scales
    scores = torch.tensor([[1.0, 100.0], [2.0, 300.0], [3.0, 200.0], [0.0, 10.0], [5.0, 10.0], [1.0, 40.0]])
    valid = torch.ones(6, dtype=torch.bool)
    mask = torch.ones(6, 4)
    w = torch.tensor([0.5, 0.5])
    for rule in ("sum_then_normalize", "normalize_then_sum"):
        tr = make(tmp_path, name=rule, method="mo-grpo", num_generations=3, group_aggregation=rule)
        adv, returns = tr._advantages(scores, valid, mask, None, None, None)
        assert returns is None and adv.shape == (6, 4)
        g = scores.view(2, 3, 2)
        if rule == "sum_then_normalize":
            want = sum_then_normalize(g, w).reshape(6)
        else:
            a = normalize_then_sum(g, w).reshape(6)
            want = (a - a.mean()) / (a.std(unbiased=False) + 1e-4)  # GDPO's batch standardisation
            # each objective counts equally whatever its scale: the second (x100) does not drown the first
            assert torch.allclose(normalize_then_sum(g * torch.tensor([1.0, 0.01]), w), normalize_then_sum(g, w), atol=1e-5)
        torch.testing.assert_close(adv[:, 0], want)
        assert torch.equal(adv[:, 0:1].expand(6, 4), adv)  # one advantage per sequence


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_equal_the_combiners_for_each_scale_rewards_with_an_unscored_sample(tmp_path, scale):
    """The trainer's group advantages are the combiner's, for mo-grpo (sum_then_normalize) and PAMA's
    per-objective group baselines; an unscored sample (nan_policy skip) is out of the group statistics."""
    from paretoalign.combiners import group_normalize_objectives, sum_then_normalize
    from paretoalign.errors import ConfigError

    # 2 prompts x 3 completions; the third completion of prompt 0 was not scored (its row zeroed, valid False)
    scores = torch.tensor([[1.0, 100.0], [2.0, 300.0], [0.0, 0.0], [0.0, 10.0], [5.0, 10.0], [1.0, 40.0]])
    valid = torch.tensor([True, True, False, True, True, True])
    mask = torch.ones(6, 4) * valid.unsqueeze(1)
    g, gv, w = scores.view(2, 3, 2), valid.view(2, 3), torch.tensor([0.5, 0.5])
    tr = make(tmp_path, name=scale, method="mo-grpo", num_generations=3, scale_rewards=scale)
    adv, returns = tr._advantages(scores, valid, mask, None, None, None)
    assert returns is None and adv.shape == (6, 4)
    want = sum_then_normalize(g, w, valid=gv, scale_rewards=scale).reshape(6)
    torch.testing.assert_close(adv, want.unsqueeze(1).expand(6, 4))
    assert torch.equal(adv[2], torch.zeros(4))
    # by hand, prompt 0's scored sums (50.5, 151): mean 100.75, population std 50.25
    batch_std = torch.tensor([50.5, 151.0, 5.0, 7.5, 20.5]).std(unbiased=False)
    hand = {"group": torch.tensor([-1.0, 1.0]), "none": torch.tensor([-50.25, 50.25]),
            "batch": torch.tensor([-50.25, 50.25]) / batch_std}[scale]
    torch.testing.assert_close(adv[:2, 0], hand)

    pama = make(tmp_path, name=scale + "-pama", method="pama", advantage="group", num_generations=3, scale_rewards=scale)
    raw, _ = pama._advantages(scores, valid, mask, None, None, None)
    want_k = group_normalize_objectives(g, valid=gv, scale_rewards=scale).reshape(6, 1, 2).expand(6, 4, 2)
    torch.testing.assert_close(raw, want_k)
    if scale != "group":
        with pytest.raises(ConfigError, match="scale-rewards has no effect"):
            OnlineConfig(**{**FAST, "method": "mo-grpo", "group_aggregation": "normalize_then_sum", "scale_rewards": scale})


# ---- no reference forward when nothing reads it (kl_coef = 0, no PAMA ratio against pi_ref) -----


@pytest.mark.parametrize(
    "method, extra",
    [
        ("morlhf", {}),  # GAE: the KL only enters the token rewards, times beta = 0
        ("mo-grpo", {}),  # group advantages: the k3 term only when beta > 0
        ("pama", {"pama_ratio": "old"}),
        ("mgda-ub", {"use_lora": False}),  # full fine-tuning: no frozen copy either
    ],
)
def test_kl_coef_zero_skips_the_reference_forward_and_trains_identically(tmp_path, monkeypatch, method, extra):
    from paretoalign.trainers import online_trainer as ot

    calls = []
    real = OnlineTrainer._ref_logprobs

    def counting(self, rollout):
        calls.append(1)
        return real(self, rollout)

    monkeypatch.setattr(OnlineTrainer, "_ref_logprobs", counting)
    skip = make(tmp_path, "skip", method=method, kl_coef=0.0, max_steps=2, **extra)
    assert not skip.uses_reference
    if not skip.config.use_lora:
        assert skip.ref_model is None
    skip.train()
    assert calls == []
    assert all(r["kl"] is None for r in run_dir.read_metrics(skip.out))

    monkeypatch.setattr(ot, "needs_reference", lambda cfg: True)  # the behaviour before: always computed
    full = make(tmp_path, "full", method=method, kl_coef=0.0, max_steps=2, **extra)
    assert full.uses_reference and (full.config.use_lora or full.ref_model is not None)
    full.train()
    assert len(calls) == 2
    a, b = trainable(skip), trainable(full)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    for ra, rb in zip(run_dir.read_metrics(skip.out), run_dir.read_metrics(full.out)):
        assert ra["loss"] == rb["loss"] and ra["reward/chars"] == rb["reward/chars"]


def test_the_reference_is_still_computed_where_something_reads_it(tmp_path):
    from paretoalign.trainers.online_trainer import needs_reference

    cfg = lambda **kw: OnlineConfig(**{**FAST, "output_dir": str(tmp_path / "x"), **kw})  # noqa: E731
    assert needs_reference(cfg(method="pama", kl_coef=0.0))  # PAMA's ratio pi/pi_ref (the paper's default)
    assert not needs_reference(cfg(method="pama", kl_coef=0.0, pama_ratio="old"))
    assert needs_reference(cfg(method="morlhf")) and needs_reference(cfg(method="mo-grpo", kl_coef=0.1))
    assert not needs_reference(cfg(method="mgda-ub", kl_coef=0.0))
    tr = make(tmp_path, "pama-ref", method="pama", kl_coef=0.0, use_lora=False, max_steps=1)
    assert tr.uses_reference and tr.ref_model is not None
