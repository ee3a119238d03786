"""``paretoalign front``: train (or steer) at a set of preference vectors, evaluate, and show the front.

Layout of a front folder (one method)::

    FRONT/
      front_config.yaml        the sweep's options and the training options (what was run)
      points/<w0.25-0.75>/     one ordinary run folder per preference (+ its eval.json)
      base/eval.json           the base model on the same prompts and decoding
      front.json               every point: preference, per-objective mean and s.e., dominated or not,
                               win rates, samples; the hypervolume and its reference point
      front.png, front_parallel.png, curves.png, report.html

With several methods (``--method pama,morlhf``) each method's sweep lives in ``FRONT/<method>/``
and ``FRONT/`` holds ``comparison.json`` with every front's hypervolume against one shared
reference point, plus the plots and report of all of them together.  ``paretoalign compare``
does the same for fronts made by separate commands.

An interrupted sweep continues with ``--resume``: finished points are skipped, a point with a
checkpoint resumes from it, evaluations come from the cache.

Hypervolume is computed on oriented values (an objective with direction ``minimize`` is negated),
so "higher is better" everywhere; reference points are written in each objective's own units.
The automatic reference point is :func:`paretoalign.evaluation.metrics.reference_point` over all
points compared (and the base model), or the objective's known lower bound when it is finite
and no point is below it: every point then counts, and the choice is recorded in the output.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml

from paretoalign import run_dir
from paretoalign.config_utils import config_to_dict, field, split_list
from paretoalign.errors import ConfigError, FrontError, RunDirError

FRONT_FILE = "front.json"
COMPARISON_FILE = "comparison.json"
FRONT_CONFIG = "front_config.yaml"
_MUTABLE = {"resume", "overwrite", "report", "screenshot", "output_dir"}
# Training options the sweep sets itself (one run per preference).
FRONT_SETS = ("method", "weights", "output_dir", "resume", "overwrite", "normalize_weights")


@dataclass
class FrontConfig:
    """Options of ``paretoalign front`` (training options are those of ``paretoalign train``)."""

    method: list = field(["pama"], help="Method(s) to sweep, comma-separated (e.g. pama,morlhf,mgda-ub): several give one comparison.")
    preferences: str = field(
        "grid:5",
        help="Preference vectors: 'grid:N' (N per simplex edge; Das-Dennis for K>=3), 'random:N' (seeded), "
        "or an explicit list '0.2,0.8;0.5,0.5'.",
    )
    output_dir: str = field("fronts/front", help="Front folder (one run folder per preference inside).")
    label: Optional[str] = field(None, help="Name of the front in plots and tables (default: the method).")
    include_base: bool = field(True, help="Evaluate the base model on the same prompts and show it as a point.")
    reference_point: Optional[list] = field(
        None, help="Hypervolume reference point in each objective's units (default: automatic, recorded in front.json).",
    )
    reference_front: Optional[str] = field(
        None, help="A JSON file of known optimal points [[...K...], ...] (or a front.json): adds IGD and IGD+.",
    )
    eval_num_prompts: Optional[int] = field(None, help="Evaluate on the first N held-out prompts (default: all).")
    eval_max_new_tokens: Optional[int] = field(None, help="Evaluation completion length (default: the training one).")
    eval_temperature: float = field(0.7, help="Evaluation sampling temperature.")
    eval_seed: int = field(1234, help="Evaluation generation seed.")
    eval_batch_size: int = field(16, help="Evaluation generation batch size.")
    num_samples: int = field(5, help="Sample completions per point kept in front.json and the report.")
    resume: bool = field(False, help="Continue the sweep in --output-dir (finished points are skipped).")
    overwrite: bool = field(False, help="Delete an existing front in --output-dir and start over.")
    report: bool = field(True, help="Write the plots and report.html.")
    screenshot: bool = field(False, help="Also render report.html to report.png with headless Chromium.")

    def __post_init__(self):
        self.method = split_list(self.method)
        if not self.method:
            raise ConfigError("--method needs at least one method")
        if len(set(self.method)) != len(self.method):
            raise ConfigError(f"--method lists a method twice: {self.method}")
        if self.reference_point is not None:
            try:
                self.reference_point = [float(x) for x in split_list(self.reference_point)]
            except (TypeError, ValueError):
                raise ConfigError(f"reference_point must be numbers; got {self.reference_point!r}") from None
            if not np.isfinite(self.reference_point).all():
                raise ConfigError(f"reference_point must be finite numbers; got {self.reference_point}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")


def build_front_config(yaml_path=None, overrides: dict | None = None) -> tuple[FrontConfig, dict]:
    """(FrontConfig, training options) from one YAML file and flags: keys of FrontConfig go to the
    sweep, every other key is a training option, validated once up front (a typo costs nothing)."""
    import dataclasses

    from paretoalign.config_utils import build_config, load_yaml
    from paretoalign.trainers.online_config import OnlineConfig

    values = load_yaml(yaml_path) if yaml_path else {}
    values.update(overrides or {})
    front_keys = {f.name for f in dataclasses.fields(FrontConfig)}
    clash = sorted(set(values) & set(FRONT_SETS) - front_keys)
    if clash:
        raise ConfigError(f"option(s) {clash} are set by the front sweep itself (one run per preference)")
    front = build_config(FrontConfig, None, {k: v for k, v in values.items() if k in front_keys})
    train_vals = {k: v for k, v in values.items() if k not in front_keys}
    from paretoalign.trainers.dpa_config import DPAConfig
    from paretoalign.trainers.offline_config import OFFLINE_METHODS, OfflineConfig

    family = {m: "offline" if m in OFFLINE_METHODS else "dpa" if m == "dpa" else "online" for m in front.method}
    if len(set(family.values())) > 1:
        raise ConfigError(f"--method mixes online and offline methods {front.method} ({family}); their training options "
                          "differ: sweep each family, then `paretoalign compare` the fronts")
    kind = next(iter(family.values()))
    cls = OfflineConfig if kind == "offline" else DPAConfig if kind == "dpa" else OnlineConfig
    train = config_to_dict(build_config(cls, None, {**train_vals, "method": front.method[0]}))
    return front, train


# ---------------------------------------------------------------------------------------------
# methods: how one point of a front is made
# ---------------------------------------------------------------------------------------------


def _train_online(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator) -> Path:
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    cfg = OnlineConfig(**{**train, "method": method, "weights": list(preference), "output_dir": str(out),
                          "resume": resume, "overwrite": False, "normalize_weights": False})
    OnlineTrainer(cfg, accelerator=accelerator).train()
    return out


def _train_offline(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator) -> Path:
    from paretoalign.trainers.offline_config import OfflineConfig
    from paretoalign.trainers.offline_trainer import OfflineTrainer

    objectives, weights = list(train.get("objectives", [])), list(preference)
    if method == "modpo" and weights and weights[0] == 0:
        # MODPO divides by the labelled objective's weight: at a point where it is 0, label the pairs
        # for the most-weighted objective instead (its labels must be in the data; the first
        # objective becomes a margin, scored or read from the data's scores).
        k = int(np.argmax(weights))
        objectives[0], objectives[k] = objectives[k], objectives[0]
        weights[0], weights[k] = weights[k], weights[0]
    cfg = OfflineConfig(**{**train, "method": method, "objectives": objectives, "weights": weights,
                           "output_dir": str(out), "resume": resume, "overwrite": False, "normalize_weights": False})
    OfflineTrainer(cfg, accelerator=accelerator).train()
    return out


def _train_dpa(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator) -> Path:
    """DPA trains ONE steerable model for the whole front (``out`` is the method's shared ``model``
    folder); each point is that model evaluated with the point's direction w/‖w‖."""
    from paretoalign.trainers.dpa_config import DPAConfig
    from paretoalign.trainers.dpa_trainer import DPATrainer

    cfg = DPAConfig(**{**train, "method": "dpa", "output_dir": str(out), "resume": resume, "overwrite": False})
    DPATrainer(cfg, accelerator=accelerator).train()
    return out


