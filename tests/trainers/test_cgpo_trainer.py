"""CGPO through the online trainer (`train --method cgpo`): the logged pass rates are the judges' verdicts,
each optimiser's update is the one losses.cgpo gives on the same batch (CRPG's zero reward for failing and
over-budget samples, CODPO's pairs, CRRAFT's fallback), several tasks log apart and mix by their shares,
a killed run resumes to the uninterrupted one, bad inputs are one line.  Tiny random models, no hub."""

from __future__ import annotations

import contextlib
import textwrap

import pytest
import torch

from paretoalign import cli, run_dir
from paretoalign.errors import ConfigError, DataError
from paretoalign.judges import build_judge_set
from paretoalign.losses.cgpo import (
    calibrated_reward,
    codpo_loss,
    codpo_select,
    crpg_advantages,
    crpg_loss,
    crraft_loss,
    crraft_select,
    kl_gate,
)
from paretoalign.models import completion_logits
from paretoalign.rollout import token_logprobs
from paretoalign.trainers.cgpo_config import CGPOConfig
from paretoalign.trainers.cgpo_trainer import CGPOTrainer, split_reference_answer
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

CHARS = "length(name=chars,scale=10,low=0,high=100)"
WORDS = "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"
FAST = dict(model="tiny", objectives=[CHARS, WORDS], batch_size=2, num_generations=4, max_new_tokens=8,
            progress=False, learning_rate=1e-2)
PROMPTS = ["Tell me about cats", "Describe the sea", "Write a haiku", "Name a colour", "Say something kind"]
ANSWERED = [[{"role": "user", "content": p}, {"role": "assistant", "content": a}]
            for p, a in (("Say hi", "hi there"), ("Count to three", "one two three"), ("Name a fruit", "an apple"))]

JUDGES = '''
def parity(prompts, completions):
    return [len(c) % 2 == 0 for c in completions]

def parity3(prompts, completions):
    """Undecided (-1) on a third of the lengths: a flaky judge."""
    return [None if len(c) % 3 == 0 else len(c) % 2 == 0 for c in completions]

def is_gold(prompts, completions, gold=None):
    gold = gold or [None] * len(completions)
    return [g is not None and c == g for c, g in zip(completions, gold)]

def gold_or_even(prompts, completions, gold=None):
    gold = gold or [None] * len(completions)
    return [c == g or len(c) % 2 == 0 for c, g in zip(completions, gold)]
'''


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def jmod(tmp_path_factory):
    f = tmp_path_factory.mktemp("judges") / "cgpo_test_judges.py"
    f.write_text(JUDGES)
    return lambda name: f"python:{f}:{name}(name={name})"


def make(tmp_path, name="run", prompts=None, **kw):
    return CGPOTrainer(CGPOConfig(**{**FAST, "output_dir": str(tmp_path / name), **kw}), prompts=prompts)


def trainable(tr):
    return {n: p.detach().clone() for n, p in tr.unwrapped.named_parameters() if p.requires_grad}


def params(tr):
    return [p for p in tr.unwrapped.parameters() if p.requires_grad]


def seq_logps(tr, r, adapter=True):
    """Σ log π(y|x) over each row's completion tokens, computed here from the policy (or the reference)."""
    policy = tr.unwrapped.policy
    with contextlib.nullcontext() if adapter else policy.disable_adapter():
        logits = completion_logits(policy, r.input_ids, r.attention_mask, r.prompt_length)
    return (token_logprobs(logits, r.completion_ids, tr.config.temperature) * r.completion_mask).sum(1)


def reward_of(tr, prompts, texts, t=0):
    scores, _ = tr.tasks[t].objectives.rewards(prompts, texts)
    return scores[:, 0]


def expected_calibrated(tr, batch):
    """R_calib from scratch: the first objective's score of each sample and of the baseline answer."""
    r = batch.rollout
    B, k = batch.rewards.shape
    rew = reward_of(tr, r.prompt_texts, r.completions).view(B, k)
    base = reward_of(tr, r.prompt_texts[::k], batch.baseline_texts)
    return calibrated_reward(rew, base)


