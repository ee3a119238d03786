"""What sharding (FSDP, DeepSpeed ZeRO) changes in a trainer: whole weights where a trainer reads them outside
a forward, and whole model and optimizer states in checkpoints.

Under accelerate's FSDP (``examples/accelerate/fsdp.yaml``, ``fsdp2.yaml``) and DeepSpeed ZeRO-3
(``deepspeed_zero3.yaml``) the weights, gradients and Adam moments are split over the processes, and a layer
gathers its weights only inside its own forward and backward; ZeRO-1/2 (``deepspeed_zero2.yaml``) split the
optimizer state (and gradients) and keep the weights whole.  A trainer reads weights outside a forward in
three places:

- sampling: the packed sampler (:mod:`paretoalign.decoding`) reads every layer's weights directly;
- the adapter-disabled reference pass and held-out evaluation call the inner model, not the FSDP root, so
  the root's own weights (embeddings, final norm, output layer) would stay split;
- checkpoints: a process holds a slice of the weights and of the optimizer state (under DeepSpeed, the
  trained weights' fp32 copy is the optimizer's; the module may hold a bf16 cast of it).

:func:`full_weights` gathers the whole model on every process for such a section (as TRL's colocated
generation does: sampling needs every weight on the process that samples), :func:`model_state` gathers the
weights to save, and :func:`optimizer_state` / :func:`load_optimizer_state` move the optimizer state as the
whole state in the layout one process writes (parameters numbered in the optimizer's order), so a
checkpoint holds the same files whether it was written sharded, under DDP or by one process.  FSDP goes
through ``torch.distributed.checkpoint``'s state-dict calls, DeepSpeed through its per-parameter accessors
(``deepspeed.utils.safe_get_full_*``).

Measured limits: FSDP2 (``fsdp_version: 2``) frees a layer's gathered weights after each call, so a layer
may run once per forward and the training passes take full rows there instead of sharing each prompt's
pass (:func:`paretoalign.models.shared_prompt_pass`); FSDP1 keeps them for the backward and shares.  What
does not run sharded yet is refused up front (:func:`refuse`).
"""

from __future__ import annotations

import contextlib

import torch

# The prefixes FSDP1 and activation checkpointing put into parameter names (the optimizer's checkpoint
# names parameters without them, as torch.distributed.checkpoint does).
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.")


def fsdp_version(accelerator) -> int | None:
    """1 or 2 under accelerate's FSDP, else None."""
    from accelerate.utils import DistributedType

    if getattr(accelerator, "distributed_type", None) != DistributedType.FSDP:
        return None
    return int(getattr(accelerator.state.fsdp_plugin, "fsdp_version", 1) or 1)


def zero_stage(accelerator) -> int | None:
    """The ZeRO stage (0-3) under accelerate's DeepSpeed, else None."""
    from accelerate.utils import DistributedType

    if getattr(accelerator, "distributed_type", None) != DistributedType.DEEPSPEED:
        return None
    return int(accelerator.state.deepspeed_plugin.zero_stage)


def _family(accelerator) -> str | None:
    return "FSDP" if fsdp_version(accelerator) is not None else "DeepSpeed" if zero_stage(accelerator) is not None \
        else None


def refuse(accelerator, what: str, why: str, families: tuple[str, ...] = ("FSDP", "DeepSpeed")) -> None:
    """One ``error:`` line, before any work, for a trainer (or option) that does not run sharded yet: under
    FSDP or DeepSpeed, or only those of ``families``."""
    family = _family(accelerator)
    if family is not None and family in families:
        from paretoalign.errors import ConfigError

        raise ConfigError(f"{what} does not run under {family} yet ({why}); launch it with DDP: "
                          "accelerate launch --config_file examples/accelerate/ddp.yaml ...")


def check_config(accelerator, cfg) -> None:
    """What a trainer's options cannot do sharded, refused up front: ``--generation-backend vllm`` (its engine is
    refreshed from whole weights on each process) and full fine-tuning under ZeRO-3, whose loaded model is already
    split when the trainer copies it as the frozen reference or loads a checkpoint into it (measured: the copy
    ran on empty weights)."""
    if getattr(cfg, "generation_backend", "hf") == "vllm":
        refuse(accelerator, "--generation-backend vllm", "its engine is refreshed from whole weights; sample with hf")
    if not getattr(cfg, "use_lora", True) and zero_stage(accelerator) == 3:
        from paretoalign.errors import ConfigError

        raise ConfigError("full fine-tuning (--use-lora false) does not run under DeepSpeed ZeRO-3 yet (the model is "
                          "split as it loads, before the frozen reference is copied and a checkpoint is loaded); "
                          "use LoRA, or ZeRO-2: accelerate launch --config_file examples/accelerate/deepspeed_zero2.yaml ...")


