"""--gradient-checkpointing changes memory, not the update; --mixed-precision autocasts the forward."""

import pytest
import torch

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=6, progress=False,
            learning_rate=1e-2, method="morlhf", advantage="group", kl_coef=0.1, max_steps=1)


@pytest.mark.parametrize("use_lora", [True, False])
def test_gradient_checkpointing_gives_the_same_update(one_update, use_lora, monkeypatch):
    # checkpointed models run every row's prompt (no cache in training); so does the plain one here, so that
    # both take the same arithmetic (shared prompts against full rows: tests/test_models.py)
    monkeypatch.setenv("PARETOALIGN_SHARED_PROMPTS", "0")
    plain, row, want = one_update(FAST, "plain", use_lora=use_lora)
    ckpt, row_ckpt, got = one_update(FAST, "ckpt", use_lora=use_lora, gradient_checkpointing=True)
    assert ckpt.unwrapped.policy.is_gradient_checkpointing and not plain.unwrapped.policy.is_gradient_checkpointing
    assert row_ckpt["loss"] == pytest.approx(row["loss"], rel=1e-5, abs=1e-7)
    assert want.keys() == got.keys() and want
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-5, atol=1e-6)


def test_bf16_mixed_precision_runs_a_step_in_bfloat16(one_update, fresh_accelerate_state):
    trainer, row, _ = one_update(FAST, "bf16", mixed_precision="bf16")
    assert trainer.accelerator.mixed_precision == "bf16"
    assert all(p.dtype == torch.float32 for p in trainer.unwrapped.parameters())  # weights stay float32
    assert torch.isfinite(torch.tensor(row["loss"]))


def test_a_second_precision_in_one_process_is_one_clear_error(one_update, fresh_accelerate_state):
    from paretoalign.errors import ConfigError

    one_update(FAST, "plain")
    with pytest.raises(ConfigError, match="--mixed-precision fp16: this process already runs accelerate"):
        one_update(FAST, "fp16", mixed_precision="fp16")


def test_deepspeed_micro_batch_is_filled_only_where_auto():
    from types import SimpleNamespace

    from paretoalign.trainers.adaptation import set_deepspeed_micro_batch

    ds = {"train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto", "gradient_accumulation_steps": "auto"}
    acc = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds)), num_processes=4)
    set_deepspeed_micro_batch(acc, 8)
    assert ds == {"train_micro_batch_size_per_gpu": 8, "train_batch_size": 32, "gradient_accumulation_steps": 1}
    mine = {"train_micro_batch_size_per_gpu": 2, "train_batch_size": "auto", "gradient_accumulation_steps": 3}
    acc.state.deepspeed_plugin.deepspeed_config = mine
    set_deepspeed_micro_batch(acc, 8)
    assert mine == {"train_micro_batch_size_per_gpu": 2, "train_batch_size": 24, "gradient_accumulation_steps": 3}
    set_deepspeed_micro_batch(SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=None)), 8)  # no DeepSpeed: nothing


def test_fsdp1_without_original_parameters_and_deepspeed_without_its_package_are_one_line(monkeypatch):
    from types import SimpleNamespace

    import accelerate
    from accelerate.utils import DistributedType

    from paretoalign.errors import ConfigError
    from paretoalign.trainers.adaptation import make_accelerator, refuse_sharded

    def fsdp(version, orig):
        plugin = SimpleNamespace(fsdp_version=version, use_orig_params=orig)
        return SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=plugin))

    with pytest.raises(ConfigError, match=r"^FSDP1 needs fsdp_use_orig_params: true"):
        refuse_sharded(fsdp(1, False))
    for ok in (fsdp(1, True), fsdp(2, False), SimpleNamespace(distributed_type=DistributedType.MULTI_GPU),
               SimpleNamespace(distributed_type=DistributedType.DEEPSPEED)):
        assert refuse_sharded(ok) is ok

    def no_deepspeed(*a, **k):  # what accelerate raises for a DeepSpeed launch without the package
        raise ImportError("DeepSpeed is not available => install it using `pip3 install deepspeed` or build it from source")

    monkeypatch.setattr(accelerate, "Accelerator", no_deepspeed)
    with pytest.raises(ConfigError, match=r"^this launch uses DeepSpeed, which is not installed: pip install "):
        make_accelerator(SimpleNamespace(mixed_precision=None))


def test_processes_the_launcher_started_but_accelerate_left_alone_are_one_line(monkeypatch):
    """torchrun started 2 processes, but accelerate set up neither as distributed (a MULTI_GPU config on a machine
    without a GPU and without ACCELERATE_USE_CPU=1): refused before the run folder is claimed, instead of the second
    process finding the folder taken by the first."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from paretoalign.errors import ConfigError
    from paretoalign.trainers.adaptation import refuse_sharded

    monkeypatch.setenv("WORLD_SIZE", "2")
    alone = SimpleNamespace(num_processes=1, distributed_type=DistributedType.NO)
    with pytest.raises(ConfigError, match=r"^the launcher started 2 processes but accelerate runs each alone; .*"
                                          r"ACCELERATE_USE_CPU=1"):
        refuse_sharded(alone)
    both = SimpleNamespace(num_processes=2, distributed_type=DistributedType.MULTI_CPU)
    assert refuse_sharded(both) is both
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert refuse_sharded(alone) is alone
