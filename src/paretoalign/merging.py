"""Weight merging and Rewarded Soups (``paretoalign merge``, ``front --method rs``).

Rewarded Soups: Ramé, Couairon, Shukor, Dancette, Gaya, Soulier & Cord, *Rewarded soups: towards
Pareto-optimal alignment by interpolating weights fine-tuned on diverse rewards*, NeurIPS 2023
(arXiv 2306.04488); reference code ``alexrame/rewardedsoups`` (``llama/utils/inference_utils.py``,
``WeightAverager``).  Train one policy per reward from one shared initialisation θ_0, then serve a
preference λ on the simplex by interpolating their weights, θ_λ = Σ_i λ_i θ_i.

What is computed (``docs``: ``specs/next-methods.md`` §1):

* **Full models** (every floating tensor of the model files, embeddings and output layer included):
  θ_λ = θ_0 + Σ_i λ_i (θ_i − θ_0) = Σ_i λ_i θ_i + (1 − Σ_i λ_i) θ_0.  With Σλ = 1 (the default, and the
  paper's setting) this is the paper's Σ_i λ_i θ_i and θ_0 is not read.  **Choice** (the paper only
  interpolates on the simplex): weights off the simplex need ``allow_extrapolation`` and then follow the
  task-arithmetic form above, so that λ = 0 is the base model, as it is for adapters.  Non-floating
  tensors are copied from the first endpoint.
* **LoRA adapters, exact "delta" mode** (the paper's equation applied to the effective weights):
  ΔW_i = s_i B_i A_i with s_i = lora_alpha/r (lora_alpha/√r with rsLoRA), W_λ = W_0 + Σ_i λ_i ΔW_i,
  computed one module at a time (never K models in memory).  The result is written as

  - a full model (``rank=None``): W_0 + Σ λ_i ΔW_i added into the base, exactly;
  - ``rank="exact"``: an adapter of rank Σ r_i, B = [λ_1 s_1 B_1 | ... ], A = [A_1; ...], scale 1 (rank
    concatenation, PEFT's ``combination_type="cat"``), equal to Σ λ_i ΔW_i with no truncation;
  - ``rank=R``: an adapter of rank R, the best rank-R approximation of Σ λ_i ΔW_i (truncated SVD; computed
    from QR factors of the concatenation above, so ΔW is never formed densely).  The truncation error
    ‖Σ λ_i ΔW_i − B A‖_F, which is exactly √(Σ of the dropped σ²), is reported per module and in total
    (``merge.json``).  R ≥ Σ r_i loses nothing.
* **LoRA adapters, "factors" mode**: what the reference code does, *not* the paper's formula.
  ``WeightAverager.average_weights`` sums ``coefficient * get_peft_model_state_dict(...)`` key by key,
  so A = Σ λ_i A_i and B = Σ λ_i B_i, and ΔW = s (Σ λ_i B_i)(Σ λ_i A_i) = s Σ_ij λ_i λ_j B_i A_j: cross
  terms B_i A_j that the paper's equation does not have.  For K = 2 on the simplex it differs from the
  delta mode by exactly −s λ_1 λ_2 (B_1 − B_2)(A_1 − A_2) (tested).  Offered to reproduce the reference
  code; it needs equal ranks and scales.

Refused, one line each (:class:`ConfigError` / :class:`ModelNotFoundError`): endpoints fine-tuned from
different base models (compared by the content of their weights), with different tokenizers
(vocabulary and special tokens), LoRA adapters of different modules (and, in factors mode, of
different ranks or scales), adapters that are not sums of B·A products (DoRA, trained biases,
``modules_to_save``, rank/alpha patterns), a mix of adapters and full models, and quantised weights
(never averaged; an adapter output on a quantised base is allowed, as in the reference code, which
averages only the adapters on an 8-bit base).  Weights are read from safetensors only; nothing is
unpickled.

Layout of what :meth:`Merged.save` writes (a paretoalign-marked folder, kind ``merge``): the model
(``config.json`` + ``model.safetensors``) or adapter (``adapter_config.json`` +
``adapter_model.safetensors``; a base that lived inside a run, such as the tiny test model's, is
copied to ``./base`` beside it), the first endpoint's tokenizer, ``merge.json`` (sources with content
hashes, weights, mode, rank, truncation error) and a short ``README.md``.  Both load with
``from_pretrained`` (``AutoModelForCausalLM`` / ``PeftModel``) and with :func:`paretoalign.load_policy`.

:func:`lmc_report` evaluates the interpolation path between two endpoints (linear mode connectivity:
the paper's evidence that interpolated weights stay good) and writes ``lmc.json`` and ``lmc.png``.

This module imports neither torch nor transformers at import time: the command line builds the
``merge`` parser (:func:`add_merge_parser`) without them.  It sits in the top layer, beside
:mod:`paretoalign.inference` (whose run resolution it reuses) and :mod:`paretoalign.fronts` (which
uses it); the arithmetic (``lora_delta`` ... ``merge_tensors``) needs only torch and could move lower.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

from paretoalign import run_dir
from paretoalign.config_utils import check_fields, field, split_list
from paretoalign.errors import ConfigError, ModelNotFoundError, RunDirError

__all__ = [
    "MERGE_FILE", "LMC_FILE", "Endpoint", "LoraWeights", "MergeConfig", "Merged", "add_merge_parser",
    "check_weights", "concat_lora", "delta_to_lora", "factor_average", "interpolate", "lmc_report", "lora_delta",
    "lora_delta_sum", "lora_svd", "merge", "merge_into", "merge_tensors", "parse_endpoints", "parse_rank",
    "read_lora", "resolve_endpoint", "run_merge", "soup", "weights_digest",
]

PAPER = ("Ramé et al. 2023, Rewarded soups: towards Pareto-optimal alignment by interpolating weights fine-tuned "
         "on diverse rewards (NeurIPS 2023)")
ARXIV = "2306.04488"
MERGE_FILE = "merge.json"
LMC_FILE = "lmc.json"
LMC_PLOT = "lmc.png"
MERGE_KIND = "merge"  # the marker's kind of a merged model folder
LMC_KIND = "lmc"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SUM_TOLERANCE = 1e-6
# What a merge writes at the top of its folder (``--overwrite`` removes these, plus the files merge.json lists).
MERGE_ENTRIES = (MERGE_FILE, ADAPTER_CONFIG, ADAPTER_WEIGHTS, "config.json", "generation_config.json",
                 "model.safetensors", "model.safetensors.index.json", "README.md", "base", "eval.json",
                 MERGE_FILE + run_dir.TMP_SUFFIX)
LMC_ENTRIES = (LMC_FILE, LMC_PLOT, "points", LMC_FILE + run_dir.TMP_SUFFIX)
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")
# adapter_config.json fields that make an adapter more than a sum of B.A products (value: what it means)
_UNSUPPORTED_LORA = {
    "use_dora": "DoRA (a learned magnitude re-scales the weight)",
    "lora_bias": "trained LoRA biases",
    "modules_to_save": "fully trained modules (modules_to_save)",
    "trainable_token_indices": "trained token embeddings (trainable_token_indices)",
    "target_parameters": "LoRA on bare parameters (target_parameters)",
    "layer_replication": "replicated layers (layer_replication)",
    "rank_pattern": "per-module ranks (rank_pattern)",
    "alpha_pattern": "per-module alphas (alpha_pattern)",
    "use_qalora": "QALoRA",
}


# ---------------------------------------------------------------------------------------------
# the arithmetic: tensors in, tensors out (torch only)
# ---------------------------------------------------------------------------------------------


def check_weights(weights, k: int, allow_extrapolation: bool = False, names: Sequence[str] | None = None) -> list[float]:
    """The interpolation weights λ as floats: ``k`` finite numbers, on the simplex (≥ 0, summing to 1
    within 1e-6, then rescaled to sum to 1) unless ``allow_extrapolation`` (any finite numbers, not
    all zero)."""
    items = split_list(weights) if isinstance(weights, str) else list(weights if weights is not None else [])
    try:
        values = [float(x) for x in items]
    except (TypeError, ValueError):
        raise ConfigError(f"--weights {weights!r}: expected numbers separated by commas, one per endpoint") from None
    which = f" (one per endpoint: {', '.join(names)})" if names else ""
    if len(values) != k:
        raise ConfigError(f"--weights: expected {k} weights{which}, got {len(values)}: {values}")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"--weights {values}: every weight must be a finite number")
    if not any(values):
        raise ConfigError(f"--weights {values}: all weights are zero")
    if allow_extrapolation:
        return values
    if any(v < 0 for v in values):
        raise ConfigError(f"--weights {values}: a negative weight extrapolates beyond the endpoints; weights are a "
                          "point of the simplex (>= 0, sum 1), or pass --allow-extrapolation")
    total = math.fsum(values)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise ConfigError(f"--weights {values} sum to {total:g}, not 1: a soup's weights are a point of the simplex "
                          "(or pass --allow-extrapolation)")
    return [v / total for v in values]


def lora_delta(lora_A, lora_B, scale: float, fan_in_fan_out: bool = False):
    """ΔW = scale · B A (transposed for ``fan_in_fan_out`` layers, GPT-2's Conv1D), as PEFT merges it:
    ``lora_A`` [r, in], ``lora_B`` [out, r] -> [out, in] (float32, or float64 inputs stay float64)."""
    import torch

    dt = torch.float64 if torch.float64 in (lora_A.dtype, lora_B.dtype) else torch.float32
    d = (lora_B.to(dt) @ lora_A.to(dt)) * float(scale)
    return d.T if fan_in_fan_out else d


def interpolate(tensors: Sequence, weights: Sequence[float], base=None):
    """θ_λ = Σ_i λ_i θ_i + (1 − Σ_i λ_i) θ_0 for one tensor; ``base`` (θ_0) is needed only when the
    weights do not sum to 1.  Zero weights are skipped, so a vertex of the simplex returns that
    endpoint's tensor bit for bit; a non-floating tensor (an integer buffer) is the first endpoint's."""
    import torch

    first = tensors[0]
    if not torch.is_floating_point(first):
        return first.clone()
    rest = 1.0 - math.fsum(weights)
    if abs(rest) <= SUM_TOLERANCE:
        rest = 0.0
    elif base is None:
        raise ConfigError(f"weights {list(weights)} sum to {1 - rest:g}: off the simplex the merge is "
                          "θ_0 + Σλ_i(θ_i − θ_0), which needs the base model's weights")
    dt = torch.float64 if first.dtype == torch.float64 else torch.float32
    out = None
    for t, lam in zip(tensors, weights):
        if lam == 0.0:
            continue
        term = t.to(dt) * lam if lam != 1.0 else t.to(dt, copy=True)
        out = term if out is None else out.add_(term)
    if rest:
        term = base.to(dt) * rest
        out = term if out is None else out.add_(term)
    if out is None:  # unreachable for checked weights (not all zero)
        out = torch.zeros_like(first, dtype=dt)
    return out.to(first.dtype)


def factor_average(tensors: Sequence, weights: Sequence[float]):
    """Σ_i λ_i X_i over one adapter tensor (a factor A or B): the reference code's ``average_weights``
    (which skips zero coefficients too)."""
    import torch

    out = None
    for t, lam in zip(tensors, weights):
        if lam == 0.0:
            continue
        term = t.to(torch.float32) * lam
        out = term if out is None else out + term
    return (out if out is not None else torch.zeros_like(tensors[0], dtype=torch.float32)).to(tensors[0].dtype)


@dataclass
class LoraWeights:
    """A LoRA adapter as tensors: ``factors[module] = (A [r, in], B [out, r])`` (``module`` is the
    key prefix in the adapter file, e.g. ``base_model.model.model.layers.0.self_attn.q_proj``) and its
    scale ``s`` (ΔW = s·B·A, transposed for ``fan_in_fan_out``).  ``factors`` may be a lazy mapping
    that reads one module at a time (:func:`read_lora`)."""

    factors: Mapping
    scale: float
    fan_in_fan_out: bool = False

    @property
    def modules(self) -> list[str]:
        return list(self.factors)

    def delta(self, module: str):
        A, B = self.factors[module]
        return lora_delta(A, B, self.scale, self.fan_in_fan_out)

    def rank(self, module: str) -> int:
        return int(self.factors[module][0].shape[0])

    def tensors(self) -> dict:
        """The adapter file's content: ``{module}.lora_A.weight`` / ``.lora_B.weight``."""
        out = {}
        for m in self.factors:
            A, B = self.factors[m]
            out[f"{m}.lora_A.weight"] = A.contiguous()
            out[f"{m}.lora_B.weight"] = B.contiguous()
        return out


def lora_delta_sum(adapters: Sequence[LoraWeights], weights: Sequence[float], module: str):
    """Σ_i λ_i s_i B_i A_i for one module (zero weights skipped: a vertex is that adapter's ΔW exactly)."""
    out = None
    for ad, lam in zip(adapters, weights):
        if lam == 0.0:
            continue
        A, B = ad.factors[module]
        d = lora_delta(A, B, ad.scale * lam, ad.fan_in_fan_out)
        out = d if out is None else out.add_(d)
    return out


def concat_lora(adapters: Sequence[LoraWeights], weights: Sequence[float], module: str):
    """(A, B) of rank Σ r_i with B A = Σ_i λ_i s_i B_i A_i exactly (scale 1; before the fan_in_fan_out
    transpose): A = [A_1; A_2; ...], B = [λ_1 s_1 B_1 | λ_2 s_2 B_2 | ...] (PEFT's ``cat``; the sign of a
    negative weight sits on B)."""
    import torch

    As, Bs = [], []
    for ad, lam in zip(adapters, weights):
        A, B = ad.factors[module]
        As.append(A.to(torch.float32))
        Bs.append(B.to(torch.float32) * float(ad.scale * lam))
    return torch.cat(As, dim=0), torch.cat(Bs, dim=1)


def _truncate(Q1, U, S, Vh, Q2, rank: int):
    import torch

    r = min(int(rank), int(S.numel()))
    sq = S[:r].sqrt()
    B = (Q1 @ U[:, :r]) * sq
    A = sq[:, None] * (Vh[:r] @ Q2.T)
    lost = float(S[r:].square().sum().sqrt()) if r < S.numel() else 0.0
    norm = float(S.square().sum().sqrt())
    if r < rank:  # a module whose delta has fewer directions than the rank asked for: zero padding
        B = torch.cat([B, B.new_zeros(B.shape[0], rank - r)], dim=1)
        A = torch.cat([A, A.new_zeros(rank - r, A.shape[1])], dim=0)
    return A, B, lost, norm


def lora_svd(A_cat, B_cat, rank: int):
    """The best rank-``rank`` factors of ΔW = B_cat A_cat (Eckart–Young), without forming ΔW:
    QR of both factors, then the SVD of the small core.  Returns (A [rank, in], B [out, rank], lost,
    norm) with ``lost`` = ‖ΔW − B A‖_F = √(Σ dropped σ²) and ``norm`` = ‖ΔW‖_F (float64 inside, float32 out)."""
    import torch

    Q1, R1 = torch.linalg.qr(B_cat.to(torch.float64))
    Q2, R2 = torch.linalg.qr(A_cat.to(torch.float64).T)
    U, S, Vh = torch.linalg.svd(R1 @ R2.T, full_matrices=False)
    A, B, lost, norm = _truncate(Q1, U, S, Vh, Q2, rank)
    return A.to(torch.float32), B.to(torch.float32), lost, norm


def delta_to_lora(delta, rank: int):
    """Re-factorise a dense ΔW [out, in] as B [out, rank] · A [rank, in] by truncated SVD; returns
    (A, B, lost) with ``lost`` = ‖ΔW − B A‖_F = √(Σ dropped σ²)."""
    import torch

    U, S, Vh = torch.linalg.svd(delta.to(torch.float64), full_matrices=False)
    eye_out = torch.eye(U.shape[0], dtype=torch.float64)
    eye_in = torch.eye(Vh.shape[1], dtype=torch.float64)
    A, B, lost, _ = _truncate(eye_out, U, S, Vh, eye_in, rank)
    return A.to(torch.float32), B.to(torch.float32), lost


def parse_rank(value) -> int | str | None:
    """``--rank``: None (a full model), ``"exact"`` (the concatenated rank, no truncation) or an integer ≥ 1."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and value.strip().lower() == "exact":
        return "exact"
    try:
        r = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"--rank {value!r}: expected 'exact' or a positive integer") from None
    if r < 1:
        raise ConfigError(f"--rank {value!r}: expected 'exact' or a positive integer")
    return r


def _refactor(adapters: Sequence[LoraWeights], weights: Sequence[float], rank) -> tuple[dict, dict]:
    """Delta mode as an adapter: {module: (A, B)} at ``rank`` ('exact' or R) and the truncation report."""
    factors, per_module = {}, {}
    lost2 = norm2 = 0.0
    for m in adapters[0].modules:
        A_cat, B_cat = concat_lora(adapters, weights, m)
        if rank == "exact":
            factors[m] = (A_cat.contiguous(), B_cat.contiguous())
            continue
        A, B, lost, norm = lora_svd(A_cat, B_cat, int(rank))
        factors[m] = (A.contiguous(), B.contiguous())
        per_module[m] = {"lost": lost, "norm": norm, "relative": lost / norm if norm > 0 else 0.0}
        lost2 += lost * lost
        norm2 += norm * norm
    total_rank = sum(ad.rank(adapters[0].modules[0]) for ad in adapters)
    if rank == "exact":
        report = {"rank": total_rank, "exact": True, "lost": 0.0, "relative": 0.0,
                  "note": "rank concatenation: B A equals the weighted sum of the deltas (no truncation)"}
    else:
        report = {"rank": int(rank), "exact": int(rank) >= total_rank, "lost": math.sqrt(lost2),
                  "norm": math.sqrt(norm2), "relative": math.sqrt(lost2 / norm2) if norm2 > 0 else 0.0,
                  "energy_retained": 1.0 - lost2 / norm2 if norm2 > 0 else 1.0,
                  "worst_module": max(per_module, key=lambda k: per_module[k]["relative"]) if per_module else None,
                  "per_module": per_module,
                  "note": "truncated SVD of the exact delta: lost = ||sum_i w_i s_i B_i A_i - B A||_F "
                  "(Frobenius, over all modules together)"}
    return factors, report


@dataclass
class TensorMerge:
    """What :func:`merge_tensors` returns: a state dict (``kind='model'``) or an adapter (``kind='adapter'``)
    and a report (mode, weights, rank, truncation error)."""

    kind: Literal["model", "adapter"]
    state_dict: Optional[dict] = None
    lora: Optional[LoraWeights] = None
    report: dict = dataclasses.field(default_factory=dict)


def merge_tensors(base: Mapping | None, endpoints: Sequence, weights: Sequence[float], mode: str = "delta",
                  rank=None) -> TensorMerge:
    """The merge on tensors.

    ``endpoints``: K :class:`LoraWeights` (adapters of ``base``) or K state dicts (full models).
    ``base``: θ_0 as a state dict of parameter names (``model.layers.0.self_attn.q_proj.weight``); needed
    for adapters merged into a full model (``rank=None``) and for full models off the simplex.
    ``mode``: 'delta' (exact) or 'factors' (the reference code's averaging of A and B; adapters only).
    ``rank``: adapters in delta mode: None (a full state dict), 'exact' or an integer (an adapter).
    The inputs are never modified."""
    if mode not in ("delta", "factors"):
        raise ConfigError(f"mode must be 'delta' or 'factors'; got {mode!r}")
    if not endpoints:
        raise ConfigError("nothing to merge: no endpoints")
    weights = [float(w) for w in weights]
    if len(weights) != len(endpoints):
        raise ConfigError(f"{len(weights)} weights for {len(endpoints)} endpoints")
    rank = parse_rank(rank)
    if all(isinstance(e, LoraWeights) for e in endpoints):
        modules = endpoints[0].modules
        for e in endpoints[1:]:
            if sorted(e.modules) != sorted(modules):
                raise ConfigError("the adapters adapt different modules; a soup merges adapters with the same LoRA targets")
        if mode == "factors":
            if rank is not None:
                raise ConfigError("--rank applies to --mode delta (factors mode keeps the endpoints' rank)")
            _check_factor_shapes(endpoints, [f"adapter {i}" for i in range(len(endpoints))])
            factors = {m: (factor_average([e.factors[m][0] for e in endpoints], weights),
                           factor_average([e.factors[m][1] for e in endpoints], weights)) for m in modules}
            lora = LoraWeights(factors, endpoints[0].scale, endpoints[0].fan_in_fan_out)
            return TensorMerge("adapter", lora=lora, report={"mode": "factors", "weights": weights})
        if rank is not None:
            factors, rep = _refactor(endpoints, weights, rank)
            return TensorMerge("adapter", lora=LoraWeights(factors, 1.0, endpoints[0].fan_in_fan_out),
                               report={"mode": "delta", "weights": weights, "truncation": rep})
        if base is None:
            raise ConfigError("merging adapters into a full model needs the base model's weights")
        out = dict(base)
        for m in modules:
            name = base_param_name(m)
            if name not in base:
                raise ConfigError(f"the adapters adapt {m!r}, but the base model has no parameter {name!r}")
            w0 = base[name]
            d = lora_delta_sum(endpoints, weights, m)
            if d is None:
                continue
            if tuple(d.shape) != tuple(w0.shape):
                raise ConfigError(f"{m!r}: the adapters' delta has shape {tuple(d.shape)}, the base weight {tuple(w0.shape)}")
            out[name] = (w0.to(d.dtype) + d).to(w0.dtype)
        return TensorMerge("model", state_dict=out, report={"mode": "delta", "weights": weights})
    if any(isinstance(e, LoraWeights) for e in endpoints):
        raise ConfigError("the endpoints mix LoRA adapters and full models; merge endpoints of one kind")
    if mode == "factors":
        raise ConfigError("--mode factors averages LoRA factors; full models have none (their merge is the exact one)")
    if rank is not None:
        raise ConfigError("--rank re-factorises LoRA deltas; full fine-tunes merge into a full model")
    keys = list(endpoints[0])
    for e in endpoints[1:]:
        if list(e) != keys and sorted(e) != sorted(keys):
            raise ConfigError("the models hold different tensors (different architectures); a soup needs one architecture")
    out = {k: interpolate([e[k] for e in endpoints], weights, None if base is None else base.get(k)) for k in keys}
    return TensorMerge("model", state_dict=out, report={"mode": "delta", "weights": weights})


def base_param_name(module: str) -> str:
    """The base model's parameter a LoRA module adapts: ``base_model.model.<path>`` -> ``<path>.weight``."""
    path = module[len("base_model.model."):] if module.startswith("base_model.model.") else module
    return path + ".weight"


def _check_factor_shapes(adapters: Sequence[LoraWeights], names: Sequence[str]) -> None:
    a0 = adapters[0]
    for n, a in zip(names[1:], adapters[1:]):
        m = a0.modules[0]
        if a.rank(m) != a0.rank(m) or not math.isclose(a.scale, a0.scale, rel_tol=1e-9):
            raise ConfigError(
                f"--mode factors averages the factors A and B, which needs equal ranks and scales: {names[0]!r} has "
                f"rank {a0.rank(m)} (scale {a0.scale:g}), {n!r} rank {a.rank(m)} (scale {a.scale:g}); "
                "use --mode delta (exact for any ranks)")
        if a.fan_in_fan_out != a0.fan_in_fan_out:
            raise ConfigError(f"endpoints {names[0]!r} and {n!r} differ in fan_in_fan_out; their adapters are of "
                              "different layer types")
        for mm in a0.modules:
            if tuple(a.factors[mm][0].shape) != tuple(a0.factors[mm][0].shape) \
                    or tuple(a.factors[mm][1].shape) != tuple(a0.factors[mm][1].shape):
                raise ConfigError(f"--mode factors: {names[0]!r} and {n!r} have factors of different shapes at {mm!r}; "
                                  "use --mode delta")


# ---------------------------------------------------------------------------------------------
# reading weights (safetensors only) and fingerprints
# ---------------------------------------------------------------------------------------------


def _safetensors_header(f: Path) -> dict:
    try:
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if n <= 0 or n > f.stat().st_size:
                raise ValueError("bad header length")
            header = json.loads(fh.read(n).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelNotFoundError(f"{f}: not a readable safetensors file ({exc}); the file is damaged or cut short") from None
    if not isinstance(header, dict):
        raise ModelNotFoundError(f"{f}: not a readable safetensors file")
    return header


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")) if folder.is_dir() else []
    if pickled:
        raise ModelNotFoundError(f"{folder}: its weights are {pickled[0]} (a pickle, which paretoalign never loads); "
                                 "re-save them as safetensors (save_pretrained(..., safe_serialization=True))")
    raise ModelNotFoundError(f"{folder}: no .safetensors weights found")


_DIGESTS: dict = {}


def weights_digest(folder: str | Path) -> str:
    """sha256 of a folder's safetensors weights: each file's tensor table (names, dtypes, shapes; not its
    free-form metadata) and data, so the same weights saved twice (or by another transformers) match.
    Computed once per process while the files are unchanged."""
    folder = Path(folder).resolve()
    files = _weight_files(folder)
    key = (str(folder), tuple((f.name, (st := f.stat()).st_size, st.st_mtime_ns) for f in files))
    if key not in _DIGESTS:
        h = hashlib.sha256()
        for f in files:
            header = _safetensors_header(f)
            header.pop("__metadata__", None)
            h.update(json.dumps(header, sort_keys=True).encode())
            with open(f, "rb") as fh:
                fh.seek(8 + int.from_bytes(fh.read(8), "little"))
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    h.update(chunk)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}


def _quantised_tensors(folder: Path) -> list[str]:
    """Weight tensors stored as integers or 8-bit floats (bitsandbytes, GPTQ/AWQ packs, FP8), by name."""
    out = []
    for f in _weight_files(folder):
        for name, info in _safetensors_header(f).items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            if info.get("dtype") not in _FLOAT_DTYPES and (name.endswith((".weight", ".qweight", ".SCB", ".absmax"))
                                                            or "quant" in name):
                out.append(f"{name} ({info.get('dtype')})")
    return out


def _quantisation(folder: Path) -> str | None:
    """Why the weights in ``folder`` are quantised (config.json's quantization_config, integer weights), or None."""
    cfg = _read_json(folder / "config.json")
    q = cfg.get("quantization_config") if isinstance(cfg, dict) else None
    if q:
        method = q.get("quant_method", "") if isinstance(q, dict) else ""
        return f"config.json has a quantization_config{f' ({method})' if method else ''}"
    bad = _quantised_tensors(folder)
    if bad:
        return f"{len(bad)} weight tensor(s) are not floating point, e.g. {bad[0]}"
    return None


def _read_json(f: Path):
    try:
        return json.loads(Path(f).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


class _LazyFactors(Mapping):
    """{module: (A, B)} read from an adapter file one module at a time (safetensors, no pickle)."""

    def __init__(self, file: Path, keys: dict):
        self.file, self.keys = file, keys  # module -> (key of A, key of B)

    def __getitem__(self, module):
        from safetensors import safe_open

        a, b = self.keys[module]
        with safe_open(str(self.file), "pt", device="cpu") as f:
            return f.get_tensor(a), f.get_tensor(b)

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)


def lora_scale(adapter_config: Mapping, rank: int) -> float:
    """PEFT's scaling of a LoRA layer: lora_alpha / r, or lora_alpha / √r with rsLoRA."""
    alpha = float(adapter_config.get("lora_alpha") or rank)
    return alpha / math.sqrt(rank) if adapter_config.get("use_rslora") else alpha / rank


def read_lora(folder: str | Path, name: str | None = None) -> LoraWeights:
    """The LoRA adapter in ``folder`` (``adapter_config.json`` + ``adapter_model.safetensors``), read lazily.
    An adapter that is not a sum of B·A products over linear layers is refused in one line."""
    folder = Path(folder)
    label = repr(name) if name else repr(str(folder))
    cfg = _read_json(folder / ADAPTER_CONFIG)
    if not isinstance(cfg, dict):
        raise ModelNotFoundError(f"endpoint {label}: {folder / ADAPTER_CONFIG} is missing or not a JSON object")
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ConfigError(f"endpoint {label}: a {cfg.get('peft_type')} adapter, not LoRA; only LoRA adapters are merged")
    for key, what in _UNSUPPORTED_LORA.items():
        if cfg.get(key):
            raise ConfigError(f"endpoint {label}: its LoRA adapter uses {what}, which is not a sum of B.A products; "
                              "merging it is not supported")
    if cfg.get("bias", "none") not in (None, "none"):
        raise ConfigError(f"endpoint {label}: its LoRA adapter trains biases (bias={cfg.get('bias')!r}), which are not "
                          "B.A products; merging it is not supported")
    file = folder / ADAPTER_WEIGHTS
    if not file.is_file():
        _weight_files(folder)  # names a pickled adapter_model.bin, or says nothing is there
        raise ModelNotFoundError(f"endpoint {label}: {file} is missing")
    header = _safetensors_header(file)
    keys: dict = {}
    for k, info in header.items():
        if k == "__metadata__":
            continue
        m = _LORA_KEY.match(k)
        if not m:
            raise ConfigError(f"endpoint {label}: its adapter holds {k!r}, which is not a LoRA factor of a linear layer "
                              "(lora_A/lora_B); merging it is not supported")
        if info.get("dtype") not in _FLOAT_DTYPES:
            raise ConfigError(f"endpoint {label}: its adapter tensor {k} is stored as {info.get('dtype')} (quantised); "
                              "quantised weights are never averaged")
        slot = keys.setdefault(m["module"], [None, None])
        slot[0 if m["which"] == "A" else 1] = k
    for mod, (a, b) in keys.items():
        if a is None or b is None:
            raise ConfigError(f"endpoint {label}: its adapter has lora_{'A' if a is None else 'B'} missing for {mod!r}")
    if not keys:
        raise ConfigError(f"endpoint {label}: its adapter file holds no LoRA factors")
    first = next(iter(keys.values()))
    r = int(header[first[0]]["shape"][0])
    ranks = {int(header[a]["shape"][0]) for a, _ in keys.values()}
    if len(ranks) > 1:
        raise ConfigError(f"endpoint {label}: its adapter has layers of different ranks {sorted(ranks)} without a "
                          "rank_pattern; the file does not match its config")
    if cfg.get("r") is not None and int(cfg["r"]) != r:
        raise ConfigError(f"endpoint {label}: adapter_config.json says r={cfg['r']}, its weights have rank {r}")
    return LoraWeights(_LazyFactors(file, {k: tuple(v) for k, v in sorted(keys.items())}), lora_scale(cfg, r),
                       bool(cfg.get("fan_in_fan_out", False)))


# ---------------------------------------------------------------------------------------------
# endpoints: run folders, adapter folders, model folders
# ---------------------------------------------------------------------------------------------


@dataclass
class BaseModel:
    """The base model θ_0: ``dir`` its folder; ``adapter_name``: how a merged adapter names it
    (None: the base lived inside a run and is saved beside the merged adapter as ``./base``)."""

    dir: Path
    label: str
    adapter_name: Optional[str] = None

    def digest(self) -> str:
        return weights_digest(self.dir)


@dataclass
class Endpoint:
    """One endpoint of a soup, resolved (nothing loaded): ``kind`` 'lora' (an adapter on ``base``) or
    'full' (a full fine-tune; ``base`` known when it comes from a run)."""

    name: str
    source: str
    kind: Literal["lora", "full"]
    folder: Path  # the adapter or model folder
    base: Optional[BaseModel] = None
    run: Optional[Path] = None
    run_config: Optional[dict] = None
    adapter_config: Optional[dict] = None

    @property
    def tokenizer_dir(self) -> Path | None:
        for d in (self.folder, self.base.dir if self.base else None):
            if d is not None and ((d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file()):
                return d
        return None

    def digest(self) -> str:
        """Content hash of the endpoint's own weights (an adapter: its factors and the config fields that
        decide its delta: rank, alpha, rsLoRA, fan_in_fan_out, targets)."""
        if self.kind != "lora":
            return weights_digest(self.folder)
        cfg = self.adapter_config or {}
        keys = ("r", "lora_alpha", "use_rslora", "fan_in_fan_out", "target_modules")
        fields = {k: sorted(cfg[k]) if k == "target_modules" and isinstance(cfg.get(k), list) else cfg.get(k) for k in keys}
        return hashlib.sha256((weights_digest(self.folder) + json.dumps(fields, sort_keys=True)).encode()).hexdigest()


_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


def parse_endpoints(value) -> list[tuple[str, str]]:
    """``"a=RUN,b=RUN"`` (or a list, or ``{"a": RUN}``) -> [(name, source)]; an unnamed entry is named after
    its folder.  Names must be distinct."""
    if isinstance(value, Mapping):
        items = [f"{k}={v}" for k, v in value.items()]
    else:
        items = split_list(value)
    out = []
    for item in items:
        item = str(item).strip()
        name, eq, src = item.partition("=")
        if eq and _NAME.match(name.strip()) and src.strip() and not Path(item).exists():
            name, src = name.strip(), src.strip()
        else:
            src = item
            p = Path(src.rstrip("/"))
            name = p.parent.parent.name if p.name == run_dir.POLICY and p.parent.name == run_dir.FINAL else p.name
            name = name or src
        out.append((name, src))
    if not out:
        raise ConfigError("--endpoints: give the endpoints to merge, e.g. --endpoints a=runs/sent,b=runs/len")
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--endpoints: the name {dup[0]!r} is used twice; name them: --endpoints a=RUN,b=RUN")
    return out


def _tiny_base(seed: int) -> BaseModel:
    """The tiny test model of ``seed`` as a folder (built once under the paretoalign cache)."""
    from paretoalign.models import build_tiny_model, build_tiny_tokenizer, cache_dir

    folder = cache_dir() / "merging" / f"tiny-base-seed{int(seed)}"
    if not (folder / "config.json").is_file():
        import tempfile

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=folder.parent))
        from paretoalign.console import quiet_third_party

        tok = build_tiny_tokenizer()
        with quiet_third_party():
            build_tiny_model(tok, seed=int(seed)).save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return BaseModel(folder, f"tiny (seed {int(seed)})", None)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _named_base(name: str, seed: int = 0, allow_download: bool = False) -> BaseModel:
    """A base model named as ``--model`` takes it: tiny, the built-in SmolLM2, a folder, a cached Hub id."""
    from paretoalign.models import TINY_NAME, resolve_model_path

    if name == TINY_NAME:
        return _tiny_base(seed)
    d = Path(resolve_model_path(name, allow_download))
    if Path(name).expanduser().exists():
        return BaseModel(d.resolve(), str(d.resolve()), str(d.resolve()))
    return BaseModel(d, name, name)


def _adapter_base_model(folder: Path, cfg: dict, run_config: dict | None, allow_download: bool) -> BaseModel:
    from paretoalign.models import SMOLLM2_NAME, adapter_base

    raw = str(cfg.get("base_model_name_or_path") or "")
    try:
        d = Path(adapter_base(folder, allow_download))
    except ModelNotFoundError:
        model = (run_config or {}).get("model")
        if not model:
            raise
        return _named_base(str(model), int((run_config or {}).get("seed", 0)), allow_download)
    if raw == SMOLLM2_NAME or (not _looks_like_path(raw) and not (folder / raw).is_dir() and not Path(raw).is_absolute()):
        return BaseModel(d, raw, raw)  # a built-in name or a Hub id: portable as it is
    if Path(raw).expanduser().is_absolute():
        return BaseModel(d, str(d), str(d))
    model = (run_config or {}).get("model")
    label = (f"tiny (seed {int((run_config or {}).get('seed', 0))})" if model == "tiny" else str(model)) if model \
        else f"{raw} (relative to {folder.name})"
    return BaseModel(d, f"{label}, saved in its run", None)  # inside its run: copied beside a merged adapter


def resolve_endpoint(source: str, name: str | None = None, allow_download: bool = False) -> Endpoint:
    """Resolve one endpoint (nothing loaded): a run folder (its ``final/policy``), ``RUN/final``, a checkpoint,
    an adapter folder, a model folder or a model name, as :func:`paretoalign.inference.resolve_policy` does."""
    from paretoalign.inference import resolve_policy
    from paretoalign.models import TINY_NAME, resolve_model_path

    t = resolve_policy(source)
    name = name or Path(str(source).rstrip("/")).name or str(source)
    run_cfg = t.run_config if t.kind in ("run", "checkpoint") else None
    if t.kind in ("run", "checkpoint"):
        folder = Path(t.policy_dir)
    elif t.name == TINY_NAME:
        folder = _tiny_base(0).dir
    else:
        folder = Path(resolve_model_path(t.name, allow_download))
    if (folder / ADAPTER_CONFIG).is_file():
        cfg = _read_json(folder / ADAPTER_CONFIG)
        if not isinstance(cfg, dict):
            raise ModelNotFoundError(f"endpoint {name!r}: {folder / ADAPTER_CONFIG} is not a readable JSON object")
        base = _adapter_base_model(folder, cfg, run_cfg, allow_download)
        return Endpoint(name, str(source), "lora", folder, base, t.run, run_cfg, cfg)
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"endpoint {name!r}: {str(folder)!r} holds neither an adapter nor a model")
    base = None
    if run_cfg and run_cfg.get("model"):
        try:
            base = _named_base(str(run_cfg["model"]), int(run_cfg.get("seed", 0)), allow_download)
        except ModelNotFoundError:
            base = None  # not on this machine: the endpoints' bases are compared by name instead
    return Endpoint(name, str(source), "full", folder, base, t.run, run_cfg, None)


