"""Step time of our critic-free MORLHF step against TRL's GRPOTrainer, side by side in one run.

    .venv/bin/python bench/vs_trl.py                       # SmolLM2-135M-Instruct, 4 prompts x 2, 48 tokens, 2 warm-up + 6 timed steps
    .venv/bin/python bench/vs_trl.py --model tiny --quick  # fast check (random 2-layer model)
    .venv/bin/python bench/vs_trl.py --steps 10 --warmup 2 --no-memory

Both sides train the same policy (two copies of ``--model``) with the same LoRA (r=16, alpha=32,
dropout 0 on q,k,v,o,gate,up,down), the same 4 prompts x 2 completions per step (the *same*
prompts at every step: TRL's dataset is laid out in the order our trainer draws them, unshuffled),
completions of exactly ``--tokens`` tokens (``min_new_tokens == max_new_tokens``), temperature 1,
top-p 1, top-k off, KL coefficient ``--beta`` (> 0, so both compute reference log-probs with the
LoRA adapter disabled), one optimisation pass per generation, the same learning rate, AdamW
(torch, not fused, weight decay 0, constant LR), grad-norm clip 1, fp32, no gradient checkpointing.
Rewards: the two objectives ``sentiment`` (VADER) and ``length`` of :mod:`paretoalign.objectives`;
ours scores through its ObjectiveSet, TRL through two reward functions calling the same
objectives' ``score``; combined with ``reward_weights`` / MORLHF weights ``--weights``.

The two trainers' steps are interleaved in one process (O T T O O T T O ...: our step runs inside
a TrainerCallback of TRL's loop, before TRL's timing window on odd steps and after it on even
steps) so that machine noise hits both alike.  What one timed step includes, on both sides:
prompt rendering + tokenisation, sampling, decoding, scoring, advantages, the reference
(adapter-disabled) forward, the policy forward + backward, grad clipping, the optimiser step and
each trainer's own per-step metrics.  TRL: from ``on_step_begin`` to ``on_step_end`` (its
logging, which happens after ``on_step_end``, is excluded).  Ours: ``OnlineTrainer.step``.
The breakdown times generate / score / reference forward / policy forward by wrapping the
trainers' instance methods (``rest`` = backward + optimiser + everything else).

Peak RSS (unless ``--no-memory``) comes from two child processes, one per trainer, each loading
one model and running 1 warm-up + 2 steps (VmHWM).

Prints a markdown table and writes ``bench/out/vs_trl.json``.  ``--profile`` adds a
torch.profiler table of two of our steps.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_MODE", "disabled")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
PARTS = ("generate", "score", "ref_forward", "policy_forward")


# --- shared pieces ----------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="smollm2-135m-instruct (default) or tiny")
    p.add_argument("--steps", type=int, default=6, help="timed steps per trainer")
    p.add_argument("--warmup", type=int, default=2, help="discarded warm-up steps per trainer")
    p.add_argument("--quick", action="store_true", help="1 warm-up + 3 timed steps, 16 tokens")
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--generations", type=int, default=2, help="completions per prompt")
    p.add_argument("--tokens", type=int, default=48, help="completion length (forced: min = max new tokens)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--beta", type=float, default=0.04, help="KL coefficient on both sides (must be > 0)")
    p.add_argument("--weights", type=float, nargs=2, default=[0.5, 0.5], metavar=("W_SENT", "W_LEN"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--no-memory", action="store_true", help="skip the two peak-RSS child processes")
    p.add_argument("--profile", action="store_true", help="after timing, torch.profiler on 2 of our steps")
    p.add_argument("--out", default=str(OUT_DIR / "vs_trl.json"))
    p.add_argument("--memory-child", choices=("ours", "trl"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.tokens = min(args.steps, 3), min(args.warmup, 1), min(args.tokens, 16)
    if args.beta <= 0:
        p.error("--beta must be > 0 (both sides must compute reference log-probs)")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB: VmHWM of /proc/self/status.  (Not ru_maxrss: a child started
    by fork+exec inherits the parent's high-water mark in ru_maxrss on Linux.)"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024 if sys.platform != "darwin" else r / 2**20


def load(args):
    """(tokenizer, policy) for --model; called once per trainer so the two never share weights."""
    from paretoalign.models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(args.model)
    model = load_causal_lm(args.model, tok, seed=args.seed, dtype=torch.float32)
    return tok, model


def _completion_text(c) -> str:
    """TRL hands conversational completions as [{"role": "assistant", "content": ...}]."""
    if isinstance(c, list):
        return c[-1]["content"] if c else ""
    return c


def make_reward_funcs(objectives) -> list:
    """One TRL reward function per objective, calling that objective's own ``score`` on the
    stripped completion text, exactly what our ObjectiveSet does."""
    from paretoalign.data.prompts import prompt_text

    funcs = []
    for obj in objectives:
        def reward(prompts, completions, _obj=obj, **kwargs):
            texts = [_completion_text(c).strip() for c in completions]
            return _obj.score([prompt_text(p) for p in prompts], texts).tolist()

        reward.__name__ = obj.name
        funcs.append(reward)
    return funcs


def timed_method(obj, name: str, sink: dict, key=None):
    """Replace ``obj.name`` (an instance attribute only) by a wrapper adding its wall time to
    ``sink[key(...)]``.  Nothing in the libraries is edited."""
    fn = getattr(obj, name)

    def wrapper(*a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            k = key() if callable(key) else (key or name)
            sink[k] = sink.get(k, 0.0) + time.perf_counter() - t0

    setattr(obj, name, wrapper)


def build_ours(args, tok, model, objectives, prompts, out_dir):
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    cfg = OnlineConfig(
        method="morlhf", advantage="group", group_aggregation="sum_then_normalize",
        weights=list(args.weights), model=args.model, objectives=["sentiment", "length"],
        batch_size=args.prompts, num_generations=args.generations,
        max_new_tokens=args.tokens, min_new_tokens=args.tokens, temperature=args.temperature, top_p=1.0,
        learning_rate=args.lr, weight_decay=0.0, max_grad_norm=1.0, kl_coef=args.beta, clip_eps=0.2,
        ppo_epochs=1, num_mini_batches=1, use_lora=True,  # default LoRA: r=16, alpha=32, dropout 0, 7 projections
        output_dir=str(out_dir), overwrite=True, progress=False, seed=args.seed,
        max_steps=args.warmup + args.steps,
    )
    return OnlineTrainer(cfg, model=model, tokenizer=tok, objectives=objectives, prompts=prompts), cfg


def trl_dataset(prompts: list):
    """TRL's training rows, as conversations, in the given order (TRL reads them unshuffled)."""
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": list(p) if isinstance(p, list) else [{"role": "user", "content": p}]} for p in prompts]
    )


