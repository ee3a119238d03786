"""The ``paretoalign`` command line.

    paretoalign train --method pama --model tiny --objectives sentiment,length --max-steps 2 --output-dir runs/smoke
    paretoalign train --config examples/pama_smollm2.yaml --max-steps 5
    paretoalign evaluate runs/smoke                       # held-out scores + win rates vs the base model
    paretoalign front --method pama,morlhf --preferences grid:3 --model tiny --max-steps 2 --output-dir fronts/smoke
    paretoalign compare fronts/a fronts/b --output-dir fronts/a-vs-b
    paretoalign pairs --model tiny --objectives sentiment,length --num-completions 4 --output-dir data/pairs
    paretoalign train --method modpo --pairs data/pairs --objectives sentiment,length --weights 0.7,0.3
    paretoalign reward-model train --ratings data/helpsteer2.jsonl --backbone smollm2-135m-instruct --output-dir rm/
    paretoalign reward-model score rm/ --input pairs.jsonl
    paretoalign demo
    paretoalign generate runs/smoke --prompts prompts.jsonl --output answers.jsonl   # answers + every objective's score
    paretoalign chat runs/smoke                            # talk to the trained policy (streaming)
    paretoalign merge --endpoints a=runs/a,b=runs/b --weights 0.3,0.7 --output-dir merged/   # Rewarded Soups
    paretoalign serve fronts/smoke                         # a preference-slider web app on 127.0.0.1
    paretoalign objectives

User errors print one ``error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from paretoalign.console import VERBOSE_ENV, quiet_deepspeed_cpu_notice
from paretoalign.data.hub_datasets import OFFLINE_BY_DEFAULT_ENV
from paretoalign.errors import ParetoAlignError


def _train_parser(sub) -> None:
    from paretoalign.config_utils import add_config_arguments
    from paretoalign.trainers.methods import FAMILY_CLASSES, METHODS, _load
    from paretoalign.trainers.options import GROUP_ORDER

    listing = "; ".join(f"{fam}: {', '.join(m.name for m in METHODS if m.family == fam)}" for fam in FAMILY_CLASSES)
    p = sub.add_parser(
        "train",
        help=f"Train a policy on several objectives ({listing}).",
        description="Train a policy on several objectives. Flags override values from --config. Online "
        "methods generate and score; offline methods read --pairs; steerable methods train one model for "
        "every preference. Methods: " + "; ".join(f"{m.name} ({m.summary})" for m in METHODS) + ".",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    add_config_arguments(p, [_load(cfg) for cfg, _ in FAMILY_CLASSES.values()],
                         choices={"method": tuple(m.name for m in METHODS)}, own_heading=_family_heading,
                         group_order=GROUP_ORDER, helps={"method": _method_help()})
    p.set_defaults(func=_cmd_train)


def train_config(yaml_path=None, overrides: dict | None = None):
    """The config of the method's family (the method from the flag, else the YAML, else 'pama')."""
    from paretoalign.config_utils import build_config, load_yaml
    from paretoalign.trainers.methods import get_method

    overrides = overrides or {}
    method = overrides.get("method") or (load_yaml(yaml_path).get("method") if yaml_path else None) or "pama"
    return build_config(get_method(str(method)).config_class, yaml_path, overrides)


def _cmd_train(args) -> int:
    from paretoalign.console import print_summary
    from paretoalign.trainers.methods import get_method

    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "func", "command")}
    cfg = train_config(args.config, overrides)
    trainer = get_method(cfg.method).trainer_class(cfg)
    summary = trainer.train()
    if trainer.accelerator.is_main_process:
        print_summary(summary, cfg.output_dir)
    return 0


def _evaluate_parser(sub) -> None:
    from paretoalign.config_utils import add_dataclass_arguments
    from paretoalign.evaluation.config import EvalConfig

    p = sub.add_parser(
        "evaluate",
        help="Generate on held-out prompts and score every objective; writes eval.json (cached).",
        description="Evaluate a run folder, a checkpoint or a model on held-out prompts with fixed seeds "
        "and decoding settings. Writes eval.json: per-objective mean, standard error, quantiles, "
        "samples, and win rates against the base model.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("target", nargs="?", default=argparse.SUPPRESS,
                   help="Run folder, checkpoint folder (RUN/checkpoints/step-N), or model (none with --mod).")
    p.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    p.add_argument("--no-cache", dest="cache", action="store_false", default=argparse.SUPPRESS,
                   help="Recompute completions and scores even if cached.")
    add_dataclass_arguments(p, EvalConfig)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    from paretoalign.config_utils import build_config
    from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target, print_eval

    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "func", "command")}
    cfg = build_config(EvalConfig, args.config, overrides)
    result = evaluate_target(cfg)
    print_eval(result)
    if cfg.mod is None:
        _refresh_card(cfg.target)
    return 0


