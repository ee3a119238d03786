"""MOPO: multi-objective preference optimisation with constraints, as pure tensor functions.

Reference: Agnihotri et al. 2025, "Multi-Objective Preference Optimization: Improving Human
Alignment of Generative Models".  Primary objective p, secondary objectives q_j with thresholds b_j:

    max_π  E_π[P(y)] − τ·KL(π‖π_ref)   s.t.  E_π[Q_j(y)] ≥ b_j

where P(y) = E_{y'∼μ}[p(y ≻ y')] and Q_j likewise are win probabilities against a behaviour
policy μ.  For fixed duals λ ≥ 0 the maximiser has the closed-form ratio

    ρ*_λ(y) = π*_λ(y)/π_ref(y) = exp(τ⁻¹[P(y) + λᵀQ(y)] − 1)

(the −1 comes from the unnormalised KL; with sampled candidates the ratio is self-normalised over
the pool, which removes it); the policy step is importance-weighted behaviour cloning
max_ψ E_{y∼π_ref}[ρ*_λ(y)·log π_ψ(y)], and λ follows projected gradient descent on the dual,
λ ← [λ − η(E_{π*_λ}[Q] − b)]₊.  The robust variant replaces μ by the worst behaviour policy in a KL
ball of radius ε around it; by KL duality its win probability is
max_{χ>0} −χ·log E_μ[exp(−q(y ≻ y')/χ)] − χε, with χ a second dual variable.

Conventions here: a *pool* is the set of candidate responses of one prompt, shape [B, n] with a
boolean ``pool_mask``; μ is uniform over the pool (each candidate is the opponent of every other).

Refresh (the paper's Algorithm 1): every t₀ steps π_ref ← π_ψ and b_j ← β_relax·(the policy's
achieved Q_j), so the bounds ratchet up with the policy (paper: τ = 0.08, ε = 0.15, β_relax = 0.9995,
t₀ = 500).  Documented choices here: the refresh keeps the user's threshold as a floor,
b_j ← max(b_j⁰, β_relax·achieved), so a ``--constraint`` is never loosened; ρ is self-normalised over
each pool (mean 1) where the paper's Eq. 3 is unnormalised, which only rescales the step and removes
the −1 above.

Collapse guard (the paper's known failure: small pools let λ diverge and ρ become one-hot): λ is
capped at ``lam_max`` and a pool whose normalised ratios exceed ``max_weight`` times their mean is
tempered (its log-ratios scaled down until they do not) before the policy step; the trainer warns when the
effective sample size falls below a fraction of the pool.
"""

from __future__ import annotations

import torch


def pairwise_win_probabilities(scores: torch.Tensor, pool_mask: torch.Tensor, mode: str = "indicator",
                               temperature: float = 1.0) -> torch.Tensor:
    """p(y_i ≻ y_j) for every ordered pair of a pool: [B, n, n]; NaN where the pair is not a real
    comparison (the diagonal, masked candidates, NaN scores).

    ``mode``: 'indicator' — 1 if s_i > s_j, ½ on ties (win rates in [0, 1], what thresholds are stated
    in); 'bradley_terry' — σ((s_i − s_j)/temperature).
    """
    valid = pool_mask & ~torch.isnan(scores)
    s = torch.nan_to_num(scores.float())
    d = s.unsqueeze(2) - s.unsqueeze(1)
    if mode == "indicator":
        p = (d > 0).float() + 0.5 * (d == 0).float()
    elif mode == "bradley_terry":
        p = torch.sigmoid(d / temperature)
    else:
        raise ValueError(f"mode must be 'indicator' or 'bradley_terry'; got {mode!r}")
    pair = valid.unsqueeze(2) & valid.unsqueeze(1)
    pair &= ~torch.eye(s.shape[1], dtype=torch.bool, device=s.device)
    return torch.where(pair, p, torch.full_like(p, float("nan")))


def win_probabilities(pairwise: torch.Tensor) -> torch.Tensor:
    """P(y_i) = E_{y'∼μ}[p(y_i ≻ y')], μ uniform over i's real opponents: [B, n] (NaN if it has none)."""
    return torch.nanmean(pairwise, dim=2)


def robust_win_probabilities(pairwise: torch.Tensor, chi, radius: float) -> torch.Tensor:
    """Worst-case win probability over behaviour policies within KL ``radius`` of μ, at dual ``chi`` > 0:
    −χ·log E_μ[exp(−p(y ≻ y')/χ)] − χ·ε, shape [B, n].  Tends to :func:`win_probabilities` − χε as χ → ∞."""
    real = ~torch.isnan(pairwise)
    n_opp = real.sum(2)
    x = torch.where(real, -torch.nan_to_num(pairwise) / chi, torch.full_like(pairwise, -float("inf")))
    out = -chi * (torch.logsumexp(x, 2) - torch.log(n_opp.clamp(min=1).to(x.dtype))) - chi * radius
    return torch.where(n_opp > 0, out, torch.full_like(out, float("nan")))


