"""Fronts: points of (policy, preference) evaluated on the same prompts, their Pareto set,
hypervolume and IGD against one reference point, comparisons, reading and writing front.json /
comparison.json, and drawing them (plots, report.html, terminal table).

Hypervolume is computed on oriented values (an objective with direction ``minimize`` is negated),
so "higher is better" everywhere; reference points are written in each objective's own units.
The automatic reference point is :func:`paretoalign.fronts.metrics.reference_point` over all
points compared (and the base model), or the objective's known lower bound when it is finite
and no point is below it: every point then counts, and the choice is recorded in the output.

This module trains nothing: :mod:`paretoalign.fronts.sweep` makes the points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

from paretoalign import run_dir
from paretoalign.config_utils import split_list
from paretoalign.console import table
from paretoalign.errors import ConfigError, FrontError
from paretoalign.evaluation.records import EvalResult, describe_prompts
from paretoalign.fronts.html_report import screenshot as take_screenshot
from paretoalign.fronts.html_report import write_report
from paretoalign.fronts.metrics import hypervolume, igd, igd_plus, pareto_mask
from paretoalign.fronts.metrics import reference_point as automatic_reference_point
from paretoalign.fronts.plots import plot_front, plot_parallel, plot_training_curves
from paretoalign.fronts.records import Comparison, Front, FrontPoint

FRONT_FILE = "front.json"
COMPARISON_FILE = "comparison.json"

# What a comparison writes at its top level (a sweep adds its own: fronts.sweep.FRONT_ENTRIES).
REPORT_ENTRIES = ("front.png", "front_parallel.png", "curves.png", "report.html", "report.png")
COMPARE_ENTRIES = (COMPARISON_FILE, *REPORT_ENTRIES)


def _signs(objectives: list[dict]) -> np.ndarray:
    return np.array([1.0 if o.get("direction", "maximize") == "maximize" else -1.0 for o in objectives])


def _oriented_lower_bounds(objectives: list[dict]) -> np.ndarray:
    """Known worst values in oriented units (−inf when unknown)."""
    out = []
    for o in objectives:
        b = o.get("bounds") or [None, None]
        # a tuple in memory (Objective.bounds), a list once read back from JSON: the same bounds either way
        # (reading only lists made `front` ignore them and `compare` of its front.json use them)
        lo, hi = (list(b) + [None, None])[:2] if isinstance(b, (list, tuple)) else (None, None)
        worst = lo if o.get("direction", "maximize") == "maximize" else (-hi if hi is not None else None)
        out.append(float(worst) if worst is not None and np.isfinite(worst) else -np.inf)
    return np.array(out)


def _check_means(points: list[dict], names: list[str], what: str) -> np.ndarray:
    arr = np.array([p["mean"] for p in points], dtype=float).reshape(len(points), len(names))
    bad = ~np.isfinite(arr)
    if bad.any():
        i, k = map(int, np.argwhere(bad)[0])
        raise FrontError(
            f"{what}: point {points[i].get('label', i)!r} has a non-finite mean for objective "
            f"{names[k]!r} ({arr[i, k]}); its scores hold NaN — fix the objective or evaluate with --nan-policy skip"
        )
    return arr


def _reference(all_oriented: list[np.ndarray], objectives: list[dict], user_ref, signs) -> tuple[np.ndarray, str]:
    if user_ref is not None:
        ref = np.asarray(user_ref, dtype=float)
        names = ", ".join(str(o.get("name")) for o in objectives)
        if ref.shape != (len(signs),):
            raise FrontError(f"reference point {ref.tolist()} has {ref.size} value(s) for {len(signs)} objectives ({names})")
        if not np.isfinite(ref).all():
            raise FrontError(f"reference point {ref.tolist()} holds NaN/inf; give a finite value per objective ({names})")
        return ref * signs, "given"
    lb = _oriented_lower_bounds(objectives)
    return automatic_reference_point(*all_oriented, lower_bounds=lb), "automatic (metrics.reference_point: worst point minus 10% of the range, or the objective's known lower bound)"


def _indicators(oriented: np.ndarray, ref_oriented: np.ndarray, signs, reference_front, user_ref: bool) -> dict:
    out = {
        "hypervolume": float(hypervolume(oriented, ref_oriented, require_dominating=user_ref)),
        "dominated": (~pareto_mask(oriented)).tolist(),
    }
    if reference_front is not None:
        rf = _load_reference_front(reference_front, len(signs)) * signs
        lo, hi = rf.min(0), rf.max(0)
        span = np.where(hi > lo, hi - lo, 1.0)
        norm = (lo, lo + span)
        out["igd"] = float(igd(oriented, rf, normalize=norm))
        out["igd_plus"] = float(igd_plus(oriented, rf, normalize=norm))
        out["igd_normalization"] = {"lower": (lo * signs).tolist(), "upper": ((lo + span) * signs).tolist(),
                                    "note": "per-objective min-max of the reference front (oriented)"}
    return out


def _load_reference_front(path: str, k: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"reference front {path!r} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"reference front {path!r} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("points"), list):  # a front.json
        data = [q.get("mean") if isinstance(q, dict) else q for q in data["points"]]
    try:
        arr = np.asarray(data, dtype=float)
    except (TypeError, ValueError):  # ragged rows, strings
        arr = np.zeros((0,))
    if arr.ndim != 2 or arr.shape[1] != k or len(arr) == 0:
        raise ConfigError(f"reference front {path!r} must be a non-empty list of {k}-value points; got "
                          + (f"shape {arr.shape}" if arr.size else f"{json.dumps(data)[:60]}"))
    if not np.isfinite(arr).all():
        raise ConfigError(f"reference front {path!r} holds NaN/inf")
    return arr


def make_front(points: list[FrontPoint], name: str, method: str, eval_meta: EvalResult, base: FrontPoint | None = None,
               reference_point=None, reference_front=None) -> Front:
    """front.json's content from evaluated points (each with ``mean``/``stderr`` in raw units)."""
    names, objectives = eval_meta["names"], eval_meta["objectives"]
    if len(names) < 2:
        raise FrontError(f"a front needs at least 2 objectives; got {names}")
    if not points:
        raise FrontError("a front needs at least one point")
    signs = _signs(objectives)
    oriented = _check_means(points, names, name) * signs
    sets = [oriented] + ([_check_means([base], names, "base") * signs] if base else [])
    ref, source = _reference(sets, objectives, reference_point, signs)
    ind = _indicators(oriented, ref, signs, reference_front, reference_point is not None)
    for p, d in zip(points, ind.pop("dominated")):
        p["dominated"] = bool(d)
    front = {
        "paretoalign_front": 1, "name": name, "method": method, "names": names, "objectives": objectives,
        "prompts_sha256": eval_meta["prompts_sha256"], "prompts": eval_meta["prompts"],
        "decoding": eval_meta["decoding"],
        "reference_point": (ref * signs).tolist(), "reference_point_source": source,
        "orientation": signs.tolist(), **ind, "points": points, "base": base,
    }
    if base:
        front["base_hypervolume"] = float(hypervolume(sets[1], ref))
    return front


