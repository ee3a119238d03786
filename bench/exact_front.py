"""The front's physical limit: methods on a tabular problem whose optimal front is known exactly.

    python bench/exact_front.py                     # K=2, 11 preferences, 3 seeds (a minute or two on 2 cores)
    python bench/exact_front.py --quick             # smoke size (seconds)
    python bench/exact_front.py --k 3 --prefs 4     # K=3, Das-Dennis grid with 4 points per edge (10 preferences)
    python bench/exact_front.py --all-granularities # PAMA at batch, sequence and token granularity
    python bench/exact_front.py --methods soup,mod,soup-mlp,mod-mlp,morlhf-mlp   # the steering rows only
    python bench/exact_front.py --methods exact,morlhf,soup,mod,ric,hoe         # one model for every preference too

Problem.  X prompts, M candidate responses per prompt, fixed reward vectors r[x, y] ∈ R^K on a
concave trade-off (r = ρ·(cos θ, sin θ, ...) with random angles and radii), a random reference
policy π_ref, KL coefficient β.  A policy is a table of logits.  Each objective is the
KL-regularised return J_k(π) = E_x[ E_{y~π} r_k(x, y) − β KL(π(·|x) ‖ π_ref(·|x)) ].  The J_k are
concave in π, so linear scalarisation traces the whole Pareto front, and the maximiser of w·J is
π*_w ∝ π_ref·exp(w·r/β): the TRUE front is J(π*_w) over the simplex (a dense grid of w here).

Methods.  Each trains one tabular policy per preference vector, from π_ref, with the same steps,
samples per step, optimiser and learning rate, through the same functions as real training
(:mod:`paretoalign.losses`, :mod:`paretoalign.losses.online`): sample G responses per
prompt, per-objective KL-shaped rewards (:func:`~paretoalign.losses.token_rewards`, one token),
a per-prompt group-mean baseline in place of the value heads, GAE (:func:`~paretoalign.losses.gae`),
whitening as the trainer does (MORLHF: after the weighted sum; PAMA / MGDA-UB: per objective),
then ``morlhf_loss`` (linear weights), ``pama_loss`` (Noon-PPO, Theorem 1, ``preference=w``,
ratio against π_ref as in the paper) or ``mgda_ub_loss`` (gradients w.r.t. the sampled rows of
the logit table, ``preference=w``).  ``exact`` is a reference learner: full-gradient ascent on
w·J(π) with no sampling, which must land on the true front (its HV ratio checks this script).
Offline methods (MODPO, ...) plug in as another entry of ``METHODS``: a function
``train(problem, preference, cfg, seed) -> logits [X, M]``.

Steering rows (Rewarded Soups, Ramé et al. 2023; MOD, Shi et al. 2024) train **K endpoints** instead
of one policy per preference: MORLHF at each one-hot preference, with the same steps, samples and
optimiser as every other run, then, at every preference w, ``soup`` averages the endpoints'
parameters (Σ_k w_k θ_k) and ``mod`` combines their distributions (softmax of Σ_k w_k log π_k, MOD's
reverse-KL rule, :func:`paretoalign.decoding.combine_logprobs`).  Their sample cost is K runs, not
one per preference.  A policy is a logit table (``soup``, ``mod``) or a small MLP (``-mlp``: one-hot
prompt -> tanh hidden layer -> logits, its output layer fitted to reproduce π_ref exactly before
training, the "pretrained model" every endpoint starts from).  With tables the soup and MOD are the
same policy (log-softmax differs from the logits by a per-prompt constant), and both equal π*_w
when the endpoints are optimal: the closed form is linear in the logits.  With the MLP the soup is
not (tanh), while MOD still only reads the endpoints' outputs: the "exact endpoints" table (no
sampling: natural policy gradient for tables, the optimum's logits fitted for the MLP) shows the gap
parameter averaging leaves, the sub-optimality MOD's paper proves for merging.  ``morlhf-mlp`` is the
per-preference sweep with the MLP, for comparison.

The two-step testbed (:func:`make_sequence_problem`: responses of two tokens, a sequence-level reward)
checks MOD's sequence-level claims: Σ_k w_k log π_k(y) = log π*(y) + const for reverse KL, and
token-by-token *sampling* from the combined step distribution is not π* (the per-prefix
normalisers differ): the table reports that distance.

Reported per method: hypervolume of its points / hypervolume of the true front (dense), both
against one shared reference point (the true front's nadir minus 10% of its range, printed);
IGD+ to the true front after min-max normalisation by the true front's ideal and nadir; the
number of non-dominated points; the largest amount by which any point beats the true front
(must be ~0: a check); samples drawn and wall-clock per method (medians over seeds).  The
"ceiling" row is the HV of the true optimal points at the same preferences (what a perfect
MORLHF sweep with this many preferences reaches).  Prints a markdown table and writes
bench/out/exact_front.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from paretoalign.combiners import linear_scalarize
from paretoalign.decoding import combine_logprobs
from paretoalign.fronts.metrics import hypervolume, igd_plus, pareto_mask
from paretoalign.losses import gae, token_rewards, whiten
from paretoalign.losses.online import mgda_ub_loss, morlhf_loss, pama_loss
from paretoalign.preferences import simplex_grid

OUT = Path(__file__).resolve().parent / "out" / "exact_front.json"


# --------------------------------------------------------------------------------------------
# the problem and its exact front
# --------------------------------------------------------------------------------------------


@dataclass
class Problem:
    rewards: torch.Tensor  # [X, M, K] float64
    ref_logits: torch.Tensor  # [X, M]
    beta: float

    @property
    def ref_logp(self) -> torch.Tensor:
        return torch.log_softmax(self.ref_logits, -1)


def make_problem(x: int = 4, m: int = 16, k: int = 2, beta: float = 0.1, seed: int = 0) -> Problem:
    g = torch.Generator().manual_seed(seed)
    # directions spread over the positive orthant, radii in [0.3, 1]: a genuine trade-off
    z = torch.rand(x, m, k, generator=g, dtype=torch.float64).clamp(min=1e-3)
    direction = z / z.norm(dim=-1, keepdim=True)
    radius = 0.3 + 0.7 * torch.rand(x, m, 1, generator=g, dtype=torch.float64)
    return Problem(direction * radius, torch.randn(x, m, generator=g, dtype=torch.float64), beta)


def objectives_of(problem: Problem, logits: torch.Tensor) -> torch.Tensor:
    """J [K]: per-objective expected reward minus β·KL(π‖π_ref), averaged over prompts (differentiable)."""
    logp = torch.log_softmax(logits.double(), -1)
    p = logp.exp()
    kl = (p * (logp - problem.ref_logp)).sum(-1)  # [X]
    er = (p.unsqueeze(-1) * problem.rewards).sum(1)  # [X, K]
    return (er - problem.beta * kl.unsqueeze(-1)).mean(0)


def optimal_logits(problem: Problem, w) -> torch.Tensor:
    """π*_w ∝ π_ref·exp(w·r/β), the maximiser of w·J (returned as logits)."""
    w = torch.as_tensor(w, dtype=torch.float64)
    return problem.ref_logp + (problem.rewards @ w) / problem.beta


def true_front(problem: Problem, n: int) -> np.ndarray:
    k = problem.rewards.shape[-1]
    ws = simplex_grid(n, k)
    return np.stack([objectives_of(problem, optimal_logits(problem, w)).numpy() for w in ws])


# --------------------------------------------------------------------------------------------
# policies: a logit table, or a small MLP (parameters -> logits [X, M])
# --------------------------------------------------------------------------------------------


@dataclass
class Param:
    """How a policy's parameters (a list of float64 tensors) make its logits ``[X, M]``."""

    name: str
    init: object  # (problem) -> list[Tensor]: the parameters that reproduce π_ref
    logits: object  # (params) -> Tensor [X, M]


