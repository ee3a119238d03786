"""HoE-lite: LoRA experts extracted by task-SVD, input-dependent routers over them, and parameter-free
preference routing (``paretoalign experts extract``, ``paretoalign train --method hoe``).

Paper: Li et al. 2025, *Multi-objective Large Language Model Alignment with Hierarchical Experts*
(arXiv 2505.20925, ICLR 2026).  The paper's code is "in supplementary material"; no public code was
found, so this module implements the reconstruction of ``specs/next-methods.md`` §5.2 ("HoE-lite").
What follows the paper (its abstract and secondary summaries: [P]) and what is our reading ([R]):

* **Level 1, LoRA experts** [P: task-SVD of single-objective fine-tunes; R: the exact factorisation].
  For every targeted linear weight, τ = W_i − W_0 = U S Vᵀ is truncated to its top r directions,
  B = U_r S_r^{1/2}, A = S_r^{1/2} V_rᵀ (LoRA scale 1), so B A is the best rank-r approximation of τ
  (Eckart–Young) and ‖τ − B A‖_F = √(Σ_{j>r} s_j²) exactly.  The rank is given (``rank=8``) or the
  smallest that keeps a fraction of the energy Σ_{j≤r} s_j² / Σ_j s_j² (``rank="energy:0.9"``, per
  layer).  Each module's retained energy and Frobenius error are reported.  Other parameters that
  moved (norms, biases, embeddings) are kept as a dense "shared delta" (``shared="keep"``) or dropped
  (``shared="drop"``); the report names them.  Endpoints: full fine-tunes, or LoRA adapters (then τ is
  the adapter's s·B·A as PEFT merges it, ``get_delta_weight``).  Multi-objective experts come
  from :func:`merge_experts` (task arithmetic Σ_i w_i τ_i, then SVD to rank r) [P].
* **Level 2, routed LoRA layers** [P: routers activate the experts per input, trained with the backbone
  frozen on a Tchebycheff objective with online-mirror-descent weights; R: everything below].  Each
  targeted ``nn.Linear`` becomes ``W_0 h + Σ_e g_e(h) B_e A_e h`` with gates g = softmax((W_m h + b_m)/T)
  from router m, one small ``nn.Linear(in_features, E)`` per targeted layer and per router (the only
  trainable parameters).  **Choice**: routers have a bias, initialised (``router_init="anchor"``) so that
  a router starts as the soup of its anchor (W_m = 0, b_m = T·log(max(p, 1e-4)), p the anchor's weights on
  the single-objective experts): training starts from Rewarded Soups over the experts.  Modes: one
  router, a convex mixture of the routers' gates, or constant gates (any vector, zero = the base model).
* **Level 3, preference routing** [P: parameter-free; R: barycentric mixing].  The routers are trained
  for anchor preferences (default: the simplex's vertices and centre, e.g. [1,0], [0.5,0.5], [0,1]).
  A user preference λ is written as a convex combination of the anchors of the cell of a triangulation
  that contains it (K = 2: the two neighbouring anchors on the segment; K ≥ 3: a Delaunay triangulation
  of the anchors, which for vertices plus centre is the one the spec's Das–Dennis cells give) and the
  routers' gates are mixed with those coefficients.  At an anchor only its router runs: exact.
* **Shared deltas under routing** [R]: they cannot be routed per token; the routed model adds
  Σ_e p_e δ_e with p the constant gates, or, under routers, the experts' weights of the current
  preference (λ on the single-objective experts).

Public API::

    from paretoalign.experts import extract_lora_expert, merge_experts, RoutedLoraModel, load_hoe

    e_sent = extract_lora_expert(base="tiny", tuned="runs/sent", rank=8)        # or rank="energy:0.9"
    e_len = extract_lora_expert(base="tiny", tuned="runs/len", rank=8)
    e_mid = merge_experts([e_sent, e_len], [0.5, 0.5], rank=8)                   # a multi-objective expert
    hoe = RoutedLoraModel(model, [e_sent, e_len], anchors=[[1, 0], [0.5, 0.5], [0, 1]])
    hoe.set_gates([0.3, 0.7])            # constant gates: equals the exact delta merge 0.3·τ_sent + 0.7·τ_len
    hoe.use_router(1)                    # router of anchor 1 only
    hoe.set_preference([0.3, 0.7])       # barycentric mixture of the anchors' routers (level 3)
    hoe.model.generate(...)              # hoe.model is the Hugging Face model, routed in place
    hoe.uninstall()                      # the original nn.Linear modules back

    hoe = load_hoe("runs/hoe")           # a run of `train --method hoe`, its final/, or an experts folder
    hoe.set_preference([0.3, 0.7]); hoe.model, hoe.tokenizer

:func:`load_hoe` returns a :class:`RoutedLoraModel` in eval mode with ``.model``, ``.tokenizer``,
``.anchors``, ``.objectives`` (names, or None) and ``.meta`` (``hoe.json``).  ``set_preference(λ)``
takes one weight per objective (on the simplex); a folder without routers (``experts extract``) is
steered by constant gates λ on the single-objective experts (Rewarded Soups over the SVD experts).

Folder layout (an *HoE folder*; written by :func:`save_hoe`; safetensors and JSON only, nothing is
pickled), the same for ``paretoalign experts extract --output-dir DIR`` and a run's ``final/``:

* ``hoe.json``: format version, paper, base (``path``: a name, an absolute folder or ``base`` inside
  this folder; ``sha256`` of its weights), experts (name, source, objective weights, rank per module,
  report, shared/dropped parameters), ``modules``, ``temperature``, ``anchors`` (None: no routers),
  ``objectives``, ``router_init``;
* ``experts.safetensors``: ``experts.<i>.<module>.A`` [r, in], ``.B`` [out, r], ``experts.<i>.shared.<param>``;
* ``routers.safetensors`` (when there are routers): ``<module>.routers.<m>.weight`` / ``.bias``;
* the tokenizer files; ``base/`` when the base model has no portable name (the tiny test model, a base
  saved inside a run);
* a run's ``final/`` also has ``paretoalign.json`` (step, method, objectives), as every run's.

Bad input is one line (:class:`~paretoalign.errors.ConfigError` /
:class:`~paretoalign.errors.ModelNotFoundError`): a missing or damaged folder or file, experts from
another base (weights compared by content), anchors of the wrong length or off the simplex, a
preference outside the anchors' hull.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

from paretoalign import run_dir
from paretoalign.config_utils import check_fields, field, split_list
from paretoalign.errors import ConfigError, ModelNotFoundError

__all__ = [
    "PAPER", "ARXIV", "HOE_FILE", "EXPERTS_FILE", "ROUTERS_FILE", "BaseRef", "EndpointSource", "LoraExpert",
    "RoutedLoraModel", "ExtractConfig", "add_experts_parser", "anchor_coefficients", "base_of",
    "check_anchors", "check_same_base", "choose_rank", "default_anchors", "extract_expert_tensors", "extract_experts",
    "extract_lora_expert", "hoe_folder", "install_experts", "load_base", "load_experts", "load_hoe",
    "load_router_state_dict", "merge_experts", "parse_endpoint_list", "parse_expert_rank", "resolve_endpoint_source",
    "routed_layers", "router_state_dict", "run_extract", "save_hoe", "set_routing", "state_digest", "task_svd",
    "uninstall_experts",
]

PAPER = "Li et al. 2025, Multi-objective Large Language Model Alignment with Hierarchical Experts (ICLR 2026)"
ARXIV = "2505.20925"
HOE_FILE = "hoe.json"
EXPERTS_FILE = "experts.safetensors"
ROUTERS_FILE = "routers.safetensors"
BASE_DIR = "base"
EXPERTS_KIND = "experts"  # the marker's kind of an `experts extract` folder
FORMAT = 1
ANCHOR_TOLERANCE = 1e-9  # a preference this close to an anchor is that anchor (only its router runs)
ROUTER_INIT_FLOOR = 1e-4  # a router's initial gate for an expert its anchor does not weigh
_ENERGY = re.compile(r"^energy:(?P<x>[0-9.eE+-]+)$")


# ---------------------------------------------------------------------------------------------
# level 1: task-SVD (tensors in, tensors out)
# ---------------------------------------------------------------------------------------------


def parse_expert_rank(value) -> int | str:
    """``--expert-rank``: an integer ≥ 1, or ``"energy:x"`` (0 < x ≤ 1) for the smallest rank per layer that
    keeps a fraction x of the delta's energy Σ s_j²."""
    if isinstance(value, bool):
        raise ConfigError(f"--expert-rank {value!r}: expected a positive integer or 'energy:x' with 0 < x <= 1")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(f"--expert-rank {value!r}: expected a positive integer or 'energy:x' with 0 < x <= 1")
        return value
    s = str(value).strip().lower()
    m = _ENERGY.match(s)
    if m:
        try:
            x = float(m["x"])
        except ValueError:
            x = float("nan")
        if not (0 < x <= 1):
            raise ConfigError(f"--expert-rank {value!r}: the energy fraction must be in (0, 1]")
        return f"energy:{x:g}"
    try:
        r = int(s)
    except ValueError:
        raise ConfigError(f"--expert-rank {value!r}: expected a positive integer or 'energy:x' with 0 < x <= 1") from None
    return parse_expert_rank(r)


