"""A lean sampling loop for Llama-family models: the same distribution as ``model.generate``, faster.

Why it exists: on a CPU, ``transformers``' ``generate`` spends most of a decode step outside the
matmuls (per-layer cache objects, mask building, logits processors, ``F.linear`` on weights laid
out for training), so a step costs nearly the same at 8 rows as at 64.  This loop keeps the
model's own weights, merged with any active LoRA adapters, packed once per update in the layout
small-row matmuls want (``x @ W`` with ``W`` contiguous ``[in, out]``, q/k/v fused, gate/up fused;
on a CPU with MKL, ``[out, in]`` plus MKL's prepacked copy for the decode steps' row count),
a preallocated KV cache, and one boolean mask per step.  ``bench/rollout.py`` measures it against
``generate`` side by side.

What is computed is the model's forward exactly as ``LlamaForCausalLM`` defines it (RMSNorm in
float32, rotary embedding from the model's own ``rotary_emb``, grouped-query attention, SiLU MLP);
sampling repeats ``generate``'s processors in its order (min-new-tokens EOS ban, temperature,
top-p) and its stopping rule (rows pad after their EOS; the loop ends when every row has ended).
The test suite checks the per-step log-probabilities against the model's own forward pass and
greedy outputs against ``generate`` token for token.

Packing reads LoRA adapters without touching the model: the effective weight ``W + ΔW`` is written
into the packed copy, so the model's base weights are never merged, copied or restored; a packed
block is rebuilt only when one of its source tensors changed (``Tensor._version``).  Architectures
this does not cover (anything that is not a plain Llama/Mistral/Qwen2 decoder, DoRA adapters,
sliding windows, generation settings beyond these processors) return ``None`` from
:func:`packed_decoder`, and the caller falls back to ``generate``.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from paretoalign.models import prompt_groups

_HAS_RMS_NORM = hasattr(F, "rms_norm")
MODEL_TYPES = ("llama", "mistral", "qwen2")
# generation_config fields whose non-default values this loop does not reproduce
_UNSUPPORTED_GENERATION = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "bad_words_ids": None,
                           "encoder_repetition_penalty": 1.0, "sequence_bias": None, "suppress_tokens": None,
                           "begin_suppress_tokens": None, "forced_bos_token_id": None, "forced_eos_token_id": None,
                           "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None}


def _linear_parts(module) -> tuple[list[torch.Tensor], callable] | None:
    """(source tensors, builder of the effective ``(weight [out, in], bias)``) for a Linear or a LoRA-wrapped Linear.

    The builder takes an optional ``out`` (a ``[out, in]`` tensor the weight is written into); without
    one it returns the module's own weight where there is nothing to add (``build.adds`` is False;
    never write into that)."""
    if isinstance(module, torch.nn.Linear):
        def plain(out=None):
            return (module.weight if out is None else out.copy_(module.weight)), module.bias

        plain.adds = False
        return [module.weight] + ([module.bias] if module.bias is not None else []), plain
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return None
    if not isinstance(module, LoraLayer):
        return None
    base = module.get_base_layer()
    if not isinstance(base, torch.nn.Linear):
        return None
    adapters = [] if (module.disable_adapters or module.merged) else \
        [a for a in module.active_adapters if a in module.lora_A]
    for a in adapters:
        if module.use_dora.get(a, False) or getattr(module, "lora_bias", {}).get(a, False):
            return None
    sources = [base.weight] + ([base.bias] if base.bias is not None else [])
    for a in adapters:
        sources += [module.lora_A[a].weight, module.lora_B[a].weight]

    def build(out=None):
        w = base.weight
        if not adapters:
            return (w if out is None else out.copy_(w)), base.bias
        for a in adapters:
            w = torch.add(w, module.get_delta_weight(a).to(w.dtype), out=out)
        return w, base.bias

    build.adds = bool(adapters)
    return sources, build


def _mkl_packing_available() -> bool:
    """torch built with MKL and its packed-sgemm ops (x86 builds; not ARM's, nor CUDA-only ones)."""
    return bool(getattr(torch._C, "has_mkl", False)) and hasattr(torch.ops.mkl, "_mkl_linear") \
        and hasattr(torch.ops.mkl, "_mkl_reorder_linear_weight")


class _Block:
    """One packed matmul: ``x @ weight_t + bias`` from one or more (fused) linear layers.

    On a CPU with MKL (float32), :meth:`pack` also keeps MKL's prepacked copy of the weight for the
    decode steps' row count (``torch.ops.mkl._mkl_linear``, what inductor's freezing pass uses): at
    32 rows it runs SmolLM2's output layer ([32, 576] x [576, 49152]) in 10 ms instead of 14 ms and
    the MLP's matmuls 20-30 % faster.  The packed format is tied to one row count; other row counts
    (the prefill) take the plain matmul.  There the weight is kept ``[out, in]`` (MKL packs that 7x
    faster than a transposed view; a block with nothing to fuse or add is the model's own tensor,
    uncopied) and the fused weight is written into one reused buffer: after a LoRA update, refresh
    plus packing cost about 0.2 s per call on SmolLM2 where building ``[in, out]`` cost 0.4 s.
    Elsewhere (CUDA) the layout is ``[in, out]`` contiguous, as small-row matmuls want."""

    def __init__(self, parts):
        self.parts = parts
        self.key = None
        self.weight_t = None  # [in, out]: a transposed view of ``weight`` in the MKL layout
        self.weight = None  # [out, in]
        self.bias = None
        self.packed = None  # (rows, MKL-packed weight) for the current weights, or None
        self._buffer = None  # this block's own fused-weight tensor (MKL layout), reused across refreshes

    def refresh(self) -> None:
        key = tuple((t.data_ptr(), t._version) for sources, _ in self.parts for t in sources)
        if key == self.key:
            return
        with torch.no_grad():
            self._rebuild()
        self.packed = None
        self.key = key

    def _rebuild(self) -> None:
        first = self.parts[0][0][0]  # the first module's base weight
        if _mkl_layout(first):
            if len(self.parts) == 1 and not self.parts[0][1].adds:  # nothing to add: the model's own weight
                w, bias = self.parts[0][1]()
                w, biases, rows = w.detach(), [bias], [w.shape[0]]
            else:
                rows = [sources[0].shape[0] for sources, _ in self.parts]
                buf = self._buffer
                if buf is None or buf.shape != (sum(rows), first.shape[1]) or buf.dtype != first.dtype:
                    buf = self._buffer = torch.empty(sum(rows), first.shape[1], dtype=first.dtype, device=first.device)
                biases = [build(out=part)[1] for (_, build), part in zip(self.parts, buf.split(rows, 0))]
                w = buf
            self.weight, self.weight_t = w.contiguous(), w.t()
        else:
            weights, biases = zip(*(build() for _, build in self.parts))
            rows = [x.shape[0] for x in weights]
            w = torch.cat([x.detach() for x in weights], dim=0) if len(weights) > 1 else weights[0].detach()
            self.weight_t = w.t().contiguous()
            self.weight = self.weight_t.t()
        if any(b is not None for b in biases):
            self.bias = torch.cat([(b.detach() if b is not None else self.weight.new_zeros(r))
                                   for b, r in zip(biases, rows)])
        else:
            self.bias = None

    def pack(self, rows: int | None) -> None:
        """Prepack the weight for ``rows``-row inputs (float32 on a CPU with MKL); ``None`` drops the
        packed copy."""
        if self.packed is not None and self.packed[0] == rows:
            return
        self.packed = None
        if rows is not None and _mkl_layout(self.weight):
            try:
                self.packed = (rows, torch.ops.mkl._mkl_reorder_linear_weight(self.weight, rows))
            except RuntimeError:  # pragma: no cover - an MKL build without packed sgemm: the plain matmul
                self.packed = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None and x.shape[0] == self.packed[0]:
            return torch.ops.mkl._mkl_linear(x, self.packed[1], self.weight, self.bias, self.packed[0])
        if self.bias is not None:
            return torch.addmm(self.bias, x, self.weight_t)
        return x @ self.weight_t


def _mkl_layout(w: torch.Tensor) -> bool:
    """Whether ``w``'s block takes the MKL-packed path: float32 on a CPU whose torch has MKL."""
    return w.device.type == "cpu" and w.dtype == torch.float32 and _mkl_packing_available()


def _inner(model):
    """The ``LlamaForCausalLM``-like module inside PEFT, DDP or value-head wrappers (found by its own
    children, not by attribute forwarding, which PEFT and DDP do)."""
    for m in model.modules():
        kids = m._modules
        if "lm_head" in kids and "model" in kids and "layers" in kids["model"]._modules and hasattr(m, "config"):
            return m
    return None


def _support_problem(lm) -> str | None:
    cfg = lm.config
    if getattr(cfg, "model_type", None) not in MODEL_TYPES:
        return f"model type {getattr(cfg, 'model_type', None)!r}"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act!r}"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True) and cfg.model_type != "llama":
        return "a sliding attention window"
    if getattr(cfg, "pretraining_tp", 1) != 1:
        return "pretraining_tp > 1"
    gc = getattr(lm, "generation_config", None)
    for name, default in _UNSUPPORTED_GENERATION.items():
        value = getattr(gc, name, default) if gc is not None else default
        if value not in (default, None) and not (isinstance(value, (list, tuple)) and not value):
            return f"generation_config.{name}={value!r}"
    embed = lm.model.embed_tokens
    if not isinstance(embed, torch.nn.Embedding):
        return "an adapted embedding"
    for layer in lm.model.layers:
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is None or mlp is None or any(hasattr(attn, n) for n in ("q_norm", "k_norm")):
            return "a decoder layer of another shape"
        for m in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj):
            if _linear_parts(m) is None:
                return f"a {type(m).__name__} projection"
    if _linear_parts(lm.lm_head) is None:
        return f"a {type(lm.lm_head).__name__} output layer"
    return None