TABLE = Param("table", lambda problem: [problem.ref_logits.clone()], lambda ps: ps[0])


def mlp_param(hidden: int = 16, seed: int = 0) -> Param:
    """One-hot prompt -> tanh(W1 e_x + b1) -> W2 h + b2.  ``init``: random W1, b1 and the output layer
    solved by least squares so that the MLP reproduces π_ref's logits exactly (hidden >= X)."""

    def init(problem: Problem) -> list:
        X = problem.ref_logits.shape[0]
        if hidden < X:
            raise ValueError("the MLP needs hidden >= prompts to represent every policy")
        g = torch.Generator().manual_seed(seed)
        w1 = torch.randn(hidden, X, generator=g, dtype=torch.float64)
        b1 = 0.5 * torch.randn(hidden, generator=g, dtype=torch.float64)
        h = torch.tanh(w1.t() + b1)  # [X, hidden]
        a = torch.cat([h, torch.ones(X, 1, dtype=torch.float64)], 1)
        sol = torch.linalg.pinv(a) @ problem.ref_logits  # [hidden + 1, M], minimum norm, exact
        return [w1, b1, sol[:-1].t().contiguous(), sol[-1].clone()]

    def logits(ps) -> torch.Tensor:
        w1, b1, w2, b2 = ps
        return torch.tanh(w1.t() + b1) @ w2.t() + b2

    return Param(f"mlp{hidden}", init, logits)


# --------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    steps: int = 300
    group: int = 8  # samples per prompt per step
    lr: float = 0.05
    clip_eps: float = 0.2
    pama_granularity: str = "batch"
    pama_ratio: str = "reference"  # the paper's u = π_θ/π_ref, or "old" (the usual PPO ratio)
    noon: bool = True


def _sample(problem, logits, group, gen):
    X, M = logits.shape
    probs = torch.softmax(logits.detach(), -1)
    y = torch.multinomial(probs, group, replacement=True, generator=gen)  # [X, G]
    xi = torch.arange(X).repeat_interleave(group)
    return xi, y.reshape(-1)


