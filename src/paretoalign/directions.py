"""Preference directions (DPA): unit vectors in objective space and the prompt that carries them.

Reference: Wang et al. 2024, "Arithmetic Control of LLMs for Diverse User Preferences: Directional
Preference Alignment with Multi-Objective Rewards" (arXiv 2402.18571).  A user preference is a unit
vector v in the space of the K objectives; the scalar reward is vᵀr(x, y).  The direction reaches
the model as a system message; the public DPA model's is

    You are a helpful, respectful, and honest assistant who always responds to the user in a harmless
    way. Your response should maximize weighted rating = helpfulness*{w_h} + verbosity*{w_v}

with w = round(100·v) (v = (cos θ, sin θ) for two objectives).  :data:`DEFAULT_DIRECTION_TEMPLATE`
is that text with the weighted sum spelled out for any objectives (``{weighted_rating}``); a custom
template may use ``{weighted_rating}`` and ``{w_<objective name>}``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from paretoalign.errors import ConfigError

DEFAULT_DIRECTION_TEMPLATE = (
    "You are a helpful, respectful, and honest assistant who always responds to the user in a harmless way. "
    "Your response should maximize weighted rating = {weighted_rating}"
)


def validate_direction(direction, k: int, names: Sequence[str] | None = None) -> torch.Tensor:
    """A direction given as K numbers -> the unit vector [K] (float64).  Any non-zero finite vector is
    accepted and normalised (a preference vector on the simplex becomes its direction); negative
    entries mean "less of that objective" (DPA's θ < 0).  Wrong length, NaN/inf or zero: ConfigError."""
    if isinstance(direction, str):
        direction = [x for x in direction.replace(" ", "").split(",") if x]
    try:
        v = torch.tensor([float(x) for x in direction], dtype=torch.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"direction must be {k} numbers; got {direction!r}") from None
    what = f" ({', '.join(names)})" if names else ""
    if v.numel() != k:
        raise ConfigError(f"direction has {v.numel()} entries but there are {k} objectives{what}")
    if not bool(torch.isfinite(v).all()):
        raise ConfigError(f"direction {v.tolist()} has a NaN or infinite entry")
    norm = float(v.norm())
    if norm == 0:
        raise ConfigError("direction is the zero vector; it has no direction")
    return v / norm


def direction_from_angle(degrees: float) -> torch.Tensor:
    """v = (cos θ, sin θ) for two objectives (θ = 0: all first objective, 90: all second)."""
    t = math.radians(float(degrees))
    return torch.tensor([math.cos(t), math.sin(t)], dtype=torch.float64)


def sample_directions(n: int, k: int, generator: torch.Generator, min_angle: float = 0.0,
                      max_angle: float = 90.0) -> torch.Tensor:
    """``n`` directions [n, K]: for K = 2, θ uniform in [min_angle, max_angle] degrees; for K > 2,
    uniform on the unit sphere's non-negative orthant (|N(0, I)| normalised)."""
    if k == 2:
        if not min_angle <= max_angle:
            raise ConfigError(f"min_angle {min_angle} > max_angle {max_angle}")
        theta = torch.deg2rad(min_angle + (max_angle - min_angle) * torch.rand(n, generator=generator, dtype=torch.float64))
        return torch.stack([theta.cos(), theta.sin()], 1)
    g = torch.randn(n, k, generator=generator, dtype=torch.float64).abs()
    return g / g.norm(dim=1, keepdim=True)


def direction_weights(v: torch.Tensor) -> list[int]:
    """The integers written into the prompt: round(100·v)."""
    return [int(round(100 * float(x))) for x in v]


def direction_prompt(v: torch.Tensor, names: Sequence[str], template: str = DEFAULT_DIRECTION_TEMPLATE) -> str:
    """The system message for direction ``v`` over objectives ``names``."""
    w = direction_weights(v)
    terms = " + ".join(f"{n}*{x}" if x >= 0 else f"{n}*({x})" for n, x in zip(names, w))
    fields = {"weighted_rating": terms, **{f"w_{n}": x for n, x in zip(names, w)}}
    try:
        return template.format(**fields)
    except (KeyError, IndexError) as e:
        raise ConfigError(f"direction template uses {e}, which is not one of {{weighted_rating}}, "
                          + ", ".join("{w_" + n + "}" for n in names)) from None


def conditioned_prompt(prompt, system: str) -> list:
    """The prompt as a conversation whose system message is ``system`` (an existing one is replaced):
    how DPA trains and how ``evaluate --direction`` steers."""
    msgs = [dict(m) for m in prompt] if isinstance(prompt, (list, tuple)) else [{"role": "user", "content": str(prompt)}]
    return [{"role": "system", "content": system}] + [m for m in msgs if m.get("role") != "system"]


def check_direction_template(template: str, names: Sequence[str]) -> None:
    """Fail early on a template that does not mention the direction or uses unknown fields."""
    if "{weighted_rating}" not in template and not any(("{w_" + n + "}") in template for n in names):
        raise ConfigError("direction template must contain {weighted_rating} or {w_<objective>} fields; "
                          "otherwise the model never sees the direction")
    direction_prompt(torch.ones(len(names), dtype=torch.float64) / math.sqrt(len(names)), names, template)