def assert_grads_close(a, b, ps):
    ga = torch.autograd.grad(a, ps, allow_unused=True)
    gb = torch.autograd.grad(b, ps, allow_unused=True)
    for x, y in zip(ga, gb):
        x = torch.zeros_like(y) if x is None else x
        y = torch.zeros_like(x) if y is None else y
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-5)


# --- config ---------------------------------------------------------------------------------------


def test_config_is_an_online_config_of_the_constrained_family(tmp_path):
    cfg = CGPOConfig(output_dir=str(tmp_path / "c"))
    assert cfg.method == "cgpo" and cfg.cgpo_optimizer == "crraft" and cfg.num_generations == 4
    assert cfg.advantage is None and not cfg.uses_critic and cfg.kl_threshold == 10.0
    [task] = cfg.task_specs()
    assert task.name == "main" and task.kl_max == 10.0 and task.judges == []
    assert CGPOConfig(objectives="sentiment", judges="max_words(n=3),regex:'a,b'").judges == ["max_words(n=3)",
                                                                                            "regex:'a,b'"]
    assert CGPOConfig(kl_threshold=0).task_specs()[0].kl_max is None
    with pytest.raises(ConfigError, match="'pama' is a online method"):
        CGPOConfig(method="pama")
    with pytest.raises(ConfigError, match="'cgpo' is a constrained method"):
        OnlineConfig(method="cgpo")
    with pytest.raises(ConfigError, match="at least 2 objectives"):  # the online methods still need two
        OnlineConfig(objectives="sentiment")
    with pytest.raises(ConfigError, match="one on-policy pass"):
        CGPOConfig(ppo_epochs=2)
    with pytest.raises(ConfigError, match="num_generations must be >= 2"):
        CGPOConfig(cgpo_optimizer="codpo", num_generations=1)


def test_split_reference_answer():
    assert split_reference_answer("hi") == ("hi", None)
    conv, gold = split_reference_answer(ANSWERED[0])
    assert conv == ANSWERED[0][:1] and gold == "hi there"
    assert split_reference_answer(ANSWERED[0], "given")[1] == "given"


# --- logging --------------------------------------------------------------------------------------


def test_logged_pass_rates_are_the_judges_verdicts_on_the_steps_completions(tmp_path, jmod, monkeypatch):
    judges = f"{jmod('parity3')},length(max=3,unit=words)"
    seen = []
    real = CGPOTrainer.rollout_task

    def spy(self, t, step, micro=0):
        seen.append(real(self, t, step, micro))
        return seen[-1]

    monkeypatch.setattr(CGPOTrainer, "rollout_task", spy)
    tr = make(tmp_path, judges=judges, max_steps=2, cgpo_optimizer="crpg", gradient_accumulation_steps=2,
              prompts=PROMPTS)
    tr.train()
    rows = run_dir.read_metrics(tr.out)
    assert len(seen) == 4 and [r["step"] for r in rows] == [1, 2]
    fresh = build_judge_set(judges)  # built anew: the verdicts do not come from the trainer's objects
    for step, row in enumerate(rows):
        texts = [c for b in seen[2 * step: 2 * step + 2] for c in b.rollout.completions]
        ptexts = [p for b in seen[2 * step: 2 * step + 2] for p in b.rollout.prompt_texts]
        v = fresh.evaluate(ptexts, texts)
        cols = v.verdicts.T.tolist()
        n = len(texts)
        assert n == 16 and row["samples"] == 16
        assert row["judge/parity3/pass_rate"] == pytest.approx(cols[0].count(1) / n)
        assert row["judge/parity3/failed"] == cols[0].count(-1)
        assert row["judge/length(max=3,unit=words)/pass_rate"] == pytest.approx(cols[1].count(1) / n)
        assert row["judge/all/pass_rate"] == pytest.approx(float(v.passed.float().mean()))  # -1 counts as a fail
        assert row["judge/all/undecided"] == float(v.undecided.sum())
        rew = reward_of(tr, ptexts, texts)
        assert row["reward"] == pytest.approx(float(rew.mean()), rel=1e-5)
        assert set(row) >= {"calibrated_reward", "baseline_reward", "kl", "kl_gated_fraction", "all_fail_fraction",
                            "loss", "crpg/feasible_fraction", "reward/chars", "reward/words"}
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-5)  # step 1: the LoRA policy is the reference
    assert any(r["judge/parity3/failed"] > 0 for r in rows)  # the flaky judge was exercised