def compare_fronts(fronts: list[Front], base: FrontPoint | None = None, reference_point=None,
                   reference_front=None) -> Comparison:
    """comparison.json's content: every front's hypervolume against one shared reference point."""
    if len(fronts) < 1:
        raise FrontError("nothing to compare")
    first = fronts[0]
    for f in fronts[1:]:
        if f["names"] != first["names"] or [o.get("direction") for o in f["objectives"]] != [o.get("direction") for o in first["objectives"]]:
            raise FrontError(
                f"fronts {first['name']!r} and {f['name']!r} have different objectives: "
                f"{first['names']} vs {f['names']} (directions must match too)"
            )
        if f["prompts_sha256"] != first["prompts_sha256"] or f["decoding"] != first["decoding"]:
            raise FrontError(
                f"fronts {first['name']!r} and {f['name']!r} were evaluated on different prompts or decoding "
                "settings; evaluate them with the same --eval-* options and prompt set"
            )
    names = [f["name"] for f in fronts]
    if len(set(names)) != len(names):
        raise FrontError(f"two fronts share a name: {names}; give them --label values")
    base = base if base is not None else next((f["base"] for f in fronts if f.get("base")), None)
    objectives, signs = first["objectives"], _signs(first["objectives"])
    all_names = first["names"]
    sets = [_check_means(f["points"], all_names, f["name"]) * signs for f in fronts]
    if base:
        sets.append(_check_means([base], all_names, "base") * signs)
    ref, source = _reference(sets, objectives, reference_point, signs)
    out_fronts = []
    for f, oriented in zip(fronts, sets):
        ind = _indicators(oriented, ref, signs, reference_front, reference_point is not None)
        g = {**f, **{k: v for k, v in ind.items() if k != "dominated"}}
        g["points"] = [dict(p, dominated=bool(d)) for p, d in zip(f["points"], ind["dominated"])]
        g["reference_point"] = (ref * signs).tolist()
        if "hypervolume" in f and "reference_point" in f:  # what its own front.json says, shown beside
            g["own"] = {"hypervolume": f["hypervolume"], "reference_point": f["reference_point"],
                        "reference_point_source": f.get("reference_point_source")}
        out_fronts.append(g)
    result = {
        "paretoalign_comparison": 1, "names": all_names, "objectives": objectives,
        "prompts_sha256": first["prompts_sha256"], "prompts": first.get("prompts"), "decoding": first["decoding"],
        "reference_point": (ref * signs).tolist(), "reference_point_source": source,
        "orientation": signs.tolist(), "fronts": out_fronts, "base": base,
        "hypervolumes": {f["name"]: f["hypervolume"] for f in out_fronts},
    }
    if base:
        result["base_hypervolume"] = float(hypervolume(sets[-1], ref))
    return result


