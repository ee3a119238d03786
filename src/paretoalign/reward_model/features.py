"""Frozen-backbone features for a multi-objective reward model, cached on disk.

ArmoRM (Wang et al. 2024) reads the last hidden state at the final token of the conversation from a
decoder; for the prompt's gating feature, the hidden state where the assistant's answer would start.
Here the backbone is any local Hugging Face model:

- a causal LM (``tiny``, ``smollm2-135m-instruct``, a folder): the final layer's hidden state (after
  its last norm) at the last token, ``pooling="last"``; conversations rendered with the chat template
  (``[user: prompt, assistant: response]``), prompts as the template's generation prompt;
- an encoder (``minilm``: the all-MiniLM-L6-v2 wheel, or a sentence-embedding folder): mean pooling
  over the tokens, ``pooling="mean"``; conversations as ``prompt \\n\\n response``.

Features are cached per text under ``cache_dir`` (one safetensors shard per extraction call, keyed
by a hash of the backbone, pooling, length limit and text), so stage 1, stage 2, evaluation and a
second run do not run the backbone twice on the same text.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

from paretoalign.data.prompts import prompt_text
from paretoalign.errors import ConfigError, ModelNotFoundError
from paretoalign.models import load_causal_lm, load_tokenizer, minilm_path, resolve_device

ENCODER_ALIASES = ("minilm",)


def _is_encoder(name: str) -> bool:
    if name in ENCODER_ALIASES:
        return True
    cfg = Path(name).expanduser() / "config.json"
    if cfg.is_file():
        try:
            data = json.loads(cfg.read_text(encoding="utf-8"))
        except (ValueError, OSError) as e:  # not UTF-8, not JSON, unreadable
            raise ConfigError(f"backbone {name!r}: {cfg} cannot be read as JSON ({e}); the model folder is damaged") from None
        archs = (data.get("architectures") if isinstance(data, dict) else None) or []
        return not any("CausalLM" in str(a) for a in archs)
    return False


class FeatureExtractor:
    """``features(prompts, responses) -> [N, d]`` and ``prompt_features(prompts) -> [N, d]`` from a
    frozen backbone, float32 on the CPU, cached.  Loads the backbone on first use."""

    def __init__(self, backbone: str = "smollm2-135m-instruct", pooling: str = "auto", max_length: int = 512,
                 batch_size: int = 8, device: str = "auto", cache_dir: str | Path | None = None,
                 use_chat_template: bool = True, allow_download: bool = False, model=None, tokenizer=None,
                 keep_in_memory: bool = True):
        self.backbone = str(backbone)
        self.encoder = _is_encoder(self.backbone)
        if pooling == "auto":
            pooling = "mean" if self.encoder else "last"
        if pooling not in ("last", "mean"):
            raise ConfigError(f"pooling must be 'auto', 'last' or 'mean'; got {pooling!r}")
        self.pooling, self.max_length, self.batch_size = pooling, int(max_length), int(batch_size)
        self.device = resolve_device(device, "reward model")
        self.use_chat_template, self.allow_download = use_chat_template, allow_download
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self._model, self._tokenizer = model, tokenizer
        self._cache: dict[str, torch.Tensor] = {}
        self.keep_in_memory = keep_in_memory  # False: forget features after each call (online scoring)
        self._loaded_shards: set[str] = set()
        self.calls = 0  # backbone forward batches run (tests and benchmarks read it)

    # -- the backbone -----------------------------------------------------------------------------
    def _load(self):
        if self._model is not None and self._tokenizer is not None:
            return
        if self.encoder:
            from transformers import AutoModel, AutoTokenizer

            folder = str(minilm_path()) if self.backbone == "minilm" else self.backbone
            try:
                self._tokenizer = self._tokenizer or AutoTokenizer.from_pretrained(folder, local_files_only=True)
                # safetensors only: a pickled checkpoint is refused, never unpickled
                self._model = self._model or AutoModel.from_pretrained(folder, local_files_only=True, use_safetensors=True)
            except (OSError, ValueError) as e:
                first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                raise ModelNotFoundError(f"backbone {self.backbone!r}: cannot load an encoder and its tokenizer from "
                                         f"{folder!r} ({first})") from None
        else:
            self._tokenizer = self._tokenizer or load_tokenizer(self.backbone, self.allow_download)
            self._model = self._model or load_causal_lm(self.backbone, self._tokenizer, 0, self.allow_download)
        self._model.to(self.device).eval().requires_grad_(False)

    @property
    def tokenizer(self):
        self._load()
        return self._tokenizer

    @property
    def hidden_size(self) -> int:
        self._load()
        return int(self._model.config.hidden_size)

    def _trunk(self):
        m = self._model
        if self.encoder:
            return m
        return getattr(m, m.base_model_prefix, m)  # the decoder without its LM head: no vocab-size logits

    # -- texts ------------------------------------------------------------------------------------
    def conversation_text(self, prompt, response: str) -> str:
        tok = self.tokenizer
        if not self.encoder and self.use_chat_template and getattr(tok, "chat_template", None):
            msgs = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
            return tok.apply_chat_template(msgs + [{"role": "assistant", "content": response}], tokenize=False)
        return f"{prompt_text(prompt)}\n\n{response}"

    def prompt_only_text(self, prompt) -> str:
        tok = self.tokenizer
        if not self.encoder and self.use_chat_template and getattr(tok, "chat_template", None):
            msgs = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
            return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return prompt_text(prompt)

    # -- extraction -------------------------------------------------------------------------------
    def _key(self, text: str) -> str:
        h = hashlib.sha256()
        for part in (self.backbone, self.pooling, str(self.max_length), text):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        return h.hexdigest()[:32]

    def _load_shards(self) -> None:
        if self.cache_dir is None or not self.cache_dir.is_dir():
            return
        for f in sorted(self.cache_dir.glob("shard-*.safetensors")):
            if f.name not in self._loaded_shards:
                self._cache.update(load_file(str(f)))
                self._loaded_shards.add(f.name)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Features of rendered texts: [N, d] (float32, CPU)."""
        self._load_shards()
        keys = [self._key(t) for t in texts]
        todo = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if todo:
            self._load()
            by_key = dict(zip(keys, texts))
            new = {}
            for s in range(0, len(todo), self.batch_size):
                chunk = todo[s : s + self.batch_size]
                feats = self._forward([by_key[k] for k in chunk])
                new.update({k: f.contiguous() for k, f in zip(chunk, feats)})
            self._cache.update(new)
            if self.cache_dir is not None:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                name = f"shard-{len(list(self.cache_dir.glob('shard-*.safetensors'))):05d}-{todo[0][:8]}.safetensors"
                save_file(new, str(self.cache_dir / name))
                self._loaded_shards.add(name)
        if not keys:
            return torch.zeros(0, self.hidden_size)
        out = torch.stack([self._cache[k] for k in keys])
        if not self.keep_in_memory:
            self._cache = {}
        return out

    def _forward(self, texts: list[str]) -> torch.Tensor:
        tok = self._tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        side, trunc = tok.padding_side, tok.truncation_side
        # right padding (the last real token is found from the mask); a too-long conversation loses
        # the start of its prompt, never the end of the response the feature is read at
        tok.padding_side, tok.truncation_side = "right", "left"
        try:
            enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length,
                      add_special_tokens=self.encoder or not (self.use_chat_template and tok.chat_template))
        finally:
            tok.padding_side, tok.truncation_side = side, trunc
        enc = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        self.calls += 1
        hidden = self._trunk()(**enc).last_hidden_state.float()
        mask = enc["attention_mask"]
        if self.pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return ((hidden * m).sum(1) / m.sum(1).clamp(min=1.0)).cpu()
        last = mask.sum(1) - 1  # right padding: the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].cpu()

    def features(self, prompts: Sequence, responses: Sequence[str]) -> torch.Tensor:
        """Conversation features f(x, y): [N, d]."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.encode([self.conversation_text(p, r) for p, r in zip(prompts, responses)])

    def prompt_features(self, prompts: Sequence) -> torch.Tensor:
        """Prompt features f(x) for the gate: [N, d]."""
        return self.encode([self.prompt_only_text(p) for p in prompts])

    def describe(self) -> dict:
        return {"backbone": self.backbone, "pooling": self.pooling, "max_length": self.max_length,
                "use_chat_template": self.use_chat_template, "encoder": self.encoder}
