"""MOD: multi-objective decoding (Shi et al., NeurIPS 2024, "Decoding-Time Language Model Alignment
with Multiple Objectives", arXiv 2406.18853).

K policies π_1..π_K, each the optimum of ``max E[r_k] − β·D_f(π ‖ π_ref)`` for one reward, with the
**same** f-divergence, β and reference, are combined at decoding time into the optimum for the
weighted reward Σ_k w_k r_k (w on the simplex): no training, no merging.  Import it from
:mod:`paretoalign.decoding`::

    from paretoalign.decoding import MultiObjectiveDecoder, combine_logprobs
    dec = MultiObjectiveDecoder.from_runs(["runs/help", "runs/safe"], weights=[0.6, 0.4], divergence="reverse_kl")
    out = dec.generate(prompts, max_new_tokens=64, do_sample=True, temperature=0.7)   # a rollout.Rollout

**The closed forms.**  Stationarity of the Lagrangian of one objective gives, for every y,
``r_k(y) − β f'(u_k(y)) − λ_k = 0`` with ``u = π/π_ref``, so ``f'(u_k) = (r_k − λ_k)/β``.  For the
weighted reward (Σw = 1) the same condition reads

    f'(u*) = (Σ_k w_k r_k − λ)/β = Σ_k w_k f'(u_k) − Z,      Z = (λ − Σ_k w_k λ_k)/β,

so ``π* = π_ref · (f')⁻¹(Σ_k w_k f'(π_k/π_ref) − Z)`` with Z the normaliser.  Per divergence:

* **reverse KL** (PPO's KL penalty, DPO), f(u) = u log u, f'(u) = log u + 1:
  ``log π* = Σ_k w_k log π_k + (1 − Σ_k w_k) log π_ref − Z``.  With Σw = 1 the reference drops out and
  Z is the log-normaliser: **π* = softmax(Σ_k w_k log π_k)**, exact.
* **α-divergence**, 0 < α < 1, f(u) = (u^{1−α} − (1−α)u − α)/(α(α−1)) (convex; the spec's table
  writes the denominator α(1−α), which makes f concave), f'(u) = (1 − u^{−α})/α:
  ``u*^{−α} = Σ_k w_k u_k^{−α} + αZ``, i.e. ``π*^{−α} = Σ_k w_k π_k^{−α} + αZ·π_ref^{−α}``, so
  **π* = (Σ_k w_k π_k^{−α} + c·π_ref^{−α})^{−1/α}** with the constant c = αZ fixed by Σ π* = 1.
  (One endpoint alone: π_k = π_ref·(1 − α(r_k − λ_k)/β)^{−1/α}.)
* **forward KL**, f(u) = −log u, f'(u) = −1/u (the α = 1 form 1 − u^{−1} less a constant): the α = 1
  member of the same family, **π* = 1 / (Σ_k w_k/π_k + c/π_ref)** (a weighted harmonic mean, shifted by c = Z).

The paper and its code drop the normaliser term c (it needs π_ref): the decoding score is
``Σ w_k log π_k`` (reverse KL, exact), ``−log Σ_k w_k/π_k`` (forward KL), ``−(1/α) log Σ_k w_k π_k^{−α}``
(α).  That is π* exactly where c = 0 and otherwise an approximation; it orders the vocabulary like
π* when π_ref is uniform (then π* is a decreasing function of the same sum), not in general (on
``bench/exact_front.py``'s one-step problem, β = 0.1, its distribution is 0.28 (forward KL) and 0.18
(α = 0.5) from π* in total variation).  :func:`mod_scores` computes the code's score, which is what
decoding uses; given ``reference=`` log-probabilities it computes the exact one-step π* above
instead (c by bisection), which the exactness tests compare (for sequences c belongs to the whole
response and cannot be had token by token).  As α → 0 the α score tends to the reverse-KL one and at
α = 1 it is the forward-KL one.

**Decoding rule.**  The paper applies the combination to *sequence* probabilities
``π_k(y_{≤t}|x)``: each step scores a candidate token v by the rule applied to
``log π_k(y_{<t}|x) + log π_k(v|y_{<t}, x)`` (the per-model prefix log-probabilities are carried
along).  For reverse KL the prefix terms are constant across candidates and the rule is the
per-token ``Σ_k w_k log_softmax(logits_k)``; for the others they matter.  Greedy search takes the
argmax, beam search keeps the best sequence scores, and sampling draws from the step's scores
normalised over the vocabulary (after temperature and top-p, which act on the *combined*
distribution; the min-new-tokens EOS ban acts once, on the combined scores).  Token-wise sampling
samples π* exactly only for reverse KL's one-step problem: for sequences the per-prefix
normalisers differ (``bench/exact_front.py``'s two-step testbed measures by how much), which is
why the paper decodes greedily or by beam search.

**Where this differs from the reference code** (``srzer/MOD``, ``experiment-DPO/src/utils/util_decode.py``,
``FusionModel``; spec §2.4):

* its greedy search accumulates processed **raw logits**, not log-softmax: harmless for reverse KL
  (per-model constants cancel in the argmax), but for forward KL and α each model's offset changes
  its effective weight.  Here every path uses fp32 log-softmax (its beam search did too);
* it decodes **JSD** endpoints with the reverse-KL rule (JSD has no closed form); here ``"jsd"`` is
  refused with that explanation rather than silently approximated;
* it runs a **reference pass** (adapters disabled) at every step whose logits ``f_value`` never reads
  (and so silently ignores the ``(1 − Σw) log π_ref`` term when Σw ≠ 1).  Here weights are checked
  to lie on the simplex, so no reference pass is needed or run; :func:`mod_scores` takes the
  reference's log-probabilities when the caller has them (``reference=``) and then adds that term;
* its α score drops the 1/α factor (same argmax, another sampling distribution); kept here;
* its "general" variant truncates differing vocabularies to the smallest; here endpoints must share
  one tokenizer (checked), and only greedy/beam search exist there, sampling here too.

**Cost.**  LoRA endpoints on one base decode in **one batched forward per token**: the K copies of the
batch are stacked (rows k·N..k·N+N−1 belong to endpoint k), every projection runs the shared base
weight once over all K·N rows and adds each endpoint's low-rank update ``x_k A_k B_k`` as a pair of
batched matmuls, with one static KV cache holding the K endpoints' keys and values (the packed loop
of :mod:`paretoalign.decoding`, reused).  Endpoints that are whole models (full fine-tuning, or
adapters on different copies of the base) run one packed forward each (K forwards).
``bench/mod_decode.py`` measures the cost per token against one model at the same batch.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from paretoalign import run_dir
from paretoalign.data.prompts import prompt_text
from paretoalign.decoding import (
    PackedDecoder,
    _inner,
    _support_problem,
    next_token,
    packed_decoder,
    unsupported_reason,
)
from paretoalign.errors import ConfigError, RunDirError
from paretoalign.models import TINY_NAME, adapter_base, load_causal_lm, load_tokenizer, resolve_model_path
from paretoalign.preferences import SUM_TOLERANCE, validate_weights
from paretoalign.rollout import MAX_PROMPT_LENGTH, Rollout, completion_mask_from_ids, render_prompt

__all__ = ["DIVERGENCES", "Endpoint", "MultiObjectiveDecoder", "check_endpoints", "combine_logprobs", "mod_scores",
           "parse_divergence", "resolve_endpoint"]

DIVERGENCES = ("reverse_kl", "forward_kl", "alpha")


# ---------------------------------------------------------------------------------------------
# the combination rule: tensors in, tensors out
# ---------------------------------------------------------------------------------------------


def parse_divergence(spec) -> tuple[str, Optional[float]]:
    """``"reverse_kl"``, ``"forward_kl"``, ``"alpha:0.5"`` (or ``("alpha", 0.5)``) -> ``(rule, alpha)``;
    anything else is one :class:`ConfigError` line."""
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        rule, alpha = spec
    else:
        text = str(spec).strip().lower().replace("-", "_")
        rule, _, a = text.partition(":")
        alpha = a if a else None
    if rule == "jsd":
        raise ConfigError("divergence 'jsd' has no closed-form MOD rule (the reference code decodes it with the "
                          "reverse-KL rule); pass --divergence reverse_kl to do the same")
    if rule not in DIVERGENCES:
        raise ConfigError(f"unknown divergence {spec!r}; expected reverse_kl, forward_kl or alpha:A with 0 < A < 1")
    if rule == "alpha":
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ConfigError(f"divergence {spec!r}: alpha needs its value, e.g. alpha:0.5 (0 < alpha < 1)") from None
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"divergence {spec!r}: alpha must be in (0, 1) (alpha -> 0 is reverse_kl, "
                              "alpha = 1 is forward_kl)")
        return rule, alpha
    if alpha is not None:
        raise ConfigError(f"divergence {spec!r}: only alpha takes a value")
    return rule, None


def _check(logprobs: torch.Tensor, weights) -> torch.Tensor:
    w = torch.as_tensor(weights, dtype=torch.float64, device=logprobs.device).flatten()
    if logprobs.dim() < 2 or w.numel() != logprobs.shape[0]:
        raise ConfigError(f"combine_logprobs needs logprobs [K, ..., V] and K weights; got {tuple(logprobs.shape)} "
                          f"and {w.numel()} weights")
    if not torch.isfinite(w).all() or (w < 0).any() or float(w.sum()) <= 0:
        raise ConfigError(f"MOD weights must be finite, >= 0 and not all zero; got {w.tolist()}")
    return w


def mod_scores(logprobs: torch.Tensor, weights, rule: str = "reverse_kl", alpha: Optional[float] = None,
               reference: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MOD's (unnormalised) log-score ``[..., V]`` of K models' log-probabilities ``logprobs [K, ..., V]``.

    Without ``reference``: the paper's normaliser-free score (module docs): ``Σ_k w_k ℓ_k`` (reverse KL),
    ``−log Σ_k w_k e^{−ℓ_k}`` (forward KL), ``−(1/α) log Σ_k w_k e^{−α ℓ_k}`` (α); zero weights are
    skipped (their ``−inf`` entries would give NaN).  ``ℓ_k`` may be next-token log-probabilities or
    sequence log-probabilities ``log π_k(y_{<t}) + log π_k(v|y_{<t})``: the score of a sequence is the
    rule applied to its sequence log-probabilities, which is what beam search ranks.  Reverse KL with
    Σw ≠ 1 needs ``reference`` (the ``(1 − Σw) log π_ref`` term) and is refused without it.

    With ``reference`` (``[..., V]``, normalised log-probabilities of π_ref): the exact optimum's
    log-probabilities (normalised), including the normaliser term the paper drops (c found by
    bisection for forward KL and α)."""
    rule, alpha = parse_divergence((rule, alpha) if rule == "alpha" else rule)
    w = _check(logprobs, weights)
    keep = w > 0
    dtype = torch.float64 if reference is not None or logprobs.dtype == torch.float64 else torch.float32
    lp = (logprobs if bool(keep.all()) else logprobs[keep]).to(dtype)
    w = w[keep].to(dtype)
    wshape = (-1,) + (1,) * (lp.dim() - 1)
    if rule == "reverse_kl":
        score = (w.view(wshape) * lp).sum(0)
        total = float(w.sum())
        if abs(total - 1.0) > 1e-6:
            if reference is None:
                raise ConfigError(f"reverse-KL MOD weights sum to {total:g}, not 1: the (1 - sum w) log pi_ref term "
                                  "needs the reference's log-probabilities (reference=)")
            score = score + (1.0 - total) * reference.double()
        return score.log_softmax(-1) if reference is not None else score
    a = 1.0 if rule == "forward_kl" else alpha
    log_s = torch.logsumexp(-a * lp + w.log().view(wshape), dim=0)  # log Σ_k w_k π_k^{-a}
    if reference is None:
        return -log_s / a
    return _exact_f_optimum(log_s, -a * reference.double(), a)


