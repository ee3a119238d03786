"""``paretoalign front``: train (or steer) at a set of preference vectors, evaluate, and show the front.

Layout of a front folder (one method)::

    FRONT/
      front_config.yaml        the sweep's options and the training options (what was run)
      points/<w0.25-0.75>/     one ordinary run folder per preference (+ its eval.json)
      base/eval.json           the base model on the same prompts and decoding
      front.json               every point: preference, per-objective mean and s.e., dominated or not,
                               win rates, samples; the hypervolume and its reference point
      front.png, front_parallel.png, curves.png, report.html

Rewarded Soups (``--method rs``, the ``merging`` family) trains no model per point: its K endpoints, one
per objective (one-hot weights, ``--endpoint-method``, default morlhf), are trained once in
``endpoints/<w1-0>/`` ... (ordinary run folders; or given with ``--endpoints``), and each point
``points/<w...>/`` is their merge at that preference (:mod:`paretoalign.merging`), evaluated like any
run; ``front.json`` records the cost as K trainings (``training``).

With several methods (``--method pama,morlhf``) each method's sweep lives in ``FRONT/<method>/``
and ``FRONT/`` holds ``comparison.json`` with every front's hypervolume against one shared
reference point, plus the plots and report of all of them together.  ``paretoalign compare``
does the same for fronts made by separate commands.

An interrupted sweep continues with ``--resume``: finished points are skipped, a point with a
checkpoint resumes from it, evaluations come from the cache.

Fronts themselves (dominance, hypervolume, reading/writing, drawing) are :mod:`paretoalign.fronts.front`;
the methods come from the method table, and each point is an ordinary run of its trainer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import yaml

from paretoalign import run_dir
from paretoalign.config_utils import build_config, config_to_dict, load_yaml
from paretoalign.errors import ConfigError, FrontError, RunDirError
from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target
from paretoalign.evaluation.scoring import win_rates
from paretoalign.fronts.config import FRONT_SETS, FrontConfig
from paretoalign.fronts.front import (
    COMPARE_ENTRIES,
    COMPARISON_FILE,
    FRONT_FILE,
    compare_fronts,
    make_front,
    runs_of,
    save_result,
    write_outputs,
)
from paretoalign.models import release_memory
from paretoalign.objectives.spec import split_objective_specs
from paretoalign.preferences import parse_preferences, preference_label, preference_slug
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers import sharding
from paretoalign.trainers.adaptation import refuse_sharded
from paretoalign.trainers.dpa_config import DPAConfig
from paretoalign.trainers.methods import ENDPOINT_FAMILIES, METHODS, endpoint_methods, get_method
from paretoalign.trainers.offline_config import OfflineConfig
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.ric_config import RicConfig

FRONT_CONFIG = "front_config.yaml"
# What a sweep writes at its top level besides its points (``--overwrite`` removes these, nothing else).
FRONT_ENTRIES = (FRONT_CONFIG, FRONT_FILE, *COMPARE_ENTRIES, "base", "points", "model", "endpoints")
_MUTABLE = {"resume", "overwrite", "report", "screenshot", "output_dir"}


def build_front_config(yaml_path=None, overrides: dict | None = None) -> tuple[FrontConfig, dict]:
    """(FrontConfig, training options) from one YAML file and flags: keys of FrontConfig go to the
    sweep, every other key is a training option, validated once up front (a typo costs nothing)."""
    values = load_yaml(yaml_path) if yaml_path else {}
    values.update(overrides or {})
    front_keys = {f.name for f in dataclasses.fields(FrontConfig)}
    clash = sorted(set(values) & set(FRONT_SETS) - front_keys)
    if clash:
        raise ConfigError(f"option(s) {clash} are set by the front sweep itself (one run per preference)")
    front = build_config(FrontConfig, None, {k: v for k, v in values.items() if k in front_keys})
    train_vals = {k: v for k, v in values.items() if k not in front_keys}
    endpoint = [m for m in front.method if get_method(m).family in ENDPOINT_FAMILIES]
    if endpoint and front.endpoint_method not in endpoint_methods():
        raise ConfigError(f"--endpoint-method {front.endpoint_method!r}: {endpoint[0]}'s endpoints are trained on one "
                          f"objective each (one-hot weights) by a method that takes weights: "
                          f"{', '.join(endpoint_methods())}")
    if front.endpoints is not None and not endpoint and all(get_method(m).family == "experts" for m in front.method):
        # HoE: its experts are cut from the K endpoints (a training option of its own)
        train_vals["endpoints"], front = front.endpoints, dataclasses.replace(front, endpoints=None)
    if not endpoint and (front.endpoints is not None or front.merge_rank is not None):
        raise ConfigError(f"--endpoints and --merge-rank belong to methods made from K endpoints "
                          f"({', '.join(m.name for m in METHODS if m.family in ENDPOINT_FAMILIES)}); "
                          f"--method is {','.join(front.method)}")
    # a method made from endpoints takes the training options of the method that trains them
    trained_by = {m: front.endpoint_method if m in endpoint else m for m in front.method}
    family = {m: get_method(trained_by[m]).family for m in front.method}
    if len(set(family.values())) > 1:
        raise ConfigError(f"--method mixes method families {front.method} ({family}); their training options "
                          "differ: sweep each family, then `paretoalign compare` the fronts")
    unsweepable = [m for m in front.method if not get_method(m).sweepable]
    if unsweepable:
        raise ConfigError(f"{unsweepable} cannot be swept over preference vectors (MOPO takes constraints, not "
                          "weights): train it with `paretoalign train` per constraint")
    first = trained_by[front.method[0]]
    if "cgpo" in front.method and train_vals.get("tasks"):
        raise ConfigError("front --method cgpo sweeps the reward's weights over --objectives; a --tasks blend has a "
                          "reward per task: sweep one task at a time")
    cls = get_method(first).config_class
    train = config_to_dict(build_config(cls, None, {**train_vals, "method": first}))
    return front, train


# ---------------------------------------------------------------------------------------------
# methods: how one point of a front is made
# ---------------------------------------------------------------------------------------------


def _train_online(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator) -> Path:
    from paretoalign.trainers.online_trainer import OnlineTrainer  # lazy: `paretoalign --help` reads FrontConfig

    cfg = OnlineConfig(**{**train, "method": method, "weights": list(preference), "output_dir": str(out),
                          "resume": resume, "overwrite": False, "normalize_weights": False})
    OnlineTrainer(cfg, accelerator=accelerator).train()
    return out


def _train_offline(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator) -> Path:
    from paretoalign.trainers.offline_trainer import OfflineTrainer  # lazy: `paretoalign --help` reads FrontConfig

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
    from paretoalign.trainers.dpa_trainer import DPATrainer  # lazy: `paretoalign --help` reads FrontConfig

    cfg = DPAConfig(**{**train, "method": "dpa", "output_dir": str(out), "resume": resume, "overwrite": False})
    DPATrainer(cfg, accelerator=accelerator).train()
    return out


def _train_ric(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator) -> Path:
    """RiC trains ONE model conditioned on target scores for the whole front (``out``: the method's
    shared ``model`` folder); each point is that model steered by the targets its preference maps to."""
    from paretoalign.trainers.ric_trainer import RicTrainer  # lazy: `paretoalign --help` reads FrontConfig

    cfg = RicConfig(**{**train, "method": "ric", "output_dir": str(out), "resume": resume, "overwrite": False})
    RicTrainer(cfg, accelerator=accelerator).train()
    return out


def _train_hoe(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator) -> Path:
    """HoE trains ONE routed model for the whole front (``out``: the method's shared ``model`` folder):
    experts once, a router per anchor; each point is that model with the routers mixed for its preference."""
    from paretoalign.trainers.hoe_config import HoEConfig  # lazy: `paretoalign --help` reads FrontConfig
    from paretoalign.trainers.hoe_trainer import HoETrainer

    cfg = HoEConfig(**{**train, "method": "hoe", "output_dir": str(out), "resume": resume, "overwrite": False})
    HoETrainer(cfg, accelerator=accelerator).train()
    return out


def _train_cgpo(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator) -> Path:
    """CGPO at one preference: the reward is Σ_k w_k·score_k (CGPO's ``--weights``) under the same judges at
    every point, so the front is the objectives' trade-off among answers that pass them [ours: the paper
    has no sweep].  A multi-task blend has a reward per task, so it is not swept."""
    from paretoalign.trainers.cgpo_config import CGPOConfig  # lazy: `paretoalign --help` reads FrontConfig
    from paretoalign.trainers.cgpo_trainer import CGPOTrainer

    cfg = CGPOConfig(**{**train, "method": "cgpo", "weights": list(preference), "output_dir": str(out),
                        "resume": resume, "overwrite": False, "normalize_weights": False})
    CGPOTrainer(cfg, accelerator=accelerator).train()
    return out


def _train_endpoint(method: str, preference: list[float], train: dict, out: Path, resume: bool, accelerator,
                    endpoint_method: str = "morlhf") -> Path:
    """One endpoint of a method made from K endpoints (Rewarded Soups): an ordinary run of
    ``endpoint_method`` with the one-hot ``preference``, through that method's own family."""
    return _FAMILY_POINT_MAKERS[get_method(endpoint_method).family](endpoint_method, preference, train, out, resume,
                                                                    accelerator)


# How one point of a front is made, per family: function(method, preference, train_options,
# run_folder, resume, accelerator) -> run folder.  Derived from the method table: a steerable
# method trains one model for the whole front and is evaluated per preference; a method made from
# endpoints (``ENDPOINT_FAMILIES``) trains one run per objective with this maker, and makes each
# point from them with its ``ENDPOINT_EVALUATORS`` entry.
_FAMILY_POINT_MAKERS: dict[str, Callable] = {"online": _train_online, "offline": _train_offline,
                                             "steerable": _train_dpa, "conditioned": _train_ric, "experts": _train_hoe,
                                             "constrained": _train_cgpo,
                                             **dict.fromkeys(ENDPOINT_FAMILIES, _train_endpoint)}
POINT_MAKERS: dict[str, Callable] = {m.name: _FAMILY_POINT_MAKERS[m.family] for m in METHODS if m.sweepable}
STEERING = {m.name for m in METHODS if m.steerable}


def _prepare_merge(method: str, endpoints: list, front: FrontConfig, train: dict) -> tuple[object, dict]:
    """Rewarded Soups, once per front: refuse endpoints that cannot be merged (different bases, tokenizers,
    LoRA targets, quantised weights); returns their shared base and what front.json's ``training`` says."""
    from paretoalign.merging import check_endpoints, parse_rank

    rank = _merge_rank(front, endpoints)
    return check_endpoints(endpoints, front.merge_mode, parse_rank(rank)), {"merge": {"mode": front.merge_mode, "rank": rank}}


def _evaluate_merge(method: str, preference: list[float], endpoints: list, context, folder: Path, front: FrontConfig,
                    train: dict) -> tuple[dict, dict]:
    """Rewarded Soups' point: the endpoints merged at ``preference`` into ``folder`` (kept when it already
    holds this very merge), evaluated like a run.  The evaluation cache is keyed on the merged folder's
    content, so a re-run loads no model."""
    from paretoalign.merging import merge_into

    ts = time.perf_counter()
    target, record, merged = merge_into(folder, endpoints, preference, front.merge_mode, _merge_rank(front, endpoints),
                                        checked=context, allow_download=bool(train.get("allow_download", False)))
    seconds = time.perf_counter() - ts
    ev = evaluate_target(_eval_config(front, str(target), folder / "eval.json", train), quiet=True)
    trunc = record.get("truncation") or {}
    extra = {"merge": {"mode": record["mode"], "output": record.get("output"), "rank": record.get("rank"),
                       "truncation_relative": trunc.get("relative"), "merged_now": merged,
                       "seconds": seconds if merged else 0.0}}
    return ev, extra


def _merge_rank(front: FrontConfig, endpoints: list):
    """A front's merges of LoRA endpoints are adapters (exact by default: a few MB per point, not a model)."""
    if front.merge_mode == "factors":
        return None
    if front.merge_rank is not None:
        return front.merge_rank
    return "exact" if endpoints and endpoints[0].kind == "lora" else None


class EndpointPoints(NamedTuple):
    """How a method made from K one-objective endpoints makes its points.

    ``prepare(method, endpoints, front, train) -> (context, info)``: once per front, on the resolved
    endpoints (:class:`paretoalign.merging.Endpoint`): check them (one error line for what cannot be
    combined), return what ``evaluate`` needs and a dict added to front.json's ``training``.
    ``evaluate(method, preference, endpoints, context, point_folder, front, train) -> (eval.json, extra)``:
    the point at ``preference``, evaluated with the front's prompts and decoding (``_eval_config``);
    ``extra`` is added to the point in front.json."""

    prepare: Callable
    evaluate: Callable


def _prepare_mod(method: str, endpoints: list, front: FrontConfig, train: dict) -> tuple[object, dict]:
    """MOD, once per front: the endpoints' sources for ``evaluate --mod`` (the decoder refuses, in one line,
    endpoints it cannot combine: different bases or tokenizers, one endpoint)."""
    return [f"{e.name}={e.source}" for e in endpoints], {"decoding": {"divergence": front.mod_divergence}}


def _evaluate_mod(method: str, preference: list[float], endpoints: list, sources, folder: Path, front: FrontConfig,
                  train: dict) -> tuple[dict, dict]:
    """MOD's point: the endpoints decoded together at ``preference`` (:class:`paretoalign.mod.MultiObjectiveDecoder`),
    evaluated with the front's prompts and decoding; cached on (endpoints, weights, divergence, decoding)."""
    cfg = _eval_config(front, "", folder / "eval.json", train, mod=list(sources), mod_weights=list(preference),
                       divergence=front.mod_divergence)
    return evaluate_target(cfg, quiet=True), {"decoding": {"divergence": front.mod_divergence}}


# Methods made from K endpoints, by name: merged (rs) or decoded together (mod) at each preference.
ENDPOINT_EVALUATORS: dict[str, EndpointPoints] = {"rs": EndpointPoints(_prepare_merge, _evaluate_merge),
                                                  "mod": EndpointPoints(_prepare_mod, _evaluate_mod)}


def _point_done(folder: Path) -> bool:
    return (folder / run_dir.FINAL / run_dir.POLICY).is_dir() and (folder / run_dir.SUMMARY_FILE).is_file()


# ---------------------------------------------------------------------------------------------
# the sweep
# ---------------------------------------------------------------------------------------------


def _objective_specs(train: dict) -> list:
    objs = train.get("objectives", ["sentiment", "length"])
    return split_objective_specs(objs) if isinstance(objs, str) else list(objs)


def _eval_config(front: FrontConfig, target: str, output: Path, train: dict, **extra):
    """The front's evaluation settings for one point (``extra``: more EvalConfig fields, e.g. MOD's)."""
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
        system_prompt=train.get("system_prompt"), use_chat_template=train.get("use_chat_template", True), **extra,
    )