# method name -> function(method, preference, train_options, run_folder, resume, accelerator) -> run folder.
# Steering methods (one model for every preference, steered at inference) are also in STEERING.
POINT_MAKERS: dict[str, Callable] = {"pama": _train_online, "morlhf": _train_online, "mgda-ub": _train_online,
                                     "mo-grpo": _train_online,
                                     "dpo": _train_offline, "modpo": _train_offline, "amopo": _train_offline,
                                     "dpa": _train_dpa}
STEERING = {"dpa"}


def _point_done(folder: Path) -> bool:
    return (folder / "final" / "policy").is_dir() and (folder / "summary.json").is_file()


# ---------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------


def _objective_specs(train: dict) -> list:
    from paretoalign.objectives.registry import split_objective_specs

    objs = train.get("objectives", ["sentiment", "length"])
    return split_objective_specs(objs) if isinstance(objs, str) else list(objs)


def _eval_config(front: FrontConfig, target: str, output: Path, train: dict):
    from paretoalign.evaluation.evaluate import EvalConfig

    return EvalConfig(
        target=target, output=str(output), num_prompts=front.eval_num_prompts,
        max_new_tokens=front.eval_max_new_tokens or train.get("max_new_tokens"),
        temperature=front.eval_temperature, seed=front.eval_seed, batch_size=front.eval_batch_size,
        baseline="none", num_samples=front.num_samples,
        allow_download=bool(train.get("allow_download", False)),
        # the same prompts and objectives for every point and the base
        objectives=_objective_specs(train), prompts=train.get("prompts", "builtin"),
        prompt_column=train.get("prompt_column", "prompt"),
        heldout_fraction=train.get("heldout_fraction", 0.15), split_seed=train.get("seed", 0),
        system_prompt=train.get("system_prompt"), use_chat_template=train.get("use_chat_template", True),
    )


