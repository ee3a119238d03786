"""Preferences: points on the simplex w ∈ Δ^K (w ≥ 0, Σ w = 1), checked once at the boundary.

:func:`validate_weights` turns whatever the user wrote (a YAML list, a CLI string "0.7,0.3", an
array, a tensor) into a float32 tensor ``[K]``, or raises :class:`~paretoalign.errors.ConfigError`
with a message that names the problem and the offending value.

DPA directions (unit vectors in reward space, the preference of a steerable model) live here too:

    Preference directions (DPA): unit vectors in objective space and the prompt that carries them.

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
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

from paretoalign.errors import ConfigError

__all__ = [
    "validate_weights", "uniform_weights", "SUM_TOLERANCE", "simplex_grid", "random_preferences",
    "parse_preferences", "preference_label", "preference_slug",
]

#: How far from 1 the sum of the weights may be without ``normalize=True``.
SUM_TOLERANCE = 1e-6


def _label(i: int, names: Sequence[str] | None) -> str:
    return f"weight {i} ({names[i]!r})" if names is not None else f"weight {i}"


def _fmt(values) -> str:
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _parse(weights) -> list[float]:
    import torch  # here, not at import: the configs (and so --help) read this module
    if isinstance(weights, str):
        parts = [p.strip() for p in weights.split(",")]
        if weights.strip() == "" or any(p == "" for p in parts):
            raise ConfigError(
                f"could not parse weights {weights!r}: expected comma-separated numbers such as '0.7,0.3'"
            )
        out = []
        for p in parts:
            try:
                out.append(float(p))
            except ValueError:
                raise ConfigError(
                    f"could not parse weights {weights!r}: {p!r} is not a number "
                    "(expected comma-separated numbers such as '0.7,0.3')"
                ) from None
        return out
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().to(torch.float64).numpy()
    try:
        arr = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"weights must be numbers, got {weights!r}") from None
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ConfigError(f"weights must be a flat list of numbers, got shape {arr.shape}: {weights!r}")
    return [float(v) for v in arr]


def validate_weights(
    weights,
    k: int,
    names: Sequence[str] | None = None,
    normalize: bool = False,
) -> torch.Tensor:
    """Check a preference vector and return it as a float32 tensor ``[k]`` on the simplex.

    Args:
        weights: a list/tuple of numbers, a NumPy array, a tensor, or a comma-separated string
            such as ``"0.7,0.3"`` (the CLI form).
        k: the number of objectives.
        names: the objective names, used in error messages (length ``k``).
        normalize: divide by the sum instead of requiring it to be 1 (the ``--normalize-weights``
            flag, ``normalize_weights: true`` in YAML).

    Returns:
        float32 ``[k]``, non-negative, summing to 1 (a sum already within 1e-6 of 1 is rescaled to
        exactly 1 as well).

    Raises:
        ConfigError: unparsable input; wrong length; NaN or infinite entries; negative entries;
            all zeros; or (without ``normalize``) a sum further than 1e-6 from 1.
    """
    import torch  # here, not at import: the configs (and so --help) read this module
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"the number of objectives must be a positive integer, got {k!r}")
    if names is not None:
        names = list(names)
        if len(names) != k:
            raise ConfigError(f"got {len(names)} objective names {names} for {k} objectives")
    values = _parse(weights)
    if len(values) != k:
        which = f" (one per objective: {', '.join(names)})" if names is not None else ""
        raise ConfigError(f"expected {k} weights{which}, got {len(values)}: {_fmt(values)}")
    for i, v in enumerate(values):
        if math.isnan(v):
            raise ConfigError(f"{_label(i, names)} is NaN in {_fmt(values)}; weights must be finite numbers")
        if math.isinf(v):
            raise ConfigError(f"{_label(i, names)} is infinite in {_fmt(values)}; weights must be finite numbers")
    for i, v in enumerate(values):
        if v < 0:
            raise ConfigError(f"{_label(i, names)} is negative ({v:g}) in {_fmt(values)}; weights must be >= 0")
    total = math.fsum(values)
    if math.isinf(total):
        raise ConfigError(f"weights {_fmt(values)} are too large: their sum overflows")
    if total == 0:
        raise ConfigError(f"all weights are zero {_fmt(values)}; at least one objective needs a positive weight")
    if not normalize and abs(total - 1.0) > SUM_TOLERANCE:
        raise ConfigError(
            f"weights {_fmt(values)} sum to {total:g}, not 1; pass --normalize-weights "
            "(normalize_weights: true in YAML) to rescale them to sum to 1"
        )
    return torch.tensor([v / total for v in values], dtype=torch.float32)


def uniform_weights(k: int) -> torch.Tensor:
    """The uniform preference 1/k, float32 ``[k]``."""
    import torch  # here, not at import: the configs (and so --help) read this module
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"the number of objectives must be a positive integer, got {k!r}")
    return torch.full((int(k),), 1.0 / int(k), dtype=torch.float32)


# ---- sets of preferences for front sweeps ---------------------------------------------------------


def simplex_grid(n_per_edge: int, k: int) -> np.ndarray:
    """A uniform grid on the simplex with ``n_per_edge`` points along each edge.

    K = 2: ``n`` evenly spaced vectors from (0, 1) to (1, 0) (the first weight increasing).
    K ≥ 3: the Das–Dennis lattice (Das & Dennis 1998) with H = n − 1 divisions: every vector
    with entries in {0, 1/H, ..., 1} summing to 1, C(H + K − 1, K − 1) of them, in lexicographic
    order of the first weights (first weight increasing).
    """
    n, k = int(n_per_edge), int(k)
    if n < 2:
        raise ConfigError(f"a simplex grid needs at least 2 points per edge; got {n_per_edge}")
    if k < 2:
        raise ConfigError(f"a front needs at least 2 objectives; got {k}")
    h = n - 1

    def compositions(total: int, parts: int):
        if parts == 1:
            yield (total,)
            return
        for first in range(total + 1):
            for rest in compositions(total - first, parts - 1):
                yield (first, *rest)

    return np.array(list(compositions(h, k)), dtype=float) / h


def random_preferences(n: int, k: int, seed: int = 0) -> np.ndarray:
    """``n`` preferences drawn uniformly on the simplex (Dirichlet(1, ..., 1)), reproducible by ``seed``."""
    if int(n) < 1:
        raise ConfigError(f"random:N needs N >= 1; got {n}")
    if int(k) < 2:
        raise ConfigError(f"a front needs at least 2 objectives; got {k}")
    return np.random.default_rng(seed).dirichlet(np.ones(int(k)), size=int(n))


def parse_preferences(spec, k: int, names: Sequence[str] | None = None, seed: int = 0) -> np.ndarray:
    """Preference vectors ``[P, k]`` from ``"grid:N"``, ``"random:N"``, ``"0.2,0.8;0.5,0.5"`` or a list of lists.

    Explicit vectors are checked with :func:`validate_weights`; a vector listed twice is an error
    (a sweep would train the same point twice).
    """
    if int(k) < 2:
        raise ConfigError(f"a front needs at least 2 objectives; got {k}")
    forms = "'grid:N', 'random:N', or explicit vectors like '0.2,0.8;0.5,0.5'"
    if isinstance(spec, str):
        text = spec.strip()
        kind, _, arg = text.partition(":")
        if kind in ("grid", "random"):
            try:
                n = int(arg)
            except ValueError:
                raise ConfigError(f"preferences {spec!r}: {kind}:N needs an integer N") from None
            return simplex_grid(n, k) if kind == "grid" else random_preferences(n, k, seed)
        if ":" in text or not text:
            raise ConfigError(f"unknown preferences {spec!r}; expected {forms}")
        vectors = [v for v in text.split(";") if v.strip()]
    elif isinstance(spec, (list, tuple, np.ndarray)):
        vectors = list(spec)
        if vectors and not isinstance(vectors[0], (list, tuple, str, np.ndarray)):
            vectors = [vectors]  # a single vector
    else:
        raise ConfigError(f"unknown preferences {spec!r}; expected {forms}")
    if not vectors:
        raise ConfigError(f"no preference vectors in {spec!r}; expected {forms}")
    out = []
    for i, v in enumerate(vectors):
        try:
            out.append(validate_weights(v, k, names).double().numpy())
        except ConfigError as exc:
            raise ConfigError(f"preference {i + 1} of {len(vectors)}: {exc}") from None
    arr = np.stack(out)
    for i in range(len(arr)):
        for j in range(i):
            if np.allclose(arr[i], arr[j], atol=1e-9):
                raise ConfigError(f"preference {_fmt(arr[i])} is listed twice (positions {j + 1} and {i + 1})")
    return arr


def _decimals(w) -> int:
    """2 decimals unless a value needs 3 to be written exactly (e.g. 0.125)."""
    return 2 if all(abs(round(x, 2) - x) < 1e-9 for x in w) else 3


def preference_label(w, names: Sequence[str] | None = None) -> str:
    """A short label such as ``w=(0.25,0.75)`` for plots and tables."""
    d = _decimals(w)
    return "w=(" + ",".join(f"{x:.{d}f}" for x in w) + ")"


def preference_slug(w) -> str:
    """A folder name such as ``w0.25-0.75`` (3 decimals when 2 would not be exact)."""
    d = _decimals(w)
    return "w" + "-".join(f"{x:.{d}f}" for x in w)


# ---------------------------------------------------------------------------------------------
# DPA directions






DEFAULT_DIRECTION_TEMPLATE = (
    "You are a helpful, respectful, and honest assistant who always responds to the user in a harmless way. "
    "Your response should maximize weighted rating = {weighted_rating}"
)


def validate_direction(direction, k: int, names: Sequence[str] | None = None) -> torch.Tensor:
    """A direction given as K numbers -> the unit vector [K] (float64).  Any non-zero finite vector is
    accepted and normalised (a preference vector on the simplex becomes its direction); negative
    entries mean "less of that objective" (DPA's θ < 0).  Wrong length, NaN/inf or zero: ConfigError."""
    import torch  # here, not at import: the configs (and so --help) read this module
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
    import torch  # here, not at import: the configs (and so --help) read this module
    t = math.radians(float(degrees))
    return torch.tensor([math.cos(t), math.sin(t)], dtype=torch.float64)


def sample_directions(n: int, k: int, generator: torch.Generator, min_angle: float = 0.0,
                      max_angle: float = 90.0) -> torch.Tensor:
    """``n`` directions [n, K]: for K = 2, θ uniform in [min_angle, max_angle] degrees; for K > 2,
    uniform on the unit sphere's non-negative orthant (|N(0, I)| normalised)."""
    import torch  # here, not at import: the configs (and so --help) read this module
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
    import torch  # here, not at import: the configs (and so --help) read this module
    if "{weighted_rating}" not in template and not any(("{w_" + n + "}") in template for n in names):
        raise ConfigError("direction template must contain {weighted_rating} or {w_<objective>} fields; "
                          "otherwise the model never sees the direction")
    direction_prompt(torch.ones(len(names), dtype=torch.float64) / math.sqrt(len(names)), names, template)
