"""Configuration of ``paretoalign reward-model train`` (ArmoRM's two stages; ``--rc-bt`` adds MAPL's
response-conditioned Bradley-Terry on prompt-side pairs).

Every field's ``help`` is the documentation shown by ``paretoalign reward-model train --help``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import check_fields, field, split_list
from paretoalign.errors import ConfigError
from paretoalign.reward_model import RIDGE_ALPHAS

# rating scales of the public schemas (scaled to [0, 1] as (r - low) / (high - low))
KNOWN_RANGES = {"helpsteer2": (0.0, 4.0), "ultrafeedback": (1.0, 5.0)}


def parse_range(text: str) -> tuple[str, float, float]:
    """``"helpfulness=0:4"`` -> ``("helpfulness", 0.0, 4.0)``."""
    name, sep, rng = str(text).partition("=")
    lo, sep2, hi = rng.partition(":")
    try:
        low, high = float(lo), float(hi)
    except ValueError:
        low = high = math.nan
    if not sep or not sep2 or not name.strip() or not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise ConfigError(f"rating range {text!r} is not of the form 'objective=low:high' with low < high (e.g. helpfulness=0:4)")
    return name.strip(), low, high


@dataclass
class RewardModelConfig:
    """Options of ``paretoalign reward-model train``."""

    # --- data ------------------------------------------------------------------------------------
    ratings: list = field(
        [], help="Rated responses for stage 1: files/folders in the helpsteer2 or ultrafeedback schema, or TRL pairs with "
        "per-response scores (e.g. from `paretoalign pairs`); several may be given.")
    ratings_format: str = field("auto", help="Schema of --ratings ('auto' detects it from the columns).")
    pairs: list = field([], help="Preference pairs for stage 2 (the gate); default: the pairs --ratings implies.")
    pairs_format: str = field("auto", help="Schema of --pairs.")
    preference_label: Optional[str] = field(
        None, help="Which label of --pairs the gate is trained to predict (default: the only label, or "
        "'helpfulness' when present).")
    objectives: list = field([], help="Objectives (rating names) to learn, one head each (default: every rating found).")
    rating_ranges: list = field(
        [], help="'objective=low:high' rating scales (default: 0:4 for HelpSteer2, 1:5 for UltraFeedback, else the data's min:max).")
    max_rows: Optional[int] = field(None, help="Read at most this many rows of each data file.")
    heldout_fraction: float = field(0.2, help="Fraction of prompts held out of both stages for evaluation.")

    # --- backbone --------------------------------------------------------------------------------
    backbone: str = field("smollm2-135m-instruct", help="Frozen feature model: a causal LM ('smollm2-135m-instruct', 'tiny', "
                          "a local folder) or an encoder ('minilm', a local sentence-embedding folder).")
    pooling: Literal["auto", "last", "mean"] = field("auto", help="'last' token (causal LMs, ArmoRM's choice) or 'mean' (encoders).")
    max_length: int = field(512, help="Conversations longer than this many tokens are truncated.")
    batch_size: int = field(8, help="Texts per backbone forward pass.")
    device: str = field("auto", help="Where the backbone runs: auto, cpu, cuda, cuda:1 ...")
    use_chat_template: bool = field(True, help="Render conversations with the backbone tokenizer's chat template.")
    feature_cache: Optional[str] = field(None, help="Folder of cached features (default: <cache>/features/<backbone>).")

    # --- stage 1 ---------------------------------------------------------------------------------
    ridge_alphas: list = field(list(RIDGE_ALPHAS), help="Ridge strengths tried per objective; the best by validation MSE is kept.")
    ridge_val_fraction: float = field(0.2, help="Fraction of each objective's training ratings used to choose its alpha "
                                      "(0: no validation, the middle --ridge-alphas value; give one value to fix alpha).")

    # --- debiasing -------------------------------------------------------------------------------
    verbosity: Optional[str] = field(
        "auto", help="Objective every other one is decorrelated from ('auto': 'verbosity' if learned, else none; "
        "'none' disables).")
    debias_threshold: float = field(0.03, help="Debiasing target: Spearman correlation with verbosity at most this.")
    debias_max_lambda: float = field(1.0, help="Largest lambda tried per objective.")
    debias_reference: list = field(
        [], help="Reference set for the debiasing (any file --pairs or --ratings reads; its responses are used): "
        "the reference code's --reference_dataset.  Default: the stage-2 training pairs' responses.")

    # --- stage 2 ---------------------------------------------------------------------------------
    gate_hidden: int = field(1024, help="Gate MLP width (reference code: 1024).")
    gate_layers: int = field(3, help="Gate MLP hidden layers (reference code: 3).")
    temperature: float = field(10.0, help="Gate softmax temperature (reference code: 10).")
    dropout: float = field(0.2, help="Gate dropout (reference code: 0.2).")
    gate_steps: int = field(2000, help="Gate optimisation steps (reference code: 2000).")
    gate_batch_size: int = field(1024, help="Pairs per gate step, sampled with replacement (reference code: 1024).")
    gate_lr: float = field(1e-3, help="Gate AdamW learning rate, cosine-decayed (reference code: 1e-3).")
    gate_weight_decay: float = field(0.0, help="Gate AdamW weight decay.")

    # --- MAPL's response-conditioned Bradley-Terry (Sun et al. 2025, arXiv 2505.12845) -----------
    rc_bt: bool = field(
        False, help="Also learn an instruction-compliance head by response-conditioned Bradley-Terry on --prompt-pairs "
        "(MAPL's intra-sample level for reward models: the same response scores higher under the prompt whose "
        "instructions it satisfies, -log sigma(r(x_w, y) - r(x_l, y))), and add that loss, weighted by "
        "--rc-bt-coef, to the gate's Bradley-Terry loss in stage 2.")
    prompt_pairs: list = field(
        [], help="With --rc-bt: MAPL folders (or intra.jsonl files) made by `paretoalign pairs --mapl`; their "
        "requests are split into training and held-out prompts with the rest of the data.")
    rc_bt_objective: str = field("instruction_following", help="With --rc-bt: the name of the Rc-BT head (an objective "
                                 "of the saved model, e.g. reward_model:<folder>#instruction_following).")
    rc_bt_alphas: list = field([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], help="With --rc-bt: L2 strengths tried for the Rc-BT "
                               "head; the best by validation loss (--ridge-val-fraction of its pairs) is kept.")
    rc_bt_coef: float = field(1.0, help="With --rc-bt: lambda_intra, the weight of the Rc-BT loss of the gated score "
                              "in stage 2 (0: the gate learns from --pairs only).")

    # --- output ----------------------------------------------------------------------------------
    output_dir: str = field("runs/reward-model", help="Folder of the trained model (config.json, model.safetensors, report.json).")
    overwrite: bool = field(False, help="Replace a model already in --output-dir.")
    seed: int = field(0, help="Random seed (splits, gate initialisation, batches).")
    allow_download: bool = field(False, help="Let --backbone be fetched from a hub (off: local only).")
    progress: bool = field(True, help="Show progress.")

    def __post_init__(self):
        check_fields(self)  # types and ranges first: the checks below may then trust them
        for name in ("ratings", "pairs", "objectives", "rating_ranges", "debias_reference", "prompt_pairs"):
            v = getattr(self, name)
            setattr(self, name, split_list(v) if isinstance(v, str) else list(v or []))
        if not self.ratings:
            raise ConfigError("--ratings is required: rated responses (helpsteer2 / ultrafeedback schema, or pairs with scores)")
        self.ridge_alphas = [float(a) for a in (split_list(self.ridge_alphas) if isinstance(self.ridge_alphas, str) else self.ridge_alphas)]
        if not self.ridge_alphas or any(not (a > 0 and math.isfinite(a)) for a in self.ridge_alphas):
            raise ConfigError(f"ridge_alphas must be positive numbers; got {self.ridge_alphas}")
        self.parsed_ranges()
        for name in ("max_length", "batch_size", "gate_hidden", "gate_steps", "gate_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be >= 1; got {getattr(self, name)!r}")
        if self.gate_layers < 0:
            raise ConfigError(f"gate_layers must be >= 0; got {self.gate_layers}")
        for name in ("temperature", "gate_lr", "debias_max_lambda"):
            if not float(getattr(self, name)) > 0:
                raise ConfigError(f"{name} must be > 0; got {getattr(self, name)!r}")
        for name in ("heldout_fraction", "ridge_val_fraction", "dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1); got {getattr(self, name)!r}")
        self.rc_bt_alphas = [float(a) for a in (split_list(self.rc_bt_alphas) if isinstance(self.rc_bt_alphas, str)
                                                 else self.rc_bt_alphas)]
        if not self.rc_bt_alphas or any(not (a > 0 and math.isfinite(a)) for a in self.rc_bt_alphas):
            raise ConfigError(f"rc_bt_alphas must be positive numbers; got {self.rc_bt_alphas}")
        if self.rc_bt_coef < 0:
            raise ConfigError(f"rc_bt_coef must be >= 0; got {self.rc_bt_coef!r}")
        if self.rc_bt and not self.prompt_pairs:
            raise ConfigError("--rc-bt needs --prompt-pairs: a folder made by `paretoalign pairs --mapl`")
        if self.prompt_pairs and not self.rc_bt:
            raise ConfigError("--prompt-pairs is read by --rc-bt only: give --rc-bt too")
        if not self.rc_bt_objective.strip():
            raise ConfigError("rc_bt_objective must be a name")
        if self.pooling not in ("auto", "last", "mean"):
            raise ConfigError(f"pooling must be auto, last or mean; got {self.pooling!r}")

    def parsed_ranges(self) -> dict:
        out = {}
        for t in self.rating_ranges:
            name, lo, hi = parse_range(t)
            out[name] = (lo, hi)
        return out