def mopo_log_ratio(P: torch.Tensor, Q: torch.Tensor, lam: torch.Tensor, tau: float) -> torch.Tensor:
    """log ρ*_λ = τ⁻¹[P + λᵀQ] − 1: P [B, n], Q [B, n, J], λ [J] -> [B, n]."""
    return (P + (Q * lam).sum(-1)) / tau - 1.0


def mopo_weights(log_ratio: torch.Tensor, pool_mask: torch.Tensor, log_prior: torch.Tensor | None = None,
                 max_weight: float | None = None) -> torch.Tensor:
    """Self-normalised importance weights over each pool, mean 1 over its valid candidates: [B, n].

    ``log_prior``: log π_ref,t(y) − log π_sampling(y), the correction once the reference has been
    refreshed away from the policy that produced the pool (0 before any refresh).
    ``max_weight`` (>= 1): collapse guard — a pool whose largest weight exceeds it is *tempered*:
    its log-weights are multiplied by the largest α in [0, 1] (found by bisection) that brings the
    largest weight down to ``max_weight`` (α = 0 is uniform weights, so a solution always exists).
    Tempering rather than truncation, since truncation cannot revive weights that underflowed to 0.
    """
    z = log_ratio if log_prior is None else log_ratio + log_prior
    neg_inf = torch.full_like(z, -float("inf"))
    z = torch.where(pool_mask, z, neg_inf)
    n = pool_mask.sum(1, keepdim=True).clamp(min=1).to(z.dtype)

    def normalised(alpha):
        zz = torch.where(pool_mask, z * alpha, neg_inf)
        return torch.nan_to_num(torch.softmax(zz, 1) * n) * pool_mask

    w = normalised(torch.ones_like(n))
    if max_weight is not None:
        if max_weight < 1:
            raise ValueError(f"max_weight must be >= 1 (the mean weight is 1); got {max_weight}")
        over = w.max(1, keepdim=True).values > max_weight
        if over.any():
            lo, hi = torch.zeros_like(n), torch.ones_like(n)
            for _ in range(40):
                mid = (lo + hi) / 2
                ok = normalised(mid).max(1, keepdim=True).values <= max_weight
                lo, hi = torch.where(ok, mid, lo), torch.where(ok, hi, mid)
            w = torch.where(over, normalised(lo), w)
    return w.detach()


def effective_sample_fraction(weights: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """Kish's effective sample size of each pool's weights divided by the pool size: [B] in (0, 1]."""
    w = weights * pool_mask
    n = pool_mask.sum(1).clamp(min=1).to(w.dtype)
    return (w.sum(1) ** 2 / (w.pow(2).sum(1).clamp(min=1e-30))) / n


def mopo_policy_loss(policy_logps: torch.Tensor, weights: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """Importance-weighted behaviour cloning: −mean over valid candidates of ρ·log π_ψ(y), per prompt [B]."""
    m = pool_mask.to(policy_logps.dtype)
    return -(weights.detach() * policy_logps * m).sum(1) / m.sum(1).clamp(min=1)


def expected_under_target(values: torch.Tensor, weights: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """E_{π*_λ}[values] estimated with the pool's normalised weights: values [B, n, J] -> [J] (mean over prompts)."""
    w = (weights * pool_mask).unsqueeze(-1)
    per_prompt = (w * torch.nan_to_num(values)).sum(1) / w.sum(1).clamp(min=1e-30)
    return per_prompt.mean(0)


def dual_step(lam: torch.Tensor, expected_q: torch.Tensor, bounds: torch.Tensor, lr: float,
              lam_max: float | None = None) -> torch.Tensor:
    """Projected dual descent λ ← clip(λ − η(E[Q] − b), 0, lam_max): a violated constraint raises its λ."""
    out = (lam - lr * (expected_q - bounds)).clamp(min=0.0)
    return out.clamp(max=lam_max) if lam_max is not None else out


def robust_chi_step(chi: torch.Tensor, pairwise: torch.Tensor, pool_mask: torch.Tensor, weights: torch.Tensor,
                    radius: float, lr: float, chi_min: float = 1e-3) -> torch.Tensor:
    """One projected gradient-ascent step on χ (one per secondary objective, [J]) of the robust win
    probability under the current target (the KL-dual is concave in χ, so ascent finds the worst case).

    ``pairwise``: [B, n, n, J] pairwise win probabilities of the secondary objectives."""
    chi = chi.detach().clone().requires_grad_(True)
    vals = []
    for j in range(chi.numel()):
        rq = robust_win_probabilities(pairwise[..., j], chi[j], radius)
        vals.append(expected_under_target(rq.unsqueeze(-1), weights, pool_mask)[0])
    torch.stack(vals).sum().backward()
    with torch.no_grad():
        return (chi + lr * chi.grad).clamp(min=chi_min)