def _prepare_front_dir(out: Path, saved: dict, front: FrontConfig) -> None:
    """Claim, lock and validate the sweep folder (one process; see trainers.checkpoint.decide_on_main)."""
    cfg_file = out / FRONT_CONFIG
    marker = run_dir.read_marker(out) if out.is_dir() else None
    ours = (marker or {}).get("kind") == "front" or (marker is None and cfg_file.is_file())  # or from before markers
    if front.resume:
        if not (ours and cfg_file.is_file()):
            raise RunDirError(f"--resume: {str(out)!r} holds no sweep to resume; drop --resume to start one")
        run_dir.lock(out)
        old = run_dir.load_config_file(cfg_file)
        diffs = []
        defaults = {f.name: f.default for f in dataclasses.fields(FrontConfig)}
        for part in ("front", "train"):
            a, b = old.get(part, {}), saved[part]
            for k in sorted(set(a) | set(b)):
                if part == "front" and k not in a and b.get(k) == defaults.get(k):
                    continue  # an option added since the sweep began, at its default: the sweep is the same
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
    from accelerate import Accelerator  # heavy: only when a sweep runs

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
    if front.endpoints is not None:  # endpoints given: checked before anything loads or trains
        _resolve_given_endpoints(front, train, len(specs))
    acc = accelerator or refuse_sharded(Accelerator())
    sharding.refuse(acc, "paretoalign front", "the sweep scores the trained points on the main process only")
    out = Path(front.output_dir)
    saved = {"front": config_to_dict(front), "train": train, "preferences": np.asarray(prefs).tolist()}
    ckpt_lib.decide_on_main(acc, lambda: _prepare_front_dir(out, saved, front))

    t0 = time.perf_counter()
    base = None
    if front.include_base and acc.is_main_process:
        progress(f"[front] evaluating the base model {train.get('model', 'tiny')} ...")
        base = evaluate_target(_eval_config(front, train.get("model", "tiny"), out / "base" / "eval.json", train), quiet=True)
    fronts = []
    for method in front.method:
        mdir = out if len(front.method) == 1 else out / method
        fronts.append(_sweep_method(method, prefs, front, train, mdir, acc, base, progress))
        if len(front.method) > 1 and acc.is_main_process:
            save_result(mdir / FRONT_FILE, fronts[-1])  # each sub-front also stands alone (compare, report)
    acc.wait_for_everyone()
    if not acc.is_main_process:
        return {}
    if len(fronts) == 1:
        result = fronts[0]
        result["wall_clock_s"] = time.perf_counter() - t0
        save_result(out / FRONT_FILE, result)
    else:
        result = compare_fronts(fronts, base=_base_point(base, front.num_samples) if base else None,
                                reference_point=front.reference_point,
                                reference_front=front.reference_front)
        result["wall_clock_s"] = time.perf_counter() - t0
        save_result(out / COMPARISON_FILE, result)
    if front.report:
        write_outputs(result, out, runs=runs_of(result, out), screenshot=front.screenshot)
    run_dir.unlock(out)
    return result


