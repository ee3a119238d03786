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
from safetensors.torch import load_file, save_file

from paretoalign.errors import ConfigError, ModelNotFoundError
from paretoalign.reward_model.armo import GatingNetwork, debias, moe_score
from paretoalign.reward_model.features import FeatureExtractor
from paretoalign.run_dir import read_json_object

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MARKER = "paretoalign_reward_model"
# weights saved with pickle (torch.save): loading them can run arbitrary code, so they are refused
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


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
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return False
    return isinstance(cfg, dict) and MARKER in cfg


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
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE))
        (out / CONFIG_FILE).write_text(json.dumps(self.config_dict(), indent=2, default=float))
        return out

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "MultiObjectiveRewardModel":
        path = Path(str(folder)).expanduser()
        cfg = read_config(path)
        if MARKER not in cfg:
            raise ConfigError(f"{str(folder)!r} is not a paretoalign reward model (no {CONFIG_FILE} with {MARKER!r}); "
                              "train one with `paretoalign reward-model train`")
        model = _from_config(cls, cfg, path / CONFIG_FILE)
        state = _read_weights(path)
        _check_tensors(model.state_dict(), state, path / WEIGHTS_FILE)
        model.load_state_dict(state)
        model.extra = cfg.get("report") or {}
        return model.eval()


def read_config(path: Path) -> dict:
    """``config.json`` of a model folder as a dict, or one clear error naming the folder and the file."""
    f = path / CONFIG_FILE
    if not path.is_dir():
        raise ConfigError(f"{str(path)!r} is not a paretoalign reward model: no such folder")
    if not f.is_file():
        raise ConfigError(f"{str(path)!r} is not a paretoalign reward model (no {CONFIG_FILE} with {MARKER!r}); "
                          "train one with `paretoalign reward-model train`")
    return read_json_object(f, ConfigError, "the model folder is damaged")


def _from_config(cls, cfg: dict, f: Path) -> "MultiObjectiveRewardModel":
    """The model (random weights) that ``cfg`` describes; every field checked first, naming ``f``."""
    def need(key, ok, expected, value):
        if not ok(value):
            got = "nothing" if value is None else f"{value!r:.60}"
            raise ConfigError(f"{f}: field {key!r} must be {expected}; got {got}")
        return value

    def is_int(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    def is_num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    objectives = need("objectives", lambda v: isinstance(v, list) and v and all(isinstance(o, str) for o in v),
                      "a non-empty list of names", cfg.get("objectives"))
    dim = need("feature_dim", is_int, "an integer >= 1", cfg.get("feature_dim"))
    backbone = need("backbone", lambda v: isinstance(v, dict) and isinstance(v.get("backbone"), str),
                    "an object naming its 'backbone'", cfg.get("backbone"))
    g = need("gate", lambda v: isinstance(v, dict), "an object {hidden, layers, temperature, dropout}", cfg.get("gate"))
    for k, ok, what in (("hidden", is_int, "an integer >= 1"), ("layers", is_int, "an integer >= 1"),
                        ("temperature", is_num, "a number"), ("dropout", is_num, "a number")):
        need(f"gate.{k}", ok, what, g.get(k))
    ranges = need("rating_ranges", lambda v: v is None or isinstance(v, dict), "an object", cfg.get("rating_ranges"))
    verbosity = need("verbosity", lambda v: v is None or isinstance(v, str), "a name or null", cfg.get("verbosity"))
    need("report", lambda v: v is None or isinstance(v, dict), "an object", cfg.get("report"))
    try:
        return cls(objectives, dim, backbone, ranges, verbosity, g["hidden"], g["layers"], g["temperature"], g["dropout"])
    except (ValueError, TypeError, RuntimeError) as e:  # a verbosity that is no objective, a dropout > 1, ...
        raise ConfigError(f"{f}: {_first_line(e)}") from None


def _read_weights(path: Path) -> dict:
    """The tensors of ``model.safetensors``, read with safetensors only: nothing is ever unpickled."""
    f = path / WEIGHTS_FILE
    if not f.is_file():
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelNotFoundError(f"{str(path)!r} holds {', '.join(pickles)} but no {WEIGHTS_FILE}; pickle files "
                                     "are never loaded (they can run code): save the weights as safetensors")
        raise ModelNotFoundError(f"{f}: no such file; the reward-model folder is incomplete (an interrupted copy?)")
    try:
        return load_file(str(f))
    except Exception as e:  # SafetensorError: truncated, corrupt, or another format (never unpickled)
        raise ModelNotFoundError(f"{f}: not a valid safetensors file ({_first_line(e)}); the file is damaged or cut "
                                 "short, or not safetensors at all: train the model again") from None


def _check_tensors(expected: dict, state: dict, f: Path) -> None:
    """Every tensor that ``config.json`` implies, with its shape, and no other: else one line naming the first."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} has shape {tuple(state[k].shape)}, config.json implies {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = ([f"missing tensor(s) {', '.join(missing[:3])}"] if missing else []) + shapes[:1] + \
        ([f"unexpected tensor(s) {', '.join(unexpected[:3])}"] if unexpected else [])
    if problems:
        raise ModelNotFoundError(f"{f}: does not match {CONFIG_FILE} ({'; '.join(problems)}); the folder is damaged "
                                 "or mixed from two models: train it again")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return (lines[0] + (" ..." if len(lines) > 1 else "")) if lines else type(e).__name__