def _advantages(problem, logp, ref_logp, xi, yi, group):
    """Per-objective KL-shaped rewards, a per-prompt group-mean baseline, GAE on one token."""
    N = logp.shape[0]
    mask = torch.ones(N, 1, dtype=torch.float64)
    kl = (logp - ref_logp).detach().unsqueeze(1)  # [N, 1]
    scores = problem.rewards[xi, yi]  # [N, K]
    rew = token_rewards(scores, kl, mask, problem.beta)  # [N, 1, K]
    baseline = rew.view(-1, group, 1, rew.shape[-1]).mean(1, keepdim=True).expand(-1, group, -1, -1).reshape_as(rew)
    adv, _ = gae(rew, baseline, mask, 1.0, 1.0)
    return adv, mask


def train_online(method: str, param: Param = TABLE, return_params: bool = False):
    def train(problem: Problem, w, cfg: TrainConfig, seed: int):
        gen = torch.Generator().manual_seed(seed)
        params = [p.clone().requires_grad_(True) for p in param.init(problem)]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        wt = torch.as_tensor(w, dtype=torch.float64)
        for _ in range(cfg.steps):
            theta = param.logits(params)
            xi, yi = _sample(problem, theta, cfg.group, gen)
            rows = theta[xi]  # [N, M], the "shared representation" MGDA-UB differentiates through
            logp = torch.log_softmax(rows, -1).gather(1, yi[:, None]).squeeze(1)
            ref_logp = problem.ref_logp[xi, yi]
            adv, mask = _advantages(problem, logp, ref_logp, xi, yi, cfg.group)
            old = logp.detach()
            if method == "morlhf":
                a = whiten(linear_scalarize(adv, wt), mask)
                loss = morlhf_loss((logp - old)[:, None], a, mask, cfg.clip_eps)
            elif method == "pama":
                base = ref_logp if cfg.pama_ratio == "reference" else old
                loss, _ = pama_loss((logp - base)[:, None], whiten(adv, mask), mask, cfg.clip_eps,
                                    granularity=cfg.pama_granularity, noon=cfg.noon, preference=wt)
            elif method == "mgda-ub":
                loss, _ = mgda_ub_loss((logp - old)[:, None], whiten(adv, mask), mask, cfg.clip_eps, rows, preference=wt)
            else:
                raise ValueError(method)
            opt.zero_grad()
            loss.backward()
            opt.step()
        params = [p.detach() for p in params]
        return params if return_params else param.logits(params)

    return train


def train_exact(problem: Problem, w, cfg: TrainConfig, seed: int, param: Param = TABLE, return_params: bool = False,
                steps: int = 1500, lr: float = 0.1):
    """Full-gradient ascent on w·J (no sampling): a check that the front code is right."""
    params = [p.clone().requires_grad_(True) for p in param.init(problem)]
    opt = torch.optim.Adam(params, lr=lr)
    wt = torch.as_tensor(w, dtype=torch.float64)
    for _ in range(max(cfg.steps, steps)):
        opt.zero_grad()
        (-(wt * objectives_of(problem, param.logits(params))).sum()).backward()
        opt.step()
    params = [p.detach() for p in params]
    return params if return_params else param.logits(params)


def train_npg(problem: Problem, w, steps: int = 200, eta: float = 0.5) -> torch.Tensor:
    """Full-batch natural policy gradient on a logit table: θ ← θ + η (log π_ref + w·r/β − log π_θ).
    Its fixed point is π*_w and the error shrinks by (1 − η) per step in *logit* space (Adam's full
    gradient converges in J but leaves the logits of improbable responses unsettled, which a soup
    then mixes in)."""
    target = optimal_logits(problem, w)
    theta = problem.ref_logits.clone()
    for _ in range(steps):
        theta = theta + eta * (target - torch.log_softmax(theta, -1))
    return theta


METHODS = {"exact": train_exact, "morlhf": train_online("morlhf"), "pama": train_online("pama"),
           "mgda-ub": train_online("mgda-ub")}
MLP = mlp_param()