def _refresh_card(target: str) -> None:
    """A run's model card (final/policy/README.md) shows the newest held-out results after evaluate."""
    from paretoalign.evaluation.targets import resolve_target
    from paretoalign.model_card import refresh_model_card

    t = resolve_target(target)
    if t.kind == "run" and t.run is not None:
        refresh_model_card(t.run)


def _method_help() -> str:
    from paretoalign.trainers.methods import METHODS

    return "The method (default: pama): " + "; ".join(f"'{m.name}' ({m.family}): {m.summary}" for m in METHODS) + "."


def _family_heading(cls) -> str:
    """``--help`` heading of the options only one family's config has."""
    from paretoalign.trainers.methods import FAMILY_CLASSES, METHODS

    for fam, (cfg, _) in FAMILY_CLASSES.items():
        if cfg.endswith(":" + cls.__name__):
            return f"{fam} methods ({', '.join(m.name for m in METHODS if m.family == fam)})"
    return f"{cls.__name__} options"


def _front_parser(sub) -> None:
    from paretoalign.config_utils import add_config_arguments
    from paretoalign.fronts.config import FRONT_SETS, FrontConfig
    from paretoalign.trainers.methods import FAMILY_CLASSES, _load
    from paretoalign.trainers.options import GROUP_ORDER

    p = sub.add_parser(
        "front",
        help="Train at several preference vectors, evaluate each, and write the Pareto front, hypervolume, plots and report.",
        description="Sweep preference vectors (one ordinary run folder per point), evaluate every point and the "
        "base model on the same held-out prompts, and write front.json, front.png, report.html. Training "
        "options are those of `paretoalign train`; --config YAML may hold both kinds of options.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default=None, help="YAML file of front and training options (flags given here override it).")
    add_config_arguments(p, [FrontConfig], own_heading=lambda c: "front sweep")
    front_fields = {f for f in FrontConfig.__dataclass_fields__}
    add_config_arguments(p, [_load(cfg) for cfg, _ in FAMILY_CLASSES.values()],
                         exclude=set(FRONT_SETS) | front_fields, own_heading=_family_heading,
                         group_order=GROUP_ORDER[1:])
    p.set_defaults(func=_cmd_front)


def _cmd_front(args) -> int:
    from paretoalign.fronts.front import print_front
    from paretoalign.fronts.sweep import build_front_config, run_front

    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "func", "command")}
    front, train = build_front_config(args.config, overrides)
    result = run_front(front, train)
    if result:
        print_front(result)
        print(f"-> {front.output_dir}")
    return 0


def _compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="Compare fronts made by separate commands: one shared reference point, plots and report.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("fronts", nargs="+", help="Front folders (or front.json files).")
    p.add_argument("--output-dir", required=True, help="Where comparison.json, the plots and report.html go.")
    p.add_argument("--labels", default=None, help="Names of the fronts, comma-separated (default: their own).")
    p.add_argument("--reference-point", default=None, help="Shared hypervolume reference point (default: automatic).")
    p.add_argument("--reference-front", default=None, help="JSON file of known optimal points: adds IGD and IGD+.")
    p.add_argument("--screenshot", action="store_true", help="Also render report.html to report.png with headless Chromium.")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    from paretoalign.fronts.front import compare_dirs, print_front

    result = compare_dirs(args.fronts, args.output_dir, reference_point=args.reference_point,
                          reference_front=args.reference_front, labels=args.labels, screenshot=args.screenshot)
    print_front(result)
    print(f"-> {args.output_dir}")
    return 0