@contextlib.contextmanager
def full_weights(accelerator, model):
    """Every parameter of the prepared ``model`` whole on this process inside the block (a no-op unless
    FSDP).  Every process must enter it (the gather is collective).  Changes made inside are discarded:
    it is for reading (sampling, the reference pass, evaluation, saving).  The packed sampler's weight
    copies are dropped on leaving, because the gathered storage they point to is freed."""
    version, stage = fsdp_version(accelerator), zero_stage(accelerator)
    if version is None and stage is None:
        yield
        return
    try:
        if stage is not None:
            import deepspeed

            # ZeRO-3 splits the weights (gathered here); under ZeRO-1/2 they are whole, but DeepSpeed writes each
            # update into them through a flat buffer, which the packed sampler's refresh key may not see
            with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None) if stage == 3 \
                    else contextlib.nullcontext():
                yield
        elif version == 1:
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            with FSDP.summon_full_params(model, writeback=False, recurse=True):
                yield
        else:
            from torch.distributed.fsdp import FSDPModule

            units = [m for m in model.modules() if isinstance(m, FSDPModule)]
            # FSDP2 initialises its units from the root's first forward; a call into an inner module before
            # one would make that module the root.  (torch has no public call for this.)
            model._get_fsdp_state()._lazy_init()
            for unit in units:
                unit.unshard()
            try:
                yield
            finally:
                for unit in units:
                    unit.reshard()
    finally:
        from paretoalign import decoding

        decoding.forget_packed_weights()


def _gather_options():
    """torch.distributed.checkpoint's options for a whole state: on CUDA copied to the CPU (the main process
    keeps it, the others get an empty one); on a CPU every process keeps it, because there the "copy" to the
    CPU is no copy and tensors gathered one after another came back as views of one reused buffer (measured:
    Adam's two moments equal, and safetensors refusing the shared storage)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=torch.cuda.is_available())


def model_state(accelerator, model) -> dict | None:
    """The prepared ``model``'s whole state dict under FSDP or DeepSpeed, named as the unwrapped model names it,
    for the main process to save; None otherwise (save from the module itself).  Every process must call it."""
    if zero_stage(accelerator) is not None:
        return _deepspeed_model_state(accelerator, model)
    if fsdp_version(accelerator) is None:
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_gather_options())


def _deepspeed_model_state(accelerator, model) -> dict:
    """Under DeepSpeed: the trained weights from the optimizer's fp32 copy (what the module holds may be a
    bf16 cast of it), the frozen ones and buffers from the module (gathered under ZeRO-3)."""
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    inner = accelerator.unwrap_model(model)
    stage3 = zero_stage(accelerator) == 3
    out = {}
    for name, value in inner.state_dict(keep_vars=True).items():
        whole = safe_get_full_fp32_param(value) if getattr(value, "requires_grad", False) else None
        if whole is None:
            with deepspeed.zero.GatheredParameters([value], modifier_rank=None) if stage3 and \
                    isinstance(value, torch.nn.Parameter) else contextlib.nullcontext():
                whole = value.detach().clone()
        if accelerator.is_main_process:  # every process takes part in the gathers; the main one saves
            out[name] = whole.detach().cpu()
    return out


def part(state: dict | None, prefix: str) -> dict | None:
    """The entries of :func:`model_state`'s ``state`` under ``prefix`` (a submodule's), named from there."""
    if state is None:
        return None
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def save_pretrained(model, folder, state: dict | None, **kwargs) -> None:
    """``model.save_pretrained(folder, **kwargs)`` from ``state`` (:func:`model_state`'s, this model's part)
    when given.  A PEFT model's adapter file is then written from ``state`` here: PEFT picks a state's adapter
    entries by the model's module names, and FSDP1 puts ``_fsdp_wrapped_module`` inside them (each decoder layer
    is a unit), so PEFT found none (measured: an empty adapter file).  The names are PEFT's: the adapter's name
    dropped (``...q_proj.lora_A.default.weight`` -> ``...q_proj.lora_A.weight``); a test checks the file equals
    the one PEFT writes without FSDP."""
    if state is not None and not hasattr(model, "peft_config"):
        tied = _tied_output_key(model)  # saved once, as save_pretrained from the module does
        state = {k: v for k, v in state.items() if k != tied}
    model.save_pretrained(folder, state_dict=state, **kwargs)
    if state is None or not hasattr(model, "peft_config"):
        return
    from pathlib import Path

    from safetensors.torch import save_file

    adapter = "default"
    tensors = {}
    for key, value in state.items():
        parts = key.split(".")
        for i in range(1, len(parts)):
            if parts[i] == adapter and parts[i - 1].startswith("lora_"):
                tensors[".".join(parts[:i] + parts[i + 1:])] = value.detach().cpu().contiguous()
                break
    save_file(tensors, Path(folder) / "adapter_model.safetensors", metadata={"format": "pt"})


def _clean(name: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


def _tied_output_key(model) -> str | None:
    """The output layer's weight name when it is the input embedding's tensor (tied), else None."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    inp = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if out is None or inp is None or out.weight is not inp.weight:
        return None
    return next((_clean(name) + ".weight" for name, m in model.named_modules() if m is out), None)