def choose_rank(singular_values, rank) -> int:
    """The rank kept from ``singular_values`` (descending): ``rank`` (capped at their number) or, for
    ``"energy:x"``, the smallest r with Σ_{j≤r} s_j² ≥ x·Σ_j s_j² (at least 1)."""
    n = int(singular_values.numel())
    rank = parse_expert_rank(rank)
    if isinstance(rank, int):
        return max(1, min(rank, n))
    x = float(rank.split(":", 1)[1])
    e = singular_values.double().square()
    total = float(e.sum())
    if total <= 0:
        return 1
    cum = e.cumsum(0) / total
    # the first index whose cumulative energy reaches x (1e-12: x = 1 is reached despite rounding)
    return max(1, min(n, int((cum < x - 1e-12).sum()) + 1))


def task_svd(tau, rank) -> tuple:
    """Truncated SVD of one task vector τ [out, in]: (A [r, in], B [out, r], info) with B = U_r S_r^{1/2},
    A = S_r^{1/2} V_rᵀ (float32; the SVD in float64), so that B A is the best rank-r approximation of τ.
    ``info``: rank, energy (retained fraction of Σ s²), error (‖τ − B A‖_F = √(Σ_{j>r} s_j²)), norm
    (‖τ‖_F) and relative error."""
    import torch

    U, S, Vh = torch.linalg.svd(tau.to(torch.float64), full_matrices=False)
    r = choose_rank(S, rank)
    sq = S[:r].sqrt()
    B = U[:, :r] * sq
    A = sq[:, None] * Vh[:r]
    total = float(S.square().sum())
    lost = float(S[r:].square().sum())
    info = {"rank": r, "energy": 1.0 - lost / total if total > 0 else 1.0, "error": math.sqrt(lost),
            "norm": math.sqrt(total), "relative_error": math.sqrt(lost / total) if total > 0 else 0.0}
    return A.to(torch.float32).contiguous(), B.to(torch.float32).contiguous(), info


@dataclass
class LoraExpert:
    """One LoRA expert: ``factors[module] = (A [r, in], B [out, r])`` with ΔW = B A (scale 1), keyed by the
    model's module path (``model.layers.0.self_attn.q_proj``); ``shared[param]``: dense deltas of the other
    parameters that moved (kept with ``shared="keep"``); ``objective_weights``: the preference it stands
    for (one-hot for a single-objective expert, w for a merge; None: unknown); ``report``: the extraction's
    per-module rank, energy and error, and which parameters were kept dense or dropped."""

    name: str
    factors: dict
    shared: dict = dataclasses.field(default_factory=dict)
    objective_weights: Optional[list] = None
    report: dict = dataclasses.field(default_factory=dict)
    source: dict = dataclasses.field(default_factory=dict)

    @property
    def modules(self) -> list[str]:
        return list(self.factors)

    def rank(self, module: str) -> int:
        return int(self.factors[module][0].shape[0])

    def delta(self, module: str):
        """ΔW = B A of one module (float32)."""
        A, B = self.factors[module]
        return B.float() @ A.float()


def _is_auto_target(name: str, shape) -> bool:
    """A 2-D ``.weight`` that is not an embedding or the output layer (those get no low-rank expert)."""
    return name.endswith(".weight") and len(shape) == 2 and "embed" not in name and not name.startswith("lm_head") \
        and ".lm_head." not in name and "wte" not in name and "wpe" not in name


def _targeted(name: str, shape, targets) -> bool:
    if targets is None:
        return _is_auto_target(name, shape)
    if not name.endswith(".weight") or len(shape) != 2:
        return False
    leaf = name[: -len(".weight")].rsplit(".", 1)[-1]
    return leaf in targets


def _summarise(per_module: dict) -> dict:
    lost2 = sum(v["error"] ** 2 for v in per_module.values())
    norm2 = sum(v["norm"] ** 2 for v in per_module.values())
    ranks = [v["rank"] for v in per_module.values()]
    return {"modules": len(per_module), "min_rank": min(ranks) if ranks else 0, "max_rank": max(ranks) if ranks else 0,
            "energy": 1.0 - lost2 / norm2 if norm2 > 0 else 1.0, "error": math.sqrt(lost2), "norm": math.sqrt(norm2),
            "relative_error": math.sqrt(lost2 / norm2) if norm2 > 0 else 0.0,
            "worst_module": min(per_module, key=lambda m: per_module[m]["energy"]) if per_module else None}


def extract_expert_tensors(base: Mapping, tuned: Mapping | None = None, rank=8, targets: Sequence[str] | None = None,
                           shared: Literal["keep", "drop"] = "keep", name: str = "expert",
                           deltas: Mapping | None = None) -> LoraExpert:
    """Task-SVD of one endpoint, on tensors.

    ``base``: θ_0 as {parameter name: tensor}.  The endpoint: ``tuned``, a full state dict of the same
    names, or ``deltas``, {parameter name: τ} for the weights a LoRA adapter moves (τ = s·B·A; it has no
    shared deltas).  ``targets``: the module names that get low-rank experts (e.g. ``["q_proj", "v_proj"]``;
    default: every 2-D weight except embeddings and the output layer).  ``shared``: the other parameters
    that moved are kept as dense deltas or dropped (both recorded in the report)."""
    import torch

    if shared not in ("keep", "drop"):
        raise ConfigError(f"shared must be 'keep' or 'drop'; got {shared!r}")
    if (tuned is None) == (deltas is None):
        raise ConfigError("extract_expert_tensors: give the fine-tuned state dict or the adapter's deltas (one of them)")
    rank = parse_expert_rank(rank)
    targets = None if targets is None else list(targets)
    factors, per_module, dense, dropped = {}, {}, {}, []
    if tuned is not None:
        extra = sorted(set(tuned) - set(base))
        missing = sorted(set(base) - set(tuned))
        if extra or missing:
            what = f"{extra[0]!r} is not in the base" if extra else f"the base's {missing[0]!r} is missing"
            raise ConfigError(f"expert {name!r}: the endpoint and the base model hold different tensors ({what}); "
                              "an expert is extracted from a fine-tune of that very base")
        pairs = ((p, base[p], tuned[p]) for p in base)
    else:
        for p in deltas:
            if p not in base:
                raise ConfigError(f"expert {name!r}: the adapter moves {p!r}, which the base model does not have; "
                                  "it was trained on another base")
        pairs = ((p, base[p], None) for p in deltas)
    for pname, w0, w1 in pairs:
        tau = deltas[pname] if w1 is None else w1
        if tuple(w0.shape) != tuple(tau.shape):
            raise ConfigError(f"expert {name!r}: {pname!r} has shape {tuple(tau.shape)} in the endpoint and "
                              f"{tuple(w0.shape)} in the base; an expert is extracted from a fine-tune of that base")
        if not torch.is_floating_point(w0):
            continue
        if w1 is not None:
            tau = w1.to(torch.float32) - w0.to(torch.float32)
        if _targeted(pname, w0.shape, targets):
            module = pname[: -len(".weight")]
            A, B, info = task_svd(tau, rank)
            factors[module], per_module[module] = (A, B), info
        elif bool(tau.any()):
            if shared == "keep" and w1 is not None:
                dense[pname] = tau.to(torch.float32).contiguous()
            else:  # dropped by the flag, or an adapter's module outside --targets
                dropped.append(pname)
    if not factors:
        raise ConfigError(f"expert {name!r}: no targeted linear weight found (targets {targets or 'auto'}); "
                          "nothing to extract")
    report = {"rank_spec": rank, **_summarise(per_module), "per_module": per_module, "shared": shared,
              "shared_params": sorted(dense), "dropped_params": sorted(dropped)}
    return LoraExpert(name, factors, dense, None, report)


def state_digest(model) -> str:
    """sha256 of a model's weights as loaded (names, dtypes, shapes and bytes of its state dict): the same
    base model loaded twice has the same digest, another one (or other weights) a different one."""
    import hashlib

    import torch

    state = model.state_dict() if hasattr(model, "state_dict") else model
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class BaseRef:
    """The base model θ_0 the experts belong to: how to load it again (``name``: a built-in name, a Hub id or an
    absolute folder; "tiny" with ``seed``; "" = in memory only, saved beside the experts), a label, and the
    digest of its weights (:func:`state_digest`)."""

    name: str
    label: str
    sha256: str
    seed: int = 0

    @property
    def portable(self) -> bool:
        """Can the name be loaded elsewhere (else the base is saved into the HoE folder)?"""
        return bool(self.name) and self.name != "tiny"