def load_front(path: str | Path) -> dict:
    """A front.json (file or folder holding one), checked: a damaged file is one FrontError naming it."""
    p = Path(path)
    f = p / FRONT_FILE if p.is_dir() else p
    if not f.is_file():
        raise FrontError(f"{str(path)!r} holds no {FRONT_FILE}; run `paretoalign front` there first")
    data = _read_result(f)
    if "fronts" in data:
        raise FrontError(f"{f}: holds a comparison of fronts, not one front; compare the fronts it was made from")
    data["_dir"] = str(f.parent)
    return data


def load_front_result(folder: str | Path) -> dict:
    """The comparison.json, else the front.json, of a folder (what ``paretoalign report`` redraws), checked."""
    out = Path(folder)
    if not out.is_dir():
        raise FrontError(f"{str(out)!r} is not a folder; give the folder holding {FRONT_FILE} or {COMPARISON_FILE}")
    for name in (COMPARISON_FILE, FRONT_FILE):
        if (out / name).is_file():
            return _read_result(out / name)
    raise FrontError(f"{str(out)!r} holds neither {FRONT_FILE} nor {COMPARISON_FILE}")


def _read_result(f: Path) -> dict:
    """A front.json or comparison.json as written by this module, or one FrontError naming the file and what is wrong."""
    data = run_dir.read_json_object(f, FrontError)
    _Checker(f).result(data)
    return data


