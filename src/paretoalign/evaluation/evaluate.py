"""``paretoalign evaluate``: one evaluation path for every method and for the base model.

A target is a run folder (its ``final/`` policy), one of its checkpoints
(``RUN/checkpoints/step-N``), or a model (a folder, a cached Hugging Face id, or a built-in name);
or, with ``--mod``, K such endpoints decoded together by MOD (multi-objective decoding,
:mod:`paretoalign.mod`) under ``--mod-weights`` and ``--divergence`` (objectives, prompts and decoding
default to the first endpoint's run; the cache key holds every endpoint's fingerprint, the weights
and the rule, so another weight is another evaluation).
The target generates one completion per held-out prompt with a fixed seed and fixed decoding
settings, every objective scores it, and ``eval.json`` records the per-objective mean, standard
error and quantiles, the decoding settings, the prompt set's hash, sample completions and, against
a baseline (by default a run's base model), per-objective win rates with 95% intervals.

Caching: completions are keyed by (model fingerprint, prompts hash, decoding settings) and scores
by (that key, objective description), in ``$PARETOALIGN_CACHE/evals`` (default
``~/.cache/paretoalign/evals``).  Re-evaluating an unchanged target loads neither the model nor
the scorers; adding an objective scores only that objective.  The fingerprint hashes the weight
files, so a retrained run is re-evaluated.  Limitation: an objective is keyed by its spec, so a
reward model changed in place under the same path (or a non-deterministic ``python:`` objective)
needs ``--no-cache``.  Targets and their fingerprints: :mod:`.targets`; the cache: :mod:`.cache`.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from paretoalign import run_dir
from paretoalign.console import table
from paretoalign.data.prompts import load_prompts, prompts_hash, split_prompts
from paretoalign.errors import ConfigError
from paretoalign.evaluation import scoring
from paretoalign.evaluation.cache import EvalCache, cache_key, eval_cache_dir, objective_key
from paretoalign.evaluation.config import EvalConfig
from paretoalign.evaluation.records import describe_prompts
from paretoalign.evaluation.scoring import summarize_scores, win_rates
from paretoalign.evaluation.targets import (
    Target,
    default_output,
    load_target,
    resolve_mod_target,
    resolve_target,
    target_fingerprint,
)
from paretoalign.models import (
    build_tiny_model,
    build_tiny_tokenizer,
    check_batch_fits,
    kv_bytes_per_token,
    load_tokenizer,
)
from paretoalign.objectives import build_objective_set
from paretoalign.objectives.base import check_scores
from paretoalign.preferences import (
    DEFAULT_DIRECTION_TEMPLATE,
    conditioned_prompt,
    direction_prompt,
    validate_direction,
    validate_weights,
)
from paretoalign.ric import RewardStats, clip_targets, map_preference, reward_prompt
from paretoalign.rollout import MAX_PROMPT_LENGTH, count_overlong, render_prompt

EVAL_FORMAT = 2  # 2: inverse-CDF sampling of the packed decode loop (other samples for a seed)
# Settings that change the completions; anything else (objectives, baseline...) does not.
_GEN_KEYS = ("seed", "batch_size", "max_new_tokens", "temperature", "top_p", "do_sample",
             "use_chat_template", "system_prompt", "generation_backend")


# ---------------------------------------------------------------------------------------------
# settings resolved against the run
# ---------------------------------------------------------------------------------------------


def resolved_settings(cfg: EvalConfig, t: Target) -> dict:
    """The effective prompt, objective and decoding settings (run values fill the ``None``s)."""
    rc = t.run_config or {}

    def pick(value, key, default):
        return value if value is not None else rc.get(key, default)

    objectives = cfg.objectives if cfg.objectives is not None else rc.get("objectives")
    if not objectives:
        raise ConfigError(f"--objectives is required to evaluate the model {t.name!r} (a run folder knows its own)")
    if len(objectives) < 1:
        raise ConfigError("no objectives to evaluate")
    return {
        "objectives": list(objectives),
        "prompts": pick(cfg.prompts, "prompts", "builtin"),
        "prompt_column": pick(cfg.prompt_column, "prompt_column", "prompt"),
        "split": cfg.split,
        "heldout_fraction": float(pick(cfg.heldout_fraction, "heldout_fraction", 0.15)),
        "split_seed": int(cfg.split_seed if cfg.split_seed is not None else rc.get("seed", 0)),
        "num_prompts": cfg.num_prompts,
        "allow_download": cfg.allow_download,  # a Hub dataset as --prompts may be fetched too
        "decoding": {
            "seed": cfg.seed,
            "batch_size": cfg.batch_size,
            "max_new_tokens": int(pick(cfg.max_new_tokens, "max_new_tokens", 48)),
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "do_sample": cfg.do_sample,
            "use_chat_template": bool(pick(cfg.use_chat_template, "use_chat_template", True)),
            "system_prompt": pick(cfg.system_prompt, "system_prompt", None),
            "generation_backend": cfg.generation_backend,
        },
    }


def eval_prompts(settings: dict) -> list:
    prompts = load_prompts(settings["prompts"], column=settings["prompt_column"], allow_download=bool(settings.get("allow_download", False)))
    if settings["split"] != "all":
        train, held = split_prompts(prompts, settings["heldout_fraction"], settings["split_seed"])
        prompts = held if settings["split"] == "heldout" else train
    if settings["num_prompts"]:
        prompts = prompts[: settings["num_prompts"]]
    return prompts


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------


def direction_system_prompt(cfg: EvalConfig, t: Target, names: list) -> tuple[str, list]:
    """The system message steering a DPA model toward ``cfg.direction`` (and the unit direction): the
    names and template the run was trained with (its final/paretoalign.json), else the evaluated ones."""
    meta = {}
    if t.run is not None and (t.run / run_dir.FINAL / run_dir.FINAL_META).is_file():
        meta = json.loads((t.run / run_dir.FINAL / run_dir.FINAL_META).read_text())
    dnames = meta.get("direction_names") or names
    template = cfg.direction_template or meta.get("direction_template") or (t.run_config or {}).get("direction_template") \
        or DEFAULT_DIRECTION_TEMPLATE
    v = validate_direction(cfg.direction, len(dnames), dnames)
    return direction_prompt(v, dnames, template), v.tolist()


STEERED_BY_PREFERENCE = ("dpa", "ric", "hoe")  # the run methods --preference steers


def preference_steering(cfg: EvalConfig, t: Target, names: list) -> dict | None:
    """What ``--preference``/``--targets`` mean for the target (None: not given): for a DPA run the
    direction w/|w|; for a RiC run the target scores (the run's mapping of w with its saved score
    statistics, or the given targets, clipped to the trained range)."""
    if cfg.preference is None and cfg.targets is None:
        return None
    method = (t.run_config or {}).get("method") if t.kind in ("run", "checkpoint") else None
    if method not in STEERED_BY_PREFERENCE:
        what = f"a {method} run" if method else f"a {t.kind}"
        raise ConfigError(f"--preference/--targets steer a model trained for every preference "
                          f"({', '.join(STEERED_BY_PREFERENCE)} runs); {t.name!r} is {what}")
    if method in ("dpa", "hoe"):
        if cfg.targets is not None:
            raise ConfigError(f"--targets are RiC target scores; steer a {method.upper()} run with --preference")
        if method == "hoe":  # its routers mixed for w (level 3 of HoE)
            return {"method": "hoe", "preference": validate_weights(cfg.preference, len(names), names,
                                                                     normalize=True).tolist()}
        validate_weights(cfg.preference, len(names), names, normalize=True)
        return {"method": "dpa", "preference": [float(x) for x in cfg.preference]}
    stats = RewardStats.load(t.policy_dir.parent)
    mapping = cfg.mapping or (t.run_config or {}).get("mapping", "linf")
    if cfg.targets is not None:
        if len(cfg.targets) != stats.k:
            raise ConfigError(f"--targets needs {stats.k} values ({', '.join(stats.names)}); got {len(cfg.targets)}")
        preference, raw = None, list(cfg.targets)
    else:
        preference = validate_weights(cfg.preference, stats.k, stats.names, normalize=True).tolist()
        raw = map_preference(preference, stats.low, stats.high, mapping).tolist()
    targets = clip_targets(raw, stats).tolist()
    return {"method": "ric", "preference": preference, "mapping": None if preference is None else mapping,
            "targets": targets, "target_names": list(stats.names)}


def evaluate_target(cfg: EvalConfig, write: bool = True, quiet: bool = False) -> dict:
    """Evaluate ``cfg.target`` (see the module docs); returns the eval.json content (also written
    to ``cfg.output`` or the default place unless ``write`` is false)."""
    t0 = time.perf_counter()
    t = resolve_mod_target(cfg.mod, cfg.mod_weights, cfg.divergence) if cfg.mod is not None else resolve_target(cfg.target)
    settings = resolved_settings(cfg, t)
    tokenizer = load_tokenizer(t.base_model if t.kind != "model" else t.name, cfg.allow_download)
    objectives = build_objective_set(settings["objectives"], tokenizer, cfg.nan_policy)
    names, desc = list(objectives.names), objectives.describe()
    steering = preference_steering(cfg, t, names)
    if steering is not None and steering["method"] == "dpa":  # DPA's direction is w/|w|
        cfg = replace(cfg, direction=steering["preference"], preference=None)
    if steering is not None and steering["method"] == "hoe":
        t = replace(t, preference=steering["preference"])
    direction = None
    if cfg.direction is not None:
        settings["decoding"]["system_prompt"], direction = direction_system_prompt(cfg, t, names)
    prompts = eval_prompts(settings)
    if not prompts:
        raise ConfigError(f"the {settings['split']} split of {settings['prompts']!r} has no prompts")
    p_hash = prompts_hash(prompts)
    if direction is not None:  # exactly as DPA trained: the direction replaces any system message
        prompts = [conditioned_prompt(p, settings["decoding"]["system_prompt"]) for p in prompts]
        long = count_overlong(prompts, tokenizer, settings["decoding"]["use_chat_template"])
        if long:
            warnings.warn(f"{long} of {len(prompts)} prompts with the direction exceed {MAX_PROMPT_LENGTH} tokens; "
                          "truncation cuts their direction (the model is not steered on them)", RuntimeWarning, stacklevel=2)
    plain = None
    if steering is not None and steering["method"] == "ric":  # the targets end the user's message
        plain, prompts = prompts, [reward_prompt(p, steering["targets"]) for p in prompts]
        long = count_overlong(prompts, tokenizer, settings["decoding"]["use_chat_template"])
        if long:
            warnings.warn(f"{long} of {len(prompts)} prompts with their score tags exceed {MAX_PROMPT_LENGTH} tokens; "
                          "truncation cuts their tags", RuntimeWarning, stacklevel=2)
    decoding = settings["decoding"]
    endpoints = len(t.mod["endpoints"]) if t.kind == "mod" else 1  # MOD holds K caches
    check_batch_fits(decoding["batch_size"] * endpoints, MAX_PROMPT_LENGTH + decoding["max_new_tokens"],
                     kv_bytes_per_token(t.base_model, cfg.allow_download), "--batch-size (generation)")
    fingerprint = target_fingerprint(t, cfg.allow_download)
    gen_key = cache_key({"format": EVAL_FORMAT, "model": fingerprint, "prompts": p_hash,
                         "decoding": {k: decoding[k] for k in _GEN_KEYS},
                         **({"ric_targets": steering["targets"]} if plain is not None else {}),
                         **({"hoe_preference": t.preference} if t.hoe else {})})
    cache = EvalCache(gen_key, cfg.cache)
    seconds = {"generate": 0.0, "score": 0.0}
    cached = {"completions": True, "scores": []}

    if "completions" not in cache.data or len(cache.data["completions"]) != len(prompts):
        cached["completions"] = False
        model, tok = load_target(t, cfg.allow_download)
        if not quiet:
            print(f"[evaluate] {t.name}: generating on {len(prompts)} prompts ...", flush=True)
        tg = time.perf_counter()
        generate = scoring.generate_mod_completions if t.kind == "mod" else scoring.generate_completions
        texts, completions = generate(  # via the module: tests replace it there
            model, tok, prompts, **{k: decoding[k] for k in _GEN_KEYS},
        )
        seconds["generate"] = time.perf_counter() - tg
        if plain is not None:  # scored (and recorded) on the user's prompt, without the tags, as RiC trains
            texts = [render_prompt(p, tok, decoding["use_chat_template"], decoding["system_prompt"]) for p in plain]
        cache.data = {"completions": completions, "prompt_texts": texts, "scores": {}}
    texts, completions = cache.data["prompt_texts"], cache.data["completions"]

    cols = []
    ts = time.perf_counter()
    for obj, d in zip(objectives.objectives, desc):
        key = objective_key(d)
        col = cache.data["scores"].get(key)
        if col is None or len(col) != len(completions):
            col = [float(x) for x in obj.score(texts, completions).tolist()]
            cache.data["scores"][key] = col
        else:
            cached["scores"].append(d["name"])
        cols.append(torch.tensor(col, dtype=torch.float64))
    seconds["score"] = time.perf_counter() - ts
    cache.save()
    scores = torch.stack(cols, dim=1)
    check_scores(scores, names, completions, cfg.nan_policy)  # 'fail': a clear error naming the objective

    result = {
        "paretoalign_eval": EVAL_FORMAT,
        "target": t.name,
        "kind": t.kind,
        "model": {"base_model": t.base_model, "fingerprint": fingerprint,
                  "policy": str(t.policy_dir) if t.policy_dir else None,
                  "method": "mod" if t.kind == "mod" else (t.run_config or {}).get("method"),
                  "weights": t.mod["weights"] if t.kind == "mod" else (t.run_config or {}).get("weights")},
        "mod": _mod_record(t, cfg.allow_download) if t.kind == "mod" else None,
        "objectives": desc,
        "names": names,
        "signs": [float(s) for s in objectives.signs.tolist()],
        "prompts": {k: settings[k] for k in ("prompts", "prompt_column", "split", "heldout_fraction", "split_seed", "num_prompts")}
        | {"n": len(prompts), "sha256": p_hash},
        "prompts_sha256": p_hash,
        "decoding": decoding,
        "direction": direction,
        "steering": steering,
        "cache_key": gen_key,
        "summary": summarize_scores(scores, names),
        "scores": scores.tolist(),
        "prompt_texts": texts,
        "completions": completions,
        "samples": [
            {"prompt": p, "completion": c, "scores": s}
            for p, c, s in list(zip(texts, completions, scores.tolist()))[: cfg.num_samples]
        ],
        "baseline": None,
        "win_rate": None,
        "cached": cached,
        "seconds": seconds,
    }

    baseline = cfg.baseline
    if baseline == "auto":
        baseline = t.base_model if t.kind != "model" else "none"
    if baseline != "none":
        # The baseline sees exactly the same prompts, objectives and decoding.
        bcfg = replace(
            cfg, target=baseline, baseline="none", output=None, objectives=settings["objectives"],
            prompts=settings["prompts"], prompt_column=settings["prompt_column"],
            heldout_fraction=settings["heldout_fraction"], split_seed=settings["split_seed"],
            max_new_tokens=decoding["max_new_tokens"], use_chat_template=decoding["use_chat_template"],
            system_prompt=decoding["system_prompt"], direction=None,  # the steered system message, as text
            preference=None, targets=None, mapping=None,  # the base model is not steered
            mod=None, mod_weights=None, divergence="reverse_kl",
        )
        if baseline == t.base_model and t.base_model == "tiny":
            # a run's tiny base is rebuilt from the run's seed: evaluate it as that model
            base = _evaluate_tiny_base(bcfg, t.seed, quiet)
        else:
            base = evaluate_target(bcfg, write=False, quiet=quiet)
        if base["prompts_sha256"] != p_hash:
            raise ConfigError("the baseline was evaluated on different prompts; this is a bug, please report it")
        result["baseline"] = {"target": baseline, "fingerprint": base["model"]["fingerprint"],
                              "summary": base["summary"], "scores": base["scores"],
                              "completions": base["completions"]}
        result["win_rate"] = win_rates(scores, torch.tensor(base["scores"]), names, objectives.signs.tolist())
    result["seconds"]["total"] = time.perf_counter() - t0
    if write:
        out = Path(cfg.output) if cfg.output else default_output(t)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(out)
        result["output"] = str(out)
    return result


def _mod_record(t: Target, allow_download: bool) -> dict:
    """eval.json's account of a MOD target: each endpoint (name, source, fingerprint, method, weights, β)."""
    eps = []
    for name, e, r in zip(t.mod["names"], t.mod["endpoints"], t.mod["resolved"]):
        rc = e.run_config or {}
        eps.append({"name": name, "target": e.name, "kind": e.kind, "policy": r.policy, "adapter": r.adapter,
                    "base_model": r.base, "fingerprint": target_fingerprint(e, allow_download),
                    "method": rc.get("method"), "weights": rc.get("weights"), "beta": r.beta})
    return {"endpoints": eps, "weights": t.mod["weights"], "divergence": t.mod["divergence"],
            "paper": "Shi et al. 2024, Decoding-Time Language Model Alignment with Multiple Objectives (arXiv 2406.18853)"}