# What a sweep and a comparison write at their top level (``--overwrite`` removes these, nothing else).
REPORT_ENTRIES = ("front.png", "front_parallel.png", "curves.png", "report.html", "report.png")
COMPARE_ENTRIES = (COMPARISON_FILE, *REPORT_ENTRIES)
FRONT_ENTRIES = (FRONT_CONFIG, FRONT_FILE, *COMPARE_ENTRIES, "base", "points", "model")


def _prepare_front_dir(out: Path, saved: dict, front: FrontConfig) -> None:
    """Claim, lock and validate the sweep folder (one process; see run_dir.decide_on_main)."""
    cfg_file = out / FRONT_CONFIG
    marker = run_dir.read_marker(out) if out.is_dir() else None
    ours = (marker or {}).get("kind") == "front" or (marker is None and cfg_file.is_file())  # or from before markers
    if front.resume:
        if not (ours and cfg_file.is_file()):
            raise RunDirError(f"--resume: {str(out)!r} holds no sweep to resume; drop --resume to start one")
        run_dir.lock(out)
        old = run_dir.load_config_file(cfg_file)
        diffs = []
        for part in ("front", "train"):
            a, b = old.get(part, {}), saved[part]
            for k in sorted(set(a) | set(b)):
                if k not in _MUTABLE and a.get(k) != b.get(k):
                    diffs.append(f"{part}.{k}: sweep has {a.get(k)!r}, now {b.get(k)!r}")
        if diffs:
            raise RunDirError(f"--resume: the options differ from the sweep in {str(out)!r} ({'; '.join(diffs)})")
        if marker is None:
            run_dir.write_marker(out, "front")
    else:
        if ours and cfg_file.is_file() and not front.overwrite:
            raise RunDirError(f"front folder {str(out)!r} already holds a sweep; pass --resume to continue it "
                              "or --overwrite to replace it")
        if marker is None and cfg_file.is_file():
            run_dir.write_marker(out, "front")  # a sweep from before markers: ours to replace
        methods = tuple(POINT_MAKERS)
        run_dir.claim(out, "front", front.overwrite, FRONT_ENTRIES + methods)
        run_dir.lock(out)
    run_dir.atomic_write_text(cfg_file, yaml.safe_dump(saved, sort_keys=False))


