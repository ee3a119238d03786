"""Quality indicators of a front, for MAXIMISATION (higher is better in every objective).

Callers orient minimised objectives first (multiply by −1).  Built on ``moocore`` (exact
algorithms in C; López-Ibáñez et al.), which minimises by default: we pass ``maximise=True``.

* :func:`pareto_mask` — non-dominated points.
* :func:`hypervolume` — the Lebesgue measure of the region dominated by the points and
  bounded below by a reference point (Zitzler & Thiele 1998); exact for any K ≥ 2.
* :func:`hypervolume_contributions` — each point's exclusive share of it.
* :func:`igd`, :func:`igd_plus` — distance from a known reference front (Coello & Reyes Sierra
  2004; IGD+ of Ishibuchi et al. 2015, which is weakly Pareto compliant).
* :func:`reference_point` — one shared default reference point for several fronts.
"""

from __future__ import annotations

import numpy as np

from paretoalign.errors import ConfigError, FrontError


def _as_points(points, what: str = "points", k: int | None = None) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, k or 0)
    if arr.ndim != 2:
        raise ConfigError(f"{what} must be a 2-D array [P, K]; got shape {arr.shape}")
    if k is not None and arr.shape[1] != k:
        raise ConfigError(f"{what} have {arr.shape[1]} objectives but {k} were expected")
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise FrontError(f"{what}: point {i} has a non-finite value ({arr[i, j]}) for objective {j}")
    return arr


def _as_ref(ref, k: int) -> np.ndarray:
    r = np.asarray(ref, dtype=float).reshape(-1)
    if r.shape[0] != k:
        raise ConfigError(f"the reference point has {r.shape[0]} values but the points have {k} objectives")
    if not np.isfinite(r).all():
        raise FrontError(f"the reference point must be finite; got {r.tolist()}")
    return r


def pareto_mask(points) -> np.ndarray:
    """``bool [P]``: True where no other point dominates (a ≥ b everywhere and > somewhere).

    Duplicates: exact copies do not dominate each other, so every copy of a non-dominated point
    is kept (True); a point equal to another in some objectives and worse in one is dominated.
    """
    arr = _as_points(points)
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    ge = (arr[:, None, :] >= arr[None, :, :]).all(-1)  # ge[j, i]: j >= i everywhere
    gt = (arr[:, None, :] > arr[None, :, :]).any(-1)
    dominated = (ge & gt).any(0)
    return ~dominated


def _dominating(arr: np.ndarray, r: np.ndarray) -> np.ndarray:
    return arr[(arr > r).all(axis=1)]


def hypervolume(points, ref, require_dominating: bool = False) -> float:
    """The exact hypervolume dominated by ``points [P, K]`` above ``ref [K]`` (maximisation).

    Only points strictly better than ``ref`` in every objective contribute; the others add
    nothing (a point on the reference's boundary spans zero volume).  With
    ``require_dominating`` an empty result is an error naming the best value per objective
    (used when the user chose the reference point).
    """
    arr = _as_points(points)
    k = arr.shape[1]
    if k < 2:
        raise FrontError(f"a front needs at least 2 objectives for a hypervolume; got {k}")
    r = _as_ref(ref, k)
    pts = _dominating(arr, r)
    if len(pts) == 0:
        if require_dominating:
            best = arr.max(0).tolist() if len(arr) else []
            raise FrontError(
                f"no point dominates the reference point {r.tolist()} (best value per objective: {best}); "
                "choose a reference point below every objective's worst value of interest"
            )
        return 0.0
    import moocore

    return float(moocore.hypervolume(pts, ref=r, maximise=True))


def hypervolume_contributions(points, ref) -> np.ndarray:
    """Each point's exclusive hypervolume (0 for dominated points and those not above ``ref``)."""
    arr = _as_points(points)
    k = arr.shape[1]
    if k < 2:
        raise FrontError(f"a front needs at least 2 objectives for a hypervolume; got {k}")
    r = _as_ref(ref, k)
    out = np.zeros(len(arr))
    ok = (arr > r).all(axis=1)
    if ok.sum() == 0:
        return out
    total = hypervolume(arr[ok], r)
    idx = np.flatnonzero(ok)
    for i in idx:  # leave-one-out: exact, P is small for fronts of trained models
        rest = arr[np.setdiff1d(idx, [i])]
        out[i] = total - (hypervolume(rest, r) if len(rest) else 0.0)
    return np.maximum(out, 0.0)


def normalize_points(points, lower, upper) -> np.ndarray:
    """(x − lower) / (upper − lower) per objective."""
    arr = _as_points(points)
    lo = _as_ref(lower, arr.shape[1])
    hi = _as_ref(upper, arr.shape[1])
    if (hi <= lo).any():
        raise ConfigError(f"normalisation needs upper > lower in every objective; got lower {lo.tolist()}, upper {hi.tolist()}")
    return (arr - lo) / (hi - lo)


def _distances(points, reference_front, normalize, plus: bool) -> float:
    a = _as_points(points)
    z = _as_points(reference_front, "reference front", k=a.shape[1])
    if len(z) == 0:
        raise ConfigError("the reference front is empty")
    if len(a) == 0:
        return float("inf")
    if normalize is not None:
        lo, hi = normalize
        a, z = normalize_points(a, lo, hi), normalize_points(z, lo, hi)
    diff = z[:, None, :] - a[None, :, :]  # [Z, A, K]: how much better the reference point is
    if plus:
        diff = np.maximum(diff, 0.0)
    d = np.sqrt((diff**2).sum(-1))
    return float(d.min(1).mean())


def igd(points, reference_front, normalize=None) -> float:
    """Mean over reference-front points z of min over ``points`` a of ‖z − a‖₂."""
    return _distances(points, reference_front, normalize, plus=False)


def igd_plus(points, reference_front, normalize=None) -> float:
    """IGD+ for maximisation: d⁺(z, a) = ‖max(z − a, 0)‖₂ (only where a is worse than z counts)."""
    return _distances(points, reference_front, normalize, plus=True)


def reference_point(*point_sets, margin: float = 0.1, lower_bounds=None) -> np.ndarray:
    """A reference point that every given point strictly dominates.

    Per objective: the worst value over all sets minus ``margin`` × (best − worst) (or
    ``margin`` × max(1, |worst|) when all values are equal).  Where ``lower_bounds[k]`` is finite
    and strictly below every point, that known worst value is used instead, so fronts measured
    with different margins stay comparable.
    """
    sets = [_as_points(s) for s in point_sets if np.asarray(s).size]
    if not sets:
        raise FrontError("no points to derive a reference point from")
    k = sets[0].shape[1]
    allp = np.concatenate([_as_points(s, k=k) for s in sets])
    lo, hi = allp.min(0), allp.max(0)
    span = np.where(hi > lo, hi - lo, np.maximum(1.0, np.abs(lo)))
    ref = lo - margin * span
    if lower_bounds is not None:
        lb = np.asarray(lower_bounds, dtype=float).reshape(-1)
        if lb.shape[0] != k:
            raise ConfigError(f"lower_bounds has {lb.shape[0]} values for {k} objectives")
        use = np.isfinite(lb) & (lb < lo)
        ref = np.where(use, lb, ref)
    return ref
