"""Rollout speed: generation tokens/s of the old and new sampling paths, and where a step's time goes.

    .venv/bin/python bench/rollout.py                                  # SmolLM2-135M-Instruct + LoRA, 48 tokens, 3 reps
    .venv/bin/python bench/rollout.py --sections gen --rows 8 64       # generation only
    .venv/bin/python bench/rollout.py --model tiny --reps 1 --tokens 6 --rows 4 8   # fast check (random 2-layer model)
    .venv-vllm/bin/python bench/rollout.py --sections gen --vllm           # and vLLM's CPU build beside them

**gen** - one LoRA policy (r=16 on all 7 projections, adapters non-zero, as after training) samples
``rows`` completions of exactly ``--tokens`` tokens (min = max new tokens, so both paths make the
same number of tokens) from ``rows / 4`` prompts x 4 completions, with

* ``hf-generate`` - the path before this change: transformers' ``generate`` on the LoRA model with
  the adapters merged into a copy of the base weights for the call (``rollout.lora_merged``);
* ``hf`` - :mod:`paretoalign.decoding`'s packed loop (LoRA read in place, one prefill per distinct
  prompt, static KV cache, MKL-prepacked weights on a CPU, inverse-CDF sampling).

* ``vllm`` (with ``--vllm``, where vLLM imports: its CPU build on a CPU, ``.venv-vllm``) - a colocated vLLM
  engine with the policy's weights pushed in (LoRA merged), :mod:`paretoalign.vllm_backend`; the engine is
  built (and compiled) in the warm-up, outside the timings.

All run in this process, interleaved (the order rotates each repetition); medians of ``--reps``.
``demo`` compares the configurations the demo used before and uses now: 16 rows per call on the
old path against ``--demo-rows`` rows per call on the new one.

**step** - one training step of the online trainer (MORLHF with critic-free group advantages and
a KL term, so every phase runs) at ``--step-rows`` rows, cut into its phases - generation,
scoring, reference forward, policy forward, backward, optimiser - each timed (medians), and
each set against its **ideal**: the matmul FLOPs the phase must do (counted from the model's
shapes: projections, attention, the output layer where logits are needed; backward = the
activation gradients, plus weight gradients for full fine-tuning, plus LoRA's) divided by the
matmul rate measured here, in this process, on a training-shaped matmul.  Two ideals: the issue's,
which sends every row's ``[prompt + completion]`` through the training passes, and the **minimal**
one, which counts each distinct prompt once and unpadded in every phase (as the trainer now runs it,
:func:`paretoalign.models.shared_prompt_pass`).  The training passes are also timed with every row's
prompt (``PARETOALIGN_SHARED_PROMPTS=0``, the path before), interleaved in the same repetitions.

**mgda** - MGDA-UB / MORLHF update time at K = 2/4/8 (``bench/mgda_step.py``, run in-process).

Prints markdown tables and writes bench/out/rollout.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="smollm2-135m-instruct (default) or tiny")
    p.add_argument("--sections", nargs="+", default=["gen", "step", "mgda"], choices=["gen", "step", "mgda"])
    p.add_argument("--rows", type=int, nargs="+", default=[8, 16, 32, 64], help="rows per generate call (multiples of 4)")
    p.add_argument("--demo-rows", type=int, default=32, help="rows per call of the demo now (its batch x generations)")
    p.add_argument("--step-rows", type=int, default=32, help="rows of the timed training step (multiple of 4)")
    p.add_argument("--tokens", type=int, default=48, help="completion length (forced)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (medians)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vllm", action="store_true", help="gen: time the vllm backend too (vLLM must import)")
    p.add_argument("--out", default=str(OUT_DIR / "rollout.json"))
    return p.parse_args(argv)


def load(args):
    from paretoalign.models import build_tiny_model, build_tiny_tokenizer, load_causal_lm, load_tokenizer

    if args.model == "tiny":
        tok = build_tiny_tokenizer()
        return tok, build_tiny_model(tok, seed=args.seed)
    tok = load_tokenizer(args.model)
    return tok, load_causal_lm(args.model, tok, seed=args.seed)


def lora_policy(base):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    policy = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    for m in policy.modules():  # trained adapters are non-zero: the merge and the packing have work to do
        if hasattr(m, "lora_B"):
            for lin in m.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=1e-3)
    return policy


def prompts(n: int) -> list[str]:
    from paretoalign.data.prompts import builtin_prompts

    pool = builtin_prompts("train")
    return [pool[i % len(pool)] for i in range(n)]


def time_generate(policy, tok, rows: int, tokens: int, backend: str) -> float:
    from paretoalign.rollout import generate

    t = time.perf_counter()
    r = generate(policy, tok, prompts(rows // 4), num_generations=4, max_new_tokens=tokens, min_new_tokens=tokens,
                 backend=backend)
    dt = time.perf_counter() - t
    assert r.completion_ids.shape == (rows, tokens), r.completion_ids.shape
    return dt


def bench_generation(policy, tok, args) -> dict:
    out = {}
    paths = ["hf-generate", "hf"] + (["vllm"] if getattr(args, "vllm", False) else [])
    sizes = sorted(set(args.rows) | {16, args.demo_rows})
    for backend in paths:  # warm-up: first calls pay allocation and packing (vLLM: building the engine)
        time_generate(policy, tok, 4, 4, backend)
    for rows in sizes:
        times = {b: [] for b in paths}
        for rep in range(args.reps):
            order = paths[rep % len(paths):] + paths[:rep % len(paths)]
            for backend in order:
                times[backend].append(time_generate(policy, tok, rows, args.tokens, backend))
        med = {b: statistics.median(t) for b, t in times.items()}
        out[rows] = {"times": times, "tokens_per_s": {b: rows * args.tokens / m for b, m in med.items()},
                     "speedup": med["hf-generate"] / med["hf"]}
    old16 = out[16]["tokens_per_s"]["hf-generate"]
    demo = {"old_rows": 16, "new_rows": args.demo_rows, "old_tokens_per_s": old16,
            "new_tokens_per_s": out[args.demo_rows]["tokens_per_s"]["hf"]}
    demo["speedup"] = demo["new_tokens_per_s"] / old16
    return {"rows": {r: out[r] for r in sizes}, "demo": demo, "paths": paths}


def generation_table(res: dict, tokens: int) -> str:
    vllm = "vllm" in res.get("paths", [])
    lines = ["| rows per call | `hf-generate` (before) tok/s | `hf` (packed loop) tok/s | speed-up |"
             + (" `vllm` tok/s | `vllm` / `hf` |" if vllm else ""),
             "|---:|---:|---:|---:|" + ("---:|---:|" if vllm else "")]
    for rows, r in res["rows"].items():
        t = r["tokens_per_s"]
        lines.append(f"| {rows} | {t['hf-generate']:.0f} | {t['hf']:.0f} | {r['speedup']:.2f}x |"
                     + (f" {t['vllm']:.0f} | {t['vllm'] / t['hf']:.2f}x |" if vllm else ""))
    d = res["demo"]
    lines.append(f"\nDemo configuration: before {d['old_rows']} rows/call on `hf-generate` "
                 f"{d['old_tokens_per_s']:.0f} tok/s; now {d['new_rows']} rows/call on `hf` "
                 f"{d['new_tokens_per_s']:.0f} tok/s: **{d['speedup']:.2f}x** ({tokens} tokens per completion).")
    return "\n".join(lines)


# ---- FLOP counting -----------------------------------------------------------------------------
def layer_flops_per_token(cfg, context: float) -> float:
    """Matmul FLOPs of one decoder layer for one token attending to ``context`` keys (forward)."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    d = getattr(cfg, "head_dim", None) or H // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * d, (cfg.num_key_value_heads or cfg.num_attention_heads) * d
    proj = 2 * H * (q + 2 * kv) + 2 * q * H + 2 * 3 * H * I
    attn = 2 * 2 * cfg.num_attention_heads * d * context
    return proj + attn