def run_front(front: FrontConfig, train: dict, accelerator=None, progress: Callable[[str], None] = print) -> dict:
    """Sweep every method of ``front.method`` at the preferences; returns front.json's content
    (one method) or comparison.json's (several)."""
    from accelerate import Accelerator

    from paretoalign.preferences import parse_preferences

    train = {k: v for k, v in train.items() if k not in ("method", "weights", "output_dir", "resume", "overwrite")}
    unknown = [m for m in front.method if m not in POINT_MAKERS]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown} for a front; available: {', '.join(POINT_MAKERS)}")
    specs = _objective_specs(train)
    if len(specs) < 2:
        raise ConfigError(f"a front needs at least 2 objectives; got {len(specs)}: {specs}")
    if front.reference_point is not None and len(front.reference_point) != len(specs):  # before any training
        raise ConfigError(f"reference_point has {len(front.reference_point)} value(s) for {len(specs)} objectives: {specs}")
    prefs = parse_preferences(front.preferences, len(specs), seed=int(train.get("seed", 0)))
    acc = accelerator or Accelerator()
    out = Path(front.output_dir)
    saved = {"front": config_to_dict(front), "train": train, "preferences": np.asarray(prefs).tolist()}
    run_dir.decide_on_main(acc, lambda: _prepare_front_dir(out, saved, front))

    t0 = time.perf_counter()
    base = None
    if front.include_base and acc.is_main_process:
        from paretoalign.evaluation.evaluate import evaluate_target

        progress(f"[front] evaluating the base model {train.get('model', 'tiny')} ...")
        base = evaluate_target(_eval_config(front, train.get("model", "tiny"), out / "base" / "eval.json", train), quiet=True)
    fronts = []
    for method in front.method:
        mdir = out if len(front.method) == 1 else out / method
        fronts.append(_sweep_method(method, prefs, front, train, mdir, acc, base, progress))
        if len(front.method) > 1 and acc.is_main_process:
            _write_json(mdir / FRONT_FILE, fronts[-1])  # each sub-front also stands alone (compare, report)
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return {}
    if len(fronts) == 1:
        result = fronts[0]
        result["wall_clock_s"] = time.perf_counter() - t0
        _write_json(out / FRONT_FILE, result)
    else:
        result = compare_fronts(fronts, base=_base_point(base, front.num_samples) if base else None,
                                reference_point=front.reference_point,
                                reference_front=front.reference_front)
        result["wall_clock_s"] = time.perf_counter() - t0
        _write_json(out / COMPARISON_FILE, result)
    if front.report:
        write_outputs(result, out, runs=_runs_of(result, out), screenshot=front.screenshot)
    run_dir.unlock(out)
    return result


def _sweep_method(method, prefs, front: FrontConfig, train: dict, mdir: Path, acc, base, progress) -> dict:
    from paretoalign.evaluation.evaluate import evaluate_target
    from paretoalign.preferences import preference_label, preference_slug

    make = POINT_MAKERS[method]
    evals, t_train = [], {}
    folders = [mdir / "points" / preference_slug([float(x) for x in w]) for w in prefs]
    if method in STEERING:
        return _sweep_steering(method, prefs, front, train, mdir, acc, base, progress, folders)
    # Every process reads the points' state before any of them trains (no process may see a
    # folder another one has just created).
    state = [("done" if _point_done(f) else "resume" if run_dir.holds_run(f) else "new") for f in folders]
    acc.wait_for_everyone()
    for i, (w, folder, st) in enumerate(zip(prefs, folders, state)):
        w = [float(x) for x in w]
        tag = f"[front] {method} {i + 1}/{len(prefs)} {preference_label(w)}"
        if st == "done":
            progress(f"{tag}: done already")
        else:
            resume = st == "resume"
            progress(f"{tag}: {'resuming' if resume else 'training'} -> {folder}")
            ts = time.perf_counter()
            make(method, w, train, folder, resume, acc)
            t_train[str(folder)] = time.perf_counter() - ts
        if acc.is_main_process:
            evals.append(evaluate_target(_eval_config(front, str(folder), folder / "eval.json", train), quiet=True))
        acc.wait_for_everyone()
    if not acc.is_main_process:
        return {}
    points = []
    for w, ev in zip(prefs, evals):
        w = [float(x) for x in w]
        folder = Path(ev["target"])
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
        points.append({
            "label": preference_label(w), "preference": w,
            "run_dir": str(folder.relative_to(mdir)) if folder.is_relative_to(mdir) else str(folder),
            **_point_stats(ev, front.num_samples),
            "win_rate": _win_rates(ev, base),
            "train_seconds": summary.get("seconds", t_train.get(str(folder))),
        })
    return make_front(points, name=front.label or method, method=method, eval_meta=evals[0],
                      base=_base_point(base, front.num_samples) if base else None,
                      reference_point=front.reference_point, reference_front=front.reference_front)