def _sweep_method(method, prefs, front: FrontConfig, train: dict, mdir: Path, acc, base, progress) -> dict:
    make = POINT_MAKERS[method]
    evals, t_train = [], {}
    folders = [mdir / "points" / preference_slug([float(x) for x in w]) for w in prefs]
    if get_method(method).family in ENDPOINT_FAMILIES:
        return _sweep_endpoints(method, prefs, front, train, mdir, acc, base, progress, folders)
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
        release_memory()  # the point's models are gone; without this the process grew ~0.5 GB per SmolLM2 point
        acc.wait_for_everyone()
    if not acc.is_main_process:
        return {}
    points = []
    for w, ev in zip(prefs, evals):
        w = [float(x) for x in w]
        folder = Path(ev["target"])
        summary = json.loads((folder / run_dir.SUMMARY_FILE).read_text()) if (folder / run_dir.SUMMARY_FILE).is_file() else {}
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
        progress(f"[front] {method} {i + 1}/{len(prefs)} {preference_label(w)}: evaluating the steered model")
        folder.mkdir(parents=True, exist_ok=True)
        # DPA: the direction w/|w| in its system message; RiC: the targets w maps to
        ecfg = _eval_config(front, str(model_dir), folder / "eval.json", train, preference=w)
        evals.append(evaluate_target(ecfg, quiet=True))
    acc.wait_for_everyone()
    summary = json.loads((model_dir / run_dir.SUMMARY_FILE).read_text()) if (model_dir / run_dir.SUMMARY_FILE).is_file() else {}
    points = [{"label": preference_label([float(x) for x in w]), "preference": [float(x) for x in w],
               "run_dir": str(model_dir.relative_to(mdir)), "direction": ev["direction"],
               **({"targets": ev["steering"]["targets"]} if (ev.get("steering") or {}).get("method") == "ric" else {}),
               **_point_stats(ev, front.num_samples), "win_rate": _win_rates(ev, base),
               "train_seconds": summary.get("seconds", t_train) if i == 0 else 0.0}
              for i, (w, ev) in enumerate(zip(prefs, evals))]
    # the points differ only in the direction written into the system message; the front's decoding
    # is the shared one, so it compares with fronts of other methods
    meta = {**evals[0], "decoding": {**evals[0]["decoding"], "system_prompt": train.get("system_prompt")}}
    return make_front(points, name=front.label or method, method=method, eval_meta=meta,
                      base=_base_point(base, front.num_samples) if base else None,
                      reference_point=front.reference_point, reference_front=front.reference_front)