def load_base(base, tokenizer=None, seed: int = 0, allow_download: bool = False):
    """(model, :class:`BaseRef`) for ``base``: a name (``tiny``, ``smollm2-135m-instruct``, a Hub id in the
    local cache), a model folder, or an already loaded model (a ``PreTrainedModel``)."""
    from paretoalign.models import TINY_NAME, load_causal_lm

    if hasattr(base, "state_dict"):
        return base, BaseRef("", "a model given in memory", state_digest(base))
    name = str(base)
    model = load_causal_lm(name, tokenizer, seed, allow_download)
    if hasattr(model, "peft_config"):
        raise ConfigError(f"the base model {name!r} is a LoRA adapter; experts are extracted against a plain model")
    path = Path(name).expanduser()
    ref = str(path.resolve()) if path.exists() else name
    label = f"tiny (seed {seed})" if name == TINY_NAME else ref
    return model, BaseRef(ref, label, state_digest(model), seed if name == TINY_NAME else 0)


@dataclass
class EndpointSource:
    """One endpoint, resolved (nothing loaded): ``folder`` holds an adapter (``kind='lora'``) or a model
    (``'full'``), or ``folder`` is None and ``model`` is a name; ``run_config``: its run's config, if any."""

    name: str
    source: str
    kind: Literal["lora", "full"]
    folder: Optional[Path]
    run_config: Optional[dict] = None

    @property
    def base_name(self) -> tuple[str, int] | None:
        """The base model the endpoint's run names (model, seed), if any."""
        rc = self.run_config or {}
        return (str(rc["model"]), int(rc.get("seed", 0))) if rc.get("model") else None


def resolve_endpoint_source(source: str, name: str | None = None) -> EndpointSource:
    """A run folder (its ``final/policy``), ``RUN/final``, a checkpoint, an adapter folder, a model folder or
    a model name."""
    p = Path(str(source)).expanduser()
    name = name or p.name or str(source)
    if not p.exists():
        if str(source).startswith(("/", ".", "~")) or str(source).count("/") > 1:
            raise ModelNotFoundError(f"endpoint {name!r}: {str(source)!r} does not exist")
        return EndpointSource(name, str(source), "full", None)
    if not p.is_dir():
        raise ModelNotFoundError(f"endpoint {name!r}: {str(source)!r} is a file; pass a run, adapter or model folder")
    run, folder = None, p
    if (p / run_dir.FINAL / run_dir.POLICY).is_dir():
        run, folder = p, p / run_dir.FINAL / run_dir.POLICY
    elif p.name == run_dir.FINAL and (p / run_dir.POLICY).is_dir():
        run, folder = p.parent, p / run_dir.POLICY
    elif (p / run_dir.POLICY).is_dir() and (p / run_dir.STATE_FILE).is_file():  # a checkpoint
        run, folder = p.parent.parent, p / run_dir.POLICY
    elif p.name == run_dir.POLICY and (p.parent / run_dir.STATE_FILE).is_file():
        run = p.parent.parent
    elif (p / run_dir.CONFIG_FILE).is_file():
        raise ModelNotFoundError(f"endpoint {name!r}: the run {str(p)!r} has no final model yet ({run_dir.FINAL}/"
                                 f"{run_dir.POLICY}); finish it (--resume) or pass one of its checkpoints")
    rc = None
    if run is not None and (run / run_dir.CONFIG_FILE).is_file():
        rc = run_dir.load_config(run)
    if (folder / "adapter_config.json").is_file():
        return EndpointSource(name, str(source), "lora", folder, rc)
    if (folder / "config.json").is_file():
        return EndpointSource(name, str(source), "full", folder, rc)
    raise ModelNotFoundError(f"endpoint {name!r}: {str(folder)!r} holds neither an adapter nor a model")


def _load_endpoint(ep: EndpointSource, tokenizer, allow_download: bool):
    from paretoalign.models import load_causal_lm

    if ep.folder is None:
        return load_causal_lm(ep.source, tokenizer, 0, allow_download)
    try:
        return load_causal_lm(str(ep.folder), tokenizer, 0, allow_download)
    except ModelNotFoundError:
        if ep.kind != "lora" or ep.base_name is None:
            raise
        # a checkpoint's adapter names no loadable base: its run's model does
        from peft import PeftModel

        from paretoalign.console import quiet_third_party

        name, seed = ep.base_name
        with quiet_third_party():
            return PeftModel.from_pretrained(load_causal_lm(name, tokenizer, seed, allow_download), str(ep.folder))


def _lora_deltas(peft_model) -> dict:
    """{base parameter name: ΔW} of a PEFT LoRA model, as PEFT merges it (``get_delta_weight``: s·B·A, transposed
    for fan_in_fan_out layers).  Anything else the adapter trains (DoRA, biases, modules_to_save) is refused."""
    import torch

    cfg = next(iter(peft_model.peft_config.values()))
    if str(getattr(cfg, "peft_type", "LORA")).split(".")[-1].upper() != "LORA":
        raise ConfigError(f"a {cfg.peft_type} adapter, not LoRA; experts are extracted from LoRA adapters or full models")
    for key, what in (("use_dora", "DoRA"), ("modules_to_save", "modules_to_save")):
        if getattr(cfg, key, None):
            raise ConfigError(f"the adapter uses {what}, which is not a sum of B.A products; extract from a merged model")
    if getattr(cfg, "bias", "none") not in (None, "none"):
        raise ConfigError("the adapter trains biases, which are not B.A products; extract from a merged model")
    adapter = peft_model.active_adapter if isinstance(peft_model.active_adapter, str) else peft_model.active_adapter[0]
    out = {}
    prefix = "base_model.model."
    with torch.no_grad():
        for n, m in peft_model.named_modules():
            if hasattr(m, "get_delta_weight") and hasattr(m, "lora_A") and adapter in m.lora_A:
                path = n[len(prefix):] if n.startswith(prefix) else n
                out[path + ".weight"] = m.get_delta_weight(adapter).detach().to(torch.float32)
    if not out:
        raise ConfigError("the adapter holds no LoRA layers")
    return out


def _check_base(ep_name: str, endpoint_base_digest: str | None, base: BaseRef) -> None:
    if endpoint_base_digest is not None and endpoint_base_digest != base.sha256:
        raise ConfigError(f"endpoint {ep_name!r} was not fine-tuned from the base model {base.label} (the base its "
                          "adapter or run names has other weights); experts need the endpoints' own base")


def extract_lora_expert(base=None, tuned=None, rank=8, targets: Sequence[str] | None = None,
                        shared: Literal["keep", "drop"] = "keep", name: str | None = None,
                        objective_weights: Sequence[float] | None = None, allow_download: bool = False,
                        tokenizer=None) -> LoraExpert:
    """The LoRA expert of one single-objective endpoint (HoE level 1; see the module docs).

    ``base``: the base model θ_0 (a name such as ``tiny`` or ``smollm2-135m-instruct``, a model folder, or a
    loaded model; default: the one the endpoint's run or adapter names).  ``tuned``: the endpoint: a run
    folder (its final policy), ``RUN/final``, a checkpoint, a LoRA adapter folder, a full model folder, or a
    loaded model (a ``PeftModel`` or a full model).  ``rank``: an integer or ``"energy:x"``.  An endpoint
    fine-tuned from another base is refused (weights compared by content)."""
    return _extract(base, tuned, rank, targets, shared, name, objective_weights, allow_download, tokenizer)[0]


def _extract(base, tuned, rank, targets, shared, name, objective_weights, allow_download, tokenizer, base_pair=None):
    """(expert, base model, BaseRef); ``base_pair``: an already loaded (model, BaseRef)."""
    if tuned is None:
        raise ConfigError("extract_lora_expert needs the fine-tuned endpoint (tuned=...)")
    if hasattr(tuned, "state_dict"):
        ep, model = EndpointSource(name or "expert", "a model given in memory", "lora" if hasattr(tuned, "peft_config")
                                   else "full", None), tuned
    else:
        ep = resolve_endpoint_source(str(tuned), name)
        model = _load_endpoint(ep, tokenizer, allow_download)
    if ep.kind == "lora":
        deltas = _lora_deltas(model)
        unloaded = model.unload() if hasattr(model, "unload") else model.get_base_model()
        ep_base = state_digest(unloaded)  # the adapter's own base, as it loaded
        if base_pair is None:
            base_pair = (unloaded, BaseRef(*_adapter_base_ref(ep), ep_base)) if base is None else                 load_base(base, tokenizer, 0, allow_download)
        _check_base(ep.name, ep_base, base_pair[1])
        expert = extract_expert_tensors(_params(base_pair[0]), None, rank, targets, shared, name or ep.name,
                                        deltas=deltas)
    else:
        if base_pair is None:
            if base is None:
                if ep.base_name is None:
                    raise ConfigError(f"endpoint {ep.name!r} is a full model that does not name its base; pass the "
                                      "base model (base=... / --base)")
                base_pair = load_base(ep.base_name[0], tokenizer, ep.base_name[1], allow_download)
            else:
                base_pair = load_base(base, tokenizer, 0, allow_download)
        if ep.base_name is not None and base is not None:
            own, _ = load_base(ep.base_name[0], tokenizer, ep.base_name[1], allow_download)
            _check_base(ep.name, state_digest(own), base_pair[1])
        expert = extract_expert_tensors(_params(base_pair[0]), _params(model), rank, targets, shared, name or ep.name)
    expert.objective_weights = list(objective_weights) if objective_weights is not None else None
    expert.source = {"source": ep.source, "kind": ep.kind}
    return expert, base_pair[0], base_pair[1]