def _sweep_steering(method, prefs, front: FrontConfig, train: dict, mdir: Path, acc, base, progress, folders) -> dict:
    """One model trained once (``mdir/model``), evaluated at every preference's direction."""
    from paretoalign.evaluation.evaluate import evaluate_target
    from paretoalign.preferences import preference_label

    model_dir = mdir / "model"
    state = "done" if _point_done(model_dir) else "resume" if run_dir.holds_run(model_dir) else "new"
    acc.wait_for_everyone()
    t_train = None
    if state == "done":
        progress(f"[front] {method}: model trained already ({model_dir})")
    else:
        progress(f"[front] {method}: {'resuming' if state == 'resume' else 'training'} one steerable model -> {model_dir}")
        ts = time.perf_counter()
        POINT_MAKERS[method](method, None, train, model_dir, state == "resume", acc)
        t_train = time.perf_counter() - ts
    if not acc.is_main_process:
        acc.wait_for_everyone()
        return {}
    evals = []
    for i, (w, folder) in enumerate(zip(prefs, folders)):
        w = [float(x) for x in w]
        progress(f"[front] {method} {i + 1}/{len(prefs)} {preference_label(w)}: evaluating the direction")
        folder.mkdir(parents=True, exist_ok=True)
        ecfg = _eval_config(front, str(model_dir), folder / "eval.json", train)
        ecfg.direction = w  # normalised to w/|w| by the evaluation
        evals.append(evaluate_target(ecfg, quiet=True))
    acc.wait_for_everyone()
    summary = json.loads((model_dir / "summary.json").read_text()) if (model_dir / "summary.json").is_file() else {}
    points = [{"label": preference_label([float(x) for x in w]), "preference": [float(x) for x in w],
               "run_dir": str(model_dir.relative_to(mdir)), "direction": ev["direction"],
               **_point_stats(ev, front.num_samples), "win_rate": _win_rates(ev, base),
               "train_seconds": summary.get("seconds", t_train) if i == 0 else 0.0}
              for i, (w, ev) in enumerate(zip(prefs, evals))]
    # the points differ only in the direction written into the system message; the front's decoding
    # is the shared one, so it compares with fronts of other methods
    meta = {**evals[0], "decoding": {**evals[0]["decoding"], "system_prompt": train.get("system_prompt")}}
    return make_front(points, name=front.label or method, method=method, eval_meta=meta,
                      base=_base_point(base, front.num_samples) if base else None,
                      reference_point=front.reference_point, reference_front=front.reference_front)


def _point_stats(ev: dict, num_samples: int) -> dict:
    names = ev["names"]
    return {
        "mean": [ev["summary"][n]["mean"] for n in names],
        "stderr": [ev["summary"][n]["stderr"] for n in names],
        "samples": [
            {"prompt": p, "completion": c, "scores": s}
            for p, c, s in list(zip(ev["prompt_texts"], ev["completions"], ev["scores"]))[:num_samples]
        ],
        "eval": ev.get("output"),
    }


def _base_point(base: dict, num_samples: int) -> dict:
    return {"label": "base", "target": base["target"], **_point_stats(base, num_samples)}


def _win_rates(ev: dict, base: dict | None):
    if base is None:
        return None
    from paretoalign.evaluation.scoring import win_rates

    if base["prompts_sha256"] != ev["prompts_sha256"]:
        raise FrontError("the base model and a point were evaluated on different prompts")
    return win_rates(ev["scores"], base["scores"], ev["names"], ev["signs"])


# ---------------------------------------------------------------------------------------------
# fronts, comparisons, indicators
# ---------------------------------------------------------------------------------------------


def _signs(objectives: list[dict]) -> np.ndarray:
    return np.array([1.0 if o.get("direction", "maximize") == "maximize" else -1.0 for o in objectives])