def our_prompt_order(ours, n_steps: int) -> list:
    """The prompts our trainer draws at steps 1..n_steps, concatenated."""
    return [p for step in range(1, n_steps + 1) for p in ours.prompts_for_step(step)]


def build_trl(args, ocfg, tok, model, objectives, dataset, out_dir, callbacks=()):
    from peft import LoraConfig
    from transformers import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    lora = LoraConfig(
        r=ocfg.lora_r, lora_alpha=ocfg.lora_alpha, lora_dropout=ocfg.lora_dropout,
        target_modules=list(ocfg.lora_target_modules), task_type="CAUSAL_LM",
    )
    gcfg = GRPOConfig(
        output_dir=str(out_dir),
        per_device_train_batch_size=args.prompts * args.generations,  # counted in completions
        gradient_accumulation_steps=1,
        num_generations=args.generations,
        max_completion_length=args.tokens,
        generation_kwargs={"min_new_tokens": args.tokens},
        temperature=args.temperature, top_p=1.0, top_k=0,
        beta=args.beta, epsilon=0.2, num_iterations=1,
        reward_weights=list(args.weights), scale_rewards="group",
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0,
        optim="adamw_torch", weight_decay=0.0, max_grad_norm=1.0,
        bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=not torch.cuda.is_available(),
        max_steps=args.warmup + args.steps, shuffle_dataset=False, seed=args.seed,
        report_to="none", logging_steps=1, save_strategy="no", disable_tqdm=True,
        log_completions=False, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=make_reward_funcs(objectives), args=gcfg, train_dataset=dataset,
        processing_class=tok, peft_config=lora, callbacks=list(callbacks),
    )
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    return trainer


def instrument_ours(ours, sink: dict) -> None:
    timed_method(ours.objectives, "rewards", sink, "score")
    timed_method(ours, "_ref_logprobs", sink, "ref_forward")
    timed_method(ours, "_forward", sink, "policy_forward")


def instrument_trl(trainer, sink: dict) -> None:
    timed_method(trainer, "_generate", sink, "generate")
    timed_method(trainer, "_calculate_rewards", sink, "score")
    # the same method scores the reference (under no_grad) and the policy (with grad)
    timed_method(trainer, "_get_per_token_logps_and_entropies", sink,
                 lambda: "policy_forward" if torch.is_grad_enabled() else "ref_forward")


def load_prompts_train():
    from paretoalign.data.prompts import builtin_prompts

    return builtin_prompts("train")


# --- the side-by-side run ---------------------------------------------------------------------