def _params(model) -> dict:
    """{name: tensor} of a model's parameters (tied weights once, under their first name, as the model holds them)."""
    return {n: p.detach() for n, p in model.named_parameters()}


def _adapter_base_ref(ep: EndpointSource) -> tuple[str, str]:
    """(name, label) of the base an adapter endpoint loaded on: its run's model, else what its config names."""
    if ep.base_name is not None:
        n, seed = ep.base_name
        return (n, f"tiny (seed {seed})") if n == "tiny" else (n, n)
    cfg = json.loads((ep.folder / "adapter_config.json").read_text(encoding="utf-8")) if ep.folder else {}
    raw = str(cfg.get("base_model_name_or_path") or "")
    p = Path(raw)
    if raw and not p.is_absolute() and ep.folder is not None and (ep.folder / p / "config.json").is_file():
        return "", f"{raw} (relative to {ep.folder.name})"  # a base saved inside a run: saved beside the experts
    return raw, raw


def parse_endpoint_list(value) -> list[tuple[str, str]]:
    """``"a=RUN,b=RUN"`` (or a list, or ``{"a": RUN}``) -> [(name, source)]; an unnamed entry is named after its
    folder (a run's name for ``RUN/final/policy``).  Names must be distinct."""
    items = [f"{k}={v}" for k, v in value.items()] if isinstance(value, Mapping) else split_list(value)
    out = []
    for item in items:
        item = str(item).strip()
        name, eq, src = item.partition("=")
        if eq and re.match(r"^[A-Za-z0-9_.+-]+$", name.strip()) and src.strip() and not Path(item).exists():
            out.append((name.strip(), src.strip()))
        else:
            p = Path(item.rstrip("/"))
            out.append((p.parent.parent.name if p.name == run_dir.POLICY and p.parent.name == run_dir.FINAL
                        else p.name or item, item))
    if not out:
        raise ConfigError("--endpoints: give the endpoints, e.g. --endpoints sentiment=runs/a,length=runs/b")
    names = [n for n, _ in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--endpoints: the name {dup[0]!r} is used twice; name them: --endpoints a=RUN,b=RUN")
    return out


def extract_experts(endpoints, base=None, rank=8, targets: Sequence[str] | None = None,
                    shared: Literal["keep", "drop"] = "keep", allow_download: bool = False, tokenizer=None,
                    progress: Callable[[str], None] | None = None, base_pair: tuple | None = None):
    """One expert per endpoint (``"a=RUN,b=RUN"``, a list of sources or (name, source) pairs), expert i standing
    for objective i (one-hot objective weights), all against one base model (every endpoint's own base must
    have its weights).  ``base_pair``: the base already loaded, (model, :class:`BaseRef`).  Returns (experts,
    the base model, its :class:`BaseRef`)."""
    pairs = parse_endpoint_list(endpoints) if isinstance(endpoints, (str, Mapping)) else \
        [tuple(e) if isinstance(e, (tuple, list)) else parse_endpoint_list([e])[0] for e in endpoints]
    if base_pair is None and base is not None:
        base_pair = load_base(base, tokenizer, 0, allow_download)
    out = []
    for i, (name, src) in enumerate(pairs):
        t0 = time.perf_counter()
        one_hot = [1.0 if j == i else 0.0 for j in range(len(pairs))]
        e, bm, bref = _extract(base, src, rank, targets, shared, name, one_hot, allow_download, tokenizer, base_pair)
        base_pair = base_pair or (bm, bref)
        out.append(e)
        if progress:
            r = e.report
            progress(f"[experts] {name}: {r['modules']} modules, rank {r['min_rank']}-{r['max_rank']}, energy "
                     f"{r['energy']:.4f}, relative error {r['relative_error']:.3g} ({time.perf_counter() - t0:.1f} s)")
    return out, base_pair[0], base_pair[1]


def _check_same_modules(experts: Sequence[LoraExpert]) -> None:
    if not experts:
        raise ConfigError("no experts given")
    mods = experts[0].modules
    for e in experts[1:]:
        if sorted(e.modules) != sorted(mods):
            diff = sorted(set(mods) ^ set(e.modules))[:1]
            raise ConfigError(f"experts {experts[0].name!r} and {e.name!r} target different modules (e.g. {diff[0]!r}); "
                              "extract them with the same targets from fine-tunes of one base")
        for m in mods:
            if (e.factors[m][1].shape[0], e.factors[m][0].shape[1]) != \
                    (experts[0].factors[m][1].shape[0], experts[0].factors[m][0].shape[1]):
                raise ConfigError(f"experts {experts[0].name!r} and {e.name!r} have deltas of different shapes at {m!r}: "
                                  "they come from different base models")


def merge_experts(experts: Sequence[LoraExpert], weights: Sequence[float], rank=8, name: str | None = None) -> LoraExpert:
    """A multi-objective expert by task arithmetic: τ_w = Σ_i w_i B_i A_i per module (exact, float64), then
    task-SVD to ``rank``; shared deltas Σ_i w_i δ_i; objective weights Σ_i w_i o_i."""
    import torch

    experts = list(experts)
    _check_same_modules(experts)
    w = [float(x) for x in weights]
    if len(w) != len(experts):
        raise ConfigError(f"{len(w)} weights for {len(experts)} experts")
    if not all(math.isfinite(x) for x in w) or not any(w):
        raise ConfigError(f"merge weights {w}: finite numbers, not all zero")
    factors, per_module = {}, {}
    for m in experts[0].modules:
        tau = sum(x * (e.factors[m][1].double() @ e.factors[m][0].double()) for e, x in zip(experts, w) if x != 0.0)
        A, B, info = task_svd(tau, rank)
        factors[m], per_module[m] = (A, B), info
    dense = {}
    for e, x in zip(experts, w):
        for k, d in e.shared.items():
            if x != 0.0:
                dense[k] = dense[k] + x * d.float() if k in dense else x * d.float()
    ow = None
    if all(e.objective_weights is not None for e in experts):
        ow = torch.tensor([e.objective_weights for e in experts], dtype=torch.float64).T.mv(
            torch.tensor(w, dtype=torch.float64)).tolist()
    label = name or "+".join(f"{x:g}*{e.name}" for e, x in zip(experts, w) if x)
    report = {"rank_spec": parse_expert_rank(rank), **_summarise(per_module), "per_module": per_module,
              "merged_from": [e.name for e in experts], "merge_weights": w, "shared_params": sorted(dense)}
    return LoraExpert(label, factors, dense, ow, report, {"merge": [e.name for e in experts], "weights": w})


# ---------------------------------------------------------------------------------------------
# level 3: anchors and barycentric coefficients (pure)
# ---------------------------------------------------------------------------------------------


def default_anchors(k: int) -> list[list[float]]:
    """The simplex's vertices and its centre: K = 2 gives [1, 0], [0.5, 0.5], [0, 1] (in that order)."""
    if k < 2:
        raise ConfigError(f"anchors need at least 2 objectives; got {k}")
    verts = [[1.0 if j == i else 0.0 for j in range(k)] for i in range(k)]
    centre = [1.0 / k] * k
    return [verts[0], centre, *verts[1:]] if k == 2 else [*verts, centre]


def check_anchors(anchors, k: int) -> list[list[float]]:
    """``anchors`` (``"1,0;0.5,0.5;0,1"`` or a list of lists) as distinct points of the K-simplex."""
    if isinstance(anchors, str):
        anchors = [split_list(a) for a in anchors.split(";") if a.strip()]
    try:
        pts = [[float(x) for x in (split_list(a) if isinstance(a, str) else a)] for a in anchors]
    except (TypeError, ValueError):
        raise ConfigError(f"anchors {anchors!r}: expected preference vectors such as '1,0;0.5,0.5;0,1'") from None
    if not pts:
        raise ConfigError("anchors: none given")
    for a in pts:
        if len(a) != k:
            raise ConfigError(f"anchor {a} has {len(a)} entries; expected {k}, one per objective")
        if not all(math.isfinite(x) and x >= 0 for x in a) or abs(math.fsum(a) - 1.0) > 1e-6:
            raise ConfigError(f"anchor {a} is not a point of the simplex (entries >= 0 summing to 1)")
    pts = [[x / math.fsum(a) for x in a] for a in pts]
    for i in range(len(pts)):
        for j in range(i):
            if max(abs(x - y) for x, y in zip(pts[i], pts[j])) <= ANCHOR_TOLERANCE:
                raise ConfigError(f"anchors {pts[j]} and {pts[i]} are the same point")
    return pts


def _check_preference(pref, k: int) -> list[float]:
    try:
        p = [float(x) for x in (split_list(pref) if isinstance(pref, str) else list(pref))]
    except (TypeError, ValueError):
        raise ConfigError(f"preference {pref!r}: expected {k} numbers") from None
    if len(p) != k:
        raise ConfigError(f"preference {p} has {len(p)} entries; expected {k}, one per objective")
    if not all(math.isfinite(x) and x >= -1e-12 for x in p) or abs(math.fsum(p) - 1.0) > 1e-6:
        raise ConfigError(f"preference {p} is not on the simplex (weights >= 0 summing to 1)")
    return [max(0.0, x) / math.fsum(max(0.0, y) for y in p) for x in p]


def anchor_coefficients(preference, anchors) -> list[float]:
    """Barycentric coefficients c (≥ 0, Σ c = 1, one per anchor) with Σ_j c_j a_j = λ, over the cell of the
    anchors' triangulation that contains λ: K = 2, the two neighbouring anchors on the segment; K ≥ 3, a
    Delaunay triangulation of the anchors (scipy).  A preference at an anchor gets exactly that anchor's
    one-hot vector; one outside the anchors' convex hull is refused."""
    import numpy as np

    anchors = [list(map(float, a)) for a in anchors]
    k = len(anchors[0])
    lam = _check_preference(preference, k)
    M = len(anchors)
    for j, a in enumerate(anchors):
        if max(abs(x - y) for x, y in zip(a, lam)) <= ANCHOR_TOLERANCE:
            return [1.0 if i == j else 0.0 for i in range(M)]
    outside = ConfigError(f"preference {lam} is outside the convex hull of the anchors {anchors}; train routers for "
                          "anchors that cover it (e.g. the simplex's vertices)")
    if k == 2:
        xs = sorted((a[0], j) for j, a in enumerate(anchors))
        x = lam[0]
        for (x0, j0), (x1, j1) in zip(xs, xs[1:]):
            if x0 - 1e-12 <= x <= x1 + 1e-12:
                t = min(1.0, max(0.0, (x - x0) / (x1 - x0)))
                c = [0.0] * M
                c[j0], c[j1] = 1.0 - t, t
                return c
        raise outside
    from scipy.spatial import Delaunay

    pts = np.array([a[: k - 1] for a in anchors], dtype=np.float64)
    try:
        tri = Delaunay(pts)
    except Exception as exc:  # qhull: fewer than K affinely independent anchors
        raise ConfigError(f"anchors {anchors}: they span no full cell of the simplex ({str(exc).splitlines()[0][:80]}); "
                          "give at least the simplex's vertices") from None
    x = np.array(lam[: k - 1], dtype=np.float64)
    s = int(tri.find_simplex(x, tol=1e-10))
    if s < 0:
        raise outside
    T = tri.transform[s]
    b = T[: k - 1].dot(x - T[k - 1])
    bary = np.clip(np.append(b, 1.0 - b.sum()), 0.0, None)
    bary = bary / bary.sum()
    c = [0.0] * M
    for v, coef in zip(tri.simplices[s], bary):
        c[int(v)] += float(coef)
    return c


# ---------------------------------------------------------------------------------------------
# level 2: routed layers
# ---------------------------------------------------------------------------------------------


def _torch_modules():
    import torch
    import torch.nn.functional as F
    from torch import nn

    return torch, F, nn


_ROUTED_LINEAR: list = []  # the class, built on first use (importing this module imports no torch)


def __getattr__(name: str):
    if name == "RoutedLinear":
        return _routed_linear_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _routed_linear_class():
    if _ROUTED_LINEAR:
        return _ROUTED_LINEAR[0]
    torch, F, nn = _torch_modules()

    class _RoutedLinear(nn.Module):
        """``W_0 h + Σ_e g_e(h) B_e A_e h``: a frozen ``nn.Linear`` (``.base``), E frozen LoRA experts (non-persistent
        buffers: one concatenation ``A`` [ΣR, in], ``B`` [out, ΣR], so the experts cost two matmuls) and
        ``num_routers`` routers (``nn.Linear(in, E)``, the only trainable parameters).  Gates: constant
        (``gates``, any E-vector) or the mixture Σ_m c_m softmax(router_m(h)/T) (``mixture`` = [(m, c_m)]),
        computed in float32."""

        def __init__(self, base, factors: Sequence, num_routers: int = 0, temperature: float = 1.0):
            super().__init__()
            self.base = base
            dev = base.weight.device
            ranks = [int(A.shape[0]) for A, _ in factors]
            self.num_experts = len(factors)
            self.register_buffer("expert_A", torch.cat([A.float() for A, _ in factors], 0).to(dev), persistent=False)
            self.register_buffer("expert_B", torch.cat([B.float() for _, B in factors], 1).to(dev), persistent=False)
            self.register_buffer("expert_index", torch.repeat_interleave(torch.arange(len(factors)),
                                                                         torch.tensor(ranks)).to(dev), persistent=False)
            self.temperature = float(temperature)
            self.routers = nn.ModuleList(nn.Linear(base.in_features, self.num_experts).to(dev) for _ in range(num_routers))
            for r in self.routers:
                nn.init.zeros_(r.weight)
                nn.init.zeros_(r.bias)
            self.gates = torch.zeros(self.num_experts)
            self.mixture = None
            self.last_entropy = None

        @property
        def in_features(self):
            return self.base.in_features

        @property
        def out_features(self):
            return self.base.out_features

        @property
        def weight(self):  # code that reads a linear layer's weight (e.g. dtype checks) sees the base's
            return self.base.weight

        def gate_values(self, h):
            if self.mixture is None:
                return self.gates.to(h.device, torch.float32)
            x = h.float()
            out = None
            for m, c in self.mixture:
                g = torch.softmax(self.routers[m](x) / self.temperature, dim=-1)
                g = g if c == 1.0 else g * c
                out = g if out is None else out + g
            self.last_entropy = -(out * out.clamp_min(1e-12).log()).sum(-1).mean().detach()
            return out

        def forward(self, h):
            y = self.base(h)
            g = self.gate_values(h)
            z = F.linear(h, self.expert_A.to(h.dtype))
            z = z * g[..., self.expert_index].to(z.dtype)
            return y + F.linear(z, self.expert_B.to(h.dtype))

        def extra_repr(self) -> str:
            return f"experts={self.num_experts}, routers={len(self.routers)}, temperature={self.temperature:g}"

    _RoutedLinear.__name__ = _RoutedLinear.__qualname__ = "RoutedLinear"
    _RoutedLinear.__module__ = __name__
    _ROUTED_LINEAR.append(_RoutedLinear)
    return _RoutedLinear


def routed_layers(model) -> dict:
    """{module name: routed layer} of a model with experts installed."""
    cls = _routed_linear_class()
    return {n: m for n, m in model.named_modules() if isinstance(m, cls)}


def install_experts(model, experts: Sequence[LoraExpert], num_routers: int = 0, temperature: float = 1.0) -> list[str]:
    """Replace every module the experts target in ``model`` (a Hugging Face causal LM) by a routed layer over
    them; freeze every parameter but the routers'.  Returns the module names.  A module that is not an
    ``nn.Linear`` of the experts' shape (experts of another base) is refused."""
    _, _, nn = _torch_modules()
    cls = _routed_linear_class()
    experts = list(experts)
    _check_same_modules(experts)
    if temperature <= 0 or not math.isfinite(temperature):
        raise ConfigError(f"gate temperature must be > 0; got {temperature!r}")
    if routed_layers(model):
        raise ConfigError("this model already has experts installed; uninstall them first")
    names = experts[0].modules
    for name in names:
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"the experts target {name!r}, which this model does not have: they were extracted "
                              "from another base model") from None
        shape = (experts[0].factors[name][1].shape[0], experts[0].factors[name][0].shape[1])
        if not isinstance(mod, nn.Linear) or tuple(mod.weight.shape) != tuple(shape):
            got = tuple(mod.weight.shape) if isinstance(mod, nn.Linear) else type(mod).__name__
            raise ConfigError(f"the experts' delta at {name!r} has shape {tuple(shape)}, the model's layer {got}: "
                              "they were extracted from another base model")
    model.requires_grad_(False)
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        layer = cls(getattr(owner, leaf), [e.factors[name] for e in experts], num_routers, temperature)
        setattr(owner, leaf, layer)
    return list(names)