class PackedDecoder:
    """Sampling from a Llama-family causal LM with packed weights and a static KV cache.

    ``block`` builds one packed matmul from the linear modules it fuses (default: :class:`_Block`, the
    model's effective weights ``W + ΔW``); :mod:`paretoalign.mod` passes a block that runs K adapters'
    rows in one call, and reuses :meth:`_forward` as it is."""

    def __init__(self, lm, block=None):
        block = block or (lambda modules: _Block([_linear_parts(m) for m in modules]))
        cfg = lm.config
        # no reference to ``lm`` itself: _DECODERS holds decoders weakly keyed by their model, and a value that
        # held its key would keep every model that ever sampled alive (measured: 1.8 GB per SmolLM2 trainer)
        self.embed = lm.model.embed_tokens
        self.rotary = lm.model.rotary_emb
        self.final_norm = lm.model.norm
        self.num_heads = cfg.num_attention_heads
        self.num_kv = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.layers = []
        for layer in lm.model.layers:
            a, m = layer.self_attn, layer.mlp
            self.layers.append(dict(
                norm_in=layer.input_layernorm, norm_post=layer.post_attention_layernorm,
                qkv=block([a.q_proj, a.k_proj, a.v_proj]),
                o=block([a.o_proj]),
                gate_up=block([m.gate_proj, m.up_proj]),
                down=block([m.down_proj]),
            ))
        self.head = block([lm.lm_head])
        self.scale = 1.0 / self.head_dim ** 0.5

    # prepack the decode steps' weights for MKL on a CPU (see _Block); False: plain matmuls everywhere
    mkl_pack = True

    def _blocks(self):
        for layer in self.layers:
            for name in ("qkv", "o", "gate_up", "down"):
                yield layer[name]
        yield self.head

    def refresh(self) -> None:
        for b in self._blocks():
            b.refresh()

    def pack(self, rows: int) -> None:
        """Prepare the blocks for ``rows``-row decode steps (MKL prepacking on a CPU; nothing elsewhere)."""
        for b in self._blocks():
            if hasattr(b, "pack"):
                b.pack(rows if self.mkl_pack else None)

    @staticmethod
    def _norm(module, x):
        # LlamaRMSNorm (Qwen2/Mistral share it): float32 statistics, weight times the input dtype
        if x.dtype == torch.float32 and module.weight.dtype == torch.float32 and _HAS_RMS_NORM:
            # the same float32 arithmetic (bit-equal on SmolLM2-sized rows; the tests compare it with the
            # model's forward), somewhat cheaper per call: 17-23 us against 25-30 us at [32, 1, 576]
            return F.rms_norm(x, (x.shape[-1],), module.weight, module.variance_epsilon)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)
        return module.weight * xf.to(x.dtype)

    def _forward(self, ids, positions, key_mask, caches, start: int, slot: torch.Tensor | None = None):
        """Hidden states for ``ids [N, L]`` at cache slots ``start..start+L-1``; fills the caches.

        With ``slot`` (a one-element tensor; ``L == 1``), the step's shapes do not depend on the position, so
        a CUDA graph can replay it: the key/value go in at index ``slot`` and attention reads the whole cache
        under ``key_mask`` (slots not yet written are masked out, and hold zeros, never NaN)."""
        N, L = ids.shape
        Hq, Hk, d = self.num_heads, self.num_kv, self.head_dim
        h = self.embed(ids)
        cos, sin = self.rotary(h, positions)
        # rotary as x*cos + roll(x, d/2)*sin' with sin' = [-sin_1, sin_2] (= rotate_half(x)*sin), applied to
        # q and k in one go: three ops per layer instead of ten
        half = d // 2
        cos, sin = cos.unsqueeze(1), torch.cat([-sin[..., :half], sin[..., half:]], -1).unsqueeze(1)  # [N, 1, L, d]
        end = start + L if slot is None else key_mask.shape[1]
        if L == 1:
            mask = key_mask[:, None, None, :end]
        else:  # prefill: causal within the prompt, padding keys hidden, a padded query sees itself
            causal = torch.ones(L, L, dtype=torch.bool, device=ids.device).tril()
            mask = causal[None] & key_mask[:, None, start:end]
            mask = (mask | torch.eye(L, dtype=torch.bool, device=ids.device)[None]).unsqueeze(1)
        for layer, (k_cache, v_cache) in zip(self.layers, caches):
            x = self._norm(layer["norm_in"], h).reshape(N * L, -1)
            qkv = layer["qkv"](x).view(N, L, Hq + 2 * Hk, d).transpose(1, 2)
            qk, v = qkv[:, :Hq + Hk], qkv[:, Hq + Hk:]
            q, k = torch.addcmul(qk * cos, qk.roll(half, -1), sin).split([Hq, Hk], dim=1)
            if slot is None:
                k_cache[:, :, start:end] = k
                v_cache[:, :, start:end] = v
            else:
                k_cache.index_copy_(2, slot, k)
                v_cache.index_copy_(2, slot, v)
            attn = F.scaled_dot_product_attention(q, k_cache[:, :, :end], v_cache[:, :, :end], attn_mask=mask,
                                                  scale=self.scale, enable_gqa=Hq != Hk)
            h = h + layer["o"](attn.transpose(1, 2).reshape(N * L, Hq * d)).view(N, L, -1)
            x = self._norm(layer["norm_post"], h).reshape(N * L, -1)
            gate, up = layer["gate_up"](x).chunk(2, dim=-1)
            h += layer["down"](F.silu(gate).mul_(up)).view(N, L, -1)  # h is this forward's own tensor here
        return h

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 eos_token_id, pad_token_id: int, min_new_tokens: int = 0, do_sample: bool = True,
                 temperature: float = 1.0, top_p: float = 1.0, return_logprobs: bool = False, step: str = "auto"):
        """Prompt + completion ids ``[N, P + T]`` as ``model.generate`` returns them (``T <= max_new_tokens``);
        with ``return_logprobs``, also the log-probability ``[N, T]`` of each sampled token under the
        processed distribution it was drawn from.

        ``step`` picks how a decode step runs: ``sliced`` (attention over the cache filled so far), ``static``
        (fixed shapes: the whole cache, masked), ``graph`` (``static`` captured once as a CUDA graph and
        replayed per token: on a GPU a step of a small model is hundreds of kernel launches, and the graph
        replays them without Python), ``auto`` (``graph`` on CUDA outside autocast unless
        ``PARETOALIGN_CUDA_GRAPHS=0``, else ``sliced``)."""
        self.refresh()
        N, P = input_ids.shape
        self.pack(N)
        device = input_ids.device
        dtype = self.head.weight_t.dtype
        if step == "auto":
            # dynamic RoPE variants recompute frequencies from the positions seen (a host sync): not capturable
            dynamic_rope = "dynamic" in str(getattr(self.rotary, "rope_type", "")) or \
                getattr(self.rotary, "rope_type", "") == "longrope"
            step = "graph" if _graphs_usable(device) and not dynamic_rope else "sliced"
        if step not in ("sliced", "static", "graph"):
            raise ValueError(f"step must be auto, sliced, static or graph, not {step!r}")
        new_cache = torch.empty if step == "sliced" else torch.zeros  # masked slots must not hold NaN
        eos = torch.tensor(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id], device=device)
        S = P + max_new_tokens
        # rows that repeat a prompt (num_generations copies) share one prefill: its cache is copied
        groups = prompt_groups(input_ids, attention_mask, P)
        first, inverse = groups if groups is not None else (None, None)
        u_ids, u_mask = (input_ids, attention_mask.bool()) if first is None else \
            (input_ids[first], attention_mask[first].bool())
        U = u_ids.shape[0]
        caches = [(new_cache(U, self.num_kv, S, self.head_dim, dtype=dtype, device=device),
                   new_cache(U, self.num_kv, S, self.head_dim, dtype=dtype, device=device)) for _ in self.layers]
        u_key_mask = torch.zeros(U, S, dtype=torch.bool, device=device)
        u_key_mask[:, :P] = u_mask
        u_positions = (u_mask.long().cumsum(-1) - 1).clamp(min=0)
        h = self._forward(u_ids, u_positions, u_key_mask, caches, 0)[:, -1]
        key_mask, next_pos = u_key_mask, u_positions[:, -1:] + 1
        if inverse is not None:  # one prefill per distinct prompt: back to one row per completion
            caches = [(k.index_select(0, inverse), v.index_select(0, inverse)) for k, v in caches]
            h, key_mask, next_pos = h.index_select(0, inverse), key_mask.index_select(0, inverse), \
                next_pos.index_select(0, inverse)
        tokens, logps = [], []
        unfinished = torch.ones(N, dtype=torch.bool, device=device)
        fixed = None if step == "sliced" else _FixedStep(self, key_mask, caches, capture=step == "graph")
        logits = self.head(self._norm(self.final_norm, h)).float()
        for t in range(max_new_tokens):
            nxt, logp = next_token(logits, t, min_new_tokens, eos, do_sample, temperature, top_p, return_logprobs)
            if return_logprobs:
                logps.append(logp)
            nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_token_id))
            tokens.append(nxt)
            unfinished &= ~torch.isin(nxt, eos)
            if not unfinished.any() or t == max_new_tokens - 1:
                break
            key_mask[:, P + t] = True
            if fixed is None:
                h = self._forward(nxt[:, None], next_pos, key_mask, caches, P + t)[:, -1]
                logits = self.head(self._norm(self.final_norm, h)).float()
            else:
                logits = fixed(nxt[:, None], next_pos, P + t)
            next_pos = next_pos + 1
        out = torch.cat([input_ids, torch.stack(tokens, 1)], dim=1) if tokens else input_ids
        if return_logprobs:
            return out, (torch.stack(logps, 1) if logps else input_ids.new_zeros((N, 0), dtype=torch.float32))
        return out