def _exact_f_optimum(log_s: torch.Tensor, log_q: torch.Tensor, a: float, iters: int = 200) -> torch.Tensor:
    """log π* with π* = (S + c·q)^{−1/a} and c such that Σ_v π* = 1 (per row; bisection in float64).

    S = Σ_k w_k π_k^{−a}, q = π_ref^{−a}.  The sum decreases in c; c > −min_v S/q keeps every term
    positive."""
    s, q = log_s.exp(), log_q.exp()

    def total(c):
        return ((s + c.unsqueeze(-1) * q).clamp_min(1e-300) ** (-1.0 / a)).sum(-1)

    lo = -(s / q).min(-1).values  # the sum -> inf as c -> lo
    step = (s / q).max(-1).values.clamp_min(1.0)
    hi = lo + step
    for _ in range(200):  # grow until the sum is below 1
        small = total(hi) < 1
        if bool(small.all()):
            break
        hi = torch.where(small, hi, lo + 2 * (hi - lo))
    for _ in range(iters):
        mid = (lo + hi) / 2
        big = total(mid) > 1
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    c = (lo + hi) / 2
    logp = -torch.log((s + c.unsqueeze(-1) * q).clamp_min(1e-300)) / a
    return logp - torch.logsumexp(logp, -1, keepdim=True)  # the last 1e-15 of normalisation


