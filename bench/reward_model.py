"""Multi-objective reward model costs: feature extraction, the two training stages, and one K-head
model vs K separate reward models.

    python bench/reward_model.py                      # SmolLM2-135M and MiniLM backbones on the HelpSteer2-schema fixture (~5 min, 2 CPU cores)
    python bench/reward_model.py --backbones tiny --reps 1 --score-batch 4 --gate-steps 20   # seconds, tests the script

Reported, per backbone, in one process:

1. **Feature extraction**: samples/s of the frozen backbone (no cache; batch ``--batch-size``),
   the backbone's parameter memory and the growth of the process's resident memory while it runs.
2. **Training**: stage 1 (ridge heads, α chosen per objective on validation) and stage 2 (the gate,
   ``--gate-steps`` Bradley-Terry steps at the reference code's sizes), on cached features.
3. **Scoring K objectives**: one multi-head model (one backbone pass, K heads) vs K single-objective
   reward models on the same backbone (K passes), same batch, interleaved, median of ``--reps``;
   the ratio is the cost of K separate models over the one multi-head model.

Prints markdown tables and writes bench/out/reward_model.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "reward" / "helpsteer2_small.jsonl"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backbones", default="smollm2-135m-instruct,minilm")
    p.add_argument("--ratings", default=str(FIXTURE), help="rated responses (HelpSteer2 schema)")
    p.add_argument("--batch-size", type=int, default=8, help="texts per backbone pass")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--gate-steps", type=int, default=300, help="stage-2 steps (reference code: 2000; time is linear in steps)")
    p.add_argument("--score-batch", type=int, default=16, help="(prompt, response) pairs per scoring call")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions of the scoring comparison")
    p.add_argument("--json", default=str(OUT_DIR / "reward_model.json"))
    return p.parse_args(argv)


def _rss_mib() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20


def bench_backbone(backbone: str, a, tmp: Path) -> dict:
    import torch

    from paretoalign.data.schemas import load_ratings
    from paretoalign.reward_model.features import FeatureExtractor
    from paretoalign.reward_model.model import MultiObjectiveRewardModel
    from paretoalign.trainers.reward_model_config import RewardModelConfig
    from paretoalign.trainers.reward_model_trainer import train_reward_model

    rated, _fmt = load_ratings([a.ratings])
    prompts, responses = [r.prompt for r in rated], [r.response for r in rated]
    # 1. extraction, no cache
    rss0 = _rss_mib()
    ex = FeatureExtractor(backbone, max_length=a.max_length, batch_size=a.batch_size)
    ex._load()
    params = sum(p.numel() * p.element_size() for p in ex._model.parameters()) / 2**20
    rss_loaded = _rss_mib()
    t0 = time.perf_counter()
    feats = ex.features(prompts, responses)
    t_extract = time.perf_counter() - t0
    rss_after = _rss_mib()
    tokens = [len(ex.tokenizer(ex.conversation_text(p, r), add_special_tokens=False)["input_ids"]) for p, r in zip(prompts, responses)]

    # 2. both stages (features cached on disk by the first pass of this training call)
    cfg = RewardModelConfig(ratings=[a.ratings], backbone=backbone, max_length=a.max_length, batch_size=a.batch_size,
                            gate_steps=a.gate_steps, output_dir=str(tmp / f"rm-{Path(backbone).name}"),
                            feature_cache=str(tmp / f"features-{Path(backbone).name}"), progress=False)
    ex_cached = FeatureExtractor(backbone, max_length=a.max_length, batch_size=a.batch_size, cache_dir=cfg.feature_cache,
                                 model=ex._model, tokenizer=ex._tokenizer)
    model, rep = train_reward_model(cfg, extractor=ex_cached)

    # 3. K heads in one pass vs K single-objective models (K passes), same backbone weights
    K = len(model.objectives)
    singles = []
    for k in range(K):
        m = MultiObjectiveRewardModel([model.objectives[k]], model.head_weight.shape[1], model.backbone,
                                      gate_hidden=16, gate_layers=1)
        m.head_weight.copy_(model.head_weight[k : k + 1])
        m.head_bias.copy_(model.head_bias[k : k + 1])
        m.set_extractor(FeatureExtractor(backbone, max_length=a.max_length, batch_size=a.batch_size, model=ex._model,
                                         tokenizer=ex._tokenizer, keep_in_memory=False))
        singles.append(m)
    model.set_extractor(FeatureExtractor(backbone, max_length=a.max_length, batch_size=a.batch_size, model=ex._model,
                                         tokenizer=ex._tokenizer, keep_in_memory=False))
    P, R = prompts[: a.score_batch], responses[: a.score_batch]
    one, sep = [], []
    for rep_i in range(a.reps + 1):  # rep 0 warms up
        t0 = time.perf_counter()
        out = model.score(P, R)
        t1 = time.perf_counter()
        cols = [m.score(P, R).rewards[:, 0] for m in singles]
        t2 = time.perf_counter()
        if rep_i:
            one.append(t1 - t0)
            sep.append(t2 - t1)
    same = bool(torch.allclose(torch.stack(cols, 1), out.rewards, atol=1e-4))
    return {
        "backbone": backbone, "pooling": ex.pooling, "hidden": int(feats.shape[1]), "texts": len(responses),
        "tokens_median": statistics.median(tokens), "extract_s": t_extract, "samples_per_s": len(responses) / t_extract,
        "param_mib": params, "rss_load_mib": rss_loaded - rss0, "rss_extract_mib": rss_after - rss_loaded,
        "stage1_s": rep["seconds"]["stage1"], "stage2_s": rep["seconds"]["stage2"], "gate_steps": a.gate_steps,
        "objectives": K, "test_accuracy": rep["evaluation"].get("pairs_test", {}).get("overall", {}).get("accuracy"),
        "score_batch": len(P), "one_model_s": statistics.median(one), "k_models_s": statistics.median(sep),
        "k_over_one": statistics.median(sep) / statistics.median(one), "heads_equal_separate_models": same,
    }


def main(argv=None) -> dict:
    a = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in [x.strip() for x in a.backbones.split(",") if x.strip()]:
            print(f"[bench] {b} ...", file=sys.stderr, flush=True)
            rows.append(bench_backbone(b, a, Path(tmp)))
    print(f"\n## Reward model costs ({Path(a.ratings).name}; batch {a.batch_size}, max length {a.max_length})")
    print("\n| backbone | pooling | d | texts (median tokens) | samples/s | params MiB | RSS +load / +extract MiB | stage 1 s | stage 2 s (steps) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['pooling']} | {r['hidden']} | {r['texts']} ({r['tokens_median']:.0f}) | "
              f"{r['samples_per_s']:.1f} | {r['param_mib']:.0f} | {r['rss_load_mib']:.0f} / {r['rss_extract_mib']:.0f} | "
              f"{r['stage1_s']:.2f} | {r['stage2_s']:.1f} ({r['gate_steps']}) |")
    print(f"\nScoring {rows[0]['objectives'] if rows else '?'} objectives, median of {a.reps}:")
    print("\n| backbone | batch | one K-head model s | K single-objective models s | K models / one |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backbone']} | {r['score_batch']} | {r['one_model_s']:.3f} | {r['k_models_s']:.3f} | {r['k_over_one']:.2f} |")
    res = {"args": vars(a), "rows": rows, "python": sys.version.split()[0], "machine": platform.machine()}
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(res, indent=2, default=float))
    print(f"\n-> {a.json}")
    return res


if __name__ == "__main__":
    main()