def _graphs_usable(device: torch.device) -> bool:
    import os

    return (device.type == "cuda" and os.environ.get("PARETOALIGN_CUDA_GRAPHS", "1") != "0"
            and not torch.is_autocast_enabled("cuda"))


class _FixedStep:
    """One decode step with fixed shapes (``PackedDecoder._forward`` with a ``slot``, then the output layer),
    reading its inputs from static buffers; with ``capture``, recorded once as a CUDA graph and replayed."""

    def __init__(self, dec: PackedDecoder, key_mask: torch.Tensor, caches: list, capture: bool):
        N, device = key_mask.shape[0], key_mask.device
        self.dec, self.key_mask, self.caches, self.capture = dec, key_mask, caches, capture
        self.ids = torch.zeros(N, 1, dtype=torch.long, device=device)
        self.pos = torch.zeros(N, 1, dtype=torch.long, device=device)
        self.slot = torch.zeros(1, dtype=torch.long, device=device)
        self.graph = self.logits = None

    def _run(self) -> torch.Tensor:
        d = self.dec
        h = d._forward(self.ids, self.pos, self.key_mask, self.caches, 0, slot=self.slot)[:, -1]
        return d.head(d._norm(d.final_norm, h)).float()

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, slot: int) -> torch.Tensor:
        """Logits ``[N, V]`` for the next token; the returned tensor is overwritten by the next call."""
        self.ids.copy_(ids)
        self.pos.copy_(positions)
        self.slot.fill_(slot)
        if not self.capture:
            return self._run()
        if self.graph is None:
            # Warm up on a side stream first (cuBLAS handles, allocator), as capture requires.  It runs this very
            # step, writing the same cache slot the replay below writes again.
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._run()
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.logits = self._run()
        self.graph.replay()
        return self.logits


