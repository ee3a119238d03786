"""MAPL vs DPO on multi-instruction compliance, on the bundled SmolLM2-135M-Instruct (offline).

    python bench/mapl.py                 # default: 30 updates per method; about 1 h on 2 busy CPU cores (a DPO
                                         # update at batch 4 took ~46 s there, MAPL's two); minutes on a GPU
    python bench/mapl.py --model tiny --source <pairs> --steps 2 --eval-prompts 4   # seconds, tests the script

MAPL: Sun et al. 2025, "Multi-Level Aware Preference Learning", arXiv 2505.12845.

1. Data: ``paretoalign pairs --mapl --pairs-in <source>`` on the model's own samples (``--source``,
   default ``data/smol-pairs``, which ``paretoalign pairs --model smollm2-135m-instruct`` makes; made
   here with 48 prompts x 4 samples when it is missing): intra.jsonl (prompt-side pairs) and
   inter.jsonl (pairs on instruction-augmented prompts), instructions max_words, include_keyword,
   start_with, 2 per prompt.  Training prompts only (the source's training split).
2. Training, the same LoRA, learning rate, beta, batch size, number of updates and seed:
   - ``dpo``: DPO on inter.jsonl as ordinary pairs (what `train --method dpo --pairs <folder>/inter.jsonl`
     does): the responses compared under one instruction-augmented prompt;
   - ``mapl``: ``--method mapl`` with the intra level (the same response under x_w vs x_l) plus the
     same inter pairs (lambda 1 each, no L_0), so the difference to ``dpo`` is the prompt-side level.
     Each MAPL update therefore sees two batches (intra + inter) where DPO sees one.
3. Evaluation on the held-out prompts (the same split as training; never in the pairs): per prompt
   ``--draws`` instruction sets of 2 instructions that the reference model's greedy answer to the
   plain prompt violates (``generate_instruction(kind, y0, satisfied=False)``: a word cap below its
   length, a rare word to include, an opener it does not use), appended to the prompt; greedy
   answers of the reference, DPO and MAPL; compliance = all instructions verified satisfied
   (:mod:`paretoalign.judges`), and per instruction.  Intervals: Wilson 95% for rates; the
   differences by a paired bootstrap over prompts (2000 resamples).

Prints a markdown table and writes bench/out/mapl.json.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"
KINDS = ("max_words", "include_keyword", "start_with")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--source", default="data/smol-pairs", help="pairs (or responses) of the model's own samples")
    p.add_argument("--pair-prompts", type=int, default=48, help="training prompts of the source used (and sampled "
                   "when the source is missing)")
    p.add_argument("--steps", type=int, default=30, help="updates per method")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=5e-4, help="LoRA learning rate")
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--tokens", type=int, default=40, help="max new tokens when evaluating")
    p.add_argument("--eval-prompts", type=int, default=53, help="held-out prompts evaluated (53: all of builtin's)")
    p.add_argument("--draws", type=int, default=2, help="instruction sets per held-out prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(OUT_DIR / "mapl"))
    return p.parse_args(argv)


def wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    if n == 0:
        return [math.nan, math.nan]
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return [c - h, c + h]


def paired_bootstrap(a: dict, b: dict, reps: int = 2000, seed: int = 0) -> dict:
    """Mean of a − b over items, resampling prompts (a, b: prompt -> list of 0/1 per item)."""
    keys = sorted(a)
    rng = random.Random(seed)

    def diff(ks):
        num = sum(sum(a[k]) - sum(b[k]) for k in ks)
        return num / sum(len(a[k]) for k in ks)

    point = diff(keys)
    boots = sorted(diff([rng.choice(keys) for _ in keys]) for _ in range(reps))
    return {"diff": point, "ci95": [boots[int(0.025 * reps)], boots[int(0.975 * reps) - 1]]}


def make_data(a, out: Path) -> Path:
    from paretoalign.pairs import make_pairs
    from paretoalign.pairs_config import PairsConfig

    source = Path(a.source)
    if not source.exists():
        print(f"[mapl bench] {source} missing: sampling {a.pair_prompts} prompts x 4", file=sys.stderr)
        make_pairs(PairsConfig(model=a.model, max_prompts=a.pair_prompts, num_completions=4, max_new_tokens=32,
                               output_dir=str(source), seed=a.seed, force=True, progress=False))
    data = out / "data"
    make_pairs(PairsConfig(mapl=True, pairs_in=str(source), max_prompts=a.pair_prompts, instructions=list(KINDS),
                           instructions_per_prompt=2, output_dir=str(data), overwrite=True, seed=a.seed,
                           progress=False))
    return data


def train(a, method: str, data: Path, out: Path, tokenizer):
    from paretoalign.trainers.offline_config import OfflineConfig
    from paretoalign.trainers.offline_trainer import OfflineTrainer

    common = dict(model=a.model, max_steps=a.steps, batch_size=a.batch_size, learning_rate=a.lr, beta=a.beta,
                  seed=a.seed, output_dir=str(out / method), overwrite=True, progress=False, save_steps=10_000,
                  max_response_length=48, max_prompt_length=160)
    if method == "dpo":
        cfg = OfflineConfig(method="dpo", pairs=[str(data / "inter.jsonl")], objectives=["preference"], **common)
    else:
        cfg = OfflineConfig(method="mapl", pairs=[str(data)], objectives=["preference"], mapl_pairs_coef=0.0,
                            mapl_inter_coef=1.0, **common)
    t0 = time.perf_counter()
    tr = OfflineTrainer(cfg, tokenizer=tokenizer)
    summary = tr.train()
    return tr.unwrapped, {"seconds": time.perf_counter() - t0, "examples": summary["examples"],
                          "loss": summary.get("loss")}


def answers(model, tokenizer, prompts: list, tokens: int) -> list[str]:
    from paretoalign.rollout import generate

    model.eval()
    out = []
    for i in range(0, len(prompts), 16):
        ro = generate(model, tokenizer, prompts[i:i + 16], max_new_tokens=tokens, do_sample=False)
        out += ro.completions
    return out


def main(argv=None) -> dict:
    a = parse_args(argv)
    import torch

    from paretoalign.data.prompts import load_prompts, split_prompts
    from paretoalign.instructions import compose_prompt, generate_instruction, verify
    from paretoalign.models import load_causal_lm, load_tokenizer

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = make_data(a, out)
    card = json.loads((data / "card.json").read_text())
    tokenizer = load_tokenizer(a.model)
    _, held = split_prompts(load_prompts("builtin"), 0.15, 0)  # pairs' default split: never trained on
    held = held[: a.eval_prompts]

    # the evaluation items: instruction sets the reference's plain greedy answer violates
    torch.manual_seed(a.seed)
    ref = load_causal_lm(a.model, tokenizer, a.seed)
    plain = answers(ref, tokenizer, held, a.tokens)
    items = []  # (prompt index, instructed prompt, instructions)
    for i, (prompt, y0) in enumerate(zip(held, plain)):
        for d in range(a.draws):
            rng = random.Random(f"{a.seed}\0{prompt}\0{d}")
            ins = [generate_instruction(k, y0, False, rng) for k in rng.sample(KINDS, 2)]
            ins = [x for x in ins if x is not None and verify(x, y0) is False]
            if ins:
                items.append((i, compose_prompt(prompt, ins), ins))
    prompts = [p for _, p, _ in items]

    def score(texts):
        per_prompt, n_ins, ok_ins = {}, 0, 0
        for (i, _, ins), y in zip(items, texts):
            v = [verify(x, y) is True for x in ins]
            n_ins += len(v)
            ok_ins += sum(v)
            per_prompt.setdefault(i, []).append(int(all(v)))
        k = sum(sum(v) for v in per_prompt.values())
        n = sum(len(v) for v in per_prompt.values())
        return per_prompt, {"all_rate": k / n, "all_ci95": wilson(k, n), "items": n,
                            "instruction_rate": ok_ins / n_ins, "instruction_ci95": wilson(ok_ins, n_ins),
                            "instructions": n_ins}

    results, per, train_info = {}, {}, {}
    per["reference"], results["reference"] = score(answers(ref, tokenizer, prompts, a.tokens))
    del ref
    for method in ("dpo", "mapl"):  # one training at a time
        model, train_info[method] = train(a, method, data, out, tokenizer)
        per[method], results[method] = score(answers(model, tokenizer, prompts, a.tokens))
        del model
    diffs = {f"{x}-{y}": paired_bootstrap(per[x], per[y], seed=a.seed)
             for x, y in (("mapl", "dpo"), ("mapl", "reference"), ("dpo", "reference"))}
    report = {
        "command": "python bench/mapl.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "args": vars(a), "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
        "data": {"intra": card["mapl"]["intra"], "inter": card["mapl"].get("inter")},
        "eval": {"heldout_prompts": len(held), "items": len(items), "kinds": KINDS},
        "results": results, "differences_all_rate": diffs, "training": train_info,
        "seconds": time.perf_counter() - t_start,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / "mapl.json").write_text(json.dumps(report, indent=2, default=str))
    print("| model | all instructions satisfied (95% CI) | per instruction (95% CI) |\n|---|---|---|")
    for m, r in results.items():
        print(f"| {m} | {r['all_rate']:.3f} [{r['all_ci95'][0]:.3f}, {r['all_ci95'][1]:.3f}] (n={r['items']}) | "
              f"{r['instruction_rate']:.3f} [{r['instruction_ci95'][0]:.3f}, {r['instruction_ci95'][1]:.3f}] "
              f"(n={r['instructions']}) |")
    for k, v in diffs.items():
        print(f"{k}: {v['diff']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] (paired bootstrap over prompts)")
    print("training: " + ", ".join(f"{m} {v['seconds']:.0f} s" for m, v in train_info.items())
          + f"; total {report['seconds']:.0f} s")
    return report


if __name__ == "__main__":
    main()
