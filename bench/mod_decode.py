"""MOD decoding cost: K LoRA adapters on one base against one model, at the same batch, side by side.

    .venv/bin/python bench/mod_decode.py                                        # SmolLM2-135M-Instruct, K = 2, 3 reps
    .venv/bin/python bench/mod_decode.py --rows 1 8 32 --tokens 32 --reps 5
    .venv/bin/python bench/mod_decode.py --model tiny --rows 2 4 --tokens 4 --reps 1   # fast check (random 2-layer model)

Two LoRA adapters (r = 16 on all 7 projections, B drawn at random so that they are non-zero and
differ) are made in-process on the base.  Each path decodes ``rows`` prompts greedily for exactly
``--tokens`` tokens (EOS banned until then, so every path makes the same number of tokens), in this
process, in an order that rotates every repetition; medians of ``--reps``:

* ``single`` - one adapter alone through paretoalign's packed decode loop (:mod:`paretoalign.decoding`,
  W + ΔW folded, static KV cache): the cost of one model at this batch;
* ``mod`` - :class:`paretoalign.decoding.MultiObjectiveDecoder` over the K adapters: one batched
  forward per token over K·rows rows (shared base weight, per-adapter low-rank updates as batched
  matmuls, one KV cache holding every adapter's keys and values), the reverse-KL rule;
* ``mod-separate`` - the same decoder over K whole models (each adapter merged into its own copy of
  the base): K packed forwards per token, the path full fine-tuned endpoints take;
* ``peft-loop`` - what the reference code does (``FusionModel``): per token, K forwards of the PEFT
  model through transformers, switching adapters with ``set_adapter``, one KV cache per adapter
  (without its unused reference pass).

Reported: seconds per call (prompt prefill included), tokens/s, each path's cost relative to
``single`` and that ratio divided by K.  The target: ``mod`` costs at most 1.3·K times ``single``.
``mod`` and ``mod-separate`` must produce the same tokens (checked).  Writes bench/out/mod_decode.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "out"
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PATHS = ("single", "mod", "mod-separate", "peft-loop")
TARGET_PER_K = 1.3  # mod may cost at most 1.3 x K x one model


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct", help="smollm2-135m-instruct (default) or tiny")
    p.add_argument("--k", type=int, default=2, help="adapters (objectives)")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 32], help="prompts per call")
    p.add_argument("--tokens", type=int, default=32, help="completion length (forced)")
    p.add_argument("--reps", type=int, default=3, help="timed repetitions (medians)")
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    p.add_argument("--std", type=float, default=0.02, help="std of the random LoRA B matrices")
    p.add_argument("--out", default=str(OUT_DIR / "mod_decode.json"))
    return p.parse_args(argv)


def load(args):
    from paretoalign.models import build_tiny_model, build_tiny_tokenizer, load_causal_lm, load_tokenizer

    if args.model == "tiny":
        tok = build_tiny_tokenizer()
        return tok, build_tiny_model(tok)
    tok = load_tokenizer(args.model)
    return tok, load_causal_lm(args.model, tok)


def with_adapters(base, k: int, std: float):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    names = [f"objective{i}" for i in range(k)]
    model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS), adapter_name=names[0])
    for n in names[1:]:
        model.add_adapter(n, LoraConfig(r=16, lora_alpha=32, target_modules=LORA_TARGETS))
    for m in model.modules():  # trained adapters are non-zero and differ
        if hasattr(m, "lora_B"):
            for lin in m.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=std)
    return model.eval(), names


def encode(tok, rows: int):
    from paretoalign.data.prompts import builtin_prompts
    from paretoalign.rollout import render_prompt

    pool = builtin_prompts("train")
    texts = [render_prompt(pool[i % len(pool)], tok) for i in range(rows)]
    return tok(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)


@torch.no_grad()
def peft_loop(model, names, weights, enc, tokens, eos, pad):
    """The reference code's scheme: K transformers forwards per token, one cache per adapter (greedy, reverse KL)."""
    from transformers import DynamicCache

    from paretoalign.decoding import combine_logprobs

    ids, am = enc["input_ids"], enc["attention_mask"]
    caches = [DynamicCache() for _ in names]
    step, out = ids, []
    for _ in range(tokens):
        pos = (am.cumsum(-1) - 1).clamp(min=0)[:, -step.shape[1]:]
        logps = []
        for n, cache in zip(names, caches):
            model.set_adapter(n)
            logits = model(input_ids=step, attention_mask=am, position_ids=pos, past_key_values=cache,
                           use_cache=True).logits[:, -1]
            logps.append(logits.float().log_softmax(-1))
        scores = combine_logprobs(torch.stack(logps), weights)
        scores[:, eos] = -float("inf")  # forced length, as the other paths
        nxt = scores.argmax(-1, keepdim=True)
        out.append(nxt)
        step = nxt
        am = torch.cat([am, torch.ones_like(nxt)], 1)
    model.set_adapter(names[0])
    return torch.cat([ids] + out, 1)