def forward_flops(cfg, rows: int, seq: int, logit_positions: int) -> float:
    """Forward matmul FLOPs of ``rows`` causal sequences of ``seq`` tokens, logits at ``logit_positions`` per row."""
    per_layer = sum(layer_flops_per_token(cfg, (t + 1)) for t in range(seq))  # causal: token t sees t+1 keys
    return rows * (cfg.num_hidden_layers * per_layer + logit_positions * 2 * cfg.hidden_size * cfg.vocab_size)


def generation_flops(cfg, unique_prompts: int, rows: int, prompt_len: int, tokens: int) -> float:
    prefill = unique_prompts * (cfg.num_hidden_layers * sum(layer_flops_per_token(cfg, t + 1) for t in range(prompt_len))
                                + 2 * cfg.hidden_size * cfg.vocab_size)
    decode = rows * sum(cfg.num_hidden_layers * layer_flops_per_token(cfg, prompt_len + t + 1)
                        + 2 * cfg.hidden_size * cfg.vocab_size for t in range(tokens - 1))
    return prefill + decode


def lora_flops(cfg, tokens: int, r: int = 16) -> float:
    """LoRA's extra forward FLOPs (x A^T B^T on the 7 projections) for ``tokens`` tokens."""
    H, I = cfg.hidden_size, cfg.intermediate_size
    d = getattr(cfg, "head_dim", None) or H // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * d, (cfg.num_key_value_heads or cfg.num_attention_heads) * d
    dims = [(H, q), (H, kv), (H, kv), (q, H), (H, I), (H, I), (I, H)]
    return tokens * cfg.num_hidden_layers * sum(2 * r * (i + o) for i, o in dims)