def uninstall_experts(model):
    """Put the original ``nn.Linear`` modules back (the routers and experts are dropped); returns ``model``."""
    for name, layer in routed_layers(model).items():
        parent, _, leaf = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, leaf, layer.base)
    return model


def set_routing(model, gates=None, mixture=None) -> None:
    """Set every routed layer of ``model`` to constant ``gates`` (an E-vector) or to the router ``mixture``
    [(router index, coefficient)] (zero coefficients are skipped, so a one-router mixture is that router
    exactly)."""
    import torch

    layers = list(routed_layers(model).values())
    if (gates is None) == (mixture is None):
        raise ConfigError("set_routing: give constant gates or a router mixture (one of them)")
    if gates is not None:
        g = torch.as_tensor(gates, dtype=torch.float32).flatten()
        for layer in layers:
            if g.numel() != layer.num_experts:
                raise ConfigError(f"gates {g.tolist()}: expected {layer.num_experts} values, one per expert")
            layer.gates, layer.mixture = g.clone(), None
        return
    mix = [(int(m), float(c)) for m, c in mixture if float(c) != 0.0]
    for layer in layers:
        if not mix or any(not 0 <= m < len(layer.routers) for m, _ in mix):
            raise ConfigError(f"router mixture {mixture}: this model has {len(layer.routers)} router(s)")
        layer.mixture = mix


