"""What FSDP changes in a trainer: whole weights where a trainer reads them outside a forward, and whole
optimizer state in checkpoints.

Under accelerate's FSDP (``examples/accelerate/fsdp.yaml``: FSDP1 or FSDP2) each decoder layer's weights,
gradients and Adam moments are split over the processes, and a layer gathers its weights only inside its
own forward and backward.  A trainer reads weights outside that in three places:

- sampling: the packed sampler (:mod:`paretoalign.decoding`) reads every layer's weights directly;
- the adapter-disabled reference pass and held-out evaluation call the inner model, not the FSDP root, so
  the root's own weights (embeddings, final norm, output layer) would stay split;
- checkpoints: a process holds a slice of the weights and of the optimizer state.

:func:`full_weights` gathers the whole model on every process for such a section (as TRL's colocated
generation does: sampling needs every weight on the process that samples), and :func:`optimizer_state` /
:func:`load_optimizer_state` move the optimizer state as the whole state in the layout one process writes
(parameters numbered in the optimizer's order), so a checkpoint holds the same files whether it was
written under FSDP, DDP or one process.

Two measured limits: FSDP2 (``fsdp_version: 2``) frees a layer's gathered weights after each call, so a
layer may run once per forward and the training passes take full rows there instead of sharing each
prompt's pass (:func:`paretoalign.models.shared_prompt_pass`); FSDP1 keeps them for the backward and shares.
DeepSpeed stays refused (:func:`paretoalign.trainers.adaptation.refuse_sharded`).
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


def refuse(accelerator, what: str, why: str) -> None:
    """One ``error:`` line, before any work, for a trainer (or option) that does not run under FSDP yet."""
    if fsdp_version(accelerator) is not None:
        from paretoalign.errors import ConfigError

        raise ConfigError(f"{what} does not run under FSDP yet ({why}); launch it with DDP: "
                          "accelerate launch --config_file examples/accelerate/ddp.yaml ...")


def check_generation_backend(accelerator, backend: str) -> None:
    """``--generation-backend vllm`` refreshes its engine from whole weights on each process: not under FSDP."""
    if backend == "vllm":
        refuse(accelerator, "--generation-backend vllm", "its engine is refreshed from whole weights; sample with hf")


@contextlib.contextmanager
def full_weights(accelerator, model):
    """Every parameter of the prepared ``model`` whole on this process inside the block (a no-op unless
    FSDP).  Every process must enter it (the gather is collective).  Changes made inside are discarded:
    it is for reading (sampling, the reference pass, evaluation, saving).  The packed sampler's weight
    copies are dropped on leaving, because the gathered storage they point to is freed."""
    version = fsdp_version(accelerator)
    if version is None:
        yield
        return
    try:
        if version == 1:
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
    """The prepared ``model``'s whole state dict under FSDP, named as the unwrapped model names it, for the
    main process to save; None otherwise (save from the module itself).  Every process must call it."""
    if fsdp_version(accelerator) is None:
        return None
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_gather_options())


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
    optimizer's order.  Under FSDP every process must call it (a gather); the main process gets the state,
    the others an empty one."""
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
    ``optimizer``: whole tensors are split to this process's slices under FSDP."""
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


__all__ = ["fsdp_version", "refuse", "check_generation_backend", "full_weights", "model_state", "part", "save_pretrained", "optimizer_state", "load_optimizer_state"]