def matmul_rate(cfg, rows: int, reps: int = 15) -> float:
    """FLOP/s of a training-shaped matmul ([rows, H] x [H, I]) at its best of ``reps`` here: the rate this
    machine reaches, not a noisy median, so the ideal is not flattered by a slow moment."""
    x = torch.randn(rows, cfg.hidden_size)
    w = torch.randn(cfg.intermediate_size, cfg.hidden_size)
    torch.nn.functional.linear(x, w)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.nn.functional.linear(x, w)
        times.append(time.perf_counter() - t)
    return 2 * rows * cfg.hidden_size * cfg.intermediate_size / min(times)


def shared_forward_flops(cfg, prompt_lens: list[int], rows: int, prompt_len: int, tokens: int) -> float:
    """Forward matmul FLOPs when each distinct prompt runs once: ``prompt_lens`` (one per distinct prompt)
    but their last token, then ``rows`` x ``tokens`` positions (last prompt token + completion but its last
    token) attending to the ``prompt_len - 1`` prompt positions before them, logits at every one of them."""
    prefix = sum(cfg.num_hidden_layers * sum(layer_flops_per_token(cfg, t + 1) for t in range(n - 1)) for n in prompt_lens)
    rest = rows * sum(cfg.num_hidden_layers * layer_flops_per_token(cfg, prompt_len + t) for t in range(tokens))
    return prefix + rest + rows * tokens * 2 * cfg.hidden_size * cfg.vocab_size


TRAINING_PHASES = ("reference forward", "policy forward", "backward")


