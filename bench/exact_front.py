"""The front's physical limit: methods on a tabular problem whose optimal front is known exactly.

    python bench/exact_front.py                     # K=2, 11 preferences, 3 seeds (a minute or two on 2 cores)
    python bench/exact_front.py --quick             # smoke size (seconds)
    python bench/exact_front.py --k 3 --prefs 4     # K=3, Das-Dennis grid with 4 points per edge (10 preferences)
    python bench/exact_front.py --all-granularities # PAMA at batch, sequence and token granularity

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


def train_online(method: str):
    def train(problem: Problem, w, cfg: TrainConfig, seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        theta = problem.ref_logits.clone().requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=cfg.lr)
        wt = torch.as_tensor(w, dtype=torch.float64)
        for _ in range(cfg.steps):
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
        return theta.detach()

    return train


def train_exact(problem: Problem, w, cfg: TrainConfig, seed: int) -> torch.Tensor:
    """Full-gradient ascent on w·J (no sampling): a check that the front code is right."""
    theta = problem.ref_logits.clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.1)
    wt = torch.as_tensor(w, dtype=torch.float64)
    for _ in range(max(cfg.steps, 1500)):
        opt.zero_grad()
        (-(wt * objectives_of(problem, theta)).sum()).backward()
        opt.step()
    return theta.detach()


METHODS = {"exact": train_exact, "morlhf": train_online("morlhf"), "pama": train_online("pama"),
           "mgda-ub": train_online("mgda-ub")}


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
        ratios, igds, nds, times, viols, pts_all = [], [], [], [], [], []
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            pts = np.stack([objectives_of(problem, METHODS[method](problem, w, c, seed)).numpy() for w in prefs])
            times.append(time.perf_counter() - t0)
            ratios.append(hypervolume(pts, ref) / hv_true)
            igds.append(igd_plus(pts, dense, normalize=(lo, hi)))
            nds.append(int(pareto_mask(pts).sum()))
            viols.append(dominance_violation(pts, dense))
            pts_all.append(pts.tolist())
            if method == "exact":
                break  # deterministic
        samples = 0 if method == "exact" else c.steps * c.group * args.prompts * len(prefs)
        rows.append({
            "method": name, "hv_ratio": statistics.median(ratios), "hv_ratio_min": min(ratios), "hv_ratio_max": max(ratios),
            "igd_plus": statistics.median(igds), "non_dominated": statistics.median(nds), "points": len(prefs),
            "max_violation": max(viols), "samples": samples, "seconds": statistics.median(times), "runs": len(ratios),
            "front_points": pts_all[0],
        })
    return {"settings": vars(args), "reference_point": ref.tolist(), "hv_true": hv_true,
            "ceiling_hv_ratio": hypervolume(ceiling, ref) / hv_true, "ideal": hi.tolist(), "nadir": lo.tolist(),
            "rows": rows}


def print_table(res: dict) -> None:
    s = res["settings"]
    print(f"\n## Exact front: K={s['k']}, {s['prompts']} prompts x {s['responses']} responses, beta={s['beta']}, "
          f"{s['prefs']} per simplex edge ({len(res['rows'][0]['front_points'])} preferences); "
          f"{s['steps']} steps x {s['group']} samples/prompt, Adam lr {s['lr']}, {s['repeats']} seeds")
    print(f"reference point {np.round(res['reference_point'], 4).tolist()} (true front's nadir - 10% of range); "
          f"true-front HV {res['hv_true']:.5f}; IGD+ normalised by the true front's ideal-nadir box")
    print(f"ceiling (true optimum at the same preferences): HV ratio {res['ceiling_hv_ratio']:.4f}\n")
    print("| method | HV / true HV (median) | min-max over seeds | IGD+ | non-dominated | beyond true front | samples | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in res["rows"]:
        print(f"| {r['method']} | {r['hv_ratio']:.4f} | {r['hv_ratio_min']:.4f}-{r['hv_ratio_max']:.4f} | {r['igd_plus']:.4f} | "
              f"{r['non_dominated']:g}/{r['points']} | {r['max_violation']:.1e} | {r['samples']:,} | {r['seconds']:.1f} |")


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
    p.add_argument("--methods", default="exact,morlhf,pama,mgda-ub")
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