def run_pair(args) -> dict:
    from transformers import TrainerCallback

    from paretoalign.objectives import build_objective_set

    total = args.warmup + args.steps
    tmp = Path(tempfile.mkdtemp(prefix="vs_trl-"))
    prompts = load_prompts_train()

    t0 = time.perf_counter()
    tok_o, model_o = load(args)
    objectives_o = build_objective_set(["sentiment", "length"], tok_o)
    ours, ocfg = build_ours(args, tok_o, model_o, objectives_o, prompts, tmp / "ours")
    tok_t, model_t = load(args)
    objectives_t = build_objective_set(["sentiment", "length"], tok_t)
    dataset = trl_dataset(our_prompt_order(ours, total))

    ours_rows, ours_parts, trl_times, trl_parts = [], [], [], []
    cur_ours: dict = {}
    cur_trl: dict = {}

    def our_step(step: int) -> None:
        cur_ours.clear()
        t = time.perf_counter()
        row = ours.step(step)
        wall = time.perf_counter() - t
        cur_ours["generate"] = row["time_generate"]
        ours_rows.append({**row, "wall": wall})
        ours_parts.append(dict(cur_ours))
        print(f"[vs_trl] step {step}/{total} ours {wall:.2f} s", flush=True)

    class Interleave(TrainerCallback):
        """O T | T O | O T | T O ...: ours before TRL's window on odd steps, after it on even ones."""

        def on_step_begin(self, a, state, control, **kw):
            k = state.global_step + 1
            if k % 2 == 1:
                our_step(k)
            cur_trl.clear()
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            trl_times.append(time.perf_counter() - self.t0)
            trl_parts.append(dict(cur_trl))
            print(f"[vs_trl] step {state.global_step}/{total} TRL  {trl_times[-1]:.2f} s", flush=True)
            k = state.global_step  # already incremented
            if k % 2 == 0:
                our_step(k)

    trl_logs: list = []

    class KeepLogs(TrainerCallback):
        def on_log(self, a, state, control, logs=None, **kw):
            if logs:
                trl_logs.append(dict(logs))

    trainer = build_trl(args, ocfg, tok_t, model_t, objectives_t, dataset, tmp / "trl", [Interleave(), KeepLogs()])
    instrument_ours(ours, cur_ours)
    instrument_trl(trainer, cur_trl)
    setup_s = time.perf_counter() - t0
    print(f"[vs_trl] both trainers built in {setup_s:.1f} s; running {total} steps each, interleaved", flush=True)

    trainer.train()
    ours_profile = profile_ours(ours, total + 1) if args.profile else None
    n_lora_ours = sum(p.numel() for p in ours.model.parameters() if p.requires_grad)
    n_lora_trl = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)

    w = args.warmup
    ours_t = [r["wall"] for r in ours_rows[w:]]
    trl_t = trl_times[w:]
    result = {
        "ours": summarize(ours_t, ours_parts[w:]),
        "trl": summarize(trl_t, trl_parts[w:]),
        "ours_time_step_logged": summarize([r["time_step"] for r in ours_rows[w:]], None),
        "ours_steps": ours_rows,
        "trl_step_seconds": trl_times,
        "trl_parts": trl_parts,
        "ours_parts": ours_parts,
        "trl_logs": trl_logs,
        "trainable_params": {"ours": n_lora_ours, "trl": n_lora_trl},
        "completion_length": {
            "ours": [r["completion_length"] for r in ours_rows],
            "trl": [l["completions/mean_length"] for l in trl_logs if "completions/mean_length" in l],
        },
        "setup_seconds": setup_s,
    }
    if ours_profile is not None:
        result["ours_profile"] = ours_profile
    result["ratio_ours_over_trl"] = result["ours"]["median"] / result["trl"]["median"]
    return result


def summarize(times, parts) -> dict:
    times = list(times)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    out = {"median": statistics.median(times), "q1": q[0], "q3": q[2], "iqr": q[2] - q[0],
           "min": min(times), "max": max(times), "n": len(times), "steps": times}
    if parts:
        for k in PARTS:
            out[f"median_{k}"] = statistics.median(p.get(k, 0.0) for p in parts)
        rest = [t - sum(p.get(k, 0.0) for k in PARTS) for t, p in zip(times, parts)]
        out["median_rest"] = statistics.median(rest)
    return out