def _names(model) -> dict[int, str]:
    """id(parameter) -> its name in ``model`` without the FSDP / checkpoint wrappers' prefixes."""
    return {id(p): _clean(name) for name, p in model.named_parameters()}


def _order(model, optimizer) -> list[str]:
    """The optimizer's parameters by name, in the order one process numbers them (group by group)."""
    names = _names(model)
    try:
        return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    except KeyError:  # pragma: no cover - an optimizer over parameters outside the model
        raise ValueError("the optimizer holds a parameter that is not the model's") from None


def optimizer_state(accelerator, model, optimizer) -> dict:
    """``optimizer.state_dict()`` as one process would have it: whole tensors, parameters numbered in the
    optimizer's order.  Sharded, every process must call it (a gather); the main process gets the state, the
    others an empty one."""
    if zero_stage(accelerator) is not None:
        return _deepspeed_optimizer_state(accelerator, model)
    if fsdp_version(accelerator) is None:
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    optimizer = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds torch's
    full = get_optimizer_state_dict(model, optimizer, options=_gather_options())
    if not accelerator.is_main_process:
        return {"state": {}, "param_groups": []}
    index = {name: i for i, name in enumerate(_order(model, optimizer))}
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in full["param_groups"]]
    return {"state": {index[n]: st for n, st in full["state"].items()}, "param_groups": groups}


def load_optimizer_state(accelerator, model, optimizer, state: dict) -> None:
    """Load ``state`` (:func:`optimizer_state`'s layout, read by every process) into the prepared
    ``optimizer``: whole tensors are split to this process's slices when sharded."""
    if zero_stage(accelerator) is not None:
        _load_deepspeed_optimizer_state(accelerator, model, state)
        return
    if fsdp_version(accelerator) is None:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    optimizer = getattr(optimizer, "optimizer", optimizer)
    order = _order(model, optimizer)
    if len(order) != sum(len(g["params"]) for g in state["param_groups"]):
        raise ValueError(f"the state has {sum(len(g['params']) for g in state['param_groups'])} parameters, "
                         f"the optimizer {len(order)}")
    named = {"state": {order[int(i)]: st for i, st in state["state"].items()},
             "param_groups": [{**g, "params": [order[int(i)] for i in g["params"]]} for g in state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, named, options=StateDictOptions(full_state_dict=True))
    for group, saved in zip(optimizer.param_groups, state["param_groups"]):  # hyper-parameters as saved (FSDP2
        group.update({k: v for k, v in saved.items() if k != "params"})  # handed betas back as a list)


# DeepSpeed's ZeRO optimizer runs torch's optimizer on flat slices of the trained weights; the whole state of
# each weight comes from DeepSpeed's public per-parameter accessors (deepspeed.utils.safe_*), and the trained
# weights are numbered as the trainers give them to the optimizer (the model's order, trained weights only).


def _deepspeed_trained(accelerator, model) -> list:
    return [(n, p) for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad]


def _deepspeed_inner(model):
    """(DeepSpeed's ZeRO optimizer, the torch optimizer it runs on the flat slices)."""
    zero = model.optimizer  # the DeepSpeedEngine's
    return zero, zero.optimizer


def _deepspeed_optimizer_state(accelerator, model) -> dict:
    from deepspeed.utils import safe_get_full_optimizer_state

    _zero, torch_opt = _deepspeed_inner(model)
    slices = [st for st in torch_opt.state.values() if "step" in st]
    trained = _deepspeed_trained(accelerator, model)
    state = {}
    for i, (_name, p) in enumerate(trained):
        shape = tuple(getattr(p, "ds_shape", p.shape))
        entry = {k: safe_get_full_optimizer_state(p, k) for k in ("exp_avg", "exp_avg_sq")}
        if any(v is None for v in entry.values()) or not slices or not accelerator.is_main_process:
            continue  # no state yet (no update has run); the main process saves
        state[i] = {"step": slices[0]["step"].detach().clone().cpu(),
                    **{k: v.detach().reshape(shape).cpu() for k, v in entry.items()}}
    groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": list(range(len(trained)))}
              for g in torch_opt.param_groups[:1]]
    return {"state": state, "param_groups": groups}


