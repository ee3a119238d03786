"""One-GPU check of ``--generation-backend vllm``: full-fine-tune PAMA sampling with the colocated vLLM engine,
side by side with TRL's GRPOTrainer in vLLM colocate mode, on the bundled SmolLM2-135M-Instruct.

    python bench/gpu_check.py        # 1 warm-up + 4 timed steps each; 8 prompts x 4 completions x 128 tokens
Run by ``scripts/gpu_check.sh``; each trainer in its own child process (one vLLM engine each).  Both:
full fine-tuning (fp32, AdamW, constant LR), the same prompts in the same order, exactly ``--tokens``
tokens per completion, temperature 1, top-p 1, KL ``--beta``, rewards sentiment (VADER) and length,
vLLM on 0.3 of the card.  Generation tokens/s = a step's completion tokens / its generation time
(weight push included).  Ours also checks the refresh on the real engine: one push per step, and greedy
vLLM vs transformers on the trained policy, before and after flipping the final norm's sign.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
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
OPTIONS = {"steps": (4, "timed steps per trainer"), "warmup": (1, "discarded first steps (engine build, CUDA graphs)"),
           "prompts": (8, "prompts per step"), "generations": (4, "completions per prompt"),
           "tokens": (128, "completion length (min = max new tokens)"), "lr": (1e-5, "learning rate"),
           "beta": (0.04, "KL coefficient on both sides"), "seed": (0, "random seed")}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (default, help_) in OPTIONS.items():
        p.add_argument(f"--{name}", type=type(default), default=default, help=help_)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "gpu_check.json"))
    p.add_argument("--part", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def load():
    return (tok := load_tokenizer(MODEL)), load_causal_lm(MODEL, tok, dtype=torch.float32)


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

    vllm_backend.check_available()
    (tok, model), tmp = load(), Path(tempfile.mkdtemp(prefix="gpu_check-"))
    cfg = OnlineConfig(
        method="pama", advantage="group", model=MODEL, objectives=["sentiment", "length"], use_lora=False,
        generation_backend="vllm", batch_size=args.prompts, num_generations=args.generations,
        max_new_tokens=args.tokens, min_new_tokens=args.tokens, temperature=1.0, top_p=1.0,
        learning_rate=args.lr, kl_coef=args.beta, max_steps=args.warmup + args.steps, save_steps=10**6,
        output_dir=str(tmp / "ours"), overwrite=True, progress=False, seed=args.seed,
    )
    trainer = OnlineTrainer(cfg, model=model, tokenizer=tok, prompts=builtin_prompts("train"),
                            objectives=build_objective_set(["sentiment", "length"], tok))
    trainer.train()
    pushes = vllm_backend.engine().pushes  # before the checks below, which push twice more
    rows = read_metrics(tmp / "ours")[args.warmup:]
    policy, probe = trainer.unwrapped.policy.eval(), builtin_prompts("train")[:8]
    agree = greedy_agreement(policy, tok, probe)
    with torch.no_grad():
        policy.model.norm.weight.neg_()  # logits flip: greedy picks other tokens; vLLM must follow
    agree_flipped = greedy_agreement(policy, tok, probe)
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "step_s": [r["time_step"] for r in rows], "generate_s": [r["time_generate"] for r in rows],
        "tokens_per_step": [r["completion_length"] * r["samples"] for r in rows],
        "weight_pushes": pushes, "steps_total": cfg.max_steps,
        "greedy_agree": f"{agree}/{len(probe)}", "greedy_agree_after_flip": f"{agree_flipped}/{len(probe)}",
    }


def child_trl(args) -> dict:
    from transformers import PrinterCallback, ProgressCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from paretoalign.trainers.adaptation import epoch_indices

    (tok, model), total = load(), args.warmup + args.steps
    prompts = builtin_prompts("train")  # the order our trainer draws them in (one process)
    order = [prompts[i] for s in range(total) for i in epoch_indices(args.seed, len(prompts), s * args.prompts, args.prompts)]
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check-"))
    gcfg = GRPOConfig(
        output_dir=str(tmp / "trl"), per_device_train_batch_size=args.prompts * args.generations,
        gradient_accumulation_steps=1, num_generations=args.generations, max_completion_length=args.tokens,
        generation_kwargs={"min_tokens": args.tokens}, temperature=1.0, top_p=1.0, top_k=0,
        beta=args.beta, num_iterations=1, reward_weights=[0.5, 0.5], scale_rewards="group",
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch",
        weight_decay=0.0, max_grad_norm=1.0, bf16=False, fp16=False, gradient_checkpointing=False,
        use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3,
        max_steps=total, shuffle_dataset=False, seed=args.seed, report_to="none", logging_steps=1,
        save_strategy="no", disable_tqdm=True, log_completions=False, dataloader_num_workers=0,
    )
    steps, gens, cur = [], [], {}

    class Times(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            cur.clear()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            steps.append(time.perf_counter() - self.t0)
            gens.append(cur.get("generate", float("nan")))

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
            "tokens_per_step": [n * args.prompts * args.generations for n in lengths][args.warmup:]}


def run_child(part: str, args) -> dict | None:
    result = Path(tempfile.mkdtemp(prefix="gpu_check-")) / f"{part}.json"
    cmd = [sys.executable, __file__, "--part", part, "--result", str(result)] + [
        f"--{k}={getattr(args, k)}" for k in OPTIONS]
    print(f"[gpu_check] {part}: {' '.join(cmd[1:])}", flush=True)
    rc = subprocess.call(cmd)
    if rc == 0 and result.is_file():
        return json.loads(result.read_text())
    print(f"[gpu_check] {part} failed (exit {rc}); its output is above", flush=True)


def cells(res: dict | None) -> str:
    """Medians over the timed steps: generation tokens/s, generation seconds, step seconds."""
    if not res:
        return "failed | - | -"
    tps = statistics.median(t / g for t, g in zip(res["tokens_per_step"], res["generate_s"]))
    return f"{tps:.0f} | {statistics.median(res['generate_s']):.3f} | {statistics.median(res['step_s']):.3f}"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part:
        res = child_ours(args) if args.part == "ours" else child_trl(args)
        Path(args.result).write_text(json.dumps(res))
        return 0
    if not torch.cuda.is_available() or importlib.util.find_spec("vllm") is None:
        print("error: bench/gpu_check.py needs a CUDA device and vLLM: " + ("pip install 'paretoalign[vllm]'" if
              torch.cuda.is_available() else "no CUDA device is visible"), file=sys.stderr)
        return 2
    card, results = torch.cuda.get_device_name(), {part: run_child(part, args) for part in ("ours", "trl")}
    lines = [f"card: {card}; torch {torch.__version__}, vllm {version('vllm')}, transformers {version('transformers')}, "
             f"trl {version('trl')}",
             f"{MODEL}, full fine-tuning, {args.prompts} prompts x {args.generations} completions x {args.tokens} tokens, "
             f"{args.warmup} warm-up + {args.steps} timed steps each (medians)", "",
             "| trainer | generation tokens/s | generate s/step | s per step |", "|---|---|---|---|"]
    lines += [f"| paretoalign PAMA (--generation-backend vllm) | {cells(results['ours'])} |",
              f"| TRL GRPOTrainer (vllm colocate) | {cells(results['trl'])} |"]
    if results["ours"]:
        o = results["ours"]
        lines += ["", f"weight pushes into the engine: {o['weight_pushes']} for {o['steps_total']} steps; greedy vLLM vs "
                  f"transformers, first 4 tokens equal: {o['greedy_agree']} rows, after flipping the final norm: "
                  f"{o['greedy_agree_after_flip']} rows"]
    print("\n" + "\n".join(lines))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"card": card, "config": vars(args), "results": results, "table": lines}, indent=2))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