# --- the optimisers on one batch ------------------------------------------------------------------


def test_crpg_gives_failing_samples_zero_reward_and_its_gradient_is_losses_cgpos(tmp_path, jmod):
    tr = make(tmp_path, judges=jmod("parity"), cgpo_optimizer="crpg", crpg_baseline="none", batch_size=3,
              prompts=PROMPTS)
    batch = tr.rollout_task(0, 1)
    B, k = batch.rewards.shape
    passed = build_judge_set(jmod("parity")).evaluate(batch.rollout.prompt_texts,
                                                      batch.rollout.completions).passed.view(B, k)
    assert torch.equal(batch.passed, passed) and passed.any() and not passed.all()
    loss, det = tr.task_loss(batch)
    adv = det["advantages"]
    assert torch.equal(adv[~passed], torch.zeros_like(adv[~passed]))  # infeasible: R_cr = 0
    cal = expected_calibrated(tr, batch)
    torch.testing.assert_close(adv[passed], cal[passed].float(), rtol=1e-5, atol=1e-6)  # KL 0 <= KL_max: gate 1
    seq = seq_logps(tr, batch.rollout).view(B, k)
    want = crpg_loss(seq, crpg_advantages(cal.float(), passed, kl_gate(det["log_ratio"], 10.0, "hard")))
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=1e-5)
    assert_grads_close(loss, want, params(tr))

    # the PR's batch-mean baseline: the same R_cr, centred
    tr.tasks[0].spec.crpg_baseline = "batch_mean"
    loss2, det2 = tr.task_loss(batch)
    r_cr = cal.float() * passed
    torch.testing.assert_close(det2["advantages"], r_cr - r_cr.mean(), rtol=1e-5, atol=1e-6)


