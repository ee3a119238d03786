"""Rollouts: prompts -> chat-formatted tokens -> sampled completions -> masks and log-probabilities.

Shared by every online method (and by evaluation), so that methods differ only in how they
combine per-objective signals.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from paretoalign.data.prompts import Prompt, prompt_text
from paretoalign.decoding import packed_decoder
from paretoalign.errors import ConfigError

MAX_PROMPT_LENGTH = 256  # generate()'s default: longer rendered prompts are cut from the left
# How completions are sampled (``--generation-backend``): "hf" samples the in-process model with the packed
# decode loop of :mod:`paretoalign.decoding` where it covers the architecture and with transformers'
# ``generate`` elsewhere; "hf-generate" always uses ``generate`` (the slower path, kept for comparison);
# "vllm" samples with a colocated vLLM engine refreshed from the policy (:mod:`paretoalign.vllm_backend`, GPU).
BACKENDS = ("hf", "hf-generate", "vllm")


def check_backend(backend: str) -> None:
    """``backend`` is one of :data:`BACKENDS`, and vLLM is usable where it is asked for: else one
    :class:`ConfigError` line (the configs call this before any model loads)."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown generation backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "vllm":
        from paretoalign.vllm_backend import check_available

        check_available()


def count_overlong(prompts: list, tokenizer, use_chat_template: bool = True, limit: int = MAX_PROMPT_LENGTH) -> int:
    """How many ``prompts`` render to more than ``limit`` tokens (and so lose their start, system
    message first, to :func:`generate`'s left truncation)."""
    return sum(len(tokenizer(render_prompt(p, tokenizer, use_chat_template), add_special_tokens=False)["input_ids"]) > limit
               for p in prompts)


def render_prompt(prompt: Prompt, tokenizer, use_chat_template: bool = True, system_prompt: str | None = None) -> str:
    """The exact text fed to the model for ``prompt`` (chat template applied when available)."""
    if use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        if system_prompt and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": system_prompt}] + messages
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    text = prompt_text(prompt)
    # without a template, a conversation's own system message is kept (before the user's text), as
    # the template would keep it; else the system_prompt argument
    own = next((m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "system"), None) \
        if isinstance(prompt, (list, tuple)) else None
    system = own if own else system_prompt
    return f"{system}\n\n{text}" if system else text


@contextmanager
def lora_merged(model):
    """Run the block with every LoRA adapter merged into its base weight, then restore exactly.

    Sampling from a LoRA policy costs an extra pair of small matmuls per adapted layer per token
    (about 1.6x the base model's decoding time on SmolLM2 with 7 adapted projections, measured on
    2 CPU cores).  Merging first makes decoding as fast as the base model.  The base weights are
    copied before and written back after, so the reference model (the base with adapters
    disabled) never drifts by merge/unmerge rounding; the copy costs the adapted weights' memory.
    """
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        yield
        return
    layers = [m for m in model.modules() if isinstance(m, LoraLayer) and not m.merged and m.active_adapters]
    saved = [(m, m.get_base_layer().weight.detach().clone()) for m in layers]
    try:
        for m, _ in saved:
            m.merge()
        yield
    finally:
        with torch.no_grad():
            for m, w in saved:
                if m.merged:
                    m.unmerge()
                m.get_base_layer().weight.copy_(w)


@dataclass
class Rollout:
    """One batch of sampled completions.

    ``input_ids``/``attention_mask`` hold prompt + completion (prompts left-padded);
    ``completion_mask [N, T]`` marks completion tokens up to and including the first EOS.
    """

    prompts: list
    prompt_texts: list[str]
    completions: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    completion_mask: torch.Tensor
    prompt_length: int

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_length :]


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_token_id, pad_token_id) -> torch.Tensor:
    """1 for tokens up to and including the first EOS; 0 afterwards (generation pads after EOS)."""
    eos_ids = eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id]
    is_eos = torch.zeros_like(completion_ids, dtype=torch.bool)
    for e in eos_ids:
        if e is not None:
            is_eos |= completion_ids == e
    # position of first EOS (or T if none)
    T = completion_ids.shape[1]
    idx = torch.arange(T, device=completion_ids.device).expand_as(completion_ids)
    first = torch.where(is_eos, idx, torch.full_like(idx, T)).min(dim=1, keepdim=True).values
    return (idx <= first).long()


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list,
    num_generations: int = 1,
    max_new_tokens: int = 48,
    max_prompt_length: int = MAX_PROMPT_LENGTH,
    min_new_tokens: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    use_chat_template: bool = True,
    system_prompt: str | None = None,
    merge_lora: bool = True,
    backend: str = "hf",
) -> Rollout:
    """Sample ``num_generations`` completions for each prompt (grouped: prompt i owns rows i*G..i*G+G-1).

    ``backend`` (see :data:`BACKENDS`) chooses the sampling loop; both draw from the same
    distribution (the model's, after min-new-tokens, temperature and top-p, in ``generate``'s order)."""
    if backend not in BACKENDS:  # vLLM's availability was checked with the config
        check_backend(backend)
    texts = [render_prompt(p, tokenizer, use_chat_template, system_prompt) for p in prompts]
    texts = [t for t in texts for _ in range(num_generations)]
    tokenizer.padding_side = "left"
    truncation_side = tokenizer.truncation_side
    tokenizer.truncation_side = "left"
    enc = tokenizer(
        texts, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_length,
        add_special_tokens=False,
    )
    tokenizer.truncation_side = truncation_side
    device = next(model.parameters()).device
    enc = {k: v.to(device) for k, v in enc.items()}
    temperature = max(temperature, 1e-5)  # 0 means greedy-like sampling, never a division by zero
    decoder = packed_decoder(model) if backend == "hf" else None
    if backend == "vllm":
        from paretoalign import vllm_backend

        out = vllm_backend.generate_ids(model, tokenizer, enc, max_new_tokens, min_new_tokens, do_sample,
                                        temperature, top_p, tokenizer.eos_token_id, tokenizer.pad_token_id)
    elif decoder is not None:  # reads LoRA adapters itself: no merge, no copy of the base weights
        out = decoder.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens, tokenizer.eos_token_id,
                               tokenizer.pad_token_id, min_new_tokens=min_new_tokens, do_sample=do_sample,
                               temperature=temperature, top_p=top_p)
    else:
        out = _hf_generate(model, tokenizer, enc, max_new_tokens, min_new_tokens, do_sample, temperature, top_p,
                           merge_lora)
    return _rollout(tokenizer, prompts, num_generations, enc, out)


