"""What the trainers share about adapting a policy and ordering its data.

- :func:`add_lora`: the PEFT LoRA wrapper every trainer puts on its policy (``use_lora`` and the
  ``lora_*`` options of :class:`paretoalign.trainers.options.LoraOptions`).
- :func:`make_accelerator` and :func:`enable_gradient_checkpointing`: ``--mixed-precision`` and
  ``--gradient-checkpointing`` (:class:`paretoalign.trainers.options.ModelOptions`).
- :func:`epoch_indices`: the seeded order in which a trainer walks its data (prompts, pairs): epochs
  of permutations that depend on (seed, epoch) only, so any step of any process can be recomputed
  and a resumed run sees exactly the data it would have.
- :func:`micro_batch_context` and :func:`micro_batch_backward`: ``--gradient-accumulation-steps``
  (:class:`paretoalign.trainers.options.AccumulationOptions`).
- :func:`make_scheduler`: ``--lr-scheduler-type`` and its warm-up
  (:class:`paretoalign.trainers.options.ScheduleOptions`).
- :func:`fine_tuned_policy`: the policy, optimiser and schedule of the trainers that fine-tune on
  samples they select themselves (DPA, RiC), restored from a checkpoint.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np


def add_lora(policy, cfg):
    """``policy`` wrapped with LoRA adapters as ``cfg`` says (``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``lora_target_modules``); a policy that is already a PEFT model is returned as is."""
    if hasattr(policy, "peft_config"):
        return policy
    from peft import LoraConfig, get_peft_model

    from paretoalign.console import quiet_third_party

    with quiet_third_party():  # PEFT reads transformers' deprecated is_gradient_checkpointing (a FutureWarning)
        return get_peft_model(policy, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM"))


def make_accelerator(cfg):
    """The trainer's ``accelerate.Accelerator``: ``--mixed-precision`` when given, else whatever the
    launcher configured (``accelerate launch``'s environment), else full precision.  ``--report-to``'s
    trackers are not attached here but per run (:mod:`paretoalign.trainers.tracking` says why)."""
    from accelerate import Accelerator

    from paretoalign.errors import ConfigError

    mp = getattr(cfg, "mixed_precision", None)
    try:
        return refuse_sharded(Accelerator(mixed_precision=mp) if mp else Accelerator())
    except ImportError as e:  # a DeepSpeed launch without the package: accelerate's own ImportError
        if "deepspeed" not in str(e).lower():
            raise
        raise ConfigError("this launch uses DeepSpeed, which is not installed: pip install 'paretoalign[deepspeed]'") \
            from None
    except ValueError as e:  # accelerate's state is per process, fixed by the first Accelerator
        if "already been initialized" not in str(e):
            raise
        raise ConfigError(f"--mixed-precision {mp}: this process already runs accelerate with another precision; "
                          "start a new process (or set it with `accelerate launch --mixed_precision`)") from None


def refuse_sharded(accelerator):
    """The launch's sharding, checked up front: FSDP and DeepSpeed run (:mod:`paretoalign.trainers.sharding`
    gathers the weights where a trainer reads them outside a forward, and whole states for checkpoints), but
    FSDP1 needs ``fsdp_use_orig_params: true`` (with LoRA, frozen and trainable weights share a layer's flat
    parameter, and checkpoints name parameters), and DeepSpeed needs the ``deepspeed`` package."""
    from paretoalign.errors import ConfigError
    from paretoalign.trainers.sharding import fsdp_version

    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes == 1:
        # torchrun started several processes, but accelerate set none of them up as distributed (on a machine
        # without a GPU, a MULTI_GPU config needs ACCELERATE_USE_CPU=1): each would train alone, and the second
        # would find the run folder taken by the first
        raise ConfigError(f"the launcher started {launched} processes but accelerate runs each alone; without a GPU, "
                          "launch with ACCELERATE_USE_CPU=1 (examples/accelerate/cpu_2proc.yaml says how)")
    if fsdp_version(accelerator) == 1 and not getattr(accelerator.state.fsdp_plugin, "use_orig_params", False):
        raise ConfigError("FSDP1 needs fsdp_use_orig_params: true in the accelerate config (LoRA's frozen and "
                          "trainable weights share a layer's flat parameter, and checkpoints name parameters)")
    return accelerator


def set_deepspeed_micro_batch(accelerator, rows: int, accumulation: int = 1) -> None:
    """Under DeepSpeed, fill ``train_micro_batch_size_per_gpu`` with the rows one backward sees and
    ``gradient_accumulation_steps`` with the backwards per optimiser step.

    accelerate takes them from a prepared DataLoader when the config says "auto"; the trainers
    prepare none (they build their batches from rollouts or pairs), so they are set here, before
    ``accelerator.prepare``.  A value the user wrote in a DeepSpeed JSON is kept (with
    ``--gradient-accumulation-steps`` above 1, its gradient_accumulation_steps must equal it)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    ds = plugin.deepspeed_config
    if ds.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        ds["train_micro_batch_size_per_gpu"] = int(rows)
    gas = ds.get("gradient_accumulation_steps", "auto")
    if gas == "auto":
        ds["gradient_accumulation_steps"] = int(accumulation)  # DeepSpeed scales the loss and steps at the boundary
    elif accumulation > 1 and int(gas) != int(accumulation):  # DeepSpeed would step at other boundaries
        from paretoalign.errors import ConfigError

        raise ConfigError(f"the DeepSpeed config's gradient_accumulation_steps is {gas}, --gradient-accumulation-steps "
                          f"{accumulation}; make them equal (\"auto\" in the DeepSpeed config takes the flag's)")
    if ds.get("train_batch_size", "auto") == "auto":
        ds["train_batch_size"] = (int(ds["train_micro_batch_size_per_gpu"]) * accelerator.num_processes
                                  * int(ds["gradient_accumulation_steps"]))