def test_the_hard_kl_gate_zeroes_samples_over_the_threshold(tmp_path):
    tr = make(tmp_path, judges="length(min=0)", cgpo_optimizer="crpg", crpg_baseline="none", batch_size=3,
              prompts=PROMPTS, temperature=1.0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the policy away from the reference so that KL_seq varies
        for n, p in tr.unwrapped.policy.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    batch = tr.rollout_task(0, 1)
    assert batch.passed.all()
    _, det = tr.task_loss(batch)
    lr = det["log_ratio"]
    top = lr.flatten().sort().values
    assert top[-2] > 0 and top[-1] > top[-2]
    thr = float((top[-1] + top[-2]) / 2)  # the largest sample is over budget, the rest are not
    tr.tasks[0].spec.kl_threshold = thr
    _, det = tr.task_loss(batch)
    over = lr > thr
    assert over.sum() == 1
    adv = det["advantages"]
    assert torch.equal(adv[over], torch.zeros(1))
    torch.testing.assert_close(adv[~over], expected_calibrated(tr, batch)[~over].float(), rtol=1e-5, atol=1e-6)
    # the PR's soft gate: max(0, 1 - KL/KL_max)
    tr.tasks[0].spec.cgpo_kl_gate = "soft"
    _, det = tr.task_loss(batch)
    torch.testing.assert_close(det["advantages"], expected_calibrated(tr, batch).float() * (1 - lr / thr).clamp(min=0),
                               rtol=1e-5, atol=1e-6)


def test_codpo_pairs_the_best_passing_with_the_worst_failing_sample(tmp_path, jmod):
    tr = make(tmp_path, judges=jmod("parity"), cgpo_optimizer="codpo", batch_size=4, prompts=PROMPTS)
    batch = tr.rollout_task(0, 1)
    loss, det = tr.task_loss(batch)
    pairs, want = det["pairs"], codpo_select(batch.penalised.float(), batch.passed)
    for a, b in zip(pairs, want):
        assert torch.equal(a, b)
    # by hand too: y+ = argmax r over passing, y- = argmin r over failing (over all when all pass)
    r, ok = batch.penalised.tolist(), batch.passed.tolist()
    for b in range(len(r)):
        passing = [i for i in range(len(r[b])) if ok[b][i]]
        assert bool(pairs.valid[b]) == bool(passing)
        if passing:
            assert int(pairs.chosen[b]) == max(passing, key=lambda i: (r[b][i], -i))
            pool = [i for i in range(len(r[b])) if not ok[b][i]] or list(range(len(r[b])))
            assert int(pairs.rejected[b]) == min(pool, key=lambda i: (r[b][i], i))
    assert pairs.valid.any()
    rows = torch.nonzero(pairs.valid).flatten()
    c, j = pairs.chosen[rows], pairs.rejected[rows]
    B, k = batch.rewards.shape
    seq = seq_logps(tr, batch.rollout).view(B, k)
    ref = seq_logps(tr, batch.rollout, adapter=False).view(B, k).detach()
    lengths = batch.rollout.completion_mask.sum(1).view(B, k)
    want_loss = codpo_loss(seq[rows, c], seq[rows, j], ref[rows, c], ref[rows, j], lengths[rows, c], 0.1, 5.0).mean()
    torch.testing.assert_close(loss, want_loss, rtol=1e-4, atol=1e-5)
    assert_grads_close(loss, want_loss, params(tr))


def test_crraft_falls_back_to_the_reference_answer_when_no_sample_is_feasible(tmp_path, jmod):
    tr = make(tmp_path, judges=jmod("is_gold"), cgpo_optimizer="crraft", batch_size=3, prompts=ANSWERED)
    assert tr.tasks[0].gold == ["hi there", "one two three", "an apple"]
    batch = tr.rollout_task(0, 1)
    assert not batch.passed.any()  # random text is never the gold answer
    assert batch.baseline_texts == [tr.tasks[0].gold[i] for i in batch.indices]
    loss, det = tr.task_loss(batch)
    sel = det["selection"]
    assert sel.use_baseline.all() and torch.equal(sel.weight, torch.full((3,), 0.5)) and (sel.index == -1).all()
    want_sel = crraft_select(batch.calibrated.float(), batch.passed, det["log_ratio"], 10.0,
                             torch.ones(3, dtype=torch.bool), det["baseline_log_ratio"])
    for a, b in zip(sel, want_sel):
        assert torch.equal(a, b)
    prompts = [split_reference_answer(ANSWERED[i])[0] for i in batch.indices]
    tf = tr._teacher_forced(prompts, batch.baseline_texts, [True] * 3)
    lp = seq_logps(tr, tf)
    want = crraft_loss(lp, torch.full((3,), 0.5), tf.completion_mask.sum(1))
    torch.testing.assert_close(loss, want, rtol=1e-4, atol=1e-5)
    assert_grads_close(loss, want, params(tr))
    torch.testing.assert_close(det["baseline_log_ratio"], torch.zeros(3), rtol=0, atol=1e-4)  # π = π_ref at step 1

    # a baseline over the KL budget is not used: the prompt is skipped
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in tr.unwrapped.policy.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    _, det = tr.task_loss(batch)
    blr = det["baseline_log_ratio"]
    tr.tasks[0].spec.kl_threshold = float(blr.max()) - 1e-3 if blr.max() > 0 else 1e-6
    loss, det = tr.task_loss(batch)
    assert torch.equal(det["selection"].used, blr <= tr.tasks[0].spec.kl_threshold)


def test_crraft_uses_the_best_feasible_sample_and_matches_crraft_select(tmp_path, jmod):
    tr = make(tmp_path, judges=jmod("gold_or_even"), cgpo_optimizer="crraft", batch_size=3, prompts=ANSWERED)
    batch = tr.rollout_task(0, 1)
    loss, det = tr.task_loss(batch)
    base_passed = torch.ones(3, dtype=torch.bool)  # ā is the gold answer: it passes
    want = crraft_select(batch.calibrated.float(), batch.passed, det["log_ratio"], 10.0, base_passed,
                         det["baseline_log_ratio"])
    for a, b in zip(det["selection"], want):
        assert torch.equal(a, b)
    sel = det["selection"]
    B, k = batch.rewards.shape
    assert (~sel.use_baseline).any()  # some prompt had a feasible sample
    seq = seq_logps(tr, batch.rollout).view(B, k)
    lengths = batch.rollout.completion_mask.sum(1).view(B, k)
    rows = torch.nonzero(~sel.use_baseline).flatten()
    assert torch.equal(sel.index[rows], (batch.calibrated * batch.passed)[rows].argmax(-1))
    # the loss: Σ g·log π(y*) / Σ|y*| over the used winners, samples and baselines alike
    base_rows = torch.nonzero(sel.use_baseline).flatten().tolist()
    lp, n_tok = [], []
    for b in range(B):
        if b in base_rows:
            tf = tr._teacher_forced([split_reference_answer(ANSWERED[batch.indices[b]])[0]], [batch.baseline_texts[b]],
                                    [True])
            lp.append(seq_logps(tr, tf)[0])
            n_tok.append(tf.completion_mask.sum())
        else:
            lp.append(seq[b, sel.index[b]])
            n_tok.append(lengths[b, sel.index[b]])
    want_loss = crraft_loss(torch.stack(lp), sel.weight, torch.stack(n_tok))
    torch.testing.assert_close(loss, want_loss, rtol=1e-4, atol=1e-5)
    assert_grads_close(loss, want_loss, params(tr))


def test_every_optimiser_trains(tmp_path, jmod):
    for opt in ("crpg", "codpo", "crraft"):
        tr = make(tmp_path, name=opt, judges=jmod("parity"), cgpo_optimizer=opt, max_steps=2, prompts=PROMPTS)
        before = trainable(tr)
        tr.train()
        after = trainable(tr)
        assert any(not torch.equal(before[n], after[n]) for n in before), opt
        assert (tr.out / "final").is_dir()


# --- several tasks --------------------------------------------------------------------------------


def tasks_yaml(tmp_path, jmod, first="crpg", second="codpo"):
    f = tmp_path / "tasks.yaml"
    f.write_text(textwrap.dedent(f"""\
        chat:
          prompts: {PROMPTS!r}
          judges: "length(max=6,unit=words)"
          optimizer: {first}
          mix: 3
        answers:
          prompts:
            - [{{role: user, content: Say hi}}, {{role: assistant, content: hi there}}]
            - [{{role: user, content: Count to three}}, {{role: assistant, content: one two three}}]
          objectives: "{WORDS}"
          judges: ["{jmod('parity')}"]
          optimizer: {second}
          num_generations: 2
          batch_size: 1
          mix: 1
        """))
    return f


def test_multi_task_logs_each_task_and_mixes_the_losses(tmp_path, jmod, monkeypatch):
    seen = []
    real = CGPOTrainer.rollout_task
    monkeypatch.setattr(CGPOTrainer, "rollout_task", lambda self, t, s, m=0: seen.append(real(self, t, s, m)) or seen[-1])
    tr = make(tmp_path, tasks=str(tasks_yaml(tmp_path, jmod)), max_steps=2)
    assert [t.spec.name for t in tr.tasks] == ["chat", "answers"] and [t.mix for t in tr.tasks] == [0.75, 0.25]
    assert tr.tasks[1].gold == ["hi there", "one two three"] and tr.tasks[1].spec.num_generations == 2
    assert tr.tasks[0].objectives.names == ["chars", "words"] and tr.tasks[1].objectives.names == ["words"]
    tr.train()
    rows = run_dir.read_metrics(tr.out)
    for row in rows:
        for name in ("chat", "answers"):
            assert {f"task/{name}/{k}" for k in ("reward", "calibrated_reward", "kl", "judge/all/pass_rate", "loss",
                                                 "all_fail_fraction")} <= set(row)
        assert "task/chat/judge/length(max=6,unit=words)/pass_rate" in row and "task/answers/judge/parity/pass_rate" in row
        assert "task/chat/crpg/feasible_fraction" in row and "task/answers/codpo/pair_fraction" in row
        assert "task/answers/reward/words" in row and "task/answers/reward/chars" not in row
        assert row["loss"] == pytest.approx(0.75 * row["task/chat/loss"] + 0.25 * row["task/answers/loss"])
        assert row["samples"] == 2 * 4 + 1 * 2
    # each task drew from its own prompts, with its own k
    assert [b.task for b in seen] == [0, 1, 0, 1]
    for b in seen:
        if b.task == 0:
            assert b.rewards.shape == (2, 4) and set(b.rollout.prompts) <= set(PROMPTS)
        else:
            assert b.rewards.shape == (1, 2) and b.baseline_texts[0] in ("hi there", "one two three")
    s = json_summary(tr)
    assert s["tasks"]["answers"]["optimizer"] == "codpo" and "task/chat/reward" in s


def json_summary(tr):
    import json

    return json.loads((tr.out / "summary.json").read_text())


class _Boom(Exception):
    pass


def test_killed_and_resumed_training_equals_an_uninterrupted_one(tmp_path, jmod, killed_at):
    tasks = str(tasks_yaml(tmp_path, jmod, first="crraft", second="codpo"))  # crraft: greedy baselines, cached
    full = make(tmp_path, name="full", tasks=tasks, max_steps=4, save_steps=2)
    full.train()
    want, want_rows = trainable(full), run_dir.read_metrics(full.out)
    assert full.tasks[0].greedy  # the chat prompts have no reference answer

    crashed = make(tmp_path, name="crash", tasks=tasks, max_steps=4, save_steps=2)
    killed_at(CGPOTrainer, "step", 4, crashed.train, _Boom)
    resumed = make(tmp_path, name="crash", tasks=tasks, max_steps=4, save_steps=2, resume=True)
    assert resumed.start_step == 2 and resumed.tasks[0].greedy  # the cache came back from the checkpoint
    resumed.train()
    got = trainable(resumed)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-6, msg=f"{n} differs after resume")
    assert resumed.tasks[0].greedy == full.tasks[0].greedy
    rows = run_dir.read_metrics(resumed.out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(rows, want_rows):
        for k in ("task/chat/reward", "task/answers/reward", "task/chat/judge/all/pass_rate", "kl"):
            assert a[k] == pytest.approx(b[k], abs=1e-6), k
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)