def run_path(path, ctx, enc, tokens):
    tok = ctx["tok"]
    ids, am = enc["input_ids"], enc["attention_mask"]
    if path == "single":
        return ctx["single"].generate(ids, am, tokens, tok.eos_token_id, tok.pad_token_id, min_new_tokens=tokens,
                                      do_sample=False)
    if path in ("mod", "mod-separate"):
        return ctx[path].generate_ids(ids, am, tokens, min_new_tokens=tokens)
    return peft_loop(ctx["model"], ctx["names"], ctx["weights"], enc, tokens, tok.eos_token_id, tok.pad_token_id)


def bench(args) -> dict:
    from paretoalign.decoding import MultiObjectiveDecoder, packed_decoder

    tok, base = load(args)
    model, names = with_adapters(base, args.k, args.std)
    weights = [1.0 / args.k] * args.k
    ctx = {"tok": tok, "model": model, "names": names, "weights": weights}
    ctx["mod"] = MultiObjectiveDecoder(model, tok, weights, adapters=names)
    if "mod-separate" in args.paths:
        merged = []
        for n in names:
            m = copy.deepcopy(model)
            m.set_adapter(n)
            merged.append(m.merge_and_unload().eval())
        ctx["mod-separate"] = MultiObjectiveDecoder(merged, tok, weights)
    if "single" in args.paths:
        single = copy.deepcopy(model)
        single.set_adapter(names[0])
        ctx["single"] = packed_decoder(single)
    rows_out = {}
    for p in args.paths:  # warm-up: the first calls pay allocation and packing
        run_path(p, ctx, encode(tok, 2), 2)
    for rows in args.rows:
        enc = encode(tok, rows)
        times = {p: [] for p in args.paths}
        outputs = {}
        for rep in range(args.reps):
            order = args.paths[rep % len(args.paths):] + args.paths[:rep % len(args.paths)]
            for p in order:
                t0 = time.perf_counter()
                outputs[p] = run_path(p, ctx, enc, args.tokens)
                times[p].append(time.perf_counter() - t0)
        med = {p: statistics.median(v) for p, v in times.items()}
        row = {"seconds": med, "times": times, "tokens_per_s": {p: rows * args.tokens / m for p, m in med.items()}}
        if "single" in med:
            row["vs_single"] = {p: m / med["single"] for p, m in med.items()}
            row["vs_single_per_k"] = {p: m / med["single"] / args.k for p, m in med.items()}
        if "mod" in outputs and "mod-separate" in outputs:
            row["mod_equals_separate"] = bool(torch.equal(outputs["mod"], outputs["mod-separate"]))
        if "mod" in outputs and "peft-loop" in outputs:
            row["mod_equals_peft_loop"] = bool(torch.equal(outputs["mod"], outputs["peft-loop"]))
        rows_out[rows] = row
    ok = all(r["vs_single"]["mod"] <= TARGET_PER_K * args.k for r in rows_out.values()
             if "vs_single" in r and "mod" in r["vs_single"])
    return {"rows": rows_out, "target": f"mod <= {TARGET_PER_K} x K x single", "target_met": ok}


def table(res: dict, k: int) -> str:
    paths = [p for p in PATHS if p in next(iter(res["rows"].values()))["seconds"]]
    head = "| rows | " + " | ".join(f"{p} s" for p in paths) + " | " + " | ".join(
        f"{p} / single / K" for p in paths if p != "single") + " | mod = separate |"
    lines = [head, "|" + "---:|" * (1 + len(paths) + len(paths) - ("single" in paths)) + "---|"]
    for rows, r in res["rows"].items():
        per_k = r.get("vs_single_per_k", {})
        lines.append(f"| {rows} | " + " | ".join(f"{r['seconds'][p]:.3f}" for p in paths) + " | " + " | ".join(
            f"{per_k[p]:.2f}" if p in per_k else "-" for p in paths if p != "single")
            + f" | {r.get('mod_equals_separate', '-')} |")
    lines.append(f"\nK = {k}; target {res['target']}: {'met' if res['target_met'] else 'NOT met'}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.k < 2:
        raise SystemExit("error: --k must be >= 2")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    res = bench(args)
    result = {"command": "bench/mod_decode.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "model": args.model, "k": args.k, "tokens": args.tokens, "reps": args.reps, "torch": torch.__version__,
              "threads": torch.get_num_threads(), "machine": platform.machine(), **res}
    print(table(res, args.k), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"-> {out}")
    return result


if __name__ == "__main__":
    main()