def _resolve_given_endpoints(front: FrontConfig, train: dict, k: int) -> tuple[list, list]:
    """``--endpoints``: K endpoints in the order of --objectives (endpoint i was trained for objective i),
    resolved (nothing loaded) and checked; returns ([(name, source)], [Endpoint])."""
    from paretoalign.merging import parse_endpoints, resolve_endpoint

    pairs = parse_endpoints(front.endpoints)
    if len(pairs) != k:
        raise ConfigError(f"--endpoints lists {len(pairs)} endpoint(s) for {k} objectives: give one per objective, in "
                          "the order of --objectives")
    eps = [resolve_endpoint(src, name, bool(train.get("allow_download", False))) for name, src in pairs]
    _check_endpoint_order(eps, train)
    return pairs, eps


def _check_endpoint_order(eps: list, train: dict) -> None:
    """Given endpoints that are runs: trained from the front's --model (its base point and evaluation
    settings are that model's), and, when trained with one-hot weights, listed at their objective's place."""
    model = train.get("model")
    for e in eps:
        trained_from = (e.run_config or {}).get("model")
        if trained_from and model and str(trained_from) != str(model):
            raise ConfigError(f"endpoint {e.name!r} was trained from {trained_from!r}, the front's --model is {model!r}: "
                              f"pass --model {trained_from} (the base point and the endpoints must be one model)")
    for i, e in enumerate(eps):
        w = (e.run_config or {}).get("weights")
        if isinstance(w, list) and len(w) == len(eps) and sorted(float(x) for x in w) == [0.0] * (len(eps) - 1) + [1.0]:
            j = [float(x) for x in w].index(1.0)
            if j != i:
                raise ConfigError(f"endpoint {e.name!r} was trained with weights {w} (objective {j + 1}) but is listed "
                                  f"as endpoint {i + 1}: list --endpoints in the order of --objectives")