def bench_step(base, tok, args, tmp: Path) -> dict:
    """One online step cut into phases.  The three training passes run twice a repetition, in alternating
    order: as the trainer runs them (each distinct prompt once) and with the full ``[prompt + completion]``
    rows (``PARETOALIGN_SHARED_PROMPTS=0``, the path before), so both are measured side by side."""
    from paretoalign.models import SHARED_PROMPTS_ENV, prompt_groups
    from paretoalign.objectives import build_objective_set
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    objectives = ["sentiment", "length"]
    B = args.step_rows // 4
    cfg = OnlineConfig(model="tiny" if args.model == "tiny" else args.model, objectives=objectives, method="morlhf",
                       advantage="group", kl_coef=0.05, batch_size=B, num_generations=4, max_new_tokens=args.tokens,
                       min_new_tokens=args.tokens, learning_rate=1e-5, output_dir=str(tmp / "run"), seed=args.seed)
    trainer = OnlineTrainer(cfg, model=base, tokenizer=tok, objectives=build_objective_set(objectives, tok))
    policy = trainer.unwrapped.policy
    phases = {k: [] for k in ("generation", "scoring", *TRAINING_PHASES, "optimiser")}
    full_rows = {k: [] for k in TRAINING_PHASES}
    before = os.environ.get(SHARED_PROMPTS_ENV)

    def training_passes(rollout, shared: bool) -> dict:
        os.environ[SHARED_PROMPTS_ENV] = "1" if shared else "0"
        t = {}
        t0 = time.perf_counter()
        ref = trainer._ref_logprobs(rollout)
        t["reference forward"] = time.perf_counter() - t0
        trainer.model.train()
        t0 = time.perf_counter()
        logp, _, _ = trainer._forward(rollout.input_ids, rollout.attention_mask, rollout.prompt_length)
        t["policy forward"] = time.perf_counter() - t0
        loss = -((logp - ref) * rollout.completion_mask).sum() / rollout.completion_mask.sum()
        t0 = time.perf_counter()
        trainer.accelerator.backward(loss)
        t["backward"] = time.perf_counter() - t0
        return t

    shape = groups = None
    try:
        for rep in range(args.reps + 1):  # the first is a warm-up
            t = {}
            t0 = time.perf_counter()
            rollout, _, _, _ = trainer.rollout(rep + 1)
            t["generation"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            trainer.objectives.rewards(rollout.prompt_texts, rollout.completions)
            t["scoring"] = time.perf_counter() - t0
            full = {}
            for shared in ((False, True) if rep % 2 == 0 else (True, False)):
                trainer.optimizer.zero_grad(set_to_none=True)
                (t if shared else full).update(training_passes(rollout, shared))
            t0 = time.perf_counter()
            trainer.optimizer.step()  # the gradients of whichever pass ran last: the same update either way
            trainer.optimizer.zero_grad(set_to_none=True)
            t["optimiser"] = time.perf_counter() - t0
            shape = (rollout.input_ids.shape[0], rollout.prompt_length, rollout.completion_ids.shape[1])
            groups = prompt_groups(rollout.input_ids, rollout.attention_mask, rollout.prompt_length)
            prompt_lens = rollout.attention_mask[:, : rollout.prompt_length].sum(1)
            if rep:
                for k, v in t.items():
                    phases[k].append(v)
                for k, v in full.items():
                    full_rows[k].append(v)
    finally:
        if before is None:
            os.environ.pop(SHARED_PROMPTS_ENV, None)
        else:
            os.environ[SHARED_PROMPTS_ENV] = before
    rows, P, T = shape
    mcfg = policy.config
    unique = len(groups[0]) if groups is not None else rows
    real_lens = [int(prompt_lens[i]) for i in (groups[0] if groups is not None else range(rows))]
    # the issue's ideal: every row's [prompt + completion] through every training pass
    fwd = forward_flops(mcfg, rows, P + T, T)
    lora = lora_flops(mcfg, rows * (P + T))
    # the minimal one: each distinct prompt once and unpadded, as generation's ideal already counts it
    fwd_min = shared_forward_flops(mcfg, real_lens, rows, P, T)
    lora_min = lora_flops(mcfg, sum(n - 1 for n in real_lens) + rows * T)
    gen = generation_flops(mcfg, unique, rows, P, T)
    ideal_flops = {"generation": gen, "scoring": 0.0, "reference forward": fwd, "policy forward": fwd + lora,
                   "backward": fwd + 2 * lora,  # activation gradients + LoRA's (input and weight) gradients
                   "optimiser": 0.0}
    minimal_flops = {**ideal_flops, "reference forward": fwd_min, "policy forward": fwd_min + lora_min,
                     "backward": fwd_min + 2 * lora_min}
    rate = matmul_rate(mcfg, rows * (P + T))
    med = {k: statistics.median(v) for k, v in phases.items()}
    med_full = {k: statistics.median(v) for k, v in full_rows.items()}
    total = sum(med.values())
    total_full = total - sum(med[k] for k in TRAINING_PHASES) + sum(med_full.values())
    ideal = {k: ideal_flops[k] / rate for k in med}
    minimal = {k: minimal_flops[k] / rate for k in med}
    return {"rows": rows, "prompt_tokens": P, "completion_tokens": T, "distinct_prompts": unique,
            "prompt_tokens_real": real_lens, "matmul_rate_gflops": rate / 1e9,
            "phases": {k: {"median_s": med[k], "share": med[k] / total, "gflop": ideal_flops[k] / 1e9,
                           "ideal_s": ideal[k], "minimal_gflop": minimal_flops[k] / 1e9, "minimal_s": minimal[k],
                           **({"full_rows_median_s": med_full[k], "full_rows_times": full_rows[k]}
                              if k in med_full else {}), "times": phases[k]} for k in med},
            "total_s": total, "ideal_total_s": sum(ideal.values()), "over_ideal": total / sum(ideal.values()),
            "minimal_total_s": sum(minimal.values()), "over_minimal": total / sum(minimal.values()),
            "full_rows_total_s": total_full, "full_rows_over_ideal": total_full / sum(ideal.values())}


def step_table(s: dict) -> str:
    lines = [f"One MORLHF step (group advantages, KL term), {s['rows']} rows x ({s['prompt_tokens']} prompt + "
             f"{s['completion_tokens']} completion) tokens, {s['distinct_prompts']} distinct prompts; matmul rate "
             f"measured here: {s['matmul_rate_gflops']:.0f} GFLOP/s.  'full rows': the training passes with every "
             "row's prompt (PARETOALIGN_SHARED_PROMPTS=0, the path before), timed in the same repetitions.",
             "", "| phase | median s | share | full rows s | GFLOP | ideal s | measured / ideal | minimal GFLOP | "
             "minimal s | measured / minimal |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def ratio(a, b):
        return f"{a / b:.2f}x" if b > 0 else "-"

    for k, p in s["phases"].items():
        full = f"{p['full_rows_median_s']:.2f}" if "full_rows_median_s" in p else ""
        lines.append(f"| {k} | {p['median_s']:.2f} | {p['share']:.0%} | {full} | {p['gflop']:.3g} | {p['ideal_s']:.2f} | "
                     f"{ratio(p['median_s'], p['ideal_s'])} | {p['minimal_gflop']:.3g} | {p['minimal_s']:.2f} | "
                     f"{ratio(p['median_s'], p['minimal_s'])} |")
    lines.append(f"| **step** | **{s['total_s']:.2f}** | 100% | {s['full_rows_total_s']:.2f} | | **{s['ideal_total_s']:.2f}** | "
                 f"**{s['over_ideal']:.2f}x** | | **{s['minimal_total_s']:.2f}** | **{s['over_minimal']:.2f}x** |")
    lines.append(f"\nWith full rows the step would be {s['full_rows_total_s']:.2f} s, {s['full_rows_over_ideal']:.2f}x the ideal.")
    return "\n".join(lines)


def bench_mgda(args) -> dict:
    path = Path(__file__).resolve().parent / "mgda_step.py"
    spec = importlib.util.spec_from_file_location("bench_mgda_step", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_mgda_step"] = mod
    spec.loader.exec_module(mod)
    argv = ["--model", args.model, "--reps", str(args.reps), "--out", str(Path(args.out).with_name("rollout_mgda.json"))]
    if args.model == "tiny":
        argv += ["--ks", "2", "3", "--tokens", str(args.tokens)]
    return mod.main(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    if any(r % 4 for r in args.rows + [args.demo_rows, args.step_rows]):
        raise SystemExit("error: --rows, --demo-rows and --step-rows must be multiples of 4 (prompts x 4 completions)")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    result = {"command": "bench/rollout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": args.model, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine(), "tokens": args.tokens}
    if "gen" in args.sections:
        tok, base = load(args)
        policy = lora_policy(base)
        result["generation"] = gen = bench_generation(policy, tok, args)
        print(generation_table(gen, args.tokens), flush=True)
    if "step" in args.sections:
        tok, base = load(args)
        with tempfile.TemporaryDirectory() as tmp:
            result["step"] = s = bench_step(base, tok, args, Path(tmp))
        print("\n" + step_table(s), flush=True)
    if "mgda" in args.sections:
        m = bench_mgda(args)
        result["mgda"] = {"rows": m["rows"], "table": m["table"]}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