def combine_logprobs(logprobs: torch.Tensor, weights, rule: str = "reverse_kl", alpha: Optional[float] = None,
                     reference: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MOD's combined, normalised log-probabilities ``[..., V]`` of K models' ``logprobs [K, ..., V]``
    under ``weights [K]``: ``log_softmax`` over V of :func:`mod_scores` (see there and the module docs
    for the rules ``"reverse_kl"`` (softmax of Σ w_k log π_k), ``"forward_kl"`` (weighted harmonic mean),
    ``"alpha"`` (with ``alpha`` in (0, 1)), their derivation and the reference code's deviations).
    A pure function: K = 1 returns the input's own normalisation; a one-hot weight picks that model."""
    score = mod_scores(logprobs, weights, rule, alpha, reference)
    return score if reference is not None else torch.log_softmax(score, -1)  # (the exact forms come normalised)


# ---------------------------------------------------------------------------------------------
# K endpoints' forward passes
# ---------------------------------------------------------------------------------------------


def _lora_layer_cls():
    from peft.tuners.lora import LoraLayer

    return LoraLayer


class _LoraStack:
    """One packed matmul for the stacked rows of K endpoints that share a base: ``x @ W + b`` over all
    K·N rows (the shared weight read once), plus endpoint k's low-rank update on its rows,
    ``x_k @ A_k @ B_k`` (two batched matmuls; the parts of a fused block are block-diagonal in B)."""

    def __init__(self, modules, adapters: Sequence[str]):
        self.modules = modules
        self.adapters = list(adapters)
        self.key = None
        self.weight_t = self.bias = self.A = self.B = None

    def _parts(self):
        lora = _lora_layer_cls()
        for m in self.modules:
            if isinstance(m, lora):
                base = m.get_base_layer()
                ab = {a: (m.lora_A[a].weight, m.lora_B[a].weight, float(m.scaling[a])) for a in self.adapters
                      if a in m.lora_A}
                yield base, ab
            else:
                yield m, {}

    def refresh(self) -> None:
        parts = list(self._parts())
        key = tuple((t.data_ptr(), t._version) for base, ab in parts
                    for t in [base.weight] + ([base.bias] if base.bias is not None else [])
                    + [x for A, B, _ in ab.values() for x in (A, B)])
        if key == self.key:
            return
        weights = [base.weight.detach() for base, _ in parts]
        w = torch.cat(weights, 0) if len(weights) > 1 else weights[0]
        self.weight_t = w.t().contiguous()
        biases = [base.bias for base, _ in parts]
        self.bias = torch.cat([(b.detach() if b is not None else w.new_zeros(x.shape[0])) for b, x in zip(biases, weights)]) \
            if any(b is not None for b in biases) else None
        ranks = [max([A.shape[0] for A, _, _ in ab.values()], default=0) for _, ab in parts]
        R, K = sum(ranks), len(self.adapters)
        if R == 0:
            self.A = self.B = None
        else:
            A_all = w.new_zeros(K, w.shape[1], R)
            B_all = w.new_zeros(K, R, w.shape[0])
            r0 = o0 = 0
            for (_, ab), r_max, x in zip(parts, ranks, weights):
                for k, name in enumerate(self.adapters):
                    if name in ab:
                        A, B, scale = ab[name]
                        r = A.shape[0]
                        A_all[k, :, r0:r0 + r] = A.detach().t().to(w.dtype)
                        B_all[k, r0:r0 + r, o0:o0 + x.shape[0]] = (B.detach() * scale).t().to(w.dtype)
                r0 += r_max
                o0 += x.shape[0]
            self.A, self.B = A_all, B_all
        self.key = key

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.addmm(self.bias, x, self.weight_t) if self.bias is not None else x @ self.weight_t
        if self.A is None:
            return y
        K = self.A.shape[0]
        xk = x.view(K, -1, x.shape[-1])
        return torch.baddbmm(y.view(K, -1, y.shape[-1]), torch.bmm(xk, self.A), self.B).view(y.shape)


def _stack_problem(model, adapters: Sequence[str]) -> Optional[str]:
    """Why K adapters of ``model`` cannot run as one stacked forward (``None`` when they can)."""
    lm = _inner(model)
    if lm is None:
        return "not a Llama-style causal LM"
    lora = _lora_layer_cls()
    for m in lm.modules():
        if isinstance(m, lora):
            if m.merged:
                return "a merged adapter"
            if not isinstance(m.get_base_layer(), torch.nn.Linear):
                return f"an adapted {type(m.get_base_layer()).__name__}"
            if getattr(m, "fan_in_fan_out", False):
                return "fan_in_fan_out adapters"
            for a in adapters:
                if a not in m.lora_A:
                    continue
                if m.use_dora.get(a, False) or getattr(m, "lora_bias", {}).get(a, False):
                    return f"a DoRA or bias adapter ({a!r})"
        elif type(m).__name__ == "ModulesToSaveWrapper":
            return "an adapter with modules_to_save"
    missing = [a for a in adapters if not any(isinstance(m, lora) and a in m.lora_A for m in lm.modules())]
    if missing:
        return f"adapters {missing} are not loaded in the model"
    return _support_problem(lm)


class _StackedForward:
    """K LoRA adapters on one base: one packed forward over K·M rows per step."""

    def __init__(self, model, adapters: Sequence[str]):
        self.K = len(adapters)
        self.dec = PackedDecoder(_inner(model), block=lambda modules: _LoraStack(modules, adapters))

    def refresh(self):
        self.dec.refresh()

    @property
    def dtype(self):
        return self.dec.head.weight_t.dtype

    def new_caches(self, M: int, S: int, device):
        d = self.dec
        return [(torch.empty(self.K * M, d.num_kv, S, d.head_dim, dtype=self.dtype, device=device),
                 torch.empty(self.K * M, d.num_kv, S, d.head_dim, dtype=self.dtype, device=device)) for _ in d.layers]

    def forward(self, ids, positions, key_mask, caches, start):
        """Next-token logits ``[K, M, V]`` (float32) after ``ids [M, L]`` at slots ``start..``."""
        K, M = self.K, ids.shape[0]
        ids, positions, key_mask = (x.repeat(K, *([1] * (x.dim() - 1))) for x in (ids, positions, key_mask))
        h = self.dec._forward(ids, positions, key_mask, caches, start)[:, -1]
        return self.dec.head(self.dec._norm(self.dec.final_norm, h)).float().view(K, M, -1)

    def select(self, caches, index: torch.Tensor, M: int):
        """Rows ``index`` (of M) of every endpoint's cache."""
        full = (torch.arange(self.K, device=index.device)[:, None] * M + index[None]).reshape(-1)
        return [(k.index_select(0, full), v.index_select(0, full)) for k, v in caches]


class _SeparateForward:
    """K whole models (or adapters on separate bases): one packed forward each."""

    def __init__(self, models):
        self.K = len(models)
        self.decs = [packed_decoder(m) for m in models]

    def refresh(self):
        for d in self.decs:
            d.refresh()

    @property
    def dtype(self):
        return self.decs[0].head.weight_t.dtype

    def new_caches(self, M: int, S: int, device):
        return [[(torch.empty(M, d.num_kv, S, d.head_dim, dtype=self.dtype, device=device),
                  torch.empty(M, d.num_kv, S, d.head_dim, dtype=self.dtype, device=device)) for _ in d.layers]
                for d in self.decs]

    def forward(self, ids, positions, key_mask, caches, start):
        out = []
        for d, c in zip(self.decs, caches):
            h = d._forward(ids, positions, key_mask, c, start)[:, -1]
            out.append(d.head(d._norm(d.final_norm, h)).float())
        return torch.stack(out)

    def select(self, caches, index: torch.Tensor, M: int):
        return [[(k.index_select(0, index), v.index_select(0, index)) for k, v in c] for c in caches]


# ---------------------------------------------------------------------------------------------
# endpoints: what a run folder, checkpoint or model contributes
# ---------------------------------------------------------------------------------------------


@dataclass
class Endpoint:
    """One MOD endpoint, resolved (nothing loaded): its saved policy and what it was trained from."""

    name: str
    policy: str  # the saved policy folder (adapter or whole model), or a model name
    adapter: bool  # a PEFT adapter (loaded onto ``base``) or a whole model
    base: Optional[str] = None  # the model it was trained from: its reference π_ref (None: unknown)
    seed: int = 0  # a tiny base is rebuilt from its run's seed
    base_id: Optional[str] = None  # which base: its resolved folder (tiny: name and seed); None: unknown
    base_sha256: Optional[str] = None  # the base's weights as the run recorded them (final/paretoalign.json)
    beta: Optional[float] = None  # the run's KL coefficient / DPO beta
    run: Optional[str] = None  # the run folder it comes from (None: a model)
    run_config: Optional[dict] = field(default=None, repr=False)


def _base_id(name: str, seed: int = 0) -> str:
    if name == TINY_NAME:
        return f"{TINY_NAME}:seed={seed}"
    try:
        return str(Path(resolve_model_path(name)).resolve())
    except Exception:  # not available here: the load will say so; compare by name meanwhile
        return name


def _run_endpoint(name: str, run: Path, policy: Path) -> Endpoint:
    cfg = run_dir.load_config(run)
    base = str(cfg.get("model", "")) or None
    seed = int(cfg.get("seed", 0) or 0)
    sha = None
    meta = run / run_dir.FINAL / run_dir.FINAL_META
    if meta.is_file():
        try:
            sha = (json.loads(meta.read_text()).get("base") or {}).get("sha256")
        except (OSError, ValueError, AttributeError):
            sha = None
    beta = cfg.get("kl_coef", cfg.get("beta"))
    return Endpoint(name, str(policy), (policy / "adapter_config.json").is_file(), base, seed,
                    _base_id(base, seed) if base else None, sha,
                    float(beta) if isinstance(beta, (int, float)) and not isinstance(beta, bool) else None, str(run),
                    cfg)


def resolve_endpoint(path, name: Optional[str] = None) -> Endpoint:
    """A run folder (its ``final/policy``), ``RUN/final``, ``RUN/final/policy``, a checkpoint
    (``RUN/checkpoints/step-N``), a model folder (an adapter is put on the base it names) or a model
    name, as an :class:`Endpoint`; a path that is none of these is one error line."""
    s = str(path).strip()
    p = Path(s).expanduser()
    if p.is_dir():
        if p.name == run_dir.POLICY and p.parent.name == run_dir.FINAL and (p.parent.parent / run_dir.CONFIG_FILE).is_file():
            p = p.parent.parent
        elif p.name == run_dir.FINAL and (p.parent / run_dir.CONFIG_FILE).is_file():
            p = p.parent
        elif p.name == run_dir.POLICY and (p.parent / run_dir.STATE_FILE).is_file():
            p = p.parent
    name = name or (p.resolve().name if p.is_dir() else s)
    if p.is_dir():
        if (p / run_dir.CONFIG_FILE).is_file():
            final = p / run_dir.FINAL / run_dir.POLICY
            if not final.is_dir():
                raise RunDirError(f"MOD endpoint {s!r} has no final model (final/policy); finish the run or pass one "
                                  "of its checkpoints")
            return _run_endpoint(name, p, final)
        if (p / run_dir.STATE_FILE).is_file() and (p / run_dir.POLICY).is_dir():
            run = p.parent.parent
            if not (run / run_dir.CONFIG_FILE).is_file():
                raise RunDirError(f"MOD endpoint {s!r} is a checkpoint outside its run folder (no {run_dir.CONFIG_FILE})")
            return _run_endpoint(name, run, p / run_dir.POLICY)
        if (p / "adapter_config.json").is_file():
            base = adapter_base(p)
            return Endpoint(name, str(p), True, base, 0, _base_id(base))
        if (p / "config.json").is_file():
            return Endpoint(name, str(p), False)
        raise RunDirError(f"MOD endpoint {s!r} is not a run folder, a checkpoint or a model folder")
    if p.exists():
        raise RunDirError(f"MOD endpoint {s!r} is a file; pass a run folder, a checkpoint or a model")
    if s.startswith(("/", ".", "~")) or s.count("/") > 1:
        raise RunDirError(f"MOD endpoint {s!r}: no such run folder or model folder")
    return Endpoint(name, s, False)  # a model name (built-in or a cached Hugging Face id)


def _tokenizer_of(e: Endpoint, allow_download: bool):
    folder = Path(e.policy)
    if folder.is_dir() and (folder / "tokenizer_config.json").is_file():
        return load_tokenizer(str(folder), allow_download)
    return load_tokenizer(e.base if (e.adapter and e.base) else e.policy, allow_download)


def _same_tokenizer(a, b) -> bool:
    return a.get_vocab() == b.get_vocab() and a.eos_token_id == b.eos_token_id


# ---------------------------------------------------------------------------------------------
# the decoder
# ---------------------------------------------------------------------------------------------


class MultiObjectiveDecoder:
    """Decode from K endpoints' MOD-combined distribution (see the module docs).

    ``model``: one PEFT model holding the K LoRA adapters named ``adapters`` (one stacked forward per
    token), or a list of K models (K forwards; full fine-tuning, or adapters on separate bases).
    ``weights``: K numbers on the simplex; ``divergence``: ``"reverse_kl"``, ``"forward_kl"`` or
    ``"alpha:A"``.  Usually built with :meth:`from_runs`."""

    def __init__(self, model, tokenizer, weights, divergence="reverse_kl", adapters: Optional[Sequence[str]] = None,
                 names: Optional[Sequence[str]] = None):
        self.rule, self.alpha = parse_divergence(divergence)
        self.tokenizer = tokenizer
        if adapters is not None:
            self.models = [model]
            self.adapters = list(adapters)
            problem = _stack_problem(model, self.adapters)
            if problem is not None:
                raise ConfigError(f"MOD cannot decode these adapters in one pass: {problem} (the packed loop covers "
                                  "LoRA on Llama/Mistral/Qwen2 decoders)")
            self._fw = _StackedForward(model, self.adapters)
        else:
            self.models = list(model)
            self.adapters = None
            for i, m in enumerate(self.models):
                reason = unsupported_reason(m)
                if reason is not None:
                    raise ConfigError(f"MOD endpoint {i} cannot be decoded by the packed loop: {reason} (it covers "
                                      "Llama/Mistral/Qwen2 decoders)")
            self._fw = _SeparateForward(self.models)
        self.K = self._fw.K
        if self.K < 2:
            raise ConfigError(f"MOD needs at least two endpoints; got {self.K}")
        self.names = list(names) if names is not None else [f"endpoint{i}" for i in range(self.K)]
        self.set_weights(weights)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_runs(cls, paths: Sequence, weights, divergence="reverse_kl", names: Optional[Sequence[str]] = None,
                  allow_download: bool = False) -> "MultiObjectiveDecoder":
        """Endpoints from run folders, checkpoints or models (:func:`resolve_endpoint`): LoRA runs on one
        base share it (one stacked forward), anything else loads as K models.  Endpoints with different
        base models (their reference) or tokenizers are refused in one line; different β (KL coefficient
        or DPO β) are warned about: the combination is then the optimum of Σ_k w_k (β/β_k) r_k for any
        common β, i.e. another point of the front than ``weights`` names."""
        names = list(names) if names is not None else [None] * len(paths)
        if len(names) != len(paths):
            raise ConfigError(f"got {len(names)} names for {len(paths)} MOD endpoints")
        return cls.from_endpoints([resolve_endpoint(p, n) for p, n in zip(paths, names)], weights, divergence,
                                  allow_download)

    @classmethod
    def from_endpoints(cls, endpoints: Sequence[Endpoint], weights, divergence="reverse_kl",
                       allow_download: bool = False) -> "MultiObjectiveDecoder":
        eps = list(endpoints)
        check_endpoints(eps, weights, divergence)
        toks = [_tokenizer_of(e, allow_download) for e in eps]
        for e, t in zip(eps[1:], toks[1:]):
            if not _same_tokenizer(toks[0], t):
                raise ConfigError(f"MOD endpoints {eps[0].name!r} and {e.name!r} have different tokenizers (vocabularies "
                                  "or EOS); MOD combines next-token distributions over one vocabulary")
        tok = toks[0]
        names = [e.name for e in eps]
        from peft import PeftModel

        from paretoalign.console import quiet_third_party

        if all(e.adapter and e.base_id is not None for e in eps) and len({e.base_id for e in eps}) == 1:
            base = load_causal_lm(eps[0].base, tok, seed=eps[0].seed, allow_download=allow_download)
            adapters = [f"mod_{i}" for i in range(len(eps))]
            with quiet_third_party():
                model = PeftModel.from_pretrained(base, eps[0].policy, adapter_name=adapters[0])
                for e, a in zip(eps[1:], adapters[1:]):
                    model.load_adapter(e.policy, adapter_name=a)
            return cls(model.eval(), tok, weights, divergence, adapters=adapters, names=names)
        models = []
        for e in eps:
            if e.adapter:
                base = load_causal_lm(e.base, tok, seed=e.seed, allow_download=allow_download)
                with quiet_third_party():
                    models.append(PeftModel.from_pretrained(base, e.policy).eval())
            else:
                path = e.policy if e.policy == TINY_NAME else resolve_model_path(e.policy, allow_download)
                models.append(load_causal_lm(path, tok, seed=e.seed, allow_download=allow_download).eval())
        return cls(models, tok, weights, divergence, names=names)

    def set_weights(self, weights) -> None:
        """New weights (K numbers on the simplex) for the next calls; nothing is reloaded."""
        self.weights = _simplex_weights(weights, self.K, self.names)

    # -- decoding ----------------------------------------------------------------------------

    def _combine(self, cum: Optional[torch.Tensor], logp: torch.Tensor) -> torch.Tensor:
        """Step scores ``[M, V]``: the rule on the sequence log-probabilities ``cum + logp`` (unnormalised)."""
        if self.rule == "reverse_kl" or cum is None:
            return mod_scores(logp, self.weights, self.rule, self.alpha)
        # the prefix terms matter here; shift them by a per-row constant (adds a constant to the score)
        cum = cum - cum.mean(0, keepdim=True)
        return mod_scores(cum.unsqueeze(-1).to(logp.dtype) + logp, self.weights, self.rule, self.alpha)

    @torch.no_grad()
    def generate_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                     eos_token_id=None, pad_token_id: Optional[int] = None, min_new_tokens: int = 0,
                     do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, num_beams: int = 1,
                     length_penalty: float = 1.0, return_logprobs: bool = False,
                     on_token: Optional[Callable[[torch.Tensor], None]] = None):
        """Prompt + completion ids ``[N, P + T]`` (left-padded prompts, completions padded after EOS).

        ``on_token`` (greedy and sampling): called after every step with that step's new token ids ``[N]``
        (``pad_token_id`` for rows already finished), to stream an answer; it changes nothing that is
        decoded, and an exception it raises stops decoding there (and propagates).  Beam search does not
        call it: its answer is known only at the end.

        ``return_logprobs`` (greedy and sampling): also ``[N, T]``, the log-probability of each chosen
        token under the combined, processed distribution it was drawn from.  ``num_beams > 1``: beam
        search on the combined sequence score, greedy only; a finished hypothesis of L tokens
        (EOS included) ranks by score / L**length_penalty (transformers' rule; 0 ranks by the score)."""
        eos_token_id = self.tokenizer.eos_token_id if eos_token_id is None else eos_token_id
        pad_token_id = self.tokenizer.pad_token_id if pad_token_id is None else pad_token_id
        if num_beams < 1 or max_new_tokens < 1:
            raise ConfigError(f"num_beams and max_new_tokens must be >= 1; got {num_beams}, {max_new_tokens}")
        if num_beams > 1 and do_sample:
            raise ConfigError("MOD beam search is greedy: pass do_sample=False with num_beams > 1")
        if num_beams > 1 and return_logprobs:
            raise ConfigError("return_logprobs is for greedy decoding and sampling, not beam search")
        self._fw.refresh()
        device = input_ids.device
        eos = torch.tensor(eos_token_id if isinstance(eos_token_id, (list, tuple)) else [eos_token_id], device=device)
        N, P = input_ids.shape
        S = P + max_new_tokens
        mask = attention_mask.bool()
        key_mask = torch.zeros(N, S, dtype=torch.bool, device=device)
        key_mask[:, :P] = mask
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        caches = self._fw.new_caches(N, S, device)
        logits = self._fw.forward(input_ids, positions, key_mask, caches, 0)
        next_pos = positions[:, -1:] + 1
        args = (input_ids, logits, caches, key_mask, next_pos, max_new_tokens, eos, pad_token_id, min_new_tokens)
        if num_beams > 1:
            return self._beam_search(*args, num_beams, length_penalty)
        return self._sample(*args, do_sample, max(float(temperature), 1e-5), top_p, return_logprobs, on_token)

    def _sample(self, input_ids, logits, caches, key_mask, next_pos, T, eos, pad, min_new, do_sample, temperature,
                top_p, return_logprobs, on_token=None):
        N, P = input_ids.shape
        cum = None if self.rule == "reverse_kl" else logits.new_zeros(self.K, N, dtype=torch.float64)
        tokens, logps = [], []
        unfinished = torch.ones(N, dtype=torch.bool, device=input_ids.device)
        rows = torch.arange(N, device=input_ids.device)
        for t in range(T):
            logp = logits.log_softmax(-1)  # [K, N, V], fp32
            scores = torch.log_softmax(self._combine(cum, logp), -1)
            nxt, step_logp = next_token(scores, t, min_new, eos, do_sample, temperature, top_p, return_logprobs)
            if return_logprobs:
                logps.append(step_logp)
            if cum is not None:
                cum += logp[:, rows, nxt].double()
            nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad))
            tokens.append(nxt)
            if on_token is not None:
                on_token(nxt)
            unfinished &= ~torch.isin(nxt, eos)
            if not unfinished.any() or t == T - 1:
                break
            key_mask[:, P + t] = True
            logits = self._fw.forward(nxt[:, None], next_pos, key_mask, caches, P + t)
            next_pos = next_pos + 1
        out = torch.cat([input_ids, torch.stack(tokens, 1)], dim=1)
        return (out, torch.stack(logps, 1)) if return_logprobs else out

    def _beam_search(self, input_ids, logits, caches, key_mask, next_pos, T, eos, pad, min_new, B, length_penalty):
        N, P = input_ids.shape
        device = input_ids.device
        M = N * B
        start = torch.arange(N, device=device).repeat_interleave(B)  # every beam starts from its prompt
        caches = self._fw.select(caches, start, N)
        logits = logits[:, start]
        key_mask, next_pos = key_mask[start], next_pos[start]
        cum = logits.new_zeros(self.K, M, dtype=torch.float64)
        alive = torch.zeros(N, B, dtype=torch.bool, device=device)
        alive[:, 0] = True  # the B beams of a prompt are copies at first: expand one
        seqs = torch.empty(M, 0, dtype=input_ids.dtype, device=device)
        finished: list[list[tuple[float, list]]] = [[] for _ in range(N)]
        done = [False] * N
        eos_set = set(eos.tolist())

        def rank(score, length):
            return score / (length ** length_penalty) if length_penalty else score

        for t in range(T):
            logp = logits.log_softmax(-1).double()
            cand = mod_scores(cum.unsqueeze(-1) + logp, self.weights, self.rule, self.alpha)  # [M, V] sequence scores
            if t < min_new:
                cand[:, eos] = -float("inf")
            cand = cand.masked_fill(~alive.view(M, 1), -float("inf")).view(N, -1)
            V = logp.shape[-1]
            top_s, top_i = cand.topk(min(2 * B, cand.shape[1]), dim=1)
            pick_rows, pick_toks, pick_alive = [], [], []
            for n in range(N):
                chosen = []
                if not done[n]:
                    for j, (s, i) in enumerate(zip(top_s[n].tolist(), top_i[n].tolist())):
                        if s == -float("inf"):
                            break
                        b, v = divmod(i, V)
                        if v in eos_set:
                            if j < B:  # transformers: an EOS below the top B is not a hypothesis
                                hyp = seqs[n * B + b].tolist() + [v]
                                finished[n].append((rank(s, len(hyp)), hyp))
                            continue
                        chosen.append((n * B + b, v))
                        if len(chosen) == B:
                            break
                    finished[n].sort(key=lambda h: -h[0])
                    del finished[n][B:]
                    best_next = max((float(cand[n, (r - n * B) * V + v]) for r, v in chosen), default=-float("inf"))
                    if not chosen or (len(finished[n]) >= B and finished[n][-1][0] >= rank(best_next, t + 1)):
                        done[n] = True
                n_alive = len(chosen)
                chosen += [(n * B, pad)] * (B - len(chosen))
                pick_rows += [r for r, _ in chosen]
                pick_toks += [v for _, v in chosen]
                pick_alive += [i < n_alive and not done[n] for i in range(B)]
            idx = torch.tensor(pick_rows, device=device)
            nxt = torch.tensor(pick_toks, device=device, dtype=input_ids.dtype)
            cum = cum[:, idx] + logp[:, idx, nxt]
            seqs = torch.cat([seqs[idx], nxt[:, None]], 1)
            alive = torch.tensor(pick_alive, device=device).view(N, B)
            if all(done) or t == T - 1:
                break
            caches = self._fw.select(caches, idx, M)
            key_mask[:, P + t] = True
            logits = self._fw.forward(nxt[:, None], next_pos, key_mask, caches, P + t)
            next_pos = next_pos + 1
        final = mod_scores(cum, self.weights, self.rule, self.alpha)  # [M]
        best = []
        for n in range(N):
            hyps = list(finished[n])
            if not done[n]:  # out of tokens: the live beams compete as they are
                hyps += [(rank(float(final[n * B + b]), seqs.shape[1]), seqs[n * B + b].tolist())
                         for b in range(B) if alive[n, b]]
            best.append(max(hyps, key=lambda h: h[0])[1] if hyps else [pad])
        L = max(len(h) for h in best)
        comp = torch.full((N, L), pad, dtype=input_ids.dtype, device=device)
        for n, h in enumerate(best):
            comp[n, :len(h)] = torch.tensor(h, dtype=input_ids.dtype, device=device)
        return torch.cat([input_ids, comp], 1)

    def generate(self, prompts: list, max_new_tokens: int = 48, do_sample: bool = True, temperature: float = 1.0,
                 top_p: float = 1.0, num_beams: int = 1, min_new_tokens: int = 0, use_chat_template: bool = True,
                 system_prompt: Optional[str] = None, length_penalty: float = 1.0,
                 max_prompt_length: int = MAX_PROMPT_LENGTH,
                 on_token: Optional[Callable[[torch.Tensor], None]] = None) -> Rollout:
        """Completions of ``prompts`` (strings or conversations, rendered as :func:`paretoalign.rollout.generate`
        renders them) as a :class:`~paretoalign.rollout.Rollout`.  Sampling uses torch's global RNG.
        ``on_token``: see :meth:`generate_ids` (each step's new token ids; not called by beam search)."""
        tok = self.tokenizer
        texts = [render_prompt(p, tok, use_chat_template, system_prompt) for p in prompts]
        side, trunc = tok.padding_side, tok.truncation_side
        tok.padding_side, tok.truncation_side = "left", "left"
        try:
            enc = tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=max_prompt_length,
                      add_special_tokens=False)
        finally:
            tok.padding_side, tok.truncation_side = side, trunc
        device = next(self.models[0].parameters()).device
        enc = {k: v.to(device) for k, v in enc.items()}
        out = self.generate_ids(enc["input_ids"], enc["attention_mask"], max_new_tokens, tok.eos_token_id,
                                tok.pad_token_id, min_new_tokens=min_new_tokens, do_sample=do_sample,
                                temperature=temperature, top_p=top_p, num_beams=num_beams,
                                length_penalty=length_penalty, on_token=on_token)
        P = enc["input_ids"].shape[1]
        completion = out[:, P:]
        cmask = completion_mask_from_ids(completion, tok.eos_token_id, tok.pad_token_id)
        decoded = tok.batch_decode(completion * cmask + tok.pad_token_id * (1 - cmask), skip_special_tokens=True)
        return Rollout(prompts=list(prompts), prompt_texts=[prompt_text(p) for p in prompts],
                       completions=[c.strip() for c in decoded], input_ids=out,
                       attention_mask=torch.cat([enc["attention_mask"], cmask], 1), completion_mask=cmask,
                       prompt_length=P)