def _vocab_problem(a, b) -> str | None:
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        if len(va) != len(vb):
            return f"vocabularies of {len(va)} and {len(vb)} tokens"
        moved = sum(1 for k, v in va.items() if vb.get(k) != v)
        return f"{moved} of {len(va)} tokens map to other ids"
    if list(a.all_special_tokens) != list(b.all_special_tokens):
        return f"special tokens {a.all_special_tokens} vs {b.all_special_tokens}"
    return None


def _load_tokenizer_dir(d: Path, label: str):
    from transformers import AutoTokenizer

    from paretoalign.console import quiet_third_party

    try:
        with quiet_third_party():
            return AutoTokenizer.from_pretrained(str(d))
    except Exception as exc:  # damaged or foreign tokenizer files: the folder's fault, in one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"endpoint {label!r}: no tokenizer could be loaded from {str(d)!r}: {first}") from None


def check_endpoints(endpoints: Sequence[Endpoint], mode: str = "delta", rank=None, base: BaseModel | None = None,
                    ) -> BaseModel | None:
    """Refuse what a soup cannot be (see the module docs), one line each; returns the shared base (None
    for full models whose base is not known)."""
    if len(endpoints) < 2:
        raise ConfigError(f"a soup needs at least two endpoints; got {len(endpoints)}")
    kinds = {e.kind for e in endpoints}
    if len(kinds) > 1:
        a = next(e for e in endpoints if e.kind == "lora")
        b = next(e for e in endpoints if e.kind == "full")
        raise ConfigError(f"endpoint {a.name!r} is a LoRA adapter and {b.name!r} a full model; merge endpoints of one kind")
    e0 = endpoints[0]
    # the base: the one given, else the first endpoint's; every endpoint's must have the same weights
    shared = base or e0.base
    for e in endpoints:
        if e.base is None or shared is None or e is e0 and base is None:
            continue
        if e.base.dir.resolve() != shared.dir.resolve() and e.base.digest() != shared.digest():
            who = f"endpoint {e.name!r} and --base" if base is not None else f"endpoints {e0.name!r} and {e.name!r}"
            raise ConfigError(f"{who} have different base models ({shared.label} and {e.base.label}: their weights "
                              "differ); a soup interpolates fine-tunes of one shared base")
    if shared is None and kinds == {"full"}:
        names = {str((e.run_config or {}).get("model")) for e in endpoints if e.run_config}
        if len(names) > 1:
            raise ConfigError(f"the endpoints were trained from different base models ({', '.join(sorted(names))}); "
                              "a soup interpolates fine-tunes of one shared base")
    # the tokenizer
    toks = []
    for e in endpoints:
        d = e.tokenizer_dir
        if d is None:
            raise ModelNotFoundError(f"endpoint {e.name!r}: no tokenizer beside its weights or its base")
        toks.append((e, _load_tokenizer_dir(d, e.name)))
    for e, tok in toks[1:]:
        why = _vocab_problem(toks[0][1], tok)
        if why:
            raise ConfigError(f"endpoints {e0.name!r} and {e.name!r} have different tokenizers ({why}); a soup needs "
                              "endpoints fine-tuned from one base with one tokenizer")
    if kinds == {"lora"}:
        adapters = [read_lora(e.folder, e.name) for e in endpoints]
        mods0 = set(adapters[0].modules)
        for e, ad in zip(endpoints[1:], adapters[1:]):
            mods = set(ad.modules)
            if mods != mods0:
                raise ConfigError(f"endpoints {e0.name!r} and {e.name!r} adapt different modules ({_module_diff(mods0, mods)}); "
                                  "a soup merges LoRA adapters with the same target modules")
        if mode == "factors":
            _check_factor_shapes(adapters, [e.name for e in endpoints])
        if rank is None and mode == "delta" and shared is not None:  # deltas added into the base's weights
            q = _quantisation(shared.dir)
            if q:
                raise ConfigError(f"the base model {shared.label} is quantised ({q}): deltas are not added to quantised "
                                  "weights; write an adapter instead (--rank exact or --rank R, or --mode factors)")
    else:
        if mode == "factors":
            raise ConfigError("--mode factors averages LoRA factors; the endpoints are full models (their merge is exact)")
        if rank is not None:
            raise ConfigError("--rank re-factorises LoRA deltas; the endpoints are full models, merged into a full model")
        for e in endpoints:
            q = _quantisation(e.folder)
            if q:
                raise ConfigError(f"endpoint {e.name!r} has quantised weights ({q}); quantised weights are never "
                                  "averaged: merge de-quantised models, or LoRA adapters")
        h0 = _tensor_table(e0.folder)
        for e in endpoints[1:]:
            h = _tensor_table(e.folder)
            if h != h0:
                diff = sorted(set(h) ^ set(h0))[:1] or [k for k in h0 if h0[k] != h.get(k)][:1]
                raise ConfigError(f"endpoints {e0.name!r} and {e.name!r} hold different tensors (e.g. {diff[0]}): "
                                  "different architectures cannot be merged")
    return shared