def _endpoints_dir(front: FrontConfig, mdir: Path) -> Path:
    """Where a sweep's K endpoints are trained: the first endpoint method's folder, so that ``rs,mod`` in one
    command trains them once and both fronts are made from the same runs."""
    first = next(m for m in front.method if get_method(m).family in ENDPOINT_FAMILIES)
    out = Path(front.output_dir)
    return (mdir if len(front.method) == 1 else out / first) / "endpoints"


def _sweep_endpoints(method, prefs, front: FrontConfig, train: dict, mdir: Path, acc, base, progress, folders) -> dict:
    """A method made from K one-objective endpoints: the endpoints are trained once (``mdir/endpoints/``,
    one ordinary run per objective with one-hot weights) or given (``--endpoints``); each preference's
    point is made and evaluated from them by ``ENDPOINT_EVALUATORS[method]``."""
    k = len(prefs[0])
    onehots = [[1.0 if j == i else 0.0 for j in range(k)] for i in range(k)]
    t_train: dict[int, float] = {}
    if front.endpoints is not None:
        pairs, _ = _resolve_given_endpoints(front, train, k)
        trained = "given (--endpoints)"
    else:
        dirs = [_endpoints_dir(front, mdir) / preference_slug(e) for e in onehots]
        state = ["done" if _point_done(d) else "resume" if run_dir.holds_run(d) else "new" for d in dirs]
        acc.wait_for_everyone()
        for i, (e, d, st) in enumerate(zip(onehots, dirs, state)):
            tag = f"[front] {method} endpoint {i + 1}/{k} {preference_label(e)}"
            if st == "done":
                progress(f"{tag}: trained already")
                continue
            progress(f"{tag}: {'resuming' if st == 'resume' else 'training'} ({front.endpoint_method}) -> {d}")
            ts = time.perf_counter()
            POINT_MAKERS[method](method, e, train, d, st == "resume", acc, endpoint_method=front.endpoint_method)
            t_train[i] = time.perf_counter() - ts
            release_memory()
        pairs = [(preference_slug(e), str(d)) for e, d in zip(onehots, dirs)]
        trained = f"here ({front.endpoint_method}, one-hot weights)"
    if not acc.is_main_process:
        acc.wait_for_everyone()
        return {}
    from paretoalign.merging import resolve_endpoint

    allow = bool(train.get("allow_download", False))
    eps = [resolve_endpoint(src, name, allow) for name, src in pairs]
    maker = ENDPOINT_EVALUATORS[method]
    context, info = maker.prepare(method, eps, front, train)
    evals, extras = [], []
    for i, (w, folder) in enumerate(zip(prefs, folders)):
        w = [float(x) for x in w]
        progress(f"[front] {method} {i + 1}/{len(prefs)} {preference_label(w)}: evaluating the endpoints' combination")
        folder.parent.mkdir(parents=True, exist_ok=True)
        ev, extra = maker.evaluate(method, w, eps, context, folder, front, train)
        evals.append(ev)
        extras.append(extra)
    acc.wait_for_everyone()
    names = evals[0]["names"]
    endpoints = []
    for i, (e, (_, src)) in enumerate(zip(eps, pairs)):
        summary = run_dir.read_json_object(e.run / run_dir.SUMMARY_FILE) \
            if e.run is not None and (e.run / run_dir.SUMMARY_FILE).is_file() else {}
        where = Path(e.run) if e.run is not None else Path(src)
        endpoints.append({
            "objective": names[i], "name": e.name, "kind": e.kind,
            # relative to this front's folder when inside the sweep (another method's endpoints: ../rs/...)
            "run_dir": os.path.relpath(where, mdir) if where.resolve().is_relative_to(Path(front.output_dir).resolve())
            else str(where),
            "method": (e.run_config or {}).get("method"), "weights": (e.run_config or {}).get("weights"),
            "train_seconds": summary.get("seconds", t_train.get(i)), "trained_now": i in t_train,
        })
    points = [{"label": preference_label(w), "preference": [float(x) for x in w],
               "run_dir": str(f.relative_to(mdir)), **_point_stats(ev, front.num_samples),
               "win_rate": _win_rates(ev, base), "train_seconds": 0.0, **extra}
              for w, f, ev, extra in zip(prefs, folders, evals, extras)]
    result = make_front(points, name=front.label or method, method=method, eval_meta=evals[0],
                        base=_base_point(base, front.num_samples) if base else None,
                        reference_point=front.reference_point, reference_front=front.reference_front)
    secs = [e["train_seconds"] for e in endpoints]
    result["training"] = {
        "cost": "one training per objective", "trainings": k, "endpoints_trained": trained,
        "endpoint_method": front.endpoint_method if front.endpoints is None else None,
        "train_seconds": sum(secs) if all(isinstance(x, (int, float)) for x in secs) else None,
        "per_point": "made from the endpoints at the preference (no training)",
        **info,
        "endpoints": endpoints,
    }
    return result


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
    if base["prompts_sha256"] != ev["prompts_sha256"]:
        raise FrontError("the base model and a point were evaluated on different prompts")
    return win_rates(ev["scores"], base["scores"], ev["names"], ev["signs"])


# ---------------------------------------------------------------------------------------------
# fronts, comparisons, indicators
# ---------------------------------------------------------------------------------------------

__all__ = ["FrontConfig", "build_front_config", "run_front", "POINT_MAKERS"]
