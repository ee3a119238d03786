"""The implicit DPO reward of a LoRA adapter as an objective: r(x, y) = β·log(π_adapter(y|x)/π_base(y|x)).

Reference: Rafailov et al. 2023 (a DPO policy is its own reward model); used as a margin reward by
MODPO (Zhou et al. 2023, arXiv 2310.03708), where the adapter was trained by DPO on another
objective's pairs.  The log-ratio is summed over the response tokens (EOS included), the
sequence-level reward DPO's loss is defined on.

Standalone, the objective loads the adapter's base model (``base=`` or the adapter's
``base_model_name_or_path``) once.  Inside the offline trainer the adapter is instead loaded as a
frozen extra adapter on the policy's own base model (:mod:`paretoalign.trainers.offline_methods.modpo`),
so K objectives cost one base model in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from paretoalign import run_dir
from paretoalign.console import quiet_third_party
from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.models import adapter_base, load_causal_lm, load_tokenizer
from paretoalign.objectives.base import Objective
from paretoalign.sequences import encode_responses, response_token_logps


class ImplicitRewardObjective(Objective):
    """``implicit_dpo:<adapter folder>(beta=0.1, base=..., batch_size=8, max_length=512)``."""

    def __init__(self, adapter: str, beta: float = 0.1, base: str | None = None, batch_size: int = 8,
                 max_length: int = 512, use_chat_template: bool = True, name: str | None = None):
        folder = Path(str(adapter)).expanduser()
        self.name = name or folder.name or "implicit_dpo"
        if folder.is_dir() and (folder / run_dir.FINAL / run_dir.POLICY / "adapter_config.json").is_file():
            folder = folder / run_dir.FINAL / run_dir.POLICY  # a run folder: its final adapter
        if not (folder / "adapter_config.json").is_file():
            raise ConfigError(
                f"objective {self.name!r}: {str(adapter)!r} is not a LoRA adapter folder (no adapter_config.json); "
                "give the final/policy folder of a DPO run trained with LoRA"
            )
        if not (isinstance(beta, (int, float)) and beta > 0):
            raise ConfigError(f"objective {self.name!r}: beta must be > 0; got {beta!r}")
        self.adapter = folder.resolve()
        self.beta = float(beta)
        cfg = json.loads((folder / "adapter_config.json").read_text())
        self._base_given = bool(base)
        self.base = base or cfg.get("base_model_name_or_path")
        if not self.base:
            raise ConfigError(f"objective {self.name!r}: the adapter names no base model; pass base=<model>")
        self.batch_size, self.max_length, self.use_chat_template = int(batch_size), int(max_length), use_chat_template
        self._model = None
        self._tokenizer = None

    def _load(self) -> None:
        if self._model is not None:
            return
        from peft import PeftModel

        try:
            # the adapter's own record of its base may be relative to it (a run's final/base) or a built-in name
            base_src = self.base if self._base_given else adapter_base(self.adapter)
            tok_src = str(self.adapter) if (self.adapter / "tokenizer_config.json").is_file() else base_src
            self._tokenizer = load_tokenizer(tok_src)
            base = load_causal_lm(base_src, self._tokenizer)
            with quiet_third_party():  # PEFT's FutureWarning on transformers' renamed attribute
                self._model = PeftModel.from_pretrained(base, str(self.adapter)).eval()
        except Exception as e:
            raise ObjectiveError(f"objective {self.name!r}: cannot load adapter {str(self.adapter)!r} on base "
                                 f"{self.base!r}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None

    @torch.no_grad()
    def _score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        self._load()
        out = []
        for i in range(0, len(prompts), self.batch_size):
            batch = encode_responses(self._tokenizer, prompts[i : i + self.batch_size],
                                     completions[i : i + self.batch_size], self.max_length, self.max_length,
                                     self.use_chat_template)
            pol = response_token_logps(self._model, batch).sum(1)
            with self._model.disable_adapter():
                ref = response_token_logps(self._model, batch).sum(1)
            out.append(self.beta * (pol - ref))
        return torch.cat(out)

    def describe(self) -> dict:
        return {**super().describe(), "kind": "implicit_dpo", "adapter": str(self.adapter), "beta": self.beta,
                "base": self.base}