def router_state_dict(model) -> dict:
    """The routers' parameters of ``model``: ``{<module>.routers.<m>.weight|bias: tensor}`` (contiguous, on CPU)."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if ".routers." in k}


def load_router_state_dict(model, state: Mapping, where: str = "routers") -> None:
    want = {k: v for k, v in model.state_dict().items() if ".routers." in k}
    missing = sorted(set(want) - set(state))
    extra = sorted(set(state) - set(want))
    if missing or extra:
        what = f"{missing[0]!r} is missing" if missing else f"{extra[0]!r} is not a router of this model"
        raise ConfigError(f"{where}: the routers do not fit these experts ({what})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise ConfigError(f"{where}: router {k!r} has shape {tuple(v.shape)}, expected {tuple(want[k].shape)}")
    model.load_state_dict(dict(state), strict=False)


class RoutedLoraModel:
    """A Hugging Face causal LM with HoE experts installed (levels 2 and 3; see the module docs).

    Args:
        model: the base causal LM (modified in place: targeted ``nn.Linear`` modules become routed layers;
            every base parameter is frozen).
        experts: the :class:`LoraExpert` library (E experts over the same modules).
        anchors: the anchors' preferences (one router each); None: no routers (constant gates only).
        temperature: the gates' softmax temperature T.
        router_init: "anchor" (each router starts as its anchor's soup) or "uniform" (gates 1/E).
        objectives: the objectives' names (for messages and records).
        tokenizer: kept as ``.tokenizer``.
        meta: the HoE folder's record, when loaded from one.
        base_ref: how the base model is named (:class:`BaseRef`; None: computed when saved).
    """

    def __init__(self, model, experts: Sequence[LoraExpert], anchors=None, temperature: float = 1.0,
                 router_init: Literal["anchor", "uniform"] = "anchor", objectives: Sequence[str] | None = None,
                 tokenizer=None, meta: dict | None = None, base_ref: BaseRef | None = None):
        self.experts = list(experts)
        k = len(self.experts[0].objective_weights) if self.experts[0].objective_weights is not None else None
        if anchors is not None:
            k = len(anchors[0]) if anchors and not isinstance(anchors, str) else k
            if k is None:
                raise ConfigError("anchors need the number of objectives; give experts with objective weights")
            anchors = check_anchors(anchors, k)
        self.k = k
        self.anchors = anchors
        self.objectives = list(objectives) if objectives is not None else None
        if self.objectives is not None and k is not None and len(self.objectives) != k:
            raise ConfigError(f"{len(self.objectives)} objective names for experts of {k} objectives")
        if router_init not in ("anchor", "uniform"):
            raise ConfigError(f"router_init must be 'anchor' or 'uniform'; got {router_init!r}")
        self.router_init = router_init
        self.temperature = float(temperature)
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta or {}
        self.base_ref = base_ref
        self.modules = install_experts(model, self.experts, len(anchors or []), temperature)
        self._originals = {}
        names = sorted({p for e in self.experts for p in e.shared})
        if names:
            params = dict(model.named_parameters())
            for p in names:
                if p not in params:
                    raise ConfigError(f"the experts hold a shared delta for {p!r}, which this model does not have: "
                                      "they were extracted from another base model")
                self._originals[p] = params[p].detach().clone()
        self._init_routers()
        self.mode: dict = {}
        self.set_gates([0.0] * len(self.experts))

    # ------------------------------------------------------------------------------------------
    def expert_mix(self, preference) -> list[float]:
        """Weights p over the experts that stand for ``preference``: λ_k on the single-objective expert of each
        objective k (a zero weight needs none; one without such an expert is refused)."""
        lam = _check_preference(preference, self.k)
        p = [0.0] * len(self.experts)
        for k, x in enumerate(lam):
            if x == 0.0:
                continue
            j = next((i for i, e in enumerate(self.experts) if e.objective_weights is not None
                      and all((v == 1.0) if q == k else (v == 0.0) for q, v in enumerate(e.objective_weights))), None)
            if j is None:
                raise ConfigError(f"no single-objective expert for objective {self._obj(k)}: a preference is served "
                                  "by the experts of its objectives")
            p[j] = x
        return p

    def _obj(self, k: int) -> str:
        return repr(self.objectives[k]) if self.objectives else str(k)

    def _init_routers(self) -> None:
        import torch

        if not self.anchors:
            return
        for m, a in enumerate(self.anchors):
            if self.router_init == "uniform":
                bias = torch.zeros(len(self.experts))
            else:
                try:
                    p = torch.tensor(self.expert_mix(a), dtype=torch.float64)
                except ConfigError:
                    p = torch.full((len(self.experts),), 1.0 / len(self.experts), dtype=torch.float64)
                bias = (self.temperature * p.clamp_min(ROUTER_INIT_FLOOR).log()).float()
            with torch.no_grad():
                for layer in routed_layers(self.model).values():
                    layer.routers[m].weight.zero_()
                    layer.routers[m].bias.copy_(bias.to(layer.routers[m].bias.device))

    def _apply_shared(self, p: Sequence[float], model=None) -> None:
        import torch

        if not self._originals:
            return
        params = dict((model or self.model).named_parameters())
        with torch.no_grad():
            for name, orig in self._originals.items():
                out = orig.float().clone()
                for e, x in zip(self.experts, p):
                    if x != 0.0 and name in e.shared:
                        out.add_(e.shared[name].to(out.device).float(), alpha=float(x))
                params[name].copy_(out.to(params[name].dtype))

    # ------------------------------------------------------------------------------------------
    def set_gates(self, gates) -> None:
        """Constant gates g over the experts (any numbers): the model is W_0 + Σ_e g_e B_e A_e (+ Σ_e g_e δ_e on the
        shared parameters), i.e. the exact delta merge with weights g; zero gates: the base model."""
        g = [float(x) for x in gates]
        if len(g) != len(self.experts):
            raise ConfigError(f"gates {g}: expected {len(self.experts)} values, one per expert")
        set_routing(self.model, gates=g)
        self._apply_shared(g)
        self.mode = {"gates": g}

    def set_router_mixture(self, coefficients) -> None:
        """Mix the routers' gates with ``coefficients`` (one per router, ≥ 0, summing to 1)."""
        c = [float(x) for x in coefficients]
        if not self.anchors or len(c) != len(self.anchors):
            raise ConfigError(f"router coefficients {c}: this model has {len(self.anchors or [])} router(s)")
        if any(x < 0 for x in c) or abs(math.fsum(c) - 1.0) > 1e-6:
            raise ConfigError(f"router coefficients {c} must be >= 0 and sum to 1")
        set_routing(self.model, mixture=list(enumerate(c)))
        p = [0.0] * len(self.experts)
        if self._originals:
            for cm, a in zip(c, self.anchors):
                if cm:
                    p = [x + cm * y for x, y in zip(p, self.expert_mix(a))]
        self._apply_shared(p)
        self.mode = {"mixture": c}

    def use_router(self, m: int) -> None:
        """Route with router ``m`` (anchor ``m``) only."""
        n = len(self.anchors or [])
        if not 0 <= int(m) < n:
            raise ConfigError(f"router {m}: this model has {n} router(s)")
        self.set_router_mixture([1.0 if i == int(m) else 0.0 for i in range(n)])

    def set_preference(self, preference) -> list[float]:
        """Steer to the preference λ (level 3): the routers' gates mixed with λ's barycentric coefficients over
        the anchors (without routers: constant gates λ on the single-objective experts).  Returns the
        coefficients (or gates) used."""
        if self.k is None:
            raise ConfigError("these experts do not record which objective each stands for; use set_gates")
        if not self.anchors:
            g = self.expert_mix(preference)
            self.set_gates(g)
            return g
        c = anchor_coefficients(preference, self.anchors)
        self.set_router_mixture(c)
        return c

    def apply_to(self, other) -> None:
        """Give ``other`` (a copy of this routed model, e.g. a frozen reference) the current routing and shared
        parameters."""
        if "gates" in self.mode:
            set_routing(other, gates=self.mode["gates"])
        else:
            set_routing(other, mixture=list(enumerate(self.mode["mixture"])))
        if self._originals:
            params = dict(self.model.named_parameters())
            theirs = dict(other.named_parameters())
            import torch

            with torch.no_grad():
                for name in self._originals:
                    theirs[name].copy_(params[name])

    def router_parameters(self) -> list:
        return [p for n, p in self.model.named_parameters() if ".routers." in n]

    def router_state_dict(self) -> dict:
        return router_state_dict(self.model)

    def load_router_state_dict(self, state: Mapping, where: str = "routers") -> None:
        load_router_state_dict(self.model, state, where)

    def gate_entropy(self) -> float | None:
        """Mean entropy of the last routed forward's gates over the routed layers (router collapse: near 0)."""
        vals = [float(layer.last_entropy) for layer in routed_layers(self.model).values() if layer.last_entropy is not None]
        return sum(vals) / len(vals) if vals else None

    def uninstall(self):
        """The base model back (shared parameters restored, original linear layers); returns it."""
        self._apply_shared([0.0] * len(self.experts))
        return uninstall_experts(self.model)

    def __call__(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.model.generate(*args, **kwargs)

    @contextlib.contextmanager
    def plain_base(self):
        """Within the block, ``self.model`` is the plain base model (original linear layers, shared parameters
        at θ_0): to save it or to hash it; the experts come back after."""
        layers = routed_layers(self.model)
        mode = dict(self.mode)
        self._apply_shared([0.0] * len(self.experts))
        uninstall_experts(self.model)
        try:
            yield self.model
        finally:
            for name, layer in layers.items():
                parent, _, leaf = name.rpartition(".")
                setattr(self.model.get_submodule(parent) if parent else self.model, leaf, layer)
            if "gates" in mode:
                self.set_gates(mode["gates"])
            elif mode:
                self.set_router_mixture(mode["mixture"])

    def save(self, folder: str | Path, routers: bool = True, extra: dict | None = None) -> Path:
        """Write this model's experts (and routers) as an HoE folder (:func:`save_hoe`); ``self.base_ref`` says how
        the base is recorded (a portable name, else the base is saved into the folder)."""
        ref = self.base_ref
        if ref is None:
            with self.plain_base() as m:
                ref = BaseRef("", "a model given in memory", state_digest(m))
        return save_hoe(folder, self.experts, ref, self.tokenizer, self.anchors if routers else None,
                        self.router_state_dict() if routers and self.anchors else None, self.temperature,
                        self.objectives, self.router_init, extra, self)


# ---------------------------------------------------------------------------------------------
# HoE folders: save and load (safetensors + JSON)
# ---------------------------------------------------------------------------------------------


def _base_record(ref: BaseRef, folder: Path, routed: RoutedLoraModel | None, base_model=None) -> dict:
    """hoe.json's base: a portable name or absolute folder, else the base saved into ``folder/base``."""
    rec = {"path": ref.name, "label": ref.label, "sha256": ref.sha256, "seed": ref.seed}
    if ref.portable:
        return rec
    d = folder / BASE_DIR
    if d.exists():
        import shutil

        shutil.rmtree(d)
    from paretoalign.console import quiet_third_party

    with quiet_third_party():
        if routed is not None:
            with routed.plain_base() as m:
                m.save_pretrained(d)
        elif base_model is not None:
            base_model.save_pretrained(d)
        else:
            raise ConfigError(f"the base model {ref.label} has no portable name; pass the model to save it with the experts")
    return {**rec, "path": BASE_DIR}


def save_hoe(folder: str | Path, experts: Sequence[LoraExpert], base: BaseRef, tokenizer=None, anchors=None,
             routers=None, temperature: float = 1.0, objectives: Sequence[str] | None = None,
             router_init: str = "anchor", extra: dict | None = None, routed: RoutedLoraModel | None = None,
             base_model=None) -> Path:
    """Write an HoE folder (layout in the module docs) into ``folder`` (created; its HoE files are replaced).
    ``base``: the experts' :class:`BaseRef` (a base without a portable name is saved into the folder, taken
    from ``routed`` or ``base_model``); ``routers``: a router state dict (:func:`router_state_dict`) for
    ``anchors``."""
    from safetensors.torch import save_file

    from paretoalign import __version__

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    experts = list(experts)
    _check_same_modules(experts)
    tensors = {}
    entries = []
    for i, e in enumerate(experts):
        for m, (A, B) in e.factors.items():
            tensors[f"experts.{i}.{m}.A"] = A.detach().float().cpu().contiguous()
            tensors[f"experts.{i}.{m}.B"] = B.detach().float().cpu().contiguous()
        for p, d in e.shared.items():
            tensors[f"experts.{i}.shared.{p}"] = d.detach().float().cpu().contiguous()
        entries.append({"name": e.name, "objective_weights": e.objective_weights, "source": e.source,
                        "ranks": {m: e.rank(m) for m in e.modules}, "shared_params": sorted(e.shared),
                        "report": e.report})
    save_file(tensors, str(folder / EXPERTS_FILE), metadata={"format": "pt"})
    if routers is not None:
        save_file({k: v.detach().float().cpu().contiguous() for k, v in routers.items()}, str(folder / ROUTERS_FILE),
                  metadata={"format": "pt"})
    elif (folder / ROUTERS_FILE).exists():
        (folder / ROUTERS_FILE).unlink()
    if tokenizer is not None:
        from paretoalign.console import quiet_third_party

        with quiet_third_party():
            tokenizer.save_pretrained(folder)
    record = {
        "paretoalign_hoe": FORMAT, "paretoalign": __version__, "method": "hoe", "paper": PAPER, "arxiv": ARXIV,
        "note": "HoE-lite: a reconstruction of the paper's three levels (specs/next-methods.md section 5.2), not its code",
        "base": _base_record(base, folder, routed, base_model), "modules": experts[0].modules, "experts": entries,
        "objectives": list(objectives) if objectives is not None else None,
        "anchors": anchors if routers is not None else None, "routers": len(anchors) if routers is not None else 0,
        "temperature": float(temperature), "router_init": router_init, **(extra or {}),
    }
    run_dir.write_json(folder / HOE_FILE, record)
    return folder


def hoe_folder(path: str | Path) -> Path:
    """The HoE folder of a run (``final/``), a ``final/`` folder, or an HoE folder itself."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelNotFoundError(f"{str(p)!r}: no such HoE folder or run folder")
    if not p.is_dir():
        raise ModelNotFoundError(f"{str(p)!r} is a file; pass an HoE folder (`paretoalign experts extract`) or a run "
                                 "folder of `paretoalign train --method hoe`")
    for cand in (p, p / run_dir.FINAL):
        if (cand / HOE_FILE).is_file():
            return cand
    if (p / run_dir.CONFIG_FILE).is_file():
        raise ModelNotFoundError(f"{str(p)!r} holds no HoE model ({run_dir.FINAL}/{HOE_FILE} is missing): the run is "
                                 "not an HoE run, or it has not finished (resume it with --resume)")
    raise ModelNotFoundError(f"{str(p)!r} holds no HoE experts ({HOE_FILE} is missing); make one with `paretoalign "
                             "experts extract` or `paretoalign train --method hoe`")


def _read_tensors(f: Path, what: str) -> dict:
    from safetensors.torch import load_file

    if not f.is_file():
        raise ModelNotFoundError(f"{f} is missing: the {what} cannot be loaded")
    try:
        return load_file(str(f), device="cpu")
    except Exception as exc:  # a truncated or foreign file: one line naming it
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"{f}: not a readable safetensors file ({first}); the file is damaged") from None


def _read_record(folder: Path) -> dict:
    rec = run_dir.read_json_object(folder / HOE_FILE, ModelNotFoundError)
    if rec.get("paretoalign_hoe") != FORMAT:
        raise ModelNotFoundError(f"{folder / HOE_FILE}: not an HoE record of format {FORMAT} "
                                 f"(paretoalign_hoe: {rec.get('paretoalign_hoe')!r})")
    for key in ("base", "modules", "experts"):
        if not rec.get(key):
            raise ModelNotFoundError(f"{folder / HOE_FILE}: the field {key!r} is missing or empty; the file is damaged")
    return rec


def load_experts(path: str | Path) -> tuple[list[LoraExpert], dict, Path]:
    """The experts of an HoE folder (or run): (experts, hoe.json's record, the folder)."""
    folder = hoe_folder(path)
    rec = _read_record(folder)
    tensors = _read_tensors(folder / EXPERTS_FILE, "experts")
    experts = []
    for i, ent in enumerate(rec["experts"]):
        if not isinstance(ent, dict) or "name" not in ent:
            raise ModelNotFoundError(f"{folder / HOE_FILE}: expert {i} is not a record with a name; the file is damaged")
        factors = {}
        for m in rec["modules"]:
            a, b = tensors.get(f"experts.{i}.{m}.A"), tensors.get(f"experts.{i}.{m}.B")
            if a is None or b is None:
                raise ModelNotFoundError(f"{folder / EXPERTS_FILE}: expert {ent['name']!r} has no factors for {m!r}; "
                                         "the file does not match hoe.json")
            factors[m] = (a, b)
        names = ent.get("shared_params") or []
        shared = {p: tensors[f"experts.{i}.shared.{p}"] for p in names if f"experts.{i}.shared.{p}" in tensors}
        if len(shared) != len(names):
            raise ModelNotFoundError(f"{folder / EXPERTS_FILE}: expert {ent['name']!r} lacks shared deltas that hoe.json "
                                     "lists; the file does not match it")
        experts.append(LoraExpert(ent["name"], factors, shared, ent.get("objective_weights"), ent.get("report") or {},
                                  ent.get("source") or {}))
    return experts, rec, folder


def base_of(rec: dict, folder: Path, tokenizer=None, allow_download: bool = False):
    """(model, :class:`BaseRef`) of the base model an HoE record names, loaded; its weights must be the ones the
    experts were extracted from."""
    b = rec["base"]
    path = str(b.get("path") or "")
    if path == BASE_DIR:
        d = folder / BASE_DIR
        if not (d / "config.json").is_file():
            raise ModelNotFoundError(f"{d}: the base model saved with the experts is missing")
        model, ref = load_base(str(d), tokenizer, 0, allow_download)
        ref = BaseRef("", str(b.get("label") or d), ref.sha256)
    elif not path:
        raise ModelNotFoundError(f"{folder / HOE_FILE}: the base model is not recorded; pass base=...")
    else:
        model, ref = load_base(path, tokenizer, int(b.get("seed") or 0), allow_download)
    check_same_base(rec, ref, str(folder))
    return model, ref


def check_same_base(rec: dict, base: BaseRef, where: str) -> None:
    """Refuse a base whose weights differ from the one the experts were extracted from."""
    want = (rec.get("base") or {}).get("sha256")
    if want and base.sha256 != want:
        raise ConfigError(f"{where}: the experts were extracted from {rec['base'].get('label')!r}, not from "
                          f"{base.label!r} (their weights differ); use the experts' own base model")


def _folder_tokenizer(folder: Path):
    """The tokenizer saved in an HoE folder, left-padded for generation, with a pad token (as models.load_tokenizer)."""
    from transformers import AutoTokenizer

    from paretoalign.console import quiet_third_party

    try:
        with quiet_third_party():
            tok = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # damaged tokenizer files: the folder's fault, in one line
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelNotFoundError(f"{folder}: its tokenizer cannot be loaded ({first})") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def load_hoe(path: str | Path, base=None, device=None, allow_download: bool = False) -> RoutedLoraModel:
    """An HoE model from a run of ``train --method hoe`` (its ``final/``), a ``final/`` folder, or an experts
    folder of ``experts extract`` (no routers): a :class:`RoutedLoraModel` in eval mode, steered to the
    centre of the simplex (call ``set_preference``).  ``base``: another copy of the base model (a name, a
    folder or a loaded model; its weights must be the same); ``device``: where to put it (default: CPU)."""
    experts, rec, folder = load_experts(path)
    has_tok = (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file()
    tok = _folder_tokenizer(folder) if has_tok else None
    if base is None:
        model, ref = base_of(rec, folder, tok, allow_download)
    else:
        model, ref = load_base(base, tok, int(rec["base"].get("seed") or 0), allow_download)
        check_same_base(rec, ref, str(folder))
    anchors = rec.get("anchors") if rec.get("routers") else None
    hoe = RoutedLoraModel(model, experts, anchors, rec.get("temperature", 1.0), rec.get("router_init", "anchor"),
                          rec.get("objectives"), tok, rec, ref)
    if anchors:
        hoe.load_router_state_dict(_read_tensors(folder / ROUTERS_FILE, "routers"), str(folder / ROUTERS_FILE))
    if device is not None:
        hoe.model.to(device)
    hoe.model.eval()
    if hoe.k is not None:
        hoe.set_preference([1.0 / hoe.k] * hoe.k)
    return hoe


# ---------------------------------------------------------------------------------------------
# the command: paretoalign experts extract
# ---------------------------------------------------------------------------------------------


@dataclass
class ExtractConfig:
    """Options of ``paretoalign experts extract``."""

    endpoints: list = field([], help="The single-objective endpoints, one expert each, in objective order: "
                            "'a=RUN,b=RUN' (run folders, RUN/final, checkpoints, LoRA adapter folders or model "
                            "folders, fine-tuned from one base).")
    output_dir: str = field("", help="Folder to write (a paretoalign-marked experts folder).")
    rank: str = field("8", help="The experts' rank: an integer, or 'energy:x' for the smallest rank per layer that "
                      "keeps a fraction x of the delta's squared singular values.")
    base: Optional[str] = field(None, help="The base model every endpoint must share (default: the one they name).")
    targets: Optional[list] = field(None, help="Module names that get low-rank experts, e.g. q_proj,v_proj (default: "
                                    "every 2-D weight but the embeddings and the output layer).")
    shared: Literal["keep", "drop"] = field("keep", help="Other parameters that moved (norms, biases, embeddings): "
                                            "keep them as dense shared deltas, or drop them (recorded either way).")
    overwrite: bool = field(False, help="Replace an earlier experts folder in --output-dir.")
    allow_download: bool = field(False, help="Let base models be fetched from a hub (off: local only).")

    def __post_init__(self):
        check_fields(self)
        self.endpoints = split_list(self.endpoints)
        if not self.endpoints:
            raise ConfigError("experts extract needs --endpoints, e.g. --endpoints sentiment=runs/a,length=runs/b")
        if not str(self.output_dir).strip():
            raise ConfigError("experts extract needs --output-dir: the folder to write")
        self.rank = str(parse_expert_rank(self.rank))
        self.targets = split_list(self.targets) if self.targets is not None else None
        parse_endpoint_list(self.endpoints)


EXTRACT_ENTRIES = (HOE_FILE, EXPERTS_FILE, ROUTERS_FILE, BASE_DIR, "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "vocab.json", "merges.txt", "chat_template.jinja", HOE_FILE + ".tmp")


def run_extract(cfg: ExtractConfig, log: Callable[[str], None] | None = None) -> dict:
    """``paretoalign experts extract``: the experts folder's hoe.json content."""
    from paretoalign.models import load_tokenizer

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(cfg.output_dir)
    run_dir.claim(out, EXPERTS_KIND, cfg.overwrite, EXTRACT_ENTRIES)  # refused before anything loads
    run_dir.lock(out)
    try:
        pairs = parse_endpoint_list(cfg.endpoints)
        experts, base_model, ref = extract_experts(pairs, cfg.base, cfg.rank, cfg.targets, cfg.shared,
                                                   cfg.allow_download, progress=log)
        ep0 = resolve_endpoint_source(pairs[0][1], pairs[0][0])
        tok_dir = next((d for d in (ep0.folder, Path(ref.name) if ref.name else None) if d is not None and (
            (d / "tokenizer_config.json").is_file() or (d / "tokenizer.json").is_file())), None)
        tok = load_tokenizer(str(tok_dir) if tok_dir else (ep0.base_name or (ref.name,))[0])
        objectives = [e.name for e in experts]
        save_hoe(out, experts, ref, tok, None, None, 1.0, objectives, base_model=base_model)
    finally:
        run_dir.unlock(out)
    log(f"[experts] {len(experts)} experts ({', '.join(objectives)}) -> {out}")
    return json.loads((out / HOE_FILE).read_text(encoding="utf-8"))


def _cmd_experts_extract(args) -> int:
    from paretoalign.config_utils import build_config
    from paretoalign.console import table

    names = {f.name for f in dataclasses.fields(ExtractConfig)}
    cfg = build_config(ExtractConfig, args.config, {k: v for k, v in vars(args).items() if k in names})
    rec = run_extract(cfg)
    rows = [[e["name"], f"{e['report']['min_rank']}-{e['report']['max_rank']}", f"{e['report']['energy']:.4f}",
             f"{e['report']['relative_error']:.3g}", str(len(e["shared_params"])),
             str(len(e["report"].get("dropped_params") or []))] for e in rec["experts"]]
    print(table(["expert", "rank", "energy kept", "relative error", "shared deltas", "dropped"], rows))
    print(f"-> {Path(cfg.output_dir) / HOE_FILE}")
    return 0


def add_experts_parser(sub):
    """Register ``experts`` (``experts extract``) on the subparsers object ``sub`` (imports no torch)."""
    import argparse

    from paretoalign.config_utils import add_dataclass_arguments

    p = sub.add_parser("experts", help="HoE: LoRA experts extracted by task-SVD from single-objective fine-tunes.")
    esub = p.add_subparsers(dest="experts_command", required=True)
    e = esub.add_parser(
        "extract", help="Extract one LoRA expert per endpoint (truncated SVD of each weight change).",
        description=f"HoE level 1 ({PAPER}, arXiv {ARXIV}; HoE-lite reconstruction): for every targeted linear "
        "weight, the change W_i - W_0 of each endpoint is factorised by truncated SVD into B = U_r S_r^1/2, "
        "A = S_r^1/2 V_r^T; the retained energy and Frobenius error are reported per layer. Writes an experts "
        "folder that `paretoalign train --method hoe --experts DIR` and paretoalign.experts.load_hoe read.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    e.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    add_dataclass_arguments(e, ExtractConfig)
    e.set_defaults(func=_cmd_experts_extract)
    return p