class _Checker:
    """Checks the fields that compare, report and the plots read; the first problem is one FrontError
    naming the file and the field (``fronts[1].points[0].mean``)."""

    def __init__(self, f: Path):
        self.f = f

    def need(self, d: dict, key: str, where: str, ok, expected: str):
        v = d.get(key)
        if not ok(v):
            got = "nothing" if key not in d else f"{json.dumps(v)[:60]}"
            raise FrontError(f"{self.f}: {where}{key} must be {expected}; got {got}")
        return v

    @staticmethod
    def numbers(k: int):
        return lambda v: isinstance(v, list) and len(v) == k and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)

    def result(self, d: dict) -> None:
        names = self.need(d, "names", "", lambda v: isinstance(v, list) and len(v) >= 1 and all(
            isinstance(n, str) for n in v), "a non-empty list of objective names")
        if "fronts" not in d:
            return self.front(d, "", names)
        self.need(d, "reference_point", "", self.numbers(len(names)), f"a list of {len(names)} numbers")
        self.base(d, "", len(names))
        fronts = self.need(d, "fronts", "", lambda v: isinstance(v, list) and v and all(isinstance(x, dict) for x in v),
                           "a non-empty list of fronts")
        for i, fr in enumerate(fronts):
            self.front(fr, f"fronts[{i}].", names)

    def base(self, d: dict, where: str, k: int) -> None:
        b = self.need(d, "base", where, lambda v: v is None or isinstance(v, dict), "an object or null")
        if b is not None:
            self.need(b, "mean", f"{where}base.", self.numbers(k), f"a list of {k} numbers")

    def front(self, d: dict, where: str, names: list) -> None:
        k = len(names)
        self.need(d, "names", where, lambda v: v == names, f"the comparison's objective names {names}")
        self.need(d, "objectives", where, lambda v: isinstance(v, list) and len(v) == k and all(
            isinstance(o, dict) for o in v), f"a list of {k} objects")
        for key in ("name", "method", "prompts_sha256"):
            self.need(d, key, where, lambda v: isinstance(v, str), "a string")
        self.need(d, "decoding", where, lambda v: isinstance(v, dict), "an object")
        self.need(d, "hypervolume", where, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number")
        self.need(d, "reference_point", where, self.numbers(k), f"a list of {k} numbers")
        self.base(d, where, k)
        points = self.need(d, "points", where, lambda v: isinstance(v, list) and v and all(
            isinstance(p, dict) for p in v), "a non-empty list of points")
        for i, p in enumerate(points):
            here = f"{where}points[{i}]."
            for key in ("label", "run_dir"):
                self.need(p, key, here, lambda v: isinstance(v, str), "a string")
            for key in ("mean", "stderr"):
                self.need(p, key, here, self.numbers(k), f"a list of {k} numbers")
            self.need(p, "samples", here, lambda v: v is None or isinstance(v, list) and all(
                isinstance(x, dict) for x in v), "a list of objects")
            self.need(p, "win_rate", here, lambda v: v is None or isinstance(v, dict), "an object or null")


def parse_reference_point(value) -> list[float] | None:
    """``--reference-point 0,1.5`` as numbers (``None``: automatic); words, NaN or inf are one FrontError."""
    if value is None:
        return None
    items = split_list(value)
    try:
        ref = [float(x) for x in items]
    except (TypeError, ValueError):
        raise FrontError(f"--reference-point {value!r}: expected numbers separated by commas, one per objective "
                         "(e.g. 0,0)") from None
    bad = [x for x, r in zip(items, ref) if not np.isfinite(r)]
    if bad or not ref:
        raise FrontError(f"--reference-point {value!r}: {'every value must be a finite number' if ref else 'no values'}"
                         + (f"; got {bad[0]!r}" if bad else ""))
    return ref


def save_result(path: Path, data: dict) -> None:
    """front.json / comparison.json, atomically; keys starting with '_' are in-memory only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run_dir.write_json(path, {k: v for k, v in data.items() if not k.startswith("_")})


def runs_of(result: dict, out: Path) -> dict[str, Path]:
    fronts = result.get("fronts", [result])
    runs = {}
    for f in fronts:
        root = Path(f.get("_dir", out if "fronts" not in result else out / f["method"]))
        for p in f["points"]:
            key = p["label"] if len(fronts) == 1 else f"{f['name']} {p['label']}"
            runs[key] = root / p["run_dir"]
    return runs


def write_outputs(result: dict, out: Path, runs: dict | None = None, screenshot: bool = False) -> dict:
    """front.png, front_parallel.png, curves.png and report.html (plus report.png) in ``out``."""
    fronts = result.get("fronts", [result])
    base = result.get("base")
    images = {
        "front": plot_front(fronts, out / "front.png", base=base, reference_point=result.get("reference_point")),
        "parallel coordinates": plot_parallel(fronts, out / "front_parallel.png", base=base),
    }
    runs = {k: v for k, v in (runs or {}).items() if (Path(v) / run_dir.METRICS_FILE).is_file()}
    if runs:
        images["training curves"] = plot_training_curves(runs, out / "curves.png", names=result["names"])
    files = {"images": {k: str(v) for k, v in images.items()}}
    files["report"] = str(write_report(result, out / "report.html", images=images))
    if screenshot:
        files["screenshot"] = str(take_screenshot(out / "report.html", out / "report.png"))
    return files


def print_front(result: dict) -> None:
    """Points per front, their means and s.e., and each front's hypervolume."""
    fronts = result.get("fronts", [result])
    names = result["names"]
    rows = []
    for f in fronts:
        for p in f["points"]:
            rows.append([f["name"], p["label"], *[f"{m:.3f} ± {s:.3f}" for m, s in zip(p["mean"], p["stderr"])],
                         "" if p.get("dominated") else "*"])
    base = result.get("base")
    if base:
        rows.append(["base", "-", *[f"{m:.3f} ± {s:.3f}" for m, s in zip(base["mean"], base["stderr"])], ""])
    if result.get("prompts"):
        print(f"evaluated on {describe_prompts(result['prompts'])}")
    print(table(["front", "preference", *names, "non-dominated"], rows))
    ref = ", ".join(f"{x:.3f}" for x in result["reference_point"])
    for f in fronts:
        extra = f"  IGD+ {f['igd_plus']:.4f}" if f.get("igd_plus") is not None else ""
        print(f"hypervolume {f['name']}: {f['hypervolume']:.4f}{extra}   (reference point {ref})")
    if result.get("base_hypervolume") is not None:
        print(f"hypervolume of the base model alone: {result['base_hypervolume']:.4f}")
    own = [f for f in fronts if f.get("own") and _differs(f["own"]["reference_point"], result["reference_point"])]
    if "fronts" in result and own:
        # the rule is front's, but over every point compared: a front's own front.json saw only its points
        print("The reference point above is shared by all fronts (the same automatic rule as `paretoalign front`, "
              "applied to every point compared), so these hypervolumes differ from each front's own front.json:")
        for f in own:
            r = ", ".join(f"{x:.3f}" for x in f["own"]["reference_point"])
            print(f"  {f['name']}: {f['own']['hypervolume']:.4f} in its front.json (reference point {r}, from its own points)")


def _differs(a, b) -> bool:
    return not np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-9, atol=1e-12)