def _oriented_lower_bounds(objectives: list[dict]) -> np.ndarray:
    """Known worst values in oriented units (−inf when unknown)."""
    out = []
    for o in objectives:
        b = o.get("bounds") or [None, None]
        lo, hi = (b + [None, None])[:2] if isinstance(b, list) else (None, None)
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
    from paretoalign.evaluation.metrics import reference_point

    if user_ref is not None:
        ref = np.asarray(user_ref, dtype=float)
        names = ", ".join(str(o.get("name")) for o in objectives)
        if ref.shape != (len(signs),):
            raise FrontError(f"reference point {ref.tolist()} has {ref.size} value(s) for {len(signs)} objectives ({names})")
        if not np.isfinite(ref).all():
            raise FrontError(f"reference point {ref.tolist()} holds NaN/inf; give a finite value per objective ({names})")
        return ref * signs, "given"
    lb = _oriented_lower_bounds(objectives)
    return reference_point(*all_oriented, lower_bounds=lb), "automatic (metrics.reference_point: worst point minus 10% of the range, or the objective's known lower bound)"


def _indicators(oriented: np.ndarray, ref_oriented: np.ndarray, signs, reference_front, user_ref: bool) -> dict:
    from paretoalign.evaluation.metrics import hypervolume, igd, igd_plus, pareto_mask

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


def make_front(points: list[dict], name: str, method: str, eval_meta: dict, base: dict | None = None,
               reference_point=None, reference_front=None) -> dict:
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
        from paretoalign.evaluation.metrics import hypervolume

        front["base_hypervolume"] = float(hypervolume(sets[1], ref))
    return front


def compare_fronts(fronts: list[dict], base: dict | None = None, reference_point=None, reference_front=None) -> dict:
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
        out_fronts.append(g)
    result = {
        "paretoalign_comparison": 1, "names": all_names, "objectives": objectives,
        "prompts_sha256": first["prompts_sha256"], "decoding": first["decoding"],
        "reference_point": (ref * signs).tolist(), "reference_point_source": source,
        "orientation": signs.tolist(), "fronts": out_fronts, "base": base,
        "hypervolumes": {f["name"]: f["hypervolume"] for f in out_fronts},
    }
    if base:
        from paretoalign.evaluation.metrics import hypervolume

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


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({k: v for k, v in data.items() if not k.startswith("_")}, indent=1))
    tmp.replace(path)


def _runs_of(result: dict, out: Path) -> dict[str, Path]:
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
    from paretoalign.evaluation.html_report import screenshot as take_screenshot
    from paretoalign.evaluation.html_report import write_report
    from paretoalign.evaluation.plots import plot_front, plot_parallel, plot_training_curves

    fronts = result.get("fronts", [result])
    base = result.get("base")
    images = {
        "front": plot_front(fronts, out / "front.png", base=base, reference_point=result.get("reference_point")),
        "parallel coordinates": plot_parallel(fronts, out / "front_parallel.png", base=base),
    }
    runs = {k: v for k, v in (runs or {}).items() if (Path(v) / "metrics.jsonl").is_file()}
    if runs:
        images["training curves"] = plot_training_curves(runs, out / "curves.png", names=result["names"])
    files = {"images": {k: str(v) for k, v in images.items()}}
    files["report"] = str(write_report(result, out / "report.html", images=images))
    if screenshot:
        files["screenshot"] = str(take_screenshot(out / "report.html", out / "report.png"))
    return files


def print_front(result: dict) -> None:
    """Points per front, their means and s.e., and each front's hypervolume."""
    from paretoalign.report import table

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
    print(table(["front", "preference", *names, "non-dominated"], rows))
    ref = ", ".join(f"{x:.3f}" for x in result["reference_point"])
    for f in fronts:
        extra = f"  IGD+ {f['igd_plus']:.4f}" if f.get("igd_plus") is not None else ""
        print(f"hypervolume {f['name']}: {f['hypervolume']:.4f}{extra}   (reference point {ref})")
    if result.get("base_hypervolume") is not None:
        print(f"hypervolume of the base model alone: {result['base_hypervolume']:.4f}")


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
    _write_json(out / COMPARISON_FILE, result)
    if report:
        write_outputs(result, out, runs=_runs_of(result, out), screenshot=screenshot)
    return result


__all__ = ["FrontConfig", "build_front_config", "run_front", "make_front", "compare_fronts", "compare_dirs", "load_front", "load_front_result",
           "write_outputs", "print_front", "POINT_MAKERS"]