def _module_diff(a: set, b: set) -> str:
    def short(ms):
        kinds = sorted({m.rsplit(".", 1)[-1] for m in ms})
        return ", ".join(kinds[:4]) + (" ..." if len(kinds) > 4 else "")

    parts = []
    if a - b:
        parts.append(f"{short(a - b)} only in the first")
    if b - a:
        parts.append(f"{short(b - a)} only in the second")
    return "; ".join(parts)


def _tensor_table(folder: Path) -> dict:
    out = {}
    for f in _weight_files(folder):
        for k, info in _safetensors_header(f).items():
            if k != "__metadata__":
                out[k] = (tuple(info.get("shape", ())), info.get("dtype"))
    return out


# ---------------------------------------------------------------------------------------------
# merging folders
# ---------------------------------------------------------------------------------------------


@dataclass
class Merged:
    """A merge of endpoints, in memory: ``model`` (kind 'model': the merged model) or ``lora`` +
    ``adapter_config`` (kind 'adapter', to put on ``base``), the tokenizer, and ``record`` (merge.json)."""

    kind: Literal["model", "adapter"]
    endpoints: list
    weights: list
    record: dict
    tokenizer: object = None
    model: object = None
    lora: Optional[LoraWeights] = None
    adapter_config: Optional[dict] = None
    base: Optional[BaseModel] = None

    def load(self):
        """The merged policy in eval mode: the model, or the base with the merged adapter (a PeftModel)."""
        if self.kind == "model":
            return self.model.eval()
        import dataclasses as dc

        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        from paretoalign.console import quiet_third_party
        from paretoalign.models import load_causal_lm

        base = load_causal_lm(str(self.base.dir), self.tokenizer)
        names = {f.name for f in dc.fields(LoraConfig)}
        cfg = LoraConfig(**{k: v for k, v in self.adapter_config.items()
                            if k in names and k not in ("base_model_name_or_path", "revision", "peft_type")})
        with quiet_third_party():
            model = get_peft_model(base, cfg)
            res = set_peft_model_state_dict(model, self.lora.tensors())
        if getattr(res, "unexpected_keys", None):
            raise ConfigError(f"the merged adapter does not fit its base: {res.unexpected_keys[:2]}")
        return model.eval()

    def save(self, out_dir: str | Path, overwrite: bool = False) -> Path:
        """Write the merged model or adapter to ``out_dir`` (a paretoalign-marked folder; see the module
        docs).  A folder paretoalign did not write is refused; our own earlier merge needs ``overwrite``."""
        out = Path(out_dir)
        run_dir.claim(out, MERGE_KIND, overwrite, _merge_entries(out))
        run_dir.lock(out)
        try:
            _remove(out / MERGE_FILE)  # incomplete until merge.json is back
            before = {p.name for p in out.iterdir()}
            from paretoalign.console import quiet_third_party

            with quiet_third_party():
                if self.kind == "model":
                    self.model.save_pretrained(out)
                else:
                    self._save_adapter(out)
                if self.tokenizer is not None:
                    self.tokenizer.save_pretrained(out)
            (out / "README.md").write_text(_card(self.record, self.kind), encoding="utf-8")
            files = sorted(p.name for p in out.iterdir() if p.name not in before or p.name in MERGE_ENTRIES)
            files = [f for f in files if f not in (run_dir.MARKER_FILE, run_dir.LOCK_FILE, "eval.json")]
            run_dir.write_json(out / MERGE_FILE, {**self.record, "files": sorted(set(files) | {MERGE_FILE})})
        finally:
            run_dir.unlock(out)
        return out

    def _save_adapter(self, out: Path) -> None:
        from safetensors.torch import save_file

        cfg = dict(self.adapter_config)
        if self.base.adapter_name is None:  # a base that lived inside its run: saved beside the adapter
            _copy_model_folder(self.base.dir, out / "base")
            cfg["base_model_name_or_path"] = "./base"
        else:
            cfg["base_model_name_or_path"] = self.base.adapter_name
        (out / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
        save_file(self.lora.tensors(), str(out / ADAPTER_WEIGHTS), metadata={"format": "pt"})


def _copy_model_folder(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and (f.suffix in (".json", ".safetensors", ".jinja", ".txt", ".model") or f.name == "merges.txt"):
            shutil.copy2(f, dst / f.name)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def _merge_entries(out: Path) -> tuple:
    """What an earlier merge wrote in ``out`` (fixed names plus the files its merge.json lists)."""
    old = _read_json(out / MERGE_FILE) if out.is_dir() else None
    listed = [str(f) for f in (old or {}).get("files", []) if isinstance(f, str) and "/" not in f and f not in ("", ".", "..")] \
        if isinstance(old, dict) else []
    return tuple(dict.fromkeys(MERGE_ENTRIES + tuple(listed)))


def _check_claimable(out: Path, kind: str, overwrite: bool) -> None:
    """Refuse, without touching anything, what :func:`paretoalign.run_dir.claim` would refuse (so a bad
    --output-dir costs nothing before the models load)."""
    run_dir.check_dir_path(out)
    if not (out.is_dir() and any(out.iterdir())):
        return
    marker = run_dir.read_marker(out)
    if marker is None or marker.get("kind") != kind:
        what = f"a paretoalign {marker['kind']} folder" if marker else f"not a paretoalign folder (no {run_dir.MARKER_FILE})"
        raise RunDirError(f"{str(out)!r} is not empty and is {what}; choose another --output-dir "
                          "(--overwrite only replaces folders paretoalign wrote)")
    if not overwrite and any(p.name not in (run_dir.MARKER_FILE, run_dir.LOCK_FILE) for p in out.iterdir()):
        raise RunDirError(f"{str(out)!r} already holds a paretoalign {kind} folder; pass --overwrite to replace it or "
                          "choose another --output-dir")


def _card(record: dict, kind: str) -> str:
    names = [e["name"] for e in record["endpoints"]]
    w = ", ".join(f"{n} {x:g}" for n, x in zip(names, record["weights"]))
    load = ("```python\nfrom transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(\"<this folder>\")\n```"
            if kind == "model" else
            "```python\nimport paretoalign\nmodel, tokenizer = paretoalign.load_policy(\"<this folder>\")   # or PeftModel.from_pretrained(<base>, \"<this folder>\")\n```")
    trunc = record.get("truncation") or {}
    lines = [
        "---", "library_name: " + ("transformers" if kind == "model" else "peft"),
        "tags: [paretoalign, rewarded-soups, multi-objective-alignment]", "---", "",
        "# Rewarded soup", "",
        f"A weight interpolation of {len(names)} fine-tunes of one base model (Rewarded Soups, {PAPER}; "
        f"[arXiv {ARXIV}](https://arxiv.org/abs/{ARXIV})), written by paretoalign.", "",
        f"- weights: {w}", f"- mode: {record['mode']} ({record.get('mode_note', '')})",
        f"- base model: {record['base']['label'] if record.get('base') else 'not recorded'}",
    ]
    if trunc:
        lines.append(f"- adapter rank {trunc.get('rank')}; truncation error {trunc.get('relative', 0.0):.3g} (relative, Frobenius)")
    lines += ["", "Its sources, with content hashes, are in `merge.json`.", "", "## Load it", "", load, ""]
    return "\n".join(lines)


def _mode_note(mode: str, kind: str, rank) -> str:
    if mode == "factors":
        return ("the reference code's averaging of the LoRA factors (A = sum w_i A_i, B = sum w_i B_i); NOT the "
                "paper's weighted sum of deltas: it adds cross terms B_i A_j")
    if kind == "model":
        return "exact: theta_0 + sum_i w_i (theta_i - theta_0), computed in float32"
    if rank == "exact":
        return "exact: the weighted sum of the adapters' deltas as one adapter of the concatenated rank"
    return f"the weighted sum of the adapters' deltas, truncated to rank {rank} (error in 'truncation')"


def merge(base, endpoints, weights, mode: str = "delta", rank=None, allow_extrapolation: bool = False,
          allow_download: bool = False, checked: bool = False) -> Merged:
    """Rewarded Soups: merge ``endpoints`` with ``weights`` (see the module docs for the math).

    ``base``: None (the base the endpoints name) or a model name/folder they must all share.
    ``endpoints``: ``"a=RUN,b=RUN"``, a list of sources (run folders, adapter or model folders) or
    ``(name, source)`` pairs, or resolved :class:`Endpoint` objects.
    ``mode``: 'delta' (exact, default) or 'factors' (the reference code's averaging of LoRA factors).
    ``rank``: adapters in delta mode: None (a full model), 'exact' (an adapter of rank Σ r_i) or R.
    ``checked``: the endpoints were already checked with this ``base`` (a sweep merging them again).
    Returns a :class:`Merged` (``.load()`` the model, ``.save(folder)``, ``.record``)."""
    import torch

    eps = _endpoints(endpoints, allow_download)
    if mode not in ("delta", "factors"):
        raise ConfigError(f"--mode must be 'delta' or 'factors'; got {mode!r}")
    rank = parse_rank(rank)
    given = _named_base(str(base), 0, allow_download) if base is not None and not isinstance(base, BaseModel) else base
    w = check_weights(weights, len(eps), allow_extrapolation, [e.name for e in eps])  # before anything loads
    shared = (given or eps[0].base) if checked else check_endpoints(eps, mode, rank, given)
    tok = _load_tokenizer_dir(eps[0].tokenizer_dir, eps[0].name)
    rec = _record(eps, w, mode, rank, shared)
    if eps[0].kind == "lora":
        adapters = [read_lora(e.folder, e.name) for e in eps]
        cfg0 = {k: v for k, v in eps[0].adapter_config.items() if k != "base_model_name_or_path"}
        if mode == "factors" or rank is not None:
            tm = merge_tensors(None, adapters, w, mode, rank)
            cfg = dict(cfg0, inference_mode=True)
            if mode == "delta":  # the re-factorised adapter: rank R, scale 1 (alpha = r, no rsLoRA)
                r = tm.report["truncation"]["rank"]
                cfg.update(r=r, lora_alpha=r, use_rslora=False)
                rec["truncation"] = tm.report["truncation"]
            rec["output"] = "adapter"
            rec["mode_note"] = _mode_note(mode, "adapter", rank)
            return Merged("adapter", eps, w, rec, tok, lora=tm.lora, adapter_config=cfg, base=shared)
        from paretoalign.models import load_causal_lm

        model = load_causal_lm(str(shared.dir), tok)  # one copy: the deltas are added in place, a module at a time
        params = model.state_dict()
        with torch.no_grad():
            for m in adapters[0].modules:
                name = base_param_name(m)
                if name not in params:
                    raise ConfigError(f"the adapters adapt {m!r}, but the base model {shared.label} has no {name!r}")
                d = lora_delta_sum(adapters, w, m)
                if d is None:
                    continue
                p = params[name]
                if tuple(d.shape) != tuple(p.shape):
                    raise ConfigError(f"{m!r}: the adapters' delta has shape {tuple(d.shape)}, the base weight "
                                      f"{tuple(p.shape)}; the adapters were not trained on this base")
                p.copy_((p.to(d.dtype) + d).to(p.dtype))
        _set_generation_ids(model, tok)
        rec["output"] = "model"
        rec["mode_note"] = _mode_note(mode, "model", rank)
        return Merged("model", eps, w, rec, tok, model=model, base=shared)
    # full models: the first endpoint's model receives the interpolation, one tensor at a time
    from safetensors import safe_open

    from paretoalign.models import load_causal_lm

    rest = 1.0 - math.fsum(w)
    needs_base = abs(rest) > SUM_TOLERANCE
    if needs_base and shared is None:
        raise ConfigError(f"weights {w} sum to {1 - rest:g}: off the simplex the merge is θ_0 + Σλ_i(θ_i − θ_0), which "
                          "needs the base model; pass --base")
    model = load_causal_lm(str(eps[0].folder), tok)
    params = model.state_dict()
    index = [_tensor_files(e.folder) for e in eps]
    base_index = _tensor_files(shared.dir) if needs_base else None
    with torch.no_grad():
        for key in index[0]:
            if key not in params:
                raise ConfigError(f"{eps[0].name!r}: tensor {key!r} of its files is not a parameter of the loaded model")
            ts = [_read_tensor(idx[key], key, safe_open) for idx in index]
            b = _read_tensor(base_index[key], key, safe_open) if needs_base and key in base_index else None
            if needs_base and b is None:
                raise ConfigError(f"the base model {shared.label} has no tensor {key!r}")
            params[key].copy_(interpolate(ts, w, b))
    _set_generation_ids(model, tok)
    rec["output"] = "model"
    rec["mode_note"] = _mode_note(mode, "model", rank)
    return Merged("model", eps, w, rec, tok, model=model, base=shared)


def soup(endpoints, weights, base=None, mode: str = "delta", rank=None, **kwargs):
    """The merged policy itself (a ``PreTrainedModel``, or a ``PeftModel`` for an adapter output), in eval
    mode: ``merge(base, endpoints, weights, mode, rank, ...).load()``."""
    return merge(base, endpoints, weights, mode, rank, **kwargs).load()


def _set_generation_ids(model, tok) -> None:
    if tok is not None and getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id


def _tensor_files(folder: Path) -> dict:
    out = {}
    for f in _weight_files(folder):
        for k in _safetensors_header(f):
            if k != "__metadata__":
                out[k] = f
    return out


def _read_tensor(f: Path, key: str, safe_open):
    with safe_open(str(f), "pt", device="cpu") as fh:
        return fh.get_tensor(key)


def _endpoints(endpoints, allow_download: bool) -> list[Endpoint]:
    if isinstance(endpoints, (str, Mapping)):
        endpoints = parse_endpoints(endpoints)
    out = []
    for e in endpoints:
        if isinstance(e, Endpoint):
            out.append(e)
        elif isinstance(e, (tuple, list)) and len(e) == 2:
            out.append(resolve_endpoint(str(e[1]), str(e[0]), allow_download))
        else:
            (n, s), = parse_endpoints([str(e)])
            out.append(resolve_endpoint(s, n, allow_download))
    names = [e.name for e in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"two endpoints share the name {next(n for n in names if names.count(n) > 1)!r}; name them: "
                          "--endpoints a=RUN,b=RUN")
    return out


def _record(eps: Sequence[Endpoint], w: list, mode: str, rank, shared: BaseModel | None) -> dict:
    """merge.json (without its file list): deterministic for the same inputs, so a re-run is recognised
    (and its evaluation cached: the folder's content is the same)."""
    from paretoalign import __version__

    def ep(e: Endpoint) -> dict:
        d = {"name": e.name, "source": e.source, "kind": e.kind, "sha256": e.digest()}
        if e.kind == "lora":
            ad = read_lora(e.folder, e.name)
            d.update(rank=ad.rank(ad.modules[0]), scale=ad.scale)
        if e.run_config:
            d.update(method=e.run_config.get("method"), trained_weights=e.run_config.get("weights"),
                     objectives=e.run_config.get("objectives"))
        return d

    return {
        "paretoalign_merge": 1, "paretoalign": __version__, "method": "rs", "paper": PAPER, "arxiv": ARXIV,
        "mode": mode, "rank": rank, "weights": list(w), "endpoints": [ep(e) for e in eps],
        "base": {"label": shared.label, "sha256": shared.digest()} if shared is not None else None,
        "truncation": None,
    }


def merge_spec(eps: Sequence[Endpoint], w: list, mode: str, rank, shared: BaseModel | None) -> dict:
    """What decides a merge's content: weights, mode, rank and the sources' content hashes."""
    return {"weights": [float(x) for x in w], "mode": mode, "rank": rank,
            "endpoints": [e.digest() for e in eps],
            "base": shared.digest() if shared is not None else None}


def merge_into(folder: str | Path, endpoints, weights, mode: str = "delta", rank=None, base=None,
               allow_extrapolation: bool = False, allow_download: bool = False, checked: BaseModel | None = None,
               ) -> tuple[Path, dict, bool]:
    """Merge into ``folder`` unless it already holds this very merge (same weights, mode, rank and source
    hashes: then nothing is redone).  Returns (folder, merge.json, merged now?).  ``folder`` is ours to
    replace (a front's or an LMC's point); one that paretoalign did not write is refused."""
    folder = Path(folder)
    eps = _endpoints(endpoints, allow_download)
    w = check_weights(weights, len(eps), allow_extrapolation, [e.name for e in eps])
    rank = parse_rank(rank)
    if checked is None:
        given = _named_base(str(base), 0, allow_download) if base is not None and not isinstance(base, BaseModel) else base
        checked = check_endpoints(eps, mode, rank, given)
    shared = checked
    spec = merge_spec(eps, w, mode, rank, shared)
    old = _read_json(folder / MERGE_FILE) if (folder / MERGE_FILE).is_file() else None
    if isinstance(old, dict) and old.get("spec") == spec and (run_dir.read_marker(folder) or {}).get("kind") == MERGE_KIND:
        return folder, old, False
    m = merge(shared, eps, w, mode, rank, allow_extrapolation, allow_download, checked=True)
    m.record["spec"] = spec
    m.save(folder, overwrite=True)
    return folder, _read_json(folder / MERGE_FILE), True


# ---------------------------------------------------------------------------------------------
# linear mode connectivity
# ---------------------------------------------------------------------------------------------


def lmc_lambdas(points: int) -> list[float]:
    if points < 2:
        raise ConfigError(f"--points must be >= 2 (the two endpoints at least); got {points}")
    return [round(i / (points - 1), 10) for i in range(points)]


def lmc_report(endpoints, output_dir: str | Path, evaluate: Callable[[str, Path], dict], points: int = 11,
               mode: str = "delta", rank=None, base=None, overwrite: bool = False, allow_download: bool = False,
               progress: Callable[[str], None] = print) -> dict:
    """Linear mode connectivity of two endpoints: the merge (1 − λ) θ_a + λ θ_b at ``points`` values of λ in
    [0, 1], each evaluated by ``evaluate(target_folder, eval_json_path)`` (an eval.json dict, e.g.
    :func:`paretoalign.evaluation.evaluate.evaluate_target`), against the chord between the endpoints' rewards.
    Writes ``lmc.json`` and ``lmc.png`` in ``output_dir``; the merged models go to ``points/``.

    A point *falls below the chord* on an objective when its mean is worse than the chord by more than 2
    standard errors (oriented by the objective's direction); the paper's evidence for LMC is rewards above
    the chord.  λ is the weight of the second endpoint."""
    eps = _endpoints(endpoints, allow_download)
    if len(eps) != 2:
        raise ConfigError(f"--lmc interpolates between two endpoints; got {len(eps)}")
    lams = lmc_lambdas(int(points))
    rank = parse_rank(rank)
    if rank is None and mode == "delta" and eps[0].kind == "lora":
        rank = "exact"  # an exact adapter per point (a few MB) instead of a full model per point
    given = _named_base(str(base), 0, allow_download) if base is not None and not isinstance(base, BaseModel) else base
    shared = check_endpoints(eps, mode, rank, given)
    out = Path(output_dir)
    run_dir.claim(out, LMC_KIND, overwrite, LMC_ENTRIES)
    run_dir.lock(out)
    try:
        rows = []
        for i, lam in enumerate(lams):
            w = [1.0 - lam, lam]
            folder = out / "points" / f"lambda{lam:.3f}"
            progress(f"[lmc] {i + 1}/{len(lams)} lambda={lam:.3f}: merging and evaluating")
            merge_into(folder, eps, w, mode, rank, checked=shared, allow_download=allow_download)
            ev = evaluate(str(folder), folder / "eval.json")
            rows.append((lam, ev))
        result = _lmc_result(eps, rows, mode, rank, out)
        run_dir.write_json(out / LMC_FILE, result)
        plot_lmc(result, out / LMC_PLOT)
    finally:
        run_dir.unlock(out)
    return result


def _lmc_result(eps, rows, mode, rank, out: Path) -> dict:
    ev0 = rows[0][1]
    names, signs = ev0["names"], ev0["signs"]
    lam = [r[0] for r in rows]
    mean = {n: [r[1]["summary"][n]["mean"] for r in rows] for n in names}
    se = {n: [r[1]["summary"][n]["stderr"] for r in rows] for n in names}
    chord, gap, below = {}, {}, {}
    for n, s in zip(names, signs):
        a, b = mean[n][0], mean[n][-1]
        chord[n] = [(1 - x) * a + x * b for x in lam]
        gap[n] = [m - c for m, c in zip(mean[n], chord[n])]
        below[n] = [x for x, g, e in zip(lam, gap[n], se[n]) if s * g < -2.0 * (e if math.isfinite(e) else 0.0)]
    warnings = [f"{n}: below the chord at lambda {', '.join(f'{x:g}' for x in xs)} (by more than 2 s.e.): the "
                "endpoints may not be linearly connected there" for n, xs in below.items() if xs]
    return {
        "paretoalign_lmc": 1, "paper": PAPER, "arxiv": ARXIV,
        "endpoints": [{"name": e.name, "source": e.source, "kind": e.kind} for e in eps],
        "lambda_is": f"the weight of {eps[1].name!r} (1 - lambda on {eps[0].name!r})",
        "mode": mode, "rank": rank, "names": names, "signs": signs, "objectives": ev0.get("objectives"),
        "prompts": ev0.get("prompts"), "prompts_sha256": ev0.get("prompts_sha256"), "decoding": ev0.get("decoding"),
        "lambdas": lam, "mean": mean, "stderr": se, "chord": chord, "gap_to_chord": gap, "below_chord": below,
        "warnings": warnings,
        "points": [{"lambda": x, "folder": str(Path(r["target"]).relative_to(out)) if Path(r["target"]).is_relative_to(out)
                    else r["target"], "eval": r.get("output"), "fingerprint": r["model"]["fingerprint"],
                    "mean": {n: r["summary"][n]["mean"] for n in names}} for x, r in rows],
    }


def plot_lmc(result: dict, path: str | Path) -> Path:
    """lmc.png: each objective's held-out mean ± s.e. along λ, with the chord between the endpoints (dashed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    names = result["names"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.4), squeeze=False)
    a, b = result["endpoints"][0]["name"], result["endpoints"][1]["name"]
    for ax, n, s in zip(axes[0], names, result["signs"]):
        ax.errorbar(result["lambdas"], result["mean"][n], yerr=result["stderr"][n], marker="o", capsize=3,
                    color="#1f77b4", label="merge")
        ax.plot(result["lambdas"], result["chord"][n], "--", color="#7f7f7f", label="chord")
        ax.set_xlabel(f"lambda ({a} -> {b})")
        ax.set_ylabel(n if s > 0 else f"{n} (lower is better)")
        ax.set_title(n)
        ax.grid(alpha=0.3)
    axes[0][0].legend(loc="best", fontsize=8)
    fig.suptitle(f"Linear mode connectivity: {a} -> {b} ({result['mode']})", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


@dataclass
class MergeConfig:
    """Options of ``paretoalign merge``."""

    endpoints: list = field([], help="The endpoints: 'a=RUN,b=RUN' (names optional): run folders (their final "
                            "policy), RUN/final, checkpoints, LoRA adapter folders or model folders, all fine-tuned "
                            "from one base model.")
    weights: Optional[list] = field(None, help="One weight per endpoint, e.g. 0.3,0.7: a point of the simplex "
                                    "(>= 0, sum 1) unless --allow-extrapolation. Not with --lmc.")
    output_dir: str = field("", help="Folder to write (a paretoalign-marked folder; never one paretoalign did not write).")
    mode: Literal["delta", "factors"] = field(
        "delta", help="'delta': the paper's sum of weighted deltas, exact (LoRA: sum_i w_i s_i B_i A_i). 'factors': "
        "the reference code's averaging of the LoRA factors A and B (not the paper's formula: it adds cross terms).")
    rank: Optional[str] = field(None, help="LoRA endpoints, delta mode: write an adapter instead of a full model: "
                                "'exact' (rank = the sum of the endpoints' ranks, no error) or R (truncated SVD; the "
                                "truncation error goes to merge.json). Default: a full model (--lmc: 'exact').")
    base: Optional[str] = field(None, help="The base model every endpoint must share (default: the one they name).")
    allow_extrapolation: bool = field(False, help="Accept weights off the simplex: theta_0 + sum_i w_i (theta_i - theta_0).")
    overwrite: bool = field(False, help="Replace an earlier merge (or LMC) in --output-dir (only what paretoalign wrote).")
    lmc: bool = field(False, help="Linear mode connectivity instead of one merge: evaluate --points merges of two "
                      "endpoints along lambda in [0, 1] on held-out prompts; writes lmc.json and lmc.png.")
    points: int = field(11, help="--lmc: values of lambda, evenly spaced in [0, 1] (the reference code's 11).")
    objectives: Optional[list] = field(None, help="--lmc: objective specs (default: the first endpoint run's).")
    prompts: Optional[str] = field(None, help="--lmc: prompt set (default: the first endpoint run's, else 'builtin').")
    num_prompts: Optional[int] = field(None, help="--lmc: evaluate on the first N held-out prompts.")
    max_new_tokens: Optional[int] = field(None, help="--lmc: completion length (default: the first endpoint run's, else 48).")
    temperature: float = field(0.7, help="--lmc: sampling temperature (evaluate's).")
    eval_seed: int = field(1234, help="--lmc: generation seed (evaluate's).")
    eval_batch_size: int = field(64, help="--lmc: prompts per generation batch (evaluate's).")
    allow_download: bool = field(False, help="Let base models be fetched from a hub (off: local only).")

    def __post_init__(self):
        check_fields(self)
        self.endpoints = split_list(self.endpoints)
        if not self.endpoints:
            raise ConfigError("merge needs --endpoints, e.g. --endpoints a=runs/sent,b=runs/len")
        if not str(self.output_dir).strip():
            raise ConfigError("merge needs --output-dir: the folder to write")
        if self.lmc:
            if self.weights is not None:
                raise ConfigError("--lmc sweeps the weights itself (lambda in [0, 1]); drop --weights")
            if self.points < 2:
                raise ConfigError(f"option points: must be >= 2, got {self.points}")
        elif self.weights is None:
            raise ConfigError("merge needs --weights, one per endpoint (e.g. --weights 0.3,0.7), or --lmc")
        if self.weights is not None:
            self.weights = split_list(self.weights)
        if isinstance(self.objectives, str):
            from paretoalign.objectives.spec import split_objective_specs

            self.objectives = split_objective_specs(self.objectives)
        for name in ("num_prompts", "max_new_tokens", "eval_batch_size"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ConfigError(f"option {name}: must be >= 1, got {v!r}")
        if not self.temperature > 0:
            raise ConfigError(f"option temperature: must be > 0, got {self.temperature!r}")
        self.rank = parse_rank(self.rank)
        if self.rank is not None and self.mode == "factors":
            raise ConfigError("--rank applies to --mode delta (factors mode keeps the endpoints' rank)")
        parse_endpoints(self.endpoints)


def _lmc_evaluator(cfg: MergeConfig, first: Endpoint) -> Callable[[str, Path], dict]:
    """evaluate_target on the first endpoint run's held-out prompts, objectives and decoding (flags override)."""
    from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target

    rc = first.run_config or {}
    objectives = cfg.objectives or rc.get("objectives")
    if not objectives:
        raise ConfigError("--lmc needs --objectives (the endpoints are not run folders, which would name theirs)")

    def run(target: str, output: Path) -> dict:
        ecfg = EvalConfig(
            target=target, output=str(output), objectives=list(objectives), prompts=cfg.prompts or rc.get("prompts"),
            prompt_column=rc.get("prompt_column"), heldout_fraction=rc.get("heldout_fraction"),
            split_seed=rc.get("seed", 0), num_prompts=cfg.num_prompts,
            max_new_tokens=cfg.max_new_tokens or rc.get("max_new_tokens"), temperature=cfg.temperature,
            seed=cfg.eval_seed, batch_size=cfg.eval_batch_size, baseline="none",
            system_prompt=rc.get("system_prompt"), use_chat_template=rc.get("use_chat_template"),
            allow_download=cfg.allow_download)
        return evaluate_target(ecfg, quiet=True)

    return run


def run_merge(cfg: MergeConfig, log: Callable[[str], None] | None = None) -> dict:
    """``paretoalign merge``: one merge (``merge.json``'s content) or, with ``--lmc``, the LMC report."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    pairs = parse_endpoints(cfg.endpoints)
    _check_claimable(Path(cfg.output_dir), LMC_KIND if cfg.lmc else MERGE_KIND, cfg.overwrite)
    if cfg.lmc:
        eps = _endpoints(pairs, cfg.allow_download)
        return lmc_report(eps, cfg.output_dir, _lmc_evaluator(cfg, eps[0]), points=cfg.points, mode=cfg.mode,
                          rank=cfg.rank, base=cfg.base, overwrite=cfg.overwrite, allow_download=cfg.allow_download,
                          progress=log)
    t0 = time.perf_counter()
    out = Path(cfg.output_dir)
    m = merge(cfg.base, pairs, cfg.weights, cfg.mode, cfg.rank, cfg.allow_extrapolation, cfg.allow_download)
    m.save(out, overwrite=cfg.overwrite)
    rec = _read_json(out / MERGE_FILE)
    trunc = rec.get("truncation") or {}
    extra = f", adapter rank {trunc['rank']}, truncation error {trunc.get('relative', 0.0):.3g} (relative)" if trunc else ""
    log(f"[merge] {', '.join(f'{e.name} {x:g}' for e, x in zip(m.endpoints, m.weights))} ({cfg.mode} mode) -> "
        f"{m.kind}{extra} in {time.perf_counter() - t0:.1f} s: {out}")
    return rec


def _cmd_merge(args) -> int:
    from paretoalign.config_utils import build_config

    names = {f.name for f in dataclasses.fields(MergeConfig)}
    cfg = build_config(MergeConfig, args.config, {k: v for k, v in vars(args).items() if k in names})
    res = run_merge(cfg)
    if cfg.lmc:
        from paretoalign.console import table

        rows = [[f"{lam:g}", *[f"{res['mean'][n][i]:.3f} ± {res['stderr'][n][i]:.3f} ({res['gap_to_chord'][n][i]:+.3f})"
                                for n in res["names"]]] for i, lam in enumerate(res["lambdas"])]
        print(f"lambda = weight of {res['endpoints'][1]['name']!r}; in brackets: the difference to the chord")
        print(table(["lambda", *res["names"]], rows))
        for w in res["warnings"]:
            print(f"warning: {w}")
        print(f"-> {Path(cfg.output_dir) / LMC_FILE}, {Path(cfg.output_dir) / LMC_PLOT}")
    return 0


def add_merge_parser(sub):
    """Register ``merge`` on the subparsers object ``sub`` (imports neither torch nor transformers)."""
    import argparse

    from paretoalign.config_utils import add_dataclass_arguments

    p = sub.add_parser(
        "merge",
        help="Rewarded Soups: interpolate the weights of fine-tunes of one base (runs, adapters or models); --lmc "
        "checks linear mode connectivity.",
        description="Merge K endpoints fine-tuned from one base model with weights on the simplex (Rewarded Soups, "
        f"{PAPER}, arXiv {ARXIV}): full models as theta_0 + sum_i w_i (theta_i - theta_0); LoRA adapters exactly "
        "(--mode delta: sum_i w_i s_i B_i A_i, written as a full model or, with --rank, as an adapter) or as the "
        "reference code averages their factors (--mode factors). Endpoints with different bases, tokenizers, LoRA "
        "targets or quantised weights are refused. --lmc evaluates the path between two endpoints instead.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    add_dataclass_arguments(p, MergeConfig)
    p.set_defaults(func=_cmd_merge)
    return p