def _report_parser(sub) -> None:
    p = sub.add_parser("report", help="Redraw the plots and report.html of a front or comparison folder.")
    p.add_argument("folder", help="A folder holding front.json or comparison.json.")
    p.add_argument("--screenshot", action="store_true", help="Also render report.html to report.png with headless Chromium.")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from pathlib import Path

    from paretoalign.fronts.front import load_front_result, runs_of, write_outputs

    out = Path(args.folder)
    result = load_front_result(out)
    files = write_outputs(result, out, runs=runs_of(result, out), screenshot=args.screenshot)
    for k, v in files.items():
        print(f"{k}: {v}")
    return 0


def _demo_parser(sub) -> None:
    import inspect

    from paretoalign.demo import METHODS, run_demo

    # run_demo's signature is the one place the demo's defaults live
    D = {k: v.default for k, v in inspect.signature(run_demo).parameters.items()}
    p = sub.add_parser(
        "demo",
        help="The main job on the bundled SmolLM2-135M-Instruct: PAMA on sentiment and conciseness, before/after "
        "on held-out prompts with paired 95%% intervals.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", default=D["model"], help="Policy to align.")
    p.add_argument("--method", default=D["method"], choices=METHODS, help="Online method (from the method table).")
    p.add_argument("--paper", action="store_true",
                   help="PAMA as the paper reads: K value heads + GAE, one weight vector per batch, ratio against the "
                   "reference, KL 0.2 (default: the demo's recipe; README 'The demo' says why).")
    p.add_argument("--steps", type=int, default=D["steps"], help="Training steps.")
    p.add_argument("--eval-prompts", type=int, default=D["eval_prompts"], help="Held-out prompts evaluated before and after (the first N of the run's held-out split, the one `paretoalign evaluate RUN` scores; 53 is all of it).")
    p.add_argument("--eval-samples", type=int, default=D["eval_samples"], help="Completions per held-out prompt (averaged per prompt).")
    p.add_argument("--samples", type=int, default=D["samples"], help="Sample completions shown before/after.")
    p.add_argument("--output-dir", default=None, help="Folder for run/ and demo.json (default: runs/demo-<timestamp>).")
    p.add_argument("--seed", type=int, default=D["seed"], help="Random seed.")
    p.add_argument("--batch-size", type=int, default=D["batch_size"], help="Prompts per step.")
    p.add_argument("--num-generations", type=int, default=D["num_generations"], help="Completions per prompt.")
    p.add_argument("--max-new-tokens", type=int, default=D["max_new_tokens"], help="Completion length cap (training and evaluation).")
    p.add_argument("--learning-rate", type=float, default=D["learning_rate"], help="LoRA learning rate.")
    # rollout.BACKENDS, spelled out: importing rollout imports torch, which --help must not (tests/test_cli.py)
    p.add_argument("--generation-backend", default=D["generation_backend"], choices=("hf", "hf-generate", "vllm"),
                   help="Sampling loop, in training and in the before/after answers: hf (paretoalign's packed loop), "
                   "hf-generate (transformers' generate) or vllm (a colocated vLLM engine; README 'Sampling, "
                   "precision and scale').")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args) -> int:
    from paretoalign.demo import run_demo

    run_demo(
        model=args.model, method=args.method, steps=args.steps, eval_prompts=args.eval_prompts,
        eval_samples=args.eval_samples, samples=args.samples, output_dir=args.output_dir, seed=args.seed,
        paper=args.paper, batch_size=args.batch_size, num_generations=args.num_generations,
        max_new_tokens=args.max_new_tokens, learning_rate=args.learning_rate,
        generation_backend=args.generation_backend,
    )
    return 0


def _pairs_parser(sub) -> None:
    from paretoalign.config_utils import add_dataclass_arguments
    from paretoalign.pairs_config import PairsConfig

    p = sub.add_parser(
        "pairs",
        help="Make preference pairs by sampling a model and scoring the completions with the objectives.",
        description="Sample completions on the training prompts, score every objective, pair them up and write a "
        "dataset folder (pairs.jsonl, card.json, README.md) for the offline methods.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    add_dataclass_arguments(p, PairsConfig)
    p.set_defaults(func=_cmd_pairs)


def _cmd_pairs(args) -> int:
    from paretoalign.config_utils import build_config
    from paretoalign.console import table
    from paretoalign.pairs import PairsConfig, make_pairs

    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "func", "command")}
    cfg = build_config(PairsConfig, args.config, overrides)
    card = make_pairs(cfg)
    print(f"{card['pairs']} pairs from {card['samples']} samples in {card['seconds']:.1f} s -> {cfg.output_dir}")
    rows = [[n, c["+1"], c["-1"], c["tie"], card["untied_pairs"][n]] for n, c in card["label_counts"].items()]
    print(table(["objective", "chosen better", "rejected better", "tie", "untied (what training learns from)"], rows))
    if card["forced_below_minimum"]:
        print(f"warning: below --min-untied-pairs {cfg.min_untied_pairs} on {', '.join(card['forced_below_minimum'])} "
              "(written because of --force)")
    return 0