def test_the_base_trainers_are_unchanged_by_the_hooks(tmp_path):
    """OnlineTrainer still skips the reference where nothing reads it (the hook's default)."""
    tr = OnlineTrainer(OnlineConfig(**{**FAST, "num_generations": 2, "kl_coef": 0.0, "method": "morlhf",
                                       "output_dir": str(tmp_path / "o")}))
    assert not tr.uses_reference and tr.ref_model is None


# --- the command line and bad input ---------------------------------------------------------------


def test_cli_train_cgpo(tmp_path, jmod):
    run = tmp_path / "run"
    assert cli.main(["train", "--method", "cgpo", "--cgpo-optimizer", "codpo", "--model", "tiny", "--objectives", CHARS,
                     "--judges", f"length(max=6,unit=words),{jmod('parity')}", "--max-steps", "1", "--batch-size", "2",
                     "--num-generations", "2", "--max-new-tokens", "6", "--calibration", "group_mean",
                     "--missing-eos-penalty", "1", "--output-dir", str(run), "--progress", "false"]) == 0
    row = run_dir.read_metrics(run)[0]
    assert "codpo/pair_fraction" in row and "baseline_reward" not in row and "eos_missing_fraction" in row


def one_line(exc):
    assert "\n" not in str(exc.value), str(exc.value)


