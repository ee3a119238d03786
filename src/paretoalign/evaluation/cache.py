"""The evaluation cache: completions and score columns of ``paretoalign evaluate``, reused across runs.

One JSON file per generation key (model fingerprint, prompts hash, decoding settings) in
``$PARETOALIGN_CACHE/evals`` (default ``~/.cache/paretoalign/evals``): the completions, the rendered
prompts, and one score column per objective description.  A damaged entry is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from paretoalign.models import cache_dir

__all__ = ["EvalCache", "cache_key", "eval_cache_dir", "objective_key"]


def eval_cache_dir() -> Path:
    return cache_dir() / "evals"


def cache_key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def objective_key(desc: dict) -> str:
    return cache_key(desc)


class EvalCache:
    """One JSON file per generation key: completions, rendered prompts, and score columns by objective."""

    def __init__(self, key: str, enabled: bool):
        self.path = eval_cache_dir() / f"{key}.json"
        self.enabled = enabled
        self.data = {}
        if enabled and self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except (json.JSONDecodeError, OSError):
                self.data = {}  # a damaged cache entry is recomputed

    def save(self) -> None:
        if not self.enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{id(self)}")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)