def _evaluate_tiny_base(bcfg: EvalConfig, seed: int, quiet: bool) -> dict:
    """The tiny base model of a run with seed ``seed`` (the name 'tiny' alone means seed 0)."""
    if seed == 0:
        return evaluate_target(bcfg, write=False, quiet=quiet)
    # Materialise it once in the cache so it has a folder, a fingerprint and cached completions.
    folder = eval_cache_dir() / f"tiny-base-seed{seed}"
    if not (folder / "config.json").is_file():
        tok = build_tiny_tokenizer()
        model = build_tiny_model(tok, seed=seed)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent))
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return evaluate_target(replace(bcfg, target=str(folder)), write=False, quiet=quiet)


def print_eval(result: dict) -> None:
    """The per-objective table of an evaluation (with win rates when there is a baseline)."""
    rows = []
    for name in result["names"]:
        s = result["summary"][name]
        row = [name, s["mean"], s["stderr"], s.get("quantiles", {}).get("q50", float("nan"))]
        if result.get("win_rate"):
            w = result["win_rate"][name]
            base = result["baseline"]["summary"][name]["mean"]
            row += [base, f"{w['win_rate']:.2f} [{w['ci95'][0]:.2f}, {w['ci95'][1]:.2f}]"]
        rows.append(row)
    headers = ["objective", "mean", "s.e.", "median"]
    if result.get("win_rate"):
        headers += ["baseline mean", "win rate [95% CI]"]
    hit = "cached" if result["cached"]["completions"] else f"{result['seconds']['generate']:.1f} s generating"
    print(f"{result['target']} ({result['kind']}): {describe_prompts(result['prompts'])}, sha256 "
          f"{result['prompts_sha256'][:12]}, {hit}")
    if result.get("direction") is not None:
        print("direction " + ", ".join(f"{x:.3f}" for x in result["direction"])
              + f" (system message: {result['decoding']['system_prompt']!r})")
    st = result.get("steering") or {}
    if st.get("method") == "hoe":
        print("HoE: routers mixed for the preference " + ", ".join(f"{n}={x:.3f}" for n, x in zip(result["names"], st["preference"])))
    if st.get("method") == "ric":
        pref = f"preference {', '.join(f'{x:g}' for x in st['preference'])} -> ({st['mapping']}) " if st.get("preference") else ""
        print(f"RiC: {pref}targets " + ", ".join(f"{n}={x:.1f}" for n, x in zip(st["target_names"], st["targets"])))
    print(table(headers, rows))
    if result.get("output"):
        print(f"-> {result['output']}")