@pytest.mark.parametrize("kw, err, match", [
    (dict(judges="nosuch(n=1)"), ConfigError, "unknown judge 'nosuch'"),
    (dict(judges="length(scale=10)<=2"), ConfigError, "outside the range"),
    (dict(judges=f"{CHARS}>=500"), ConfigError, "outside the range"),
    (dict(judges=None), ConfigError, "needs judges"),
    (dict(judges="max_words(n=3)", weights=[0.5]), ConfigError, "1 entries; expected 2|expected 2"),
])
def test_bad_trainer_inputs_are_one_line(tmp_path, kw, err, match):
    with pytest.raises(err, match=match) as exc:
        make(tmp_path, **kw)
    one_line(exc)
    assert not (tmp_path / "run").exists()  # refused before the run folder is claimed


@pytest.mark.parametrize("body, match", [
    ("a:\n  judges: max_words(n=3)\n", "task 'a': no prompts"),
    ("a:\n  prompts: []\n", "task 'a': no prompts"),
    ("a:\n  prompts: [hi, there]\n  optimizer: ppo\n", "task 'a': option cgpo_optimizer: expected one of"),
    ("a:\n  prompts: [hi, there]\n  kl_threshold: -1\n", "task 'a': option kl_threshold: must be >= 0"),
    ("a:\n  prompts: [hi, there]\n  judge: x\n", "unknown setting 'judge'; did you mean 'judges'"),
    ("a:\n  prompts: [hi, there]\n  mix: 0\n", "mix must be a number > 0"),
    ("a b:\n  prompts: [hi]\n", "a task name is letters"),
    ("{}\n", "no tasks"),
])
def test_bad_tasks_files_are_one_line(tmp_path, body, match):
    f = tmp_path / "tasks.yaml"
    f.write_text(body)
    with pytest.raises(ConfigError, match=match) as exc:
        CGPOConfig(tasks=str(f))
    one_line(exc)