def profile_ours(ours, first_step: int, n: int = 2) -> list:
    """torch.profiler over ``n`` of our steps: the top operators by self CPU time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    ours.step(first_step)  # make sure nothing one-off lands in the profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for i in range(n):
            with record_function("ours.step"):
                ours.step(first_step + 1 + i)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    print(table)
    rows = []
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:25]:
        rows.append({"name": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6 / n,
                     "cpu_total_s": e.cpu_time_total / 1e6 / n, "calls": e.count / n})
    return rows


# --- peak memory, one trainer per child process ------------------------------------------------


def memory_child(args) -> dict:
    from paretoalign.objectives import build_objective_set

    args.steps, args.warmup = 2, 1
    base = rss_mb()
    tmp = Path(tempfile.mkdtemp(prefix="vs_trl-mem-"))
    prompts = load_prompts_train()
    tok, model = load(args)
    objectives = build_objective_set(["sentiment", "length"], tok)
    if args.memory_child == "trl":
        from paretoalign.trainers.online_config import OnlineConfig

        ocfg = OnlineConfig()  # only its LoRA defaults are read
        trainer = build_trl(args, ocfg, tok, model, objectives, trl_dataset(prompts[: 3 * args.prompts]), tmp / "trl")
        after_build = rss_mb()
        trainer.train()
    else:
        ours, _ = build_ours(args, tok, model, objectives, prompts, tmp / "ours")
        after_build = rss_mb()
        for s in range(1, 4):
            ours.step(s)
    return {"which": args.memory_child, "rss_start_mb": base, "rss_after_build_mb": after_build,
            "peak_rss_mb": peak_rss_mb()}


def measure_memory(args) -> dict:
    out = {}
    for which in ("ours", "trl"):
        cmd = [sys.executable, __file__, "--memory-child", which, "--model", args.model,
               "--prompts", str(args.prompts), "--generations", str(args.generations),
               "--tokens", str(args.tokens), "--beta", str(args.beta), "--lr", str(args.lr),
               "--temperature", str(args.temperature), "--seed", str(args.seed), "--threads", str(args.threads),
               "--weights", *map(str, args.weights)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(f"[vs_trl] memory child {which} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            out[which] = None
        else:
            out[which] = json.loads(lines[-1])
    return out


# --- report -----------------------------------------------------------------------------------


def table(res: dict, args) -> str:
    o, t = res["ours"], res["trl"]
    mem = res.get("memory") or {}

    def peak(which):
        m = mem.get(which)
        return f"{m['peak_rss_mb']:.0f}" if m else "n/a"

    lines = [
        f"model {args.model}, {args.prompts} prompts x {args.generations} completions x {args.tokens} tokens, "
        f"{args.warmup} warm-up + {args.steps} timed steps each, interleaved; seconds per optimisation step",
        "",
        "| trainer | median | IQR (q1-q3) | generate | score | ref fwd | policy fwd | rest (bwd+opt+misc) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s, which in (("paretoalign MORLHF (group)", o, "ours"), ("TRL GRPOTrainer", t, "trl")):
        lines.append(
            f"| {name} | {s['median']:.3f} | {s['iqr']:.3f} ({s['q1']:.3f}-{s['q3']:.3f}) | "
            f"{s['median_generate']:.3f} | {s['median_score']:.4f} | {s['median_ref_forward']:.3f} | "
            f"{s['median_policy_forward']:.3f} | {s['median_rest']:.3f} | {peak(which)} |"
        )
    lines.append("")
    lines.append(f"ratio ours/TRL (medians): **{res['ratio_ours_over_trl']:.3f}**")
    return "\n".join(lines)


def main(argv=None) -> dict:
    warnings.filterwarnings("ignore")
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        print(json.dumps(memory_child(args)), flush=True)
        return {}
    import transformers
    import trl

    try:
        load_before = os.getloadavg()
    except OSError:  # pragma: no cover
        load_before = None
    t_start = time.perf_counter()
    res = run_pair(args)
    try:
        load_after = os.getloadavg()
    except OSError:  # pragma: no cover
        load_after = None
    if not args.no_memory:
        print("[vs_trl] peak RSS: one child process per trainer ...", flush=True)
        res["memory"] = measure_memory(args)
    res["config"] = {k: v for k, v in vars(args).items() if k != "memory_child"}
    res["environment"] = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "trl": trl.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before, "loadavg_after": load_after,
        "machine": platform.machine(), "seconds_total": time.perf_counter() - t_start,
    }
    res["included"] = (
        "one optimisation step: prompt rendering+tokenisation, sampling, decoding, scoring, advantages, "
        "reference (adapter-disabled) forward, policy forward+backward, grad clip, AdamW step, per-step metrics. "
        "TRL: on_step_begin..on_step_end (logging after on_step_end excluded). Ours: OnlineTrainer.step."
    )
    text = table(res, args)
    print()
    print(text)
    res["table"] = text
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=float))
    print(f"\n[vs_trl] wrote {out}")
    return res


if __name__ == "__main__":
    main()
