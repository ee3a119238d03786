"""Front indicators against brute force: Pareto mask, exact hypervolume, contributions, IGD/IGD+."""

import itertools

import numpy as np
import pytest

from paretoalign.errors import ConfigError, FrontError
from paretoalign.fronts.metrics import (
    hypervolume,
    hypervolume_contributions,
    igd,
    igd_plus,
    normalize_points,
    pareto_mask,
    reference_point,
)


def brute_mask(p):
    P = len(p)
    return np.array([not any((p[j] >= p[i]).all() and (p[j] > p[i]).any() for j in range(P)) for i in range(P)])


def brute_hv(points, ref):
    """Exact by the grid of unique coordinates: sum the cells dominated by at least one point."""
    pts = np.array([q for q in points if (q > ref).all()])
    if len(pts) == 0:
        return 0.0
    K = pts.shape[1]
    axes = [np.unique(np.concatenate([[ref[k]], pts[:, k]])) for k in range(K)]
    total = 0.0
    for idx in itertools.product(*[range(len(a) - 1) for a in axes]):
        lo = np.array([axes[k][i] for k, i in enumerate(idx)])
        hi = np.array([axes[k][i + 1] for k, i in enumerate(idx)])
        if (pts >= hi).all(axis=1).any():  # the cell's upper corner is dominated
            total += float(np.prod(hi - lo))
    return total


@pytest.mark.parametrize("K", [2, 3, 4, 5])
def test_pareto_mask_matches_brute_force_with_ties_and_duplicates(K):
    rng = np.random.default_rng(K)
    for _ in range(20):
        p = rng.integers(0, 4, size=(rng.integers(1, 12), K)).astype(float)
        assert (pareto_mask(p) == brute_mask(p)).all()


def test_duplicates_of_a_non_dominated_point_are_all_kept():
    p = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [0.5, 0.5]])
    assert pareto_mask(p).tolist() == [True, True, True, False]
    assert pareto_mask(np.zeros((0, 2))).shape == (0,)


@pytest.mark.parametrize("K", [2, 3, 4])
def test_hypervolume_is_exact(K):
    rng = np.random.default_rng(10 + K)
    for _ in range(8):
        p = rng.integers(1, 6, size=(rng.integers(1, 7), K)).astype(float) + rng.random((1, K)) * 0.0
        ref = np.zeros(K)
        want = brute_hv(p, ref)
        got = hypervolume(p, ref)
        assert got == pytest.approx(want, rel=1e-9)
        # invariances: order, dominated points added
        assert hypervolume(p[::-1], ref) == pytest.approx(got, rel=1e-12)
        assert hypervolume(np.vstack([p, p.min(0, keepdims=True) * 0.5 + 0.1]), ref) == pytest.approx(got, rel=1e-12)


def test_points_not_dominating_the_reference_contribute_nothing():
    ref = np.array([0.0, 0.0])
    assert hypervolume([[2.0, 3.0]], ref) == pytest.approx(6.0)
    assert hypervolume([[2.0, 3.0], [5.0, 0.0], [-1.0, 9.0]], ref) == pytest.approx(6.0)  # on / below the reference
    assert hypervolume([[-1.0, 1.0]], ref) == 0.0
    with pytest.raises(FrontError, match=r"no point dominates the reference point \[0.0, 0.0\].*best value per objective: \[-1.0, 1.0\]"):
        hypervolume([[-1.0, 1.0]], ref, require_dominating=True)


def test_hypervolume_contributions_by_hand():
    p = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [1.0, 1.0]])
    c = hypervolume_contributions(p, [0.0, 0.0])
    # staircase: total 6; removing (2,2) loses the unit square [1,2]x[1,2]; the corners each lose 1
    assert c.tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert hypervolume(p, [0, 0]) == pytest.approx(6.0)


def test_igd_and_igd_plus_by_hand():
    z = np.array([[0.0, 1.0], [1.0, 0.0]])
    a = np.array([[0.5, 1.5]])  # better than z0 in objective 1, worse than z1 in objective 0
    d0, d1 = np.hypot(0.5, 0.5), np.hypot(0.5, 1.5)
    assert igd(a, z) == pytest.approx((d0 + d1) / 2)
    # IGD+ only counts where a is worse: to z0 (0,1): a is worse by 0 in obj1, better in obj... (0-0.5<0, 1-1.5<0) -> 0
    assert igd_plus(a, z) == pytest.approx((0.0 + 0.5) / 2)
    assert igd_plus(a, z) < igd(a, z)
    # normalisation by the reference front's range (here x2 in objective 0)
    assert igd(a * [2, 1], z * [2, 1], normalize=([0, 0], [2, 1])) == pytest.approx(igd(a, z))
    assert igd(z, z) == 0.0 and igd_plus(z, z) == 0.0


def test_reference_point_is_dominated_by_every_point_and_uses_known_bounds():
    a, b = np.array([[1.0, 5.0], [2.0, 3.0]]), np.array([[0.0, 4.0]])
    r = reference_point(a, b, margin=0.1)
    assert r.tolist() == pytest.approx([0.0 - 0.2, 3.0 - 0.2])
    assert (np.vstack([a, b]) > r).all()
    r2 = reference_point(a, lower_bounds=[-1.0, np.inf * -1])
    assert r2[0] == -1.0 and r2[1] == pytest.approx(3.0 - 0.2)
    assert reference_point(np.array([[1.0, 1.0]]), margin=0.1).tolist() == pytest.approx([0.9, 0.9])


def test_bad_input_is_named():
    with pytest.raises(FrontError, match="at least 2 objectives"):
        hypervolume([[1.0], [2.0]], [0.0])
    with pytest.raises(FrontError, match="point 1 has a non-finite value \\(nan\\) for objective 0"):
        hypervolume([[1.0, 1.0], [np.nan, 1.0]], [0.0, 0.0])
    with pytest.raises(ConfigError, match="reference point has 3 values but the points have 2"):
        hypervolume([[1.0, 1.0]], [0.0, 0.0, 0.0])
    with pytest.raises(ConfigError, match="2-D array"):
        pareto_mask([1.0, 2.0])
    with pytest.raises(ConfigError, match="reference front have 3 objectives but 2"):
        igd([[1.0, 1.0]], [[1.0, 1.0, 1.0]])
    with pytest.raises(ConfigError, match="upper > lower"):
        normalize_points([[1.0, 1.0]], [0.0, 1.0], [1.0, 1.0])