def compare_dirs(dirs: list[str], output_dir: str, reference_point=None, reference_front=None,
                 labels: Optional[list] = None, report: bool = True, screenshot: bool = False) -> dict:
    """``paretoalign compare``: fronts made by separate commands, one shared reference point."""
    fronts = [load_front(d) for d in dirs]
    if len(fronts) < 2:
        raise ConfigError("compare needs at least two fronts")
    if labels:
        labels = split_list(labels)
        if len(labels) != len(fronts):
            raise ConfigError(f"--labels has {len(labels)} names for {len(fronts)} fronts")
        fronts = [dict(f, name=lab) for f, lab in zip(fronts, labels)]
    reference_point = parse_reference_point(reference_point)
    result = compare_fronts(fronts, reference_point=reference_point, reference_front=reference_front)
    out = Path(output_dir)
    # a folder we did not write is refused; our own comparison there is replaced
    run_dir.claim(out, "comparison", True, COMPARE_ENTRIES)
    save_result(out / COMPARISON_FILE, result)
    if report:
        write_outputs(result, out, runs=runs_of(result, out), screenshot=screenshot)
    return result

__all__ = ["make_front", "compare_fronts", "compare_dirs", "load_front", "load_front_result", "parse_reference_point",
           "write_outputs", "print_front", "save_result", "runs_of", "FRONT_FILE", "COMPARISON_FILE", "COMPARE_ENTRIES"]