def _hf_generate(model, tokenizer, enc, max_new_tokens, min_new_tokens, do_sample, temperature, top_p, merge_lora):
    was_training = model.training
    model.eval()
    gen_kwargs = dict(
        max_new_tokens=max_new_tokens,
        min_new_tokens=min_new_tokens,
        do_sample=do_sample,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    with lora_merged(model) if merge_lora else nullcontext():
        out = model.generate(**enc, **gen_kwargs)
    if was_training:
        model.train()
    return out


def _rollout(tokenizer, prompts, num_generations, enc, out) -> Rollout:
    repeated = [p for p in prompts for _ in range(num_generations)]
    P = enc["input_ids"].shape[1]
    completion_ids = out[:, P:]
    if completion_ids.shape[1] == 0:  # max_new_tokens produced nothing; keep shapes valid
        completion_ids = torch.full((out.shape[0], 1), tokenizer.eos_token_id, device=out.device)
        out = torch.cat([out, completion_ids], dim=1)
    cmask = completion_mask_from_ids(completion_ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
    attention = torch.cat([enc["attention_mask"], cmask], dim=1)
    completions = tokenizer.batch_decode(completion_ids * cmask + tokenizer.pad_token_id * (1 - cmask),
                                         skip_special_tokens=True)
    return Rollout(
        prompts=repeated,
        prompt_texts=[prompt_text(p) for p in repeated],
        completions=[c.strip() for c in completions],
        input_ids=out,
        attention_mask=attention,
        completion_mask=cmask,
        prompt_length=P,
    )


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities ``[N, T]`` of ``targets [N, T]`` under ``logits [N, T, V]`` (aligned: logits[t] predicts targets[t]).

    Dividing by the sampling temperature keeps the ratio consistent with how the tokens were drawn.
    Computed by :class:`_TargetLogProb`: the [N, T, V] logits are the largest tensor of a step, and
    autograd's ``gather - logsumexp`` walks them six times; the fused version works through them a
    few rows at a time, so each block stays in the cache for all of its passes, allocates nothing
    of their size forward, and allocates only the gradient backward (SmolLM2, 32 x 48 positions:
    logsumexp 132 -> ~50 ms, the backward's softmax 110 -> ~45 ms on 2 cores).
    """
    return _TargetLogProb.apply(logits, targets, float(temperature))


def _block_rows(vocab: int) -> int:
    """Rows of [*, vocab] float32 per block: about 2 MB, a core's L2 cache on the machines measured."""
    return max(1, (2 << 20) // (4 * vocab))


def _scaled_blocks(flat: torch.Tensor, temperature: float):
    """``(rows, flat[rows] / temperature in at least float32)`` over ``flat [M, V]``, a cache-sized block of
    rows at a time on a CPU, all rows at once on an accelerator (one kernel call each)."""
    step = _block_rows(flat.shape[-1]) if flat.device.type == "cpu" else max(1, flat.shape[0])
    for i in range(0, flat.shape[0], step):
        rows = slice(i, i + step)
        block = _at_least_float32(flat[rows])
        yield rows, (block if temperature == 1.0 else block / temperature)


class _TargetLogProb(torch.autograd.Function):
    """y = l[target]/τ − logsumexp(l/τ); ∂y/∂l = (onehot(target) − softmax(l/τ)) / τ = (onehot − exp(l/τ − lse)) / τ."""

    @staticmethod
    def forward(ctx, logits, targets, temperature):
        flat = logits.reshape(-1, logits.shape[-1])
        lse = torch.empty(flat.shape[0], dtype=torch.promote_types(logits.dtype, torch.float32), device=logits.device)
        for rows, block in _scaled_blocks(flat, temperature):
            lse[rows] = torch.logsumexp(block, dim=-1)
        picked = _at_least_float32(torch.gather(logits, 2, targets.unsqueeze(-1)).squeeze(-1))
        picked = picked if temperature == 1.0 else picked / temperature
        ctx.save_for_backward(logits, targets, lse)
        ctx.temperature = temperature
        return picked - lse.view(picked.shape)

    @staticmethod
    def backward(ctx, grad):
        logits, targets, lse = ctx.saved_tensors
        t = ctx.temperature
        flat = logits.reshape(-1, logits.shape[-1])
        g = (grad.to(lse.dtype) / t).reshape(-1, 1)
        out = torch.empty(flat.shape, dtype=logits.dtype, device=logits.device)
        for rows, block in _scaled_blocks(flat, t):
            dst = out[rows]
            if dst.dtype == lse.dtype:  # float32/64 logits: written in place, no block-sized temporary
                torch.sub(block, lse[rows, None], out=dst).exp_().mul_(-g[rows])  # -g·softmax(l/τ)
            else:
                dst.copy_((block - lse[rows, None]).exp_().mul_(-g[rows]))
        out.scatter_add_(1, targets.reshape(-1, 1), g.to(out.dtype))
        return out.view(logits.shape), None, None


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()
