"""--gradient-accumulation-steps N: one optimiser step on N micro-batches of --batch-size B is the step at
batch N x B on the same samples, for losses that are means over samples (offline DPO; online MORLHF with
group advantages and completions of one length), and only the last micro-batch synchronises (DDP)."""

import contextlib
from dataclasses import replace

import pytest
import torch

from paretoalign import run_dir
from paretoalign.data.preference_pairs import PreferencePair, save_preference_data
from paretoalign.errors import ConfigError
from paretoalign.trainers.offline_config import OfflineConfig
from paretoalign.trainers.offline_trainer import OfflineTrainer
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
# MORLHF on group advantages (each group's own statistics) and completions of exactly 6 tokens: the loss
# is a mean over samples, so micro-batches of equal size average to the full batch's.  No clipping: the
# gradients' scale is compared too.
ONLINE = dict(model="tiny", objectives=OBJ, method="morlhf", advantage="group", num_generations=2, kl_coef=0.1,
              max_new_tokens=6, min_new_tokens=6, progress=False, learning_rate=1e-2, max_grad_norm=0.0)


def trainable(tr):
    return {n: p.detach().clone() for n, p in tr.unwrapped.named_parameters() if p.requires_grad}


def capture_grads(tr) -> list:
    """The gradients each optimiser step applies (after clipping), in order."""
    seen, inner = [], tr.optimizer.step

    def step(*args, **kwargs):
        seen.append({n: p.grad.detach().clone() for n, p in tr.unwrapped.named_parameters()
                     if p.requires_grad and p.grad is not None})
        return inner(*args, **kwargs)

    tr.optimizer.step = step
    return seen


def assert_same_grads(a: dict, b: dict):
    assert a.keys() == b.keys() and a
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-7, msg=n)
    assert any(g.abs().sum() > 0 for g in a.values())


def rows_of(rollout, rows: slice):
    """Rows ``rows`` of a rollout (its prompts stay left-padded to the same width)."""
    return replace(rollout, prompts=rollout.prompts[rows], prompt_texts=rollout.prompt_texts[rows],
                   completions=rollout.completions[rows], input_ids=rollout.input_ids[rows],
                   attention_mask=rollout.attention_mask[rows], completion_mask=rollout.completion_mask[rows])


def test_online_micro_batches_give_the_update_of_the_full_batch(tmp_path):
    big = OnlineTrainer(OnlineConfig(**ONLINE, batch_size=4, output_dir=str(tmp_path / "big")))
    small = OnlineTrainer(OnlineConfig(**ONLINE, batch_size=2, gradient_accumulation_steps=2,
                                       output_dir=str(tmp_path / "small")))
    for step in (1, 2, 5):  # the same prompts: those of one step at the effective batch
        assert small.prompts_for_step(step) == big.prompts_for_step(step)
        assert small.prompts_for_step(step, 0) + small.prompts_for_step(step, 1) == big.prompts_for_step(step)
    rollout, scores, valid, _ = big.rollout(1)
    assert bool(rollout.completion_mask.all())  # one length: the token mean is the sample mean
    g_big, g_small = capture_grads(big), capture_grads(small)
    row_big = big.update_batches([(rollout, scores, valid)])
    halves = [slice(0, 4), slice(4, 8)]  # prompts 0-1 and 2-3, with their 2 completions each
    row_small = small.update_batches([(rows_of(rollout, h), scores[h], valid[h]) for h in halves])
    assert len(g_big) == len(g_small) == 1
    assert_same_grads(g_small[0], g_big[0])
    a, b = trainable(small), trainable(big)
    assert all(torch.allclose(a[n], b[n], atol=1e-5) for n in a)
    for key in ("loss", "policy_loss", "kl_loss", "kl", "reward/chars", "reward/words", "completion_length"):
        assert row_small[key] == pytest.approx(row_big[key], rel=1e-5, abs=1e-7), key
    assert row_small["samples"] == row_big["samples"] == 8