def _reward_model_parser(sub) -> None:
    from paretoalign.config_utils import add_dataclass_arguments
    from paretoalign.trainers.reward_model_config import RewardModelConfig

    p = sub.add_parser("reward-model", help="Train (ArmoRM's two stages) or apply a multi-objective reward model.")
    rsub = p.add_subparsers(dest="rm_command", required=True)
    t = rsub.add_parser(
        "train", help="Stage 1: one ridge head per rated objective on frozen backbone features; stage 2: a gate "
        "over the objectives trained with Bradley-Terry on pairs; verbosity debiasing; held-out evaluation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    t.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    add_dataclass_arguments(t, RewardModelConfig)
    t.set_defaults(func=_cmd_reward_model_train)
    s = rsub.add_parser(
        "score", help="Score (prompt, response) rows, or measure pairwise accuracy on preference pairs.",
        description="With rows of prompt + response: writes per-objective rewards, gates and the score as JSONL. "
        "With preference pairs (any format `train --pairs` reads): prints pairwise accuracy per objective and overall.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("model", help="Folder written by `paretoalign reward-model train`.")
    s.add_argument("--input", required=True, help="JSONL of {prompt, response} rows, or preference pairs.")
    s.add_argument("--output", default=None, help="Where the scored rows go (JSONL; default: print them).")
    s.add_argument("--preference-label", default=None, help="Pairs: the label 'overall' accuracy is counted on "
                   "(default: the one the model's gate was trained on).")
    s.add_argument("--batch-size", type=int, default=8, help="Texts per backbone forward pass.")
    s.add_argument("--device", default="auto", help="Where the backbone runs.")
    s.set_defaults(func=_cmd_reward_model_score)


def _cmd_reward_model_train(args) -> int:
    from paretoalign.config_utils import build_config
    from paretoalign.console import table
    from paretoalign.trainers.reward_model_config import RewardModelConfig
    from paretoalign.trainers.reward_model_trainer import train_reward_model

    overrides = {k: v for k, v in vars(args).items() if k not in ("config", "func", "command", "rm_command")}
    cfg = build_config(RewardModelConfig, args.config, overrides)
    _model, rep = train_reward_model(cfg)
    ev = rep["evaluation"]
    split = "pairs_test" if "pairs_test" in ev else "pairs_train"
    heads = ev.get("heads_heldout") or ev["heads_train"]
    lam = (rep["debias"] or {}).get("lambda", {})
    rows = [[o, f"{ev[split]['per_objective'][o]['accuracy']:.3f}", ev[split]["per_objective"][o]["pairs"],
             f"{heads[o]['spearman']:.3f}", f"{rep['stage1']['alpha'][o]:g}", f"{lam.get(o, 0.0):.3f}"]
            for o in rep["objectives"]]
    rows.append(["overall (gated score)", f"{ev[split]['overall']['accuracy']:.3f}", ev[split]["overall"]["pairs"], "", "", ""])
    print(f"reward model -> {cfg.output_dir}  ({split.replace('pairs_', '')} pairs; head correlations on "
          f"{'held-out' if ev.get('heads_heldout') else 'training'} ratings)")
    print(table(["objective", "pair accuracy", "pairs", "spearman", "ridge alpha", "debias lambda"], rows))
    return 0


def _cmd_reward_model_score(args) -> int:
    import json
    from pathlib import Path

    from paretoalign.console import table
    from paretoalign.errors import DataError
    from paretoalign.reward_model.evaluate import evaluate_reward_model, read_score_input
    from paretoalign.reward_model.model import MultiObjectiveRewardModel

    model = MultiObjectiveRewardModel.from_pretrained(args.model)
    kind, data = read_score_input(args.input)  # before the backbone loads: a bad file costs nothing
    path = Path(args.input)
    model.extractor(batch_size=args.batch_size, device=args.device)
    if kind == "rows":
        rows = data
        out = model.score([p for p, _ in rows], [r for _, r in rows])
        lines = [json.dumps({"prompt": p, "response": r, "score": float(out.score[i]),
                             "rewards": dict(zip(model.objectives, out.rewards[i].tolist())),
                             "gates": dict(zip(model.objectives, out.gates[i].tolist()))}) for i, (p, r) in enumerate(rows)]
        if args.output:
            Path(args.output).write_text("\n".join(lines) + "\n")
            print(f"{len(rows)} rows scored -> {args.output}")
        else:
            print("\n".join(lines))
        return 0
    label = args.preference_label or model.extra.get("preference_label")
    if label not in data.objectives:
        label = data.objectives[0] if len(data.objectives) == 1 else None
    if label is None:
        raise DataError(f"{path}: choose which label 'overall' is counted on with --preference-label "
                        f"(labels: {', '.join(data.objectives)})")
    res = evaluate_reward_model(model, data.oriented(label))
    def acc(v):  # an objective with no (untied) pairs has no accuracy: say so rather than print nan
        return f"{v['accuracy']:.3f}" if v["pairs"] else "n/a (no pairs)"

    rows = [[o, acc(v), v["pairs"]] for o, v in res["per_objective"].items()]
    rows.append([f"overall ({label})", acc(res["overall"]), res["overall"]["pairs"]])
    print(table(["objective", "pair accuracy", "pairs"], rows))
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2))
    return 0


