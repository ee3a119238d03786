"""validate_weights / uniform_weights: accepted forms, normalisation, and every error message."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paretoalign.errors import ConfigError
from paretoalign.preferences import uniform_weights, validate_weights

NAMES = ["sentiment", "length"]


@pytest.mark.parametrize(
    "raw",
    [
        [0.7, 0.3],
        (0.7, 0.3),
        np.array([0.7, 0.3]),
        torch.tensor([0.7, 0.3], dtype=torch.float64),
        torch.tensor([0.7, 0.3], requires_grad=True),
        "0.7,0.3",
        " 0.7 , 0.3 ",
        "7e-1,3e-1",
    ],
)
def test_accepted_forms(raw):
    w = validate_weights(raw, 2, NAMES)
    assert w.dtype == torch.float32 and w.shape == (2,) and not w.requires_grad
    assert torch.allclose(w, torch.tensor([0.7, 0.3]), atol=1e-7)


def test_sum_within_tolerance_is_accepted_and_rescaled():
    w = validate_weights([0.5, 0.5 + 5e-7], 2)
    assert abs(float(w.double().sum()) - 1.0) < 1e-7
    w = validate_weights("0.1,0.2,0.7", 3)
    assert torch.allclose(w, torch.tensor([0.1, 0.2, 0.7]))


def test_normalize_divides_by_the_sum():
    w = validate_weights([2, 6], 2, NAMES, normalize=True)
    assert torch.allclose(w, torch.tensor([0.25, 0.75]))
    w = validate_weights("1,1,2", 3, normalize=True)
    assert torch.allclose(w, torch.tensor([0.25, 0.25, 0.5]))
    w = validate_weights([0.0, 3.0], 2, normalize=True)
    assert torch.equal(w, torch.tensor([0.0, 1.0]))


def test_single_objective():
    assert torch.equal(validate_weights([1.0], 1), torch.tensor([1.0]))
    assert torch.equal(validate_weights(1.0, 1), torch.tensor([1.0]))
    assert torch.equal(validate_weights("1", 1), torch.tensor([1.0]))


def test_wrong_length_names_objectives():
    with pytest.raises(ConfigError, match=r"expected 2 weights \(one per objective: sentiment, length\), got 3"):
        validate_weights([0.2, 0.3, 0.5], 2, NAMES)
    with pytest.raises(ConfigError, match=r"expected 3 weights, got 2: \[0.5, 0.5\]"):
        validate_weights("0.5,0.5", 3)


@pytest.mark.parametrize("bad, word", [(float("nan"), "NaN"), (float("inf"), "infinite"), (-float("inf"), "infinite")])
def test_non_finite_entry_names_index_and_objective(bad, word):
    with pytest.raises(ConfigError, match=rf"weight 1 \('length'\) is {word}"):
        validate_weights([0.5, bad], 2, NAMES)
    with pytest.raises(ConfigError, match=rf"weight 0 is {word}"):
        validate_weights([bad, 0.5], 2)


def test_nan_in_string_form():
    with pytest.raises(ConfigError, match=r"weight 0 \('sentiment'\) is NaN"):
        validate_weights("nan,1", 2, NAMES)


def test_negative_entry_names_index_and_value():
    with pytest.raises(ConfigError, match=r"weight 0 \('sentiment'\) is negative \(-0.2\)"):
        validate_weights([-0.2, 1.2], 2, NAMES)
    with pytest.raises(ConfigError, match=r"weight 1 is negative \(-1\)"):
        validate_weights([2.0, -1.0], 2, normalize=True)  # normalising does not excuse it


def test_all_zeros():
    with pytest.raises(ConfigError, match="all weights are zero"):
        validate_weights([0, 0], 2, NAMES)
    with pytest.raises(ConfigError, match="all weights are zero"):
        validate_weights("0,0,0", 3, normalize=True)


def test_sum_not_one_points_to_the_normalize_flag():
    with pytest.raises(ConfigError, match=r"sum to 1\.1, not 1; pass --normalize-weights"):
        validate_weights([0.5, 0.6], 2, NAMES)
    with pytest.raises(ConfigError, match="--normalize-weights"):
        validate_weights("1,1", 2)
    with pytest.raises(ConfigError, match="--normalize-weights"):
        validate_weights([0.5, 0.5 + 2e-6], 2)


@pytest.mark.parametrize(
    "raw, pattern",
    [
        ("0.7,abc", r"could not parse weights '0.7,abc': 'abc' is not a number"),
        ("", "could not parse weights ''"),
        ("0.7,,0.3", "could not parse weights"),
        ("0.7;0.3", "'0.7;0.3' is not a number"),
        ([[0.5, 0.5]], r"flat list of numbers, got shape \(1, 2\)"),
        (["a", "b"], "weights must be numbers"),
    ],
)
def test_unparsable(raw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        validate_weights(raw, 2, NAMES)


def test_bad_k_and_names():
    with pytest.raises(ConfigError, match="positive integer, got 0"):
        validate_weights([1.0], 0)
    with pytest.raises(ConfigError, match=r"got 1 objective names \['a'\] for 2 objectives"):
        validate_weights([0.5, 0.5], 2, ["a"])


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        validate_weights([0.5, 0.6], 2)


def test_uniform_weights():
    for k in (1, 2, 3, 7):
        w = uniform_weights(k)
        assert w.dtype == torch.float32 and w.shape == (k,)
        assert torch.allclose(w, torch.full((k,), 1.0 / k))
        assert torch.equal(validate_weights(w.tolist(), k), w)
    with pytest.raises(ConfigError, match="positive integer, got 0"):
        uniform_weights(0)


# ---- preference sets for front sweeps ----------------------------------------------------------
from math import comb  # noqa: E402

import numpy as np  # noqa: E402

from paretoalign.preferences import (  # noqa: E402
    parse_preferences,
    preference_label,
    preference_slug,
    random_preferences,
    simplex_grid,
)


@pytest.mark.parametrize("n, k", [(2, 2), (5, 2), (3, 3), (4, 3), (3, 4), (5, 5)])
def test_simplex_grid_is_das_dennis(n, k):
    g = simplex_grid(n, k)
    assert g.shape == (comb(n - 1 + k - 1, k - 1), k)
    np.testing.assert_allclose(g.sum(1), 1.0)
    assert ((g * (n - 1)) == np.round(g * (n - 1))).all()  # on the lattice
    assert len(np.unique(g, axis=0)) == len(g)


def test_two_objective_grid_order():
    np.testing.assert_allclose(simplex_grid(3, 2), [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]])


def test_random_preferences_are_reproducible_and_on_the_simplex():
    a, b = random_preferences(7, 3, seed=4), random_preferences(7, 3, seed=4)
    np.testing.assert_array_equal(a, b)
    assert (a >= 0).all() and np.allclose(a.sum(1), 1)
    assert not np.allclose(a, random_preferences(7, 3, seed=5))


def test_parse_preferences_forms():
    np.testing.assert_allclose(parse_preferences("grid:2", 2), [[0, 1], [1, 0]])
    assert parse_preferences("random:3", 2, seed=1).shape == (3, 2)
    np.testing.assert_allclose(parse_preferences("0.2,0.8;0.5,0.5", 2), [[0.2, 0.8], [0.5, 0.5]])
    np.testing.assert_allclose(parse_preferences([[0.2, 0.8], [1, 0]], 2), [[0.2, 0.8], [1, 0]])


@pytest.mark.parametrize(
    "spec, match",
    [
        ("grid:1", "at least 2 points per edge"),
        ("grid:x", "needs an integer"),
        ("sobol:4", "unknown preferences"),
        ("0.2,0.8;0.5", "preference 2 of 2: expected 2 weights"),
        ("0.2,0.8;-0.5,1.5", "preference 2 of 2: .*negative"),
        ("0.2,0.8;nan,1", "preference 2 of 2: .*NaN"),
        ("0.5,0.5;0.5,0.5", "listed twice"),
        ("", "unknown preferences"),
    ],
)
def test_parse_preferences_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_preferences(spec, 2)


def test_parse_preferences_needs_two_objectives():
    with pytest.raises(ConfigError, match="at least 2 objectives"):
        parse_preferences("grid:3", 1)


def test_labels_and_slugs():
    assert preference_label([0.25, 0.75]) == "w=(0.25,0.75)"
    assert preference_slug([0.25, 0.75]) == "w0.25-0.75"
    assert preference_slug([0.125, 0.875]) == "w0.125-0.875"