def fit_logits(problem: Problem, w, param: Param, iters: int = 500) -> list:
    """Parameters of ``param`` whose policy is π*_w: least squares between the centred logits and the
    optimum's (LBFGS, from the π_ref fit; reaches ~1e-18).  The optimum of w·J in the MLP's own
    parameters, without the slow tail of gradient ascent on improbable responses' logits."""
    target = optimal_logits(problem, w)
    target = target - target.mean(-1, keepdim=True)
    params = [p.clone().requires_grad_(True) for p in param.init(problem)]
    opt = torch.optim.LBFGS(params, lr=1, max_iter=iters, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-15, tolerance_change=1e-20)

    def closure():
        opt.zero_grad()
        lg = param.logits(params)
        loss = ((lg - lg.mean(-1, keepdim=True) - target) ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return [p.detach() for p in params]


# --------------------------------------------------------------------------------------------
# steering from K endpoints: Rewarded Soups (parameters) and MOD (distributions)
# --------------------------------------------------------------------------------------------


def train_endpoints(problem: Problem, cfg: TrainConfig, seed: int, param: Param = TABLE, exact: bool = False) -> list:
    """One policy per objective (one-hot preference), as parameters: MORLHF at the run budget, or
    ``exact``: natural policy gradient (tables) / :func:`fit_logits` (MLP), no sampling."""
    K = problem.rewards.shape[-1]
    out = []
    for k in range(K):
        e = torch.zeros(K, dtype=torch.float64)
        e[k] = 1.0
        if exact and param is TABLE:
            out.append([train_npg(problem, e)])
        elif exact:
            out.append(fit_logits(problem, e, param))
        else:
            out.append(train_online("morlhf", param, return_params=True)(problem, e, cfg, seed))
    return out


def soup_logits(param: Param, endpoints: list, w) -> torch.Tensor:
    """Rewarded Soups: the policy of the weighted average of the endpoints' parameters."""
    w = torch.as_tensor(w, dtype=torch.float64)
    return param.logits([sum(w[k] * ep[i] for k, ep in enumerate(endpoints)) for i in range(len(endpoints[0]))])


def mod_logits(param: Param, endpoints: list, w, rule: str = "reverse_kl", alpha=None) -> torch.Tensor:
    """MOD: the endpoints' distributions combined by the library's rule (log-probabilities [X, M])."""
    logp = torch.stack([torch.log_softmax(param.logits(ep), -1) for ep in endpoints])
    return combine_logprobs(logp, torch.as_tensor(w, dtype=torch.float64), rule, alpha)


STEERING = {"soup": soup_logits, "mod": mod_logits}


# --------------------------------------------------------------------------------------------
# one model for every preference: RiC (reward-conditioned) and HoE-lite (routed experts), tables
# --------------------------------------------------------------------------------------------


def _draw(problem: Problem, logits: torch.Tensor, n: int, gen) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples (prompt, response) from the policy ``logits [X, M]`` (prompts uniform)."""
    xi = torch.randint(0, logits.shape[0], (n,), generator=gen)
    yi = torch.multinomial(torch.softmax(logits[xi].detach(), -1), 1, generator=gen).squeeze(1)
    return xi, yi


def train_ric(problem: Problem, prefs, cfg: TrainConfig, seed: int, mapping: str = "linf", rounds: int = 2):
    """RiC (Yang et al. 2024) on the table, through :mod:`paretoalign.ric`: offline samples of π_ref (one
    run's budget) labelled with their normalised, rounded scores; a conditional policy
    logits(x, c) = A_x + B_x c (log-linear in the targets, so it generalises between the score tuples it
    saw, as a language model between score strings) fitted by maximum likelihood; ``rounds`` online rounds
    (outer-boundary goals, the any-objective 0.7-quantile filter, the kept samples relabelled with their
    obtained scores, mixed with filtered offline samples); then each preference's targets (``mapping``)
    condition the one model.  Returns (points [P, K], samples drawn)."""
    from paretoalign.ric import fit_stats, map_preference, quantile_keep, sample_goals

    gen = torch.Generator().manual_seed(seed)
    X, M, K = problem.rewards.shape
    n_off = cfg.steps * cfg.group * X
    xi, yi = _draw(problem, problem.ref_logits, n_off, gen)
    raw = problem.rewards[xi, yi].numpy()
    stats = fit_stats(raw, [f"r{k}" for k in range(K)])
    c_off = torch.as_tensor(stats.normalise(raw))
    A = problem.ref_logits.clone().requires_grad_(True)
    B = torch.zeros(X, M, K, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([A, B], lr=cfg.lr)

    def logits_at(x, c):
        return A[x] + (B[x] * c.unsqueeze(1)).sum(-1)

    def fit(x, c, y, steps):
        for _ in range(steps):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(logits_at(x, c), y).backward()
            opt.step()

    fit(xi, c_off, yi, cfg.steps)
    keep_off = torch.as_tensor(quantile_keep(c_off.numpy(), 0.7))
    on_x, on_c, on_y = xi[:0], c_off[:0], yi[:0]
    rng = np.random.default_rng(seed)
    n_on = cfg.group * X * 8
    for _ in range(rounds):
        goals = torch.as_tensor(sample_goals(n_on, stats.low, stats.high, rng))
        gx = torch.randint(0, X, (n_on,), generator=gen)
        with torch.no_grad():
            gy = torch.multinomial(torch.softmax(logits_at(gx, goals), -1), 1, generator=gen).squeeze(1)
        obtained = torch.as_tensor(stats.normalise(problem.rewards[gx, gy].numpy()))
        k = torch.as_tensor(quantile_keep(obtained.numpy(), 0.7))
        on_x, on_c, on_y = torch.cat([on_x, gx[k]]), torch.cat([on_c, obtained[k]]), torch.cat([on_y, gy[k]])
        pool = torch.nonzero(keep_off).squeeze(1)
        pick = pool[torch.randperm(len(pool), generator=gen)[: n_on]]
        fit(torch.cat([xi[pick], on_x]), torch.cat([c_off[pick], on_c]), torch.cat([yi[pick], on_y]), cfg.steps // 3)
    pts = []
    with torch.no_grad():
        for w in prefs:
            t = torch.as_tensor(map_preference(w, stats.low, stats.high, mapping)).expand(X, K)
            pts.append(objectives_of(problem, logits_at(torch.arange(X), t)).numpy())
    return np.stack(pts), n_off + rounds * n_on


def train_hoe(problem: Problem, prefs, cfg: TrainConfig, seed: int, eta: float = 0.5, temperature: float = 1.0):
    """HoE-lite (Li et al. 2025, reconstructed) on the table: the experts are the K MORLHF endpoints' logit
    deltas (a table's delta is its own exact expert); one router per anchor (the simplex's vertices and
    centre, :func:`paretoalign.experts.default_anchors`), gates g(x) = softmax(R_m[x]/T) per prompt, started at
    the anchor's soup; each router trained by the sampled MORLHF step with weights c ∝ u⊙a
    (:func:`paretoalign.combiners.tchebycheff_policy_weights`) and the dual u moved by online mirror descent
    on the batch's mean rewards (:func:`~paretoalign.combiners.tchebycheff_dual_update`), z = J(π_ref) − 0.1;
    the routers share one run's budget; a preference mixes the anchors' gates with its barycentric
    coefficients (:func:`paretoalign.experts.anchor_coefficients`).  Returns (points [P, K], samples)."""
    from paretoalign.combiners import tchebycheff_dual_update, tchebycheff_policy_weights
    from paretoalign.experts import anchor_coefficients, default_anchors

    X, M, K = problem.rewards.shape
    eps = train_endpoints(problem, cfg, seed, TABLE)
    deltas = torch.stack([ep[0] - problem.ref_logits for ep in eps])  # [E, X, M]
    anchors = default_anchors(K)
    z = objectives_of(problem, problem.ref_logits).detach() - 0.1
    gen = torch.Generator().manual_seed(seed + 17)
    per_router = max(1, cfg.steps // len(anchors))
    routers = []

    def policy(gates):  # gates [X, E]
        return problem.ref_logits + (gates.T.unsqueeze(-1) * deltas).sum(0)

    for a in anchors:
        at = torch.as_tensor(a, dtype=torch.float64)
        R = (temperature * torch.log(at.clamp(min=1e-4))).expand(X, K).clone().requires_grad_(True)
        opt = torch.optim.Adam([R], lr=cfg.lr)
        u = torch.full((K,), 1.0 / K, dtype=torch.float64)
        for _ in range(per_router):
            theta = policy(torch.softmax(R / temperature, -1))
            xi, yi = _sample(problem, theta, cfg.group, gen)
            logp = torch.log_softmax(theta[xi], -1).gather(1, yi[:, None]).squeeze(1)
            adv, mask = _advantages(problem, logp, problem.ref_logp[xi, yi], xi, yi, cfg.group)
            wt = tchebycheff_policy_weights(u, at)
            loss = morlhf_loss((logp - logp.detach())[:, None], whiten(linear_scalarize(adv, wt), mask), mask,
                               cfg.clip_eps)
            opt.zero_grad()
            loss.backward()
            opt.step()
            kl = (logp - problem.ref_logp[xi, yi]).detach()
            J = (problem.rewards[xi, yi] - problem.beta * kl.unsqueeze(1)).mean(0)
            u = tchebycheff_dual_update(u, J, at, z, eta)
        routers.append(torch.softmax(R.detach() / temperature, -1))
    pts = []
    for w in prefs:
        c = anchor_coefficients(list(map(float, w)), anchors)
        gates = sum(cm * g for cm, g in zip(c, routers))
        pts.append(objectives_of(problem, policy(gates)).numpy())
    return np.stack(pts), (K * cfg.steps + per_router * len(anchors)) * cfg.group * X


ONE_MODEL = {"ric": train_ric, "hoe": train_hoe}


def steering_gap(problem: Problem, w, param: Param = TABLE, seed: int = 0, cfg: TrainConfig | None = None) -> dict:
    """Exact endpoints, then soup and MOD at ``w``: how far each falls below the optimum of w·J
    (``gap_*``, ≥ 0), and the largest probability difference to π*_w (``max_abs_*``)."""
    cfg = cfg or TrainConfig()
    eps = train_endpoints(problem, cfg, seed, param, exact=True)
    wt = torch.as_tensor(w, dtype=torch.float64)
    star = optimal_logits(problem, wt)
    best = float((wt * objectives_of(problem, star)).sum())
    p_star = torch.softmax(star, -1)
    out = {"optimum": best, "endpoint_gaps": []}
    for k, ep in enumerate(eps):
        e = torch.zeros_like(wt)
        e[k] = 1
        out["endpoint_gaps"].append(float((e * objectives_of(problem, optimal_logits(problem, e))).sum())
                                    - float((e * objectives_of(problem, param.logits(ep))).sum()))
    for name, fn in STEERING.items():
        logits = fn(param, eps, wt)
        out[f"gap_{name}"] = best - float((wt * objectives_of(problem, logits)).sum())
        out[f"max_abs_{name}"] = float((torch.softmax(logits, -1) - p_star).abs().max())
    return out


# --------------------------------------------------------------------------------------------
# f-divergence regularisers (MOD's forward-KL and alpha rules): closed forms by bisection
# --------------------------------------------------------------------------------------------


def f_divergence(u: torch.Tensor, a: float) -> torch.Tensor:
    """f(u) of the α-family (convex): (u^{1−a} − (1−a)u − a)/(a(a−1)) for 0 < a < 1; a = 1 is the
    forward KL −log u + u − 1 (its limit; the linear terms do not change a divergence between
    distributions)."""
    if a == 1.0:
        return -torch.log(u) + u - 1
    return (u ** (1 - a) - (1 - a) * u - a) / (a * (a - 1))


def f_objective(problem: Problem, logits: torch.Tensor, w, a: float) -> float:
    """E_x[ E_π w·r − β D_f(π ‖ π_ref) ] for the α-family divergence (a = 1: forward KL)."""
    w = torch.as_tensor(w, dtype=torch.float64)
    logp = torch.log_softmax(logits.double(), -1)
    p, ref = logp.exp(), problem.ref_logp.exp()
    reward = (p * (problem.rewards @ w)).sum(-1)
    div = (ref * f_divergence(p / ref, a)).sum(-1)
    return float((reward - problem.beta * div).mean())


def f_optimum(problem: Problem, w, a: float, iters: int = 200) -> torch.Tensor:
    """log π* [X, M] maximising E_π w·r − β D_f(π‖π_ref) for the α-family (a = 1: forward KL):
    π* = π_ref·(1 − a(s − λ)/β)^{−1/a} with s = w·r and λ (per prompt) by bisection so that Σ π* = 1."""
    w = torch.as_tensor(w, dtype=torch.float64)
    s, ref, beta = problem.rewards @ w, problem.ref_logp.exp(), problem.beta

    def total(lam):
        return (ref * (1 - a * (s - lam[:, None]) / beta) ** (-1.0 / a)).sum(-1)

    lo = s.max(-1).values - beta / a + 1e-12  # the base -> 0+: the sum -> inf
    hi = s.max(-1).values + 1.0
    while bool((total(hi) > 1).any()):
        hi = hi + (hi - lo)
    for _ in range(iters):
        mid = (lo + hi) / 2
        big = total(mid) > 1
        lo, hi = torch.where(big, mid, lo), torch.where(big, hi, mid)
    lam = (lo + hi) / 2
    logp = problem.ref_logp - torch.log(1 - a * (s - lam[:, None]) / beta) / a
    return logp - torch.logsumexp(logp, -1, keepdim=True)


# --------------------------------------------------------------------------------------------
# the two-step testbed: responses of two tokens, a sequence-level reward
# --------------------------------------------------------------------------------------------


@dataclass
class SequenceProblem:
    rewards: torch.Tensor  # [V, V, K]: r(y1, y2) for one prompt
    ref1: torch.Tensor  # [V] log π_ref(y1)
    ref2: torch.Tensor  # [V, V] log π_ref(y2 | y1)
    beta: float

    @property
    def ref_joint(self) -> torch.Tensor:
        return self.ref1[:, None] + self.ref2


def make_sequence_problem(v: int = 4, k: int = 2, beta: float = 0.1, seed: int = 0) -> SequenceProblem:
    g = torch.Generator().manual_seed(seed)
    return SequenceProblem(torch.rand(v, v, k, generator=g, dtype=torch.float64),
                           torch.log_softmax(torch.randn(v, generator=g, dtype=torch.float64), -1),
                           torch.log_softmax(torch.randn(v, v, generator=g, dtype=torch.float64), -1), beta)


def sequence_optimum(sp: SequenceProblem, w) -> torch.Tensor:
    """log π*_w(y1, y2) ∝ log π_ref(y) + w·r(y)/β, normalised over all V² sequences."""
    w = torch.as_tensor(w, dtype=torch.float64)
    joint = sp.ref_joint + (sp.rewards @ w) / sp.beta
    return joint - torch.logsumexp(joint.flatten(), 0)


def factorise(joint: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A joint log-distribution [V, V] as next-token conditionals: log p(y1) [V], log p(y2 | y1) [V, V]."""
    first = torch.logsumexp(joint, 1)
    return first, joint - first[:, None]


def tokenwise_mod_joint(firsts: torch.Tensor, seconds: torch.Tensor, w, rule: str = "reverse_kl", alpha=None):
    """What MOD's token-by-token sampling draws: log q(y1, y2) [V, V] from the endpoints' conditionals
    ``firsts [K, V]``, ``seconds [K, V, V]``, the rule applied to the sequence log-probabilities."""
    w = torch.as_tensor(w, dtype=torch.float64)
    q1 = combine_logprobs(firsts, w, rule, alpha)  # [V]
    q2 = combine_logprobs(firsts[:, :, None] + seconds, w, rule, alpha)  # [V, V], normalised over y2
    return q1[:, None] + q2


def two_step_report(sp: SequenceProblem, prefs) -> list[dict]:
    """Per preference: the sequence-score identity's error, and token-wise sampling's distance to π*."""
    K = sp.rewards.shape[-1]
    eps = [factorise(sequence_optimum(sp, torch.eye(K, dtype=torch.float64)[k])) for k in range(K)]
    firsts, seconds = torch.stack([e[0] for e in eps]), torch.stack([e[1] for e in eps])
    rows = []
    for w in prefs:
        wt = torch.as_tensor(w, dtype=torch.float64)
        star = sequence_optimum(sp, wt)
        seq = (wt.view(-1, 1, 1) * (firsts[:, :, None] + seconds)).sum(0)  # Σ w_k log π_k(y)
        diff = seq - star
        q = tokenwise_mod_joint(firsts, seconds, wt)
        rows.append({"w": [float(x) for x in wt], "identity_error": float(diff.max() - diff.min()),
                     "tv_tokenwise_sampling": 0.5 * float((q.exp() - star.exp()).abs().sum()),
                     "argmax_equal": int(seq.flatten().argmax()) == int(star.flatten().argmax())})
    return rows


# --------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------


def dominance_violation(points: np.ndarray, front: np.ndarray) -> float:
    """How far the points go beyond the true front: max over points of min over front points of the
    largest coordinate by which the point beats that front point (≤ 0 up to the grid's resolution)."""
    diff = points[:, None, :] - front[None, :, :]  # > 0 where the point is better
    return float(diff.max(-1).min(1).max())


def run(args) -> dict:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    problem = make_problem(args.prompts, args.responses, args.k, args.beta, seed=args.problem_seed)
    dense = true_front(problem, args.dense)
    lo, hi = dense.min(0), dense.max(0)
    ref = lo - 0.1 * (hi - lo)
    hv_true = hypervolume(dense, ref)
    prefs = simplex_grid(args.prefs, args.k)
    ceiling = np.stack([objectives_of(problem, optimal_logits(problem, w)).numpy() for w in prefs])
    cfg = TrainConfig(steps=args.steps, group=args.group, lr=args.lr)
    methods = [m for m in args.methods.split(",") if m]
    rows = []
    variants = [(m, None) for m in methods]
    if args.all_granularities and "pama" in methods:
        variants = [v for v in variants if v[0] != "pama"] + [
            ("pama", {"pama_granularity": g, "pama_ratio": r, "noon": n})
            for r in ("reference", "old") for g in ("batch", "sequence", "token") for n in (True, False)
        ]
    for method, opts in variants:
        name = method if opts is None else (
            f"pama[{opts['pama_granularity']}, u vs {'ref' if opts['pama_ratio'] == 'reference' else 'old'}"
            + ("" if opts["noon"] else ", no Noon") + "]")
        c = TrainConfig(**{**cfg.__dict__, **(opts or {})})
        base, param = (method[:-4], MLP) if method.endswith("-mlp") else (method, TABLE)
        ratios, igds, nds, times, viols, pts_all = [], [], [], [], [], []
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            if base in ONE_MODEL:  # one model (conditioned or routed) for every preference
                pts, one_model_samples = ONE_MODEL[base](problem, prefs, c, seed)
            elif base in STEERING:  # K endpoints, then every preference from them
                eps = train_endpoints(problem, c, seed, param)
                pts = np.stack([objectives_of(problem, STEERING[base](param, eps, w)).numpy() for w in prefs])
            elif param is TABLE:
                pts = np.stack([objectives_of(problem, METHODS[method](problem, w, c, seed)).numpy() for w in prefs])
            elif base == "exact":
                pts = np.stack([objectives_of(problem, param.logits(fit_logits(problem, w, param))).numpy() for w in prefs])
            else:
                pts = np.stack([objectives_of(problem, train_online(base, param)(problem, w, c, seed)).numpy()
                                for w in prefs])
            times.append(time.perf_counter() - t0)
            ratios.append(hypervolume(pts, ref) / hv_true)
            igds.append(igd_plus(pts, dense, normalize=(lo, hi)))
            nds.append(int(pareto_mask(pts).sum()))
            viols.append(dominance_violation(pts, dense))
            pts_all.append(pts.tolist())
            if base == "exact":
                break  # deterministic
        runs = args.k if base in STEERING else 1 if base in ONE_MODEL else len(prefs)
        samples = 0 if base == "exact" else one_model_samples if base in ONE_MODEL else c.steps * c.group * args.prompts * runs
        rows.append({
            "method": name, "hv_ratio": statistics.median(ratios), "hv_ratio_min": min(ratios), "hv_ratio_max": max(ratios),
            "igd_plus": statistics.median(igds), "non_dominated": statistics.median(nds), "points": len(prefs),
            "max_violation": max(viols), "samples": samples, "trainings": runs, "seconds": statistics.median(times),
            "runs": len(ratios), "front_points": pts_all[0],
        })
    exact_rows = []
    if args.steering_exact:  # soups and MOD from exact endpoints: the parameterisation's own gap, no sampling
        for param in (TABLE, MLP):
            eps = train_endpoints(problem, cfg, 0, param, exact=True)
            for kind, fn in STEERING.items():
                pts = np.stack([objectives_of(problem, fn(param, eps, w)).numpy() for w in prefs])
                scal = [float((torch.as_tensor(w) * objectives_of(problem, fn(param, eps, w))).sum()) for w in prefs]
                best = [float((torch.as_tensor(w) * objectives_of(problem, optimal_logits(problem, w))).sum())
                        for w in prefs]
                exact_rows.append({"method": f"{kind} ({param.name}, exact endpoints)",
                                   "hv_ratio": hypervolume(pts, ref) / hv_true,
                                   "max_gap": max(b - s for b, s in zip(best, scal)),
                                   "max_violation": dominance_violation(pts, dense), "front_points": pts.tolist()})
    two_step = two_step_report(make_sequence_problem(seed=args.problem_seed), [(0.2, 0.8), (0.5, 0.5), (0.8, 0.2)]) \
        if args.k == 2 else []
    return {"settings": vars(args), "reference_point": ref.tolist(), "hv_true": hv_true,
            "ceiling_hv_ratio": hypervolume(ceiling, ref) / hv_true, "ideal": hi.tolist(), "nadir": lo.tolist(),
            "rows": rows, "exact_endpoint_rows": exact_rows, "two_step": two_step}


def print_table(res: dict) -> None:
    s = res["settings"]
    print(f"\n## Exact front: K={s['k']}, {s['prompts']} prompts x {s['responses']} responses, beta={s['beta']}, "
          f"{s['prefs']} per simplex edge ({len(res['rows'][0]['front_points'])} preferences); "
          f"{s['steps']} steps x {s['group']} samples/prompt, Adam lr {s['lr']}, {s['repeats']} seeds")
    print(f"reference point {np.round(res['reference_point'], 4).tolist()} (true front's nadir - 10% of range); "
          f"true-front HV {res['hv_true']:.5f}; IGD+ normalised by the true front's ideal-nadir box")
    print(f"ceiling (true optimum at the same preferences): HV ratio {res['ceiling_hv_ratio']:.4f}\n")
    print("| method | HV / true HV (median) | min-max over seeds | IGD+ | non-dominated | beyond true front | trainings | samples | seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        print(f"| {r['method']} | {r['hv_ratio']:.4f} | {r['hv_ratio_min']:.4f}-{r['hv_ratio_max']:.4f} | {r['igd_plus']:.4f} | "
              f"{r['non_dominated']:g}/{r['points']} | {r['max_violation']:.1e} | {r['trainings']} | {r['samples']:,} | "
              f"{r['seconds']:.1f} |")
    if res.get("exact_endpoint_rows"):
        print("\nSoups and MOD from exact endpoints (no sampling: natural policy gradient for tables, the optimum's "
              "logits fitted by LBFGS for the MLP, at each one-hot preference):\n")
        print("| steering | HV / true HV | largest shortfall of w·J below its optimum | beyond true front |")
        print("|---|---|---|---|")
        for r in res["exact_endpoint_rows"]:
            print(f"| {r['method']} | {r['hv_ratio']:.4f} | {r['max_gap']:.2e} | {r['max_violation']:.1e} |")
    if res.get("two_step"):
        print("\nTwo-step responses (V=4, sequence-level reward, exact endpoints), MOD reverse KL:\n")
        print("| w | Σ w log π_k − log π* (max − min over the 16 sequences) | TV(token-wise sampling, π*) | beam argmax = argmax π* |")
        print("|---|---|---|---|")
        for r in res["two_step"]:
            print(f"| {r['w'][0]:g}, {r['w'][1]:g} | {r['identity_error']:.1e} | {r['tv_tokenwise_sampling']:.4f} | "
                  f"{r['argmax_equal']} |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--responses", type=int, default=16)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--prefs", type=int, default=11, help="preferences per simplex edge (Das-Dennis for K>=3)")
    p.add_argument("--dense", type=int, default=2001, help="points per edge of the dense true front (K=2; K=3 uses 61)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--methods", default="exact,morlhf,pama,mgda-ub,soup,mod,ric,hoe,morlhf-mlp,soup-mlp,mod-mlp",
                   help="per-preference learners (exact, morlhf, pama, mgda-ub), steering from K endpoints (soup, mod), "
                   "one model for every preference (ric, hoe: tables only); "
                   "'-mlp' gives any of them the MLP policy")
    p.add_argument("--no-steering-exact", dest="steering_exact", action="store_false",
                   help="skip the soups/MOD-from-exact-endpoints table")
    p.add_argument("--all-granularities", action="store_true",
                   help="PAMA at every granularity x ratio (vs reference / vs old policy) x Noon on/off")
    p.add_argument("--problem-seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="5 preferences, 60 steps, 1 seed")
    p.add_argument("--out", default=str(OUT))
    a = p.parse_args(argv)
    if a.quick:
        a.prefs, a.steps, a.repeats, a.dense = 5, 60, 1, 401
    if a.k >= 3 and a.dense > 61:
        a.dense = 61
    return a


def main(argv=None) -> dict:
    args = parse_args(argv)
    res = run(args)
    print_table(res)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"\n-> {args.out}")
    return res


if __name__ == "__main__":
    main()