def _load_deepspeed_optimizer_state(accelerator, model, state: dict) -> None:
    from deepspeed.utils import safe_set_full_optimizer_state

    trained = _deepspeed_trained(accelerator, model)
    if len(trained) != sum(len(g["params"]) for g in state["param_groups"]):
        raise ValueError(f"the state has {sum(len(g['params']) for g in state['param_groups'])} parameters, "
                         f"the optimizer {len(trained)}")
    zero, torch_opt = _deepspeed_inner(model)
    # the flat fp32 slices torch's optimizer steps (ZeRO-3 hands them to it one at a time, so ask ZeRO first)
    flats = getattr(zero, "fp32_partitioned_groups_flat", None) or \
        [flat for group in torch_opt.param_groups for flat in group["params"]]
    missing = [flat for flat in flats if "exp_avg" not in torch_opt.state.get(flat, {})]
    if state["state"] and missing:
        # torch's AdamW makes its state at the first step, and ZeRO-1/2 link each weight to its slice of it only
        # after that step: make the (zero) state in AdamW's layout, then link, then write the saved values in
        for flat in missing:
            torch_opt.state[flat] = {"step": torch.zeros((), dtype=torch.float32),
                                     "exp_avg": torch.zeros_like(flat), "exp_avg_sq": torch.zeros_like(flat)}
        if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):
            zero._lazy_init_hp_params_optimizer_state()
    step = None
    for i, st in state["state"].items():
        _name, p = trained[int(i)]
        for k in ("exp_avg", "exp_avg_sq"):
            safe_set_full_optimizer_state(p, st[k].to(torch.float32).flatten(), k)
        step = st["step"]
    for flat in torch_opt.state.values():
        if step is not None and "step" in flat:
            flat["step"] = step.clone().to(flat["step"].device, flat["step"].dtype)
    saved = state["param_groups"][0] if state["param_groups"] else {}
    for group in torch_opt.param_groups:
        group.update({k: v for k, v in saved.items() if k != "params"})


def prepare(accelerator, model, optimizer, resuming: bool):
    """``accelerator.prepare(model, optimizer)`` (through :func:`paretoalign.trainers.checkpoint.prepare_training`);
    resuming under DeepSpeed, the trained weights loaded into
    ``model`` become the optimizer's fp32 copy (DeepSpeed would take it from the module, which it may first
    cast to bf16, and the run would not continue exactly)."""
    keep = None
    if resuming and zero_stage(accelerator) is not None:
        keep = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    model, optimizer = accelerator.prepare(model, optimizer)
    if keep is not None:
        from deepspeed.utils import safe_set_full_fp32_param

        for (_name, p), value in zip(_deepspeed_trained(accelerator, model), keep):
            safe_set_full_fp32_param(p, value.to(torch.float32))
    return model, optimizer


__all__ = ["fsdp_version", "zero_stage", "prepare", "refuse", "check_config", "full_weights", "model_state", "part", "save_pretrained", "optimizer_state", "load_optimizer_state"]
