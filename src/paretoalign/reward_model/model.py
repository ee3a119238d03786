"""The multi-objective reward model artefact: ridge heads + debiasing + gate on a frozen backbone.

One folder, written by :meth:`MultiObjectiveRewardModel.save_pretrained` and read by
:meth:`MultiObjectiveRewardModel.from_pretrained`: ``config.json`` (backbone, objectives, rating
ranges, gate shape, debiasing) and ``model.safetensors`` (heads, λ, gate).  The backbone is not
copied: it is named (a local folder, ``minilm``, ``smollm2-135m-instruct`` or ``tiny``) and
loaded, frozen, on first use.  See :mod:`paretoalign.reward_model.armo` for the maths.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from paretoalign.errors import ConfigError
from paretoalign.reward_model.armo import GatingNetwork, debias, moe_score

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MARKER = "paretoalign_reward_model"


@dataclass
class RewardOutput:
    """``rewards [B, K]``: each objective's head (ratings scale, [0, 1] for the training data);
    ``debiased [B, K]``: after verbosity debiasing; ``gates [B, K]``: the prompt's weights over the
    objectives (each row sums to 1); ``score [B]``: β·Σ_j g_j·r'_j."""

    rewards: torch.Tensor
    debiased: torch.Tensor
    gates: torch.Tensor
    score: torch.Tensor


def is_reward_model_folder(path) -> bool:
    f = Path(str(path)).expanduser() / CONFIG_FILE
    if not f.is_file():
        return False
    try:
        return MARKER in json.loads(f.read_text())
    except (ValueError, OSError):
        return False


class MultiObjectiveRewardModel(nn.Module):
    """ArmoRM-style reward model over ``objectives`` on top of a :class:`FeatureExtractor`'s features."""

    def __init__(self, objectives: Sequence[str], feature_dim: int, backbone: dict, rating_ranges: dict | None = None,
                 verbosity: str | None = None, gate_hidden: int = 1024, gate_layers: int = 3,
                 temperature: float = 10.0, dropout: float = 0.2):
        super().__init__()
        self.objectives = list(objectives)
        if len(set(self.objectives)) != len(self.objectives) or not self.objectives:
            raise ConfigError(f"objectives must be distinct and non-empty; got {self.objectives}")
        if verbosity is not None and verbosity not in self.objectives:
            raise ConfigError(f"verbosity objective {verbosity!r} is not one of {self.objectives}")
        K = len(self.objectives)
        self.backbone = dict(backbone)
        self.rating_ranges = dict(rating_ranges or {})
        self.verbosity = verbosity
        self.gate_args = dict(hidden=gate_hidden, layers=gate_layers, temperature=temperature, dropout=dropout)
        self.register_buffer("head_weight", torch.zeros(K, feature_dim))
        self.register_buffer("head_bias", torch.zeros(K))
        self.register_buffer("debias_lambda", torch.zeros(K))
        self.gate = GatingNetwork(feature_dim, K, gate_hidden, gate_layers, temperature, dropout)
        self.extra: dict = {}  # training report (alphas, debiasing correlations, accuracies)
        self._extractor = None

    @property
    def verbosity_index(self) -> int | None:
        return self.objectives.index(self.verbosity) if self.verbosity else None

    def index(self, objective: str) -> int:
        if objective not in self.objectives:
            raise ConfigError(f"reward model has no objective {objective!r}; its objectives: {', '.join(self.objectives)}")
        return self.objectives.index(objective)

    # -- the maths on features --------------------------------------------------------------------
    def head_rewards(self, features: torch.Tensor) -> torch.Tensor:
        """Stage 1: r = W f + b, ``[B, d] -> [B, K]``."""
        return features.to(self.head_weight) @ self.head_weight.T + self.head_bias

    def forward(self, features: torch.Tensor, prompt_features: torch.Tensor) -> RewardOutput:
        rewards = self.head_rewards(features)
        debiased = debias(rewards, self.debias_lambda, self.verbosity_index)
        gates = self.gate(prompt_features.to(self.head_weight))
        return RewardOutput(rewards, debiased, gates, moe_score(debiased, gates, self.gate.logit_scale))

    # -- texts in ---------------------------------------------------------------------------------
    def extractor(self, **overrides):
        if self._extractor is None:
            from paretoalign.reward_model.features import FeatureExtractor

            opts = {k: v for k, v in self.backbone.items() if k in ("backbone", "pooling", "max_length", "use_chat_template")}
            opts.update(overrides)
            self._extractor = FeatureExtractor(**opts)
        return self._extractor

    def set_extractor(self, extractor) -> None:
        d = extractor.describe()
        for k in ("backbone", "pooling", "max_length"):
            if str(d[k]) != str(self.backbone.get(k)):
                raise ConfigError(f"feature extractor's {k} {d[k]!r} differs from the model's {self.backbone.get(k)!r}")
        self._extractor = extractor

    @torch.no_grad()
    def score(self, prompts: Sequence, responses: Sequence[str]) -> RewardOutput:
        """Run the backbone (cached) and the heads on (prompt, response) pairs."""
        self.eval()
        ex = self.extractor()
        return self(ex.features(prompts, responses), ex.prompt_features(prompts))

    # -- saving -----------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return {MARKER: 1, "objectives": self.objectives, "feature_dim": int(self.head_weight.shape[1]),
                "backbone": self.backbone, "rating_ranges": self.rating_ranges, "verbosity": self.verbosity,
                "gate": self.gate_args, "report": self.extra}

    def save_pretrained(self, folder: str | Path) -> Path:
        from safetensors.torch import save_file

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE))
        (out / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2, default=float))
        return out

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "MultiObjectiveRewardModel":
        from safetensors.torch import load_file

        path = Path(str(folder)).expanduser()
        if not is_reward_model_folder(path):
            raise ConfigError(f"{str(folder)!r} is not a paretoalign reward model (no {CONFIG_FILE} with {MARKER!r}); "
                              "train one with `paretoalign reward-model train`")
        cfg = json.loads((path / CONFIG_FILE).read_text())
        g = cfg["gate"]
        model = cls(cfg["objectives"], cfg["feature_dim"], cfg["backbone"], cfg.get("rating_ranges"), cfg.get("verbosity"),
                    g["hidden"], g["layers"], g["temperature"], g["dropout"])
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        model.extra = cfg.get("report", {})
        return model.eval()