def test_online_step_generates_every_micro_batch_and_steps_once(tmp_path):
    tr = OnlineTrainer(OnlineConfig(**ONLINE, batch_size=2, gradient_accumulation_steps=3, max_steps=2,
                                    output_dir=str(tmp_path / "run")))
    grads = capture_grads(tr)
    tr.train()
    rows = run_dir.read_metrics(tr.out)
    assert len(grads) == 2 and [r["samples"] for r in rows] == [12, 12]  # 3 x 2 prompts x 2 completions


# ---- offline ---------------------------------------------------------------------------------


@pytest.fixture
def pairs_file(tmp_path):
    pairs = []
    for i in range(8):
        long_, short_ = f"yes yes yes {i} indeed yes", f"no {i}"
        pairs.append(PreferencePair(f"question {i}?", long_, short_, {"helpful": 1.0}))
        pairs.append(PreferencePair(f"other question {i}?", f"maybe {i}", f"{i} never ever", {"helpful": -1.0}))
    return str(save_preference_data(pairs, tmp_path / "pairs.jsonl"))


def offline(tmp_path, pairs_file, name, **kw):
    cfg = OfflineConfig(model="tiny", method="dpo", objectives=["helpful"], pairs=[pairs_file], max_steps=3,
                        max_response_length=12, progress=False, learning_rate=5e-3, max_grad_norm=0.0,
                        output_dir=str(tmp_path / name),
                        **kw)
    return OfflineTrainer(cfg)


def test_offline_micro_batches_give_the_update_of_the_full_batch(tmp_path, pairs_file):
    big = offline(tmp_path, pairs_file, "big", batch_size=4)
    small = offline(tmp_path, pairs_file, "small", batch_size=2, gradient_accumulation_steps=2)
    for step in (1, 2, 3, 9):
        assert small.indices_for_step(step) == big.indices_for_step(step)
        assert small.indices_for_step(step, 0) + small.indices_for_step(step, 1) == big.indices_for_step(step)
    unsynced = []
    real = small.accelerator.no_sync

    def no_sync(model):
        unsynced.append(1)
        return real(model)

    small.accelerator.no_sync = no_sync
    g_big, g_small = capture_grads(big), capture_grads(small)
    big.train()
    small.train()
    assert len(unsynced) == 3  # every step: the first micro-batch only, of two
    assert len(g_big) == len(g_small) == 3
    assert_same_grads(g_small[0], g_big[0])  # the first step: the same weights, the same pairs
    for a, b in zip(run_dir.read_metrics(small.out), run_dir.read_metrics(big.out)):
        for key in ("loss", "rewards/accuracy", "rewards/margin"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    # later steps only differ by rounding, which Adam's per-coordinate normalisation lifts on tiny gradients
    a, b = trainable(small), trainable(big)
    assert all(torch.allclose(a[n], b[n], atol=0.05 * 5e-3) for n in a)


def test_micro_batch_context_skips_synchronisation_before_the_last():
    from paretoalign.trainers.adaptation import micro_batch_context

    class Acc:
        def no_sync(self, model):
            return "no_sync"

    assert micro_batch_context(Acc(), None, last=False) == "no_sync"
    assert isinstance(micro_batch_context(Acc(), None, last=True), contextlib.nullcontext)


def test_bad_accumulation_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="gradient_accumulation_steps: must be >= 1"):
        OnlineConfig(gradient_accumulation_steps=0)
    with pytest.raises(ConfigError, match="MOPO takes a dual step after every batch"):
        OfflineConfig(method="mopo", objectives=["a", "b"], constraints=["b>=0.5"], pairs="x",
                      gradient_accumulation_steps=2)


def test_deepspeed_takes_the_accumulation_where_auto_and_must_agree_elsewhere():
    from types import SimpleNamespace

    from paretoalign.trainers.adaptation import set_deepspeed_micro_batch

    ds = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto"}
    acc = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds)), num_processes=2)
    set_deepspeed_micro_batch(acc, 4, accumulation=3)
    assert ds == {"train_micro_batch_size_per_gpu": 4, "train_batch_size": 24, "gradient_accumulation_steps": 3}
    acc.state.deepspeed_plugin.deepspeed_config = {"gradient_accumulation_steps": 2}
    with pytest.raises(ConfigError, match="gradient_accumulation_steps is 2, --gradient-accumulation-steps 3"):
        set_deepspeed_micro_batch(acc, 4, accumulation=3)