def _objectives_parser(sub) -> None:
    p = sub.add_parser("objectives", help="List the built-in objectives and the spec syntax.")
    p.set_defaults(func=_cmd_objectives)


def _cmd_objectives(args) -> int:
    from paretoalign.objectives import registry

    print("Built-in objectives (use in --objectives, comma-separated), with their options and defaults:")
    for name in registry.available_objectives():
        usage, summary = registry.describe_objective(name)
        print(f"  {usage}\n      {summary}")
    print("\nSpec syntax: name | name(k=v,...) | kind:arg | kind:arg(k=v,...); every objective accepts")
    print("  name=<alias> and direction=maximize|minimize.")
    print("  e.g. sentiment,length(scale=100,unit=words)  reward_model:/path/to/rm(index=0)  python:mymod:fn")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error format: one ``error:`` line (no usage block), exit 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="paretoalign", description="Multi-objective alignment of language models, with Pareto fronts."
    )
    from paretoalign import __version__

    parser.add_argument("--version", action="version", version=f"paretoalign {__version__}")
    parser.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="Show every third-party warning and progress bar (model loading, shard writing, GGUF "
                        "conversion) that paretoalign otherwise keeps quiet; accepted anywhere on the line.")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _evaluate_parser(sub)
    _front_parser(sub)
    _compare_parser(sub)
    _report_parser(sub)
    _pairs_parser(sub)
    _reward_model_parser(sub)
    _demo_parser(sub)
    from paretoalign.inference import add_chat_parser, add_generate_parser  # light: no torch

    add_generate_parser(sub)
    add_chat_parser(sub)
    from paretoalign.merging import add_merge_parser  # light: no torch

    add_merge_parser(sub)
    from paretoalign.experts import add_experts_parser  # light: no torch

    add_experts_parser(sub)
    from paretoalign.serve import add_serve_parser  # light: no torch, no gradio

    add_serve_parser(sub)
    _objectives_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    if "HF_HUB_OFFLINE" not in os.environ:  # never reach a hub unless the user opts in (--allow-download, ...)
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ[OFFLINE_BY_DEFAULT_ENV] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" not in argv:
        return _run(argv)
    # accepted anywhere on the line, for every command; the environment carries it to accelerate's workers
    previous = os.environ.get(VERBOSE_ENV)
    os.environ[VERBOSE_ENV] = "1"
    try:
        return _run([a for a in argv if a != "--verbose"])
    finally:  # a caller in the same process (a notebook, a test) keeps its own setting
        if previous is None:
            os.environ.pop(VERBOSE_ENV, None)
        else:
            os.environ[VERBOSE_ENV] = previous


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    quiet_deepspeed_cpu_notice()
    try:
        return args.func(args)
    except ParetoAlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk or the file system said no: a full disk, a read-only or missing folder
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume (the last checkpoint is intact)", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
