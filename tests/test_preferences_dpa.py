"""DPA's directions: validation, sampling, and the system message that carries them."""

import math

import pytest
import torch

from paretoalign.errors import ConfigError
from paretoalign.preferences import (
    DEFAULT_DIRECTION_TEMPLATE,
    check_direction_template,
    direction_from_angle,
    direction_prompt,
    direction_weights,
    sample_directions,
    validate_direction,
)


def test_validate_normalises_and_rejects_bad_directions():
    v = validate_direction([3, 4], 2)
    assert torch.allclose(v, torch.tensor([0.6, 0.8], dtype=torch.float64))
    assert torch.allclose(validate_direction("0.5, 0.5", 2).norm(), torch.tensor(1.0, dtype=torch.float64))
    assert validate_direction([1, -1], 2)[1] < 0  # "less of it" is a direction too (DPA's negative angles)
    with pytest.raises(ConfigError, match="3 entries but there are 2 objectives \\(a, b\\)"):
        validate_direction([1, 2, 3], 2, ["a", "b"])
    with pytest.raises(ConfigError, match="NaN or infinite"):
        validate_direction([float("nan"), 1], 2)
    with pytest.raises(ConfigError, match="zero vector"):
        validate_direction([0, 0], 2)
    with pytest.raises(ConfigError, match="must be 2 numbers"):
        validate_direction(["x", 1], 2)


def test_the_dpa_system_message():
    # the public DPA model's example: theta = -15 degrees in (helpfulness, verbosity)
    v = direction_from_angle(-15)
    assert direction_weights(v) == [97, -26]
    text = direction_prompt(v, ["helpfulness", "verbosity"])
    assert text == ("You are a helpful, respectful, and honest assistant who always responds to the user in a harmless "
                    "way. Your response should maximize weighted rating = helpfulness*97 + verbosity*(-26)")
    assert direction_prompt(direction_from_angle(90), ["a", "b"], "a={w_a}, b={w_b}") == "a=0, b=100"
    check_direction_template(DEFAULT_DIRECTION_TEMPLATE, ["a", "b"])
    with pytest.raises(ConfigError, match="never sees the direction"):
        check_direction_template("Be nice.", ["a", "b"])
    with pytest.raises(ConfigError, match="w_c"):
        check_direction_template("{w_a} {w_c}", ["a", "b"])


def test_sampled_directions_are_unit_and_in_range():
    g = torch.Generator().manual_seed(0)
    d = sample_directions(500, 2, g, min_angle=10, max_angle=40)
    ang = torch.rad2deg(torch.atan2(d[:, 1], d[:, 0]))
    assert torch.allclose(d.norm(dim=1), torch.ones(500, dtype=torch.float64))
    assert float(ang.min()) >= 10 - 1e-9 and float(ang.max()) <= 40 + 1e-9
    assert abs(float(ang.mean()) - 25) < 2  # uniform in the angle
    d3 = sample_directions(300, 3, g)
    assert torch.allclose(d3.norm(dim=1), torch.ones(300, dtype=torch.float64)) and bool((d3 >= 0).all())
    assert math.isclose(float(d3.mean(0).std()), 0.0, abs_tol=0.05)  # no objective favoured
    with pytest.raises(ConfigError, match="min_angle"):
        sample_directions(2, 2, g, 50, 10)