def enable_gradient_checkpointing(policy, cfg) -> None:
    """``--gradient-checkpointing``: transformers' non-reentrant activation checkpointing on ``policy``
    (a PEFT model's base included; with frozen base weights the inputs must require grad so
    the checkpointed layers still reach the adapters)."""
    if not getattr(cfg, "gradient_checkpointing", False):
        return
    kwargs = {"use_reentrant": False}
    if hasattr(policy, "activation_checkpointing_enable"):  # transformers >= 5.x's name; the old one warns
        policy.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if hasattr(policy, "enable_input_require_grads"):
        policy.enable_input_require_grads()
    policy.config.use_cache = False


def epoch_indices(seed: int, n: int, start: int, count: int) -> list[int]:
    """Positions ``start .. start + count - 1`` of the endless sequence of seeded permutations of
    ``range(n)`` (epoch e is ``default_rng([seed, e]).permutation(n)``)."""
    perms: dict[int, np.ndarray] = {}
    out = []
    for i in range(start, start + count):
        epoch, pos = divmod(i, n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(perms[epoch][pos]))
    return out


def micro_batch_context(accelerator, model, last: bool):
    """The context of one micro-batch's forward and backward: gradients are synchronised between
    processes (DDP, FSDP) on the last micro-batch of an optimiser step only (``no_sync`` before it)."""
    return contextlib.nullcontext() if last else accelerator.no_sync(model)


def micro_batch_backward(accelerator, loss, micro_batches: int) -> None:
    """Backward of one of ``micro_batches`` equal micro-batches, so the summed gradients are those of
    the mean loss over the effective batch (DeepSpeed divides by its own gradient_accumulation_steps)."""
    from accelerate.utils import DistributedType

    if micro_batches > 1 and accelerator.distributed_type != DistributedType.DEEPSPEED:
        loss = loss / micro_batches
    accelerator.backward(loss)


def make_scheduler(cfg, optimizer, total_steps: int):
    """``--lr-scheduler-type`` on ``optimizer`` (transformers' ``get_scheduler``), over the run's
    ``total_steps`` x ``cfg.updates_per_step`` optimiser steps, with ``--warmup-steps``/``--warmup-ratio``;
    the trainer steps it after every optimiser step."""
    from transformers import get_scheduler

    total = total_steps * cfg.updates_per_step
    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.warmup_for(total),
                         num_training_steps=total)


def fine_tuned_policy(cfg, model, tokenizer, schedule_steps: int, resume_from):
    """``(policy, optimizer, scheduler, state)`` for a trainer that fine-tunes on samples it selects (DPA,
    RiC): ``model`` (or ``cfg.model`` loaded with the run's seed), LoRA when ``cfg.use_lora``, gradient
    checkpointing, AdamW on the trainable parameters and the schedule over ``schedule_steps`` steps;
    with ``resume_from`` (a checkpoint folder) the policy is restored from it and ``state`` is its
    ``trainer_state.json`` (``{}`` for a fresh run); the optimiser and schedule are restored after
    ``accelerator.prepare`` (:func:`paretoalign.trainers.checkpoint.prepare_training`)."""
    import torch

    from paretoalign import run_dir
    from paretoalign.models import load_causal_lm
    from paretoalign.trainers import checkpoint as ckpt_lib

    torch.manual_seed(cfg.seed)
    policy = model if model is not None else load_causal_lm(cfg.model, tokenizer, cfg.seed, cfg.allow_download)
    if cfg.use_lora:
        policy = add_lora(policy, cfg)
    enable_gradient_checkpointing(policy, cfg)
    params = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(cfg, optimizer, schedule_steps)
    state = {}
    if resume_from is not None:
        ckpt_lib.load_policy_state(policy, resume_from / run_dir.POLICY)
        state = ckpt_lib.read_state(resume_from)
    return policy, optimizer, scheduler, state