def _simplex_weights(weights, k: int, names) -> torch.Tensor:
    """float64 ``[k]`` on the simplex, or one error line (MOD's optimality holds there only)."""
    validate_weights(weights, k, names, normalize=True)  # count, NaN, sign, all-zero: its messages
    values = weights.split(",") if isinstance(weights, str) else torch.as_tensor(weights, dtype=torch.float64).flatten().tolist()
    w = torch.tensor([float(x) for x in values], dtype=torch.float64)
    if abs(float(w.sum()) - 1.0) > SUM_TOLERANCE:
        raise ConfigError(f"MOD weights {[round(x, 6) for x in w.tolist()]} sum to {float(w.sum()):g}, not 1: they lie "
                          "on the simplex (one per endpoint, >= 0, summing to 1)")
    return w / w.sum()


def check_endpoints(endpoints: Sequence[Endpoint], weights, divergence) -> None:
    """What can be checked before anything loads: two or more endpoints, one base model (reference),
    weights on the simplex (one per endpoint), a known divergence; different β is a warning."""
    parse_divergence(divergence)
    eps = list(endpoints)
    if len(eps) < 2:
        raise ConfigError(f"MOD needs at least two endpoints (one per objective); got {len(eps)}")
    names = [e.name for e in eps]
    if len(set(names)) != len(names):
        raise ConfigError(f"MOD endpoint names must differ; got {names}")
    _simplex_weights(weights, len(eps), names)

    def what(x):
        return f"{x.base}" + (f" (seed {x.seed})" if x.base == TINY_NAME else "")

    known = [e for e in eps if e.base_id is not None]
    for e in known[1:]:
        first = known[0]
        if e.base_id != first.base_id or (e.base_sha256 and first.base_sha256 and e.base_sha256 != first.base_sha256):
            same = " (a base of that name with other weights)" if e.base_id == first.base_id else ""
            raise ConfigError(f"MOD endpoints must share one base model (their reference): {first.name!r} was trained "
                              f"from {what(first)}, {e.name!r} from {what(e)}{same}")
    betas = {e.name: e.beta for e in eps if e.beta is not None}
    if len(set(betas.values())) > 1:
        warnings.warn("MOD endpoints were trained with different KL coefficients (" + ", ".join(
            f"{k}: {v:g}" for k, v in betas.items()) + "); the combination is then the optimum for other weights "
            "than those given (w_k * beta/beta_k)", RuntimeWarning, stacklevel=3)