def next_token(logits: torch.Tensor, t: int, min_new_tokens: int, eos: torch.Tensor, do_sample: bool,
               temperature: float, top_p: float, return_logprobs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One decoding step's choice from ``logits [N, V]`` (float32; changed in place): EOS banned before
    ``min_new_tokens``, then temperature and top-p (``generate``'s order), then a draw or the argmax.  Also
    the chosen token's log-probability under that processed distribution when ``return_logprobs``."""
    if t < min_new_tokens:
        logits[:, eos] = -float("inf")
    if do_sample:
        if temperature != 1.0:
            logits = logits / temperature
        if top_p < 1.0:
            logits = _top_p(logits, top_p)
        nxt = sample_categorical(logits.softmax(-1))
    else:
        nxt = logits.argmax(-1)
    logp = torch.gather(logits.log_softmax(-1), 1, nxt[:, None]).squeeze(1) if return_logprobs else None
    return nxt, logp


def sample_categorical(probs: torch.Tensor, generator: torch.Generator | None = None,
                       block: int = 256) -> torch.Tensor:
    """One index per row of ``probs [N, V]``, drawn with probability ``probs[i, j] / sum_j probs[i, j]``.

    Inverse-CDF sampling: one uniform per row against the row's cumulative sum (float64).  It draws
    from the same distribution as ``torch.multinomial(probs, 1)``, which on a CPU draws an
    exponential variate per vocabulary entry (70 ms per step at 64 rows x 49k tokens, a quarter of
    a decode step).  The cumulative sum is taken in two levels: float64 sums of ``block``-entry
    blocks (one vectorised pass), their cumulative sum, then the cumulative sum of the one block the
    uniform falls in.  A full-row float64 ``cumsum`` is a sequential scan: with the softmax, 7.6 ms
    per step at 32 rows x 49k against 4.4 ms for this (side by side), the same float64 inverse CDF
    up to the order of its float64 additions.
    Zero-probability entries are never drawn: at each level the index found is the first whose
    cumulative sum exceeds the uniform (kept below the total), a step up of the sum."""
    N, V = probs.shape
    u = torch.rand(N, 1, dtype=torch.float64, device=probs.device, generator=generator)
    if V <= block:
        cdf = probs.cumsum(-1, dtype=torch.float64)
        u = _below(u * cdf[:, -1:], cdf[:, -1:])
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=V - 1)
    nb = -(-V // block)
    p = (probs if nb * block == V else F.pad(probs, (0, nb * block - V))).view(N, nb, block)
    cdf = p.sum(-1, dtype=torch.float64).cumsum(-1)  # [N, nb]
    u = _below(u * cdf[:, -1:], cdf[:, -1:])
    b = torch.searchsorted(cdf, u, right=True).clamp_(max=nb - 1)  # [N, 1]: a block of positive mass
    r = u - torch.where(b > 0, cdf.gather(1, (b - 1).clamp(min=0)), torch.zeros_like(u))
    inner = p[torch.arange(N, device=probs.device), b.squeeze(1)].cumsum(-1, dtype=torch.float64)  # [N, block]
    j = torch.searchsorted(inner, _below(r, inner[:, -1:]), right=True).clamp_(max=block - 1)
    return (b * block + j).squeeze(1)


def _below(u: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """``u`` kept strictly below ``total`` (positive): rounding may not push a draw past the last step."""
    return torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """transformers' TopPLogitsWarper (min_tokens_to_keep=1): drop the low tail holding 1 - top_p of the mass."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=False)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    remove_sorted = cum <= (1 - top_p)
    remove_sorted[..., -1:] = False
    remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, -float("inf"))


_DECODERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def forget_packed_weights() -> None:
    """Drop every model's :class:`PackedDecoder` (its packed copies and views of the weights): for weights
    whose storage is about to be freed or reused, as FSDP's gathered weights are (a refresh keys on the
    storage's address and version, which a reused buffer can repeat)."""
    _DECODERS.clear()


def packed_decoder(model) -> PackedDecoder | None:
    """The model's :class:`PackedDecoder` (built once, refreshed per call), or ``None`` where the
    architecture or generation settings are not covered (the caller then uses ``generate``)."""
    lm = _inner(model)
    if lm is None or _support_problem(lm) is not None:
        return None
    signature = _signature(lm)
    dec = _DECODERS.get(lm)
    if dec is None or dec.signature != signature:  # adapters added, merged, switched or disabled
        dec = PackedDecoder(lm)
        dec.signature = signature
        _DECODERS[lm] = dec
    return dec


def _signature(lm) -> tuple:
    """What the packed blocks' structure depends on: the modules and their adapters' state."""
    out = []
    for m in lm.modules():
        if hasattr(m, "active_adapters") and hasattr(m, "lora_A"):
            out.append((id(m), tuple(m.active_adapters), bool(m.merged), bool(m.disable_adapters),
                        tuple(m.lora_A.keys())))
    return (id(lm.lm_head), len(lm.model.layers), tuple(out))


def unsupported_reason(model) -> str | None:
    """Why :func:`packed_decoder` declines ``model`` (``None`` when it does not)."""
    lm = _inner(model)
    return "not a Llama-style causal LM" if lm is None else _support_problem(lm)


# MOD (multi-objective decoding) lives in paretoalign.mod and is importable from here, resolved on first
# use (PEP 562) so that the two modules can import each other's names without an import cycle.
_MOD_EXPORTS = ("MultiObjectiveDecoder", "combine_logprobs", "mod_scores", "parse_divergence", "Endpoint",
                "resolve_endpoint")


def __getattr__(name: str):
    if name in _MOD_EXPORTS:
        from paretoalign import mod

        return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