def test_bad_task_judges_and_prompts_name_the_task(tmp_path):
    f = tmp_path / "tasks.yaml"
    f.write_text("a:\n  prompts: [hi, there]\n  judges: max_word(n=3)\n")
    with pytest.raises(ConfigError, match=r"task 'a': unknown judge 'max_word'.*did you mean 'max_words'") as exc:
        make(tmp_path, tasks=str(f))
    one_line(exc)
    f.write_text(f"a:\n  prompts: {tmp_path / 'none.jsonl'}\n  judges: max_words(n=3)\n")
    with pytest.raises(DataError, match="task 'a'") as exc:
        make(tmp_path, tasks=str(f))
    one_line(exc)


def test_cli_bad_input_is_one_error_line(tmp_path, capsys):
    for extra, match in ((["--judges", "nosuch"], "unknown judge 'nosuch'"),
                         (["--judges", "max_words(n=3)", "--kl-threshold", "-1"], "kl_threshold: must be >= 0"),
                         (["--judges", "max_words(n=3)", "--tasks", str(tmp_path / "missing.yaml")], "no such file")):
        assert cli.main(["train", "--method", "cgpo", "--model", "tiny", "--objectives", CHARS,
                         "--output-dir", str(tmp_path / "r"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and match in err and err.count("\n") == 1, err


def test_front_sweeps_the_rewards_weights_under_the_same_judges(tmp_path):
    """`front --method cgpo`: one CGPO run per preference, each with reward sum_k w_k score_k and the same judges."""
    from paretoalign import run_dir
    from paretoalign.fronts.sweep import build_front_config, run_front

    front, train = build_front_config(None, dict(
        method="cgpo", preferences="0.2,0.8;0.8,0.2", output_dir=str(tmp_path / "front"), report=False,
        eval_num_prompts=2, eval_max_new_tokens=3, judges=["length(max=30,unit=words)"], max_steps=1,
        **{**FAST, "max_new_tokens": 3}))
    result = run_front(front, train, progress=lambda s: None)
    pts = result["points"]
    assert [p["preference"] for p in pts] == [pytest.approx([0.2, 0.8]), pytest.approx([0.8, 0.2])]
    for p in pts:
        cfg = run_dir.load_config(tmp_path / "front" / p["run_dir"])
        assert cfg["weights"] == pytest.approx(p["preference"]) and cfg["judges"] == ["length(max=30,unit=words)"]
    with pytest.raises(ConfigError, match="a --tasks blend has a reward per task"):
        build_front_config(None, dict(method="cgpo", tasks={"a": {"prompts": ["x"]}}, judges=["valid_json"]))
