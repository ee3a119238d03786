"""Pictures of fronts: the K = 2 staircase, pairwise panels, parallel coordinates, training curves.

Inputs are front dicts (the content of ``front.json``, see :mod:`paretoalign.fronts.front`).
Values are plotted in each objective's own units; dominance and the staircase use oriented
values (a minimised objective is negated), and its axis says "(lower is better)".
Matplotlib's Agg backend: no display needed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from paretoalign import run_dir
from paretoalign.errors import ConfigError, ParetoAlignError
from paretoalign.fronts.metrics import pareto_mask

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _signs(front: dict) -> np.ndarray:
    objs = front.get("objectives") or [{}] * len(front["names"])
    return np.array([1.0 if o.get("direction", "maximize") == "maximize" else -1.0 for o in objs])


def _check(fronts: list[dict]) -> tuple[list[str], np.ndarray]:
    if not fronts:
        raise ConfigError("nothing to plot: no fronts")
    names = list(fronts[0]["names"])
    if len(names) < 2:
        raise ConfigError(f"a front needs at least 2 objectives to plot; got {names}")
    for f in fronts[1:]:
        if list(f["names"]) != names:
            raise ConfigError(f"fronts with different objectives cannot share a plot: {names} vs {list(f['names'])}")
    for f in fronts:
        if not f.get("points"):
            raise ConfigError(f"front {f.get('name', '?')!r} has no points")
    return names, _signs(fronts[0])


def _axis_label(name: str, sign: float) -> str:
    return name if sign > 0 else f"{name} (lower is better)"


def _dominated(front: dict, signs: np.ndarray) -> np.ndarray:
    if all("dominated" in p for p in front["points"]):
        return np.array([bool(p["dominated"]) for p in front["points"]])
    return ~pareto_mask(np.array([p["mean"] for p in front["points"]]) * signs)


def staircase(points_oriented, ref=None) -> np.ndarray:
    """Vertices ``[M, 2]`` of the K = 2 non-dominated staircase (maximisation, oriented values).

    The non-dominated points sorted by the first objective (ascending, so the second descends),
    joined by horizontal-then-vertical steps; with ``ref`` the line starts at (ref_x, y_first)
    and ends at (x_last, ref_y), closing the dominated region.
    """
    p = np.asarray(points_oriented, dtype=float).reshape(-1, 2)
    nd = p[pareto_mask(p)]
    nd = np.unique(nd, axis=0)
    nd = nd[np.lexsort((-nd[:, 1], nd[:, 0]))]
    verts = []
    if ref is not None and len(nd):
        verts.append((ref[0], nd[0, 1]))
    for i, (x, y) in enumerate(nd):
        verts.append((x, y))
        if i + 1 < len(nd):
            verts.append((x, nd[i + 1, 1]))  # down to the next point's height, then right to it
    if ref is not None and len(nd):
        verts.append((nd[-1, 0], ref[1]))
    return np.array(verts, dtype=float).reshape(-1, 2)


def _annotate(ax, xs, ys, labels, color):
    for i, (x, y, lab) in enumerate(zip(xs, ys, labels)):
        ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4 + 7 * (i % 2)), fontsize=7, color=color)


def plot_front(fronts: list[dict], path, base: dict | None = None, reference_point=None, title=None) -> Path:
    """front.png: K = 2 scatter with error bars and staircase; K = 3, 4 pairwise panels; K > 4 parallel coordinates."""
    names, signs = _check(fronts)
    K = len(names)
    if K > 4:
        return plot_parallel(fronts, path, base=base, title=title)
    plt = _plt()
    pairs = [(0, 1)] if K == 2 else [(i, j) for i in range(K) for j in range(i + 1, K)]
    ncols = min(3, len(pairs))
    nrows = int(np.ceil(len(pairs) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols if K == 2 else 4.6 * ncols, 5.0 * nrows if K == 2 else 4.2 * nrows), squeeze=False)
    ref = None if reference_point is None else np.asarray(reference_point, dtype=float)
    for ax, (i, j) in zip(axes.ravel(), pairs):
        for n, f in enumerate(fronts):
            c, m = _COLORS[n % len(_COLORS)], _MARKERS[n % len(_MARKERS)]
            mean = np.array([p["mean"] for p in f["points"]], dtype=float)
            err = np.array([p.get("stderr") or [0.0] * K for p in f["points"]], dtype=float)
            dom = _dominated(f, signs)
            hv = f.get("hypervolume")
            label = f.get("name", f"front {n}") + (f" (HV={hv:.4g})" if hv is not None else "")
            ax.errorbar(mean[:, i], mean[:, j], xerr=err[:, i], yerr=err[:, j], fmt="none", ecolor=c, alpha=0.5, lw=1)
            ax.scatter(mean[~dom, i], mean[~dom, j], color=c, marker=m, s=40, label=label, zorder=3)
            if dom.any():
                ax.scatter(mean[dom, i], mean[dom, j], facecolors="none", edgecolors=c, marker=m, s=40, zorder=3)
            if K == 2:
                oriented = mean * signs
                r = None if ref is None else ref * signs
                st = staircase(oriented, r) * signs
                ax.plot(st[:, 0], st[:, 1], color=c, lw=1.2, alpha=0.8)
                _annotate(ax, mean[:, i], mean[:, j], [p.get("label", "") for p in f["points"]], c)
        if base:
            b = np.asarray(base["mean"], dtype=float)
            ax.scatter([b[i]], [b[j]], marker="*", s=160, color="black", label="base model", zorder=4)
        # Zoom on the points: a reference point far below them (e.g. an objective's known lower
        # bound) would squash the front into a corner; the staircase runs off the axes toward it.
        shown = [np.array([p["mean"] for p in f["points"]], dtype=float) for f in fronts]
        if base:
            shown.append(np.asarray([base["mean"]], dtype=float))
        allp = np.concatenate(shown)
        lims = []
        for a in (i, j):
            lo, hi = allp[:, a].min(), allp[:, a].max()
            pad = 0.15 * (hi - lo) if hi > lo else 0.1 * max(1.0, abs(hi))
            lims.append((lo - pad, hi + pad))
        if ref is not None:
            inside = lims[0][0] <= ref[i] <= lims[0][1] and lims[1][0] <= ref[j] <= lims[1][1]
            label = "reference point" if inside else f"reference point ({ref[i]:.3g}, {ref[j]:.3g}), off the axes"
            ax.scatter([ref[i] if inside else np.nan], [ref[j] if inside else np.nan], marker="x", s=50,
                       color="grey", label=label, zorder=2)
        ax.set_xlim(*lims[0])
        ax.set_ylim(*lims[1])
        ax.set_xlabel(_axis_label(names[i], signs[i]))
        ax.set_ylabel(_axis_label(names[j], signs[j]))
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(pairs):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=8, loc="best")
    fig.suptitle(title or "Pareto front (filled: non-dominated; bars: ±1 s.e.)", fontsize=11)
    return _save(fig, plt, path)


def parallel_coordinates(values, signs) -> np.ndarray:
    """``values [P, K]`` scaled per objective to [0, 1] with 1 = best (a constant column maps to 0.5)."""
    v = np.asarray(values, dtype=float) * np.asarray(signs, dtype=float)
    lo, hi = v.min(0), v.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = (v - lo) / span
    return np.where(hi > lo, out, 0.5)


def plot_parallel(fronts: list[dict], path, base: dict | None = None, title=None) -> Path:
    """front_parallel.png: one axis per objective, one line per point, up is better on every axis."""
    names, signs = _check(fronts)
    plt = _plt()
    K = len(names)
    rows, owners = [], []
    for n, f in enumerate(fronts):
        for p in f["points"]:
            rows.append(p["mean"])
            owners.append(n)
    if base:
        rows.append(base["mean"])
        owners.append(-1)
    raw = np.array(rows, dtype=float)
    scaled = parallel_coordinates(raw, signs)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * K), 4.8))
    xs = np.arange(K)
    seen = set()
    for row, owner in zip(scaled, owners):
        if owner == -1:
            ax.plot(xs, row, color="black", lw=2.2, ls="--", label="base model")
            continue
        lab = fronts[owner].get("name", f"front {owner}") if owner not in seen else None
        seen.add(owner)
        ax.plot(xs, row, color=_COLORS[owner % len(_COLORS)], marker=_MARKERS[owner % len(_MARKERS)], alpha=0.8, label=lab)
    for k in range(K):
        ax.axvline(k, color="grey", lw=0.8)
        col = raw[:, k]
        worst, best = (col.min(), col.max()) if signs[k] > 0 else (col.max(), col.min())
        ax.text(k, -0.06, f"{worst:.3g}", ha="center", va="top", fontsize=8)
        ax.text(k, 1.06, f"{best:.3g}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, [n if s > 0 else f"{n}\n(flipped: lower is better)" for n, s in zip(names, signs)])
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.15)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "Parallel coordinates (each axis min-max scaled, up is better)", fontsize=11)
    return _save(fig, plt, path)


# offline runs (DPO, MODPO, MOPO, AMoPO) log no per-objective batch rewards: plot their loss and,
# where logged, the implicit reward's accuracy and margin on the training pairs
OFFLINE_SERIES = ("loss", "rewards/accuracy", "rewards/margin")


def curves_from_metrics(rows: list[dict], names: list[str] | None = None, smooth: int = 1) -> dict:
    """``{series: (steps, values)}`` for ``reward/<name>`` of each objective (and ``kl``) from metrics
    rows; for an offline run (no ``reward/`` keys), its :data:`OFFLINE_SERIES` instead."""
    online = any(k.startswith("reward/") for r in rows[:1] for k in r)
    if names is None:
        names = [k.split("/", 1)[1] for k in (rows[0] if rows else {}) if k.startswith("reward/")]
    keys = [(f"reward/{n}", n) for n in names] + [("kl", "kl")] if online else [(k, k) for k in OFFLINE_SERIES]
    out = {}
    for key, label in keys:
        pts = [(r["step"], r[key]) for r in rows if key in r and r.get(key) is not None]
        if not pts:
            continue
        steps = np.array([p[0] for p in pts], dtype=float)
        vals = np.array([p[1] for p in pts], dtype=float)
        if smooth > 1 and len(vals) >= smooth:
            kernel = np.ones(smooth) / smooth
            vals = np.convolve(vals, kernel, mode="valid")
            steps = steps[smooth - 1:]
        out[label] = (steps, vals)
    return out


def plot_training_curves(runs: dict, path, names: list[str] | None = None, smooth: int = 1) -> Path:
    """curves.png: one panel per objective (training-batch reward) plus KL, one line per run; offline
    runs add panels for their loss and implicit-reward accuracy and margin."""
    data = {label: curves_from_metrics(run_dir.read_metrics(folder), names, smooth) for label, folder in runs.items()}
    data = {k: v for k, v in data.items() if v}
    if not data:
        raise ParetoAlignError(f"no training metrics found in {len(runs)} run folder(s): nothing to plot")
    series = []
    for curves in data.values():
        series += [s for s in curves if s not in series]
    plt = _plt()
    fig, axes = plt.subplots(1, len(series), figsize=(4.4 * len(series), 3.8), squeeze=False)
    for ax, s in zip(axes[0], series):
        for n, (label, curves) in enumerate(data.items()):
            if s in curves:
                ax.plot(*curves[s], color=_COLORS[n % len(_COLORS)], lw=1.2, label=label)
        ax.set_title(s if s == "kl" or s in OFFLINE_SERIES else f"reward/{s}", fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if len(data) <= 12:
        axes[0][0].legend(fontsize=7)
    what = "batch means of the oriented rewards, higher is better" if any(s not in OFFLINE_SERIES for s in series) \
        else "offline: loss, implicit-reward accuracy and margin on the training pairs"
    fig.suptitle(f"Training curves ({what}" + (f", moving average {smooth}" if smooth > 1 else "") + ")", fontsize=11)
    return _save(fig, plt, path)


def _save(fig, plt, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
