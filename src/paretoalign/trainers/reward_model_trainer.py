"""Trains an ArmoRM-style multi-objective reward model in its two stages (Wang et al. 2024,
arXiv 2406.12845); the maths is in :mod:`paretoalign.reward_model.armo`.

1. Features of every rated response (and of every pair's responses and prompt) from the frozen
   backbone, cached on disk.
2. Stage 1: one ridge head per objective on ratings scaled to [0, 1] (missing ratings ignored).
3. Debiasing λ per objective against the verbosity objective, on the stage-2 training responses
   (the chosen and rejected pooled, as the reference code does).
4. Stage 2: the gate, trained with Bradley-Terry on the preference pairs (heads frozen).
5. Evaluation on prompts held out of both stages: pairwise accuracy per objective and overall,
   each head's correlation with its held-out ratings.

With ``--rc-bt`` (MAPL, Sun et al. 2025, arXiv 2505.12845): stage 1 also fits one more head, the
instruction-compliance head, by response-conditioned Bradley–Terry on prompt-side pairs (the same
response under x_w and x_l; :mod:`paretoalign.reward_model.rc_bt`); it is not debiased (λ = 0: a
word-count instruction is about length by design); stage 2 trains the gate on
L_0 + λ_intra·L_intra, the pairs' BT loss plus the Rc-BT loss of the gated score (``--rc-bt-coef``);
the evaluation adds the held-out prompt-side pairs' accuracy (head and gated score).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from paretoalign import run_dir
from paretoalign.data.preference_pairs import load_preference_data, merge_preference_data, prompt_key
from paretoalign.data.prompt_pairs import load_mapl_data
from paretoalign.data.schemas import load_ratings
from paretoalign.errors import ConfigError, DataError
from paretoalign.losses.mapl import rc_bt_loss
from paretoalign.models import cache_dir
from paretoalign.reward_model.armo import bradley_terry_loss, debias_lambdas, fit_ridge_heads, scale_ratings
from paretoalign.reward_model.evaluate import evaluate_reward_model, head_correlations
from paretoalign.reward_model.features import FeatureExtractor
from paretoalign.reward_model.model import CONFIG_FILE, WEIGHTS_FILE, MultiObjectiveRewardModel
from paretoalign.reward_model.rc_bt import fit_rc_bt_head
from paretoalign.trainers.reward_model_config import KNOWN_RANGES, RewardModelConfig

REPORT_FILE = "report.json"


def heldout_prompts(keys: list[str], fraction: float, seed: int) -> set[str]:
    """A seeded, order-independent choice of ``fraction`` of the distinct prompts."""
    uniq = sorted(set(keys), key=lambda k: hashlib.sha256(f"{seed}\0{k}".encode()).hexdigest())
    n = int(round(fraction * len(uniq)))
    if fraction > 0 and len(uniq) >= 2:
        n = min(max(n, 1), len(uniq) - 1)
    return set(uniq[:n])


def _load_pairs(paths: list, fmt: str, max_rows):
    """Preference pairs from one or several files: 'objective=path' sets, or plain paths merged."""
    if len(paths) == 1 or all("=" in str(p) for p in paths):
        return load_preference_data(paths if len(paths) > 1 else paths[0], format=fmt, max_rows=max_rows)
    return merge_preference_data([load_preference_data(str(p), format=fmt, max_rows=max_rows) for p in paths])


def _default_extractor(cfg: RewardModelConfig) -> FeatureExtractor:
    cache = cfg.feature_cache
    if cache is None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cfg.backbone)[-80:]
        cache = str(cache_dir() / "features" / safe)
    return FeatureExtractor(cfg.backbone, cfg.pooling, cfg.max_length, cfg.batch_size, cfg.device, cache,
                            cfg.use_chat_template, cfg.allow_download)


def _log(cfg, msg: str) -> None:
    if cfg.progress:
        print(f"[reward-model] {msg}", file=sys.stderr, flush=True)


def train_reward_model(cfg: RewardModelConfig, extractor: FeatureExtractor | None = None) -> tuple[MultiObjectiveRewardModel, dict]:
    """Both stages; writes the model and ``report.json`` to ``cfg.output_dir``; returns (model, report)."""
    out = Path(cfg.output_dir)
    # Refuse a folder we did not write before any work; --overwrite removes only our files.
    run_dir.claim(out, "reward-model", cfg.overwrite, (CONFIG_FILE, WEIGHTS_FILE, REPORT_FILE))
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)

    # -- data -------------------------------------------------------------------------------------
    ratings, rfmt = load_ratings(cfg.ratings, cfg.ratings_format, cfg.max_rows)
    rname = ", ".join(cfg.ratings)
    prompts, responses = [r.prompt for r in ratings], [r.response for r in ratings]
    names = list(dict.fromkeys(k for r in ratings for k in r.scores))
    all_scores = {o: [float(r.scores.get(o, math.nan)) for r in ratings] for o in names}
    if not all_scores:
        raise DataError(f"{rname}: no per-response ratings found (helpsteer2 / ultrafeedback schema, or pairs "
                        "with chosen_scores / rejected_scores)")
    objectives = cfg.objectives or names
    unknown = [o for o in objectives if o not in all_scores]
    if unknown:
        raise ConfigError(f"objective(s) {unknown} have no ratings in {rname}; rated: {', '.join(all_scores)}")
    given = cfg.parsed_ranges()
    for o in given:
        if o not in objectives:
            raise ConfigError(f"--rating-ranges names {o!r}, which is not one of the objectives {objectives}")

    try:
        pair_data = _load_pairs(cfg.pairs, cfg.pairs_format, cfg.max_rows) if cfg.pairs else \
            _load_pairs(cfg.ratings, cfg.ratings_format, cfg.max_rows)
    except DataError as e:
        if cfg.pairs:
            raise
        raise DataError(f"{e}; stage 2 needs preference pairs: --ratings gives none (a prompt needs two rated "
                        "responses), so pass --pairs") from None
    label = cfg.preference_label
    if label is None:
        if len(pair_data.objectives) == 1:
            label = pair_data.objectives[0]
        elif "helpfulness" in pair_data.objectives:
            label = "helpfulness"
        else:
            raise ConfigError(f"{pair_data.name} has several labels ({', '.join(pair_data.objectives)}); choose the one "
                              "the gate learns with --preference-label")
    elif label not in pair_data.objectives:
        raise ConfigError(f"--preference-label {label!r} is not a label of {pair_data.name} "
                          f"(its labels: {', '.join(pair_data.objectives)})")
    pairs = pair_data.oriented(label)
    if not pairs:
        raise DataError(f"{pair_data.name}: no pairs with a strict preference on {label!r}")
    intra = []
    if cfg.rc_bt:
        if cfg.rc_bt_objective in names:
            raise ConfigError(f"--rc-bt-objective {cfg.rc_bt_objective!r} is also a rating of {rname}; choose another name")
        intra = load_mapl_data(cfg.prompt_pairs, max_rows=cfg.max_rows).intra

    # -- one prompt split for both stages and the evaluation ---------------------------------------
    held = heldout_prompts([prompt_key(p) for p in prompts] + [prompt_key(p.prompt) for p in pairs]
                           + [prompt_key(e.prompt) for e in intra], cfg.heldout_fraction, cfg.seed)
    fit_rows = torch.tensor([prompt_key(p) not in held for p in prompts])
    is_test = [prompt_key(p.prompt) in held for p in pairs]
    tr_idx = torch.tensor([i for i, t in enumerate(is_test) if not t], dtype=torch.long)
    te_idx = torch.tensor([i for i, t in enumerate(is_test) if t], dtype=torch.long)
    train_pairs, test_pairs = [pairs[i] for i in tr_idx.tolist()], [pairs[i] for i in te_idx.tolist()]
    if not train_pairs:
        raise DataError(f"{pair_data.name}: every pair's prompt is held out; lower --heldout-fraction or add pairs")
    intra_test = torch.tensor([prompt_key(e.prompt) in held for e in intra], dtype=torch.bool)
    if cfg.rc_bt and bool(intra_test.all()):
        raise DataError(f"{', '.join(cfg.prompt_pairs)}: every prompt-side pair's request is held out; lower "
                        "--heldout-fraction or add pairs")

    # rating scales, per response: yours, its schema's (files of several schemas keep each its
    # own), else the training rows' range (held-out rows unseen; a held-out rating beyond it is clipped)
    row_fmt = [r.format for r in ratings]
    ranges, cols = {}, []
    fit_np = fit_rows.numpy()
    for o in objectives:
        vals = np.array(all_scores[o], dtype=float)
        low, high = np.full(len(vals), np.nan), np.full(len(vals), np.nan)
        if o in given:
            low[:], high[:] = given[o]
        known = np.array([f in KNOWN_RANGES for f in row_fmt]) & np.isnan(low)
        low[known] = [KNOWN_RANGES[f][0] for f, k in zip(row_fmt, known) if k]
        high[known] = [KNOWN_RANGES[f][1] for f, k in zip(row_fmt, known) if k]
        rest = np.isnan(low)
        if rest.any():
            finite = vals[np.isfinite(vals) & fit_np & rest]
            if not (finite.size and finite.max() > finite.min()):
                raise DataError(f"{rname}: objective {o!r} has {'one distinct rating' if finite.size else 'no ratings'} "
                                "among the training responses; nothing to regress on")
            low[rest], high[rest] = finite.min(), finite.max()
            vals[rest] = np.clip(vals[rest], finite.min(), finite.max())
        spans = sorted({(float(a), float(b)) for a, b, v in zip(low, high, vals) if np.isfinite(v)})
        ranges[o] = list(spans[0]) if len(spans) == 1 else [list(x) for x in spans]
        col = torch.full((len(vals),), math.nan, dtype=torch.float64)
        for lo, hi in spans:
            rows = torch.from_numpy((low == lo) & (high == hi) & np.isfinite(vals))
            col[rows] = scale_ratings(torch.from_numpy(vals)[rows], lo, hi, name=o)
        cols.append(col)
    Y = torch.stack(cols, 1)

    # the debiasing objective (checked before the backbone runs: a typo costs nothing)
    verbosity = cfg.verbosity
    if verbosity == "auto":
        verbosity = "verbosity" if "verbosity" in objectives else None
    elif verbosity in (None, "none", ""):
        verbosity = None
    elif verbosity not in objectives:
        raise ConfigError(f"--verbosity {verbosity!r} is not one of the objectives {objectives}")

    # -- features ---------------------------------------------------------------------------------
    ex = extractor or _default_extractor(cfg)
    t0 = time.perf_counter()
    _log(cfg, f"features of {len(responses)} rated responses and {2 * len(pairs)} pair responses ({ex.backbone}) ...")
    X = ex.features(prompts, responses)
    Fc = ex.features([p.prompt for p in pairs], [p.chosen for p in pairs])
    Fr = ex.features([p.prompt for p in pairs], [p.rejected for p in pairs])
    Fp = ex.prompt_features([p.prompt for p in pairs])
    rc = None
    if cfg.rc_bt:  # (x_w, y), (x_l, y) and the two prompts: [4, N, d]
        _log(cfg, f"features of {len(intra)} prompt-side pairs (Rc-BT) ...")
        rc = torch.stack([ex.features([e.prompt_w for e in intra], [e.response for e in intra]),
                          ex.features([e.prompt_l for e in intra], [e.response for e in intra]),
                          ex.prompt_features([e.prompt_w for e in intra]),
                          ex.prompt_features([e.prompt_l for e in intra])])
    t_features = time.perf_counter() - t0

    # -- stage 1 ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    Yfit = Y.clone()
    Yfit[~fit_rows] = math.nan
    try:
        fit = fit_ridge_heads(X, Yfit, cfg.ridge_alphas, cfg.ridge_val_fraction, cfg.seed)
    except ValueError as e:
        raise DataError(f"stage 1: {e} (objectives in order: {objectives})") from None
    head_weight, head_bias, report_rc = fit.weight.float(), fit.bias.float(), None
    rc_train = (~intra_test).nonzero().flatten()
    if rc is not None:  # MAPL's intra level for reward models: one more head, by Rc-BT
        rc_fit = fit_rc_bt_head(rc[0, rc_train], rc[1, rc_train], cfg.rc_bt_alphas, cfg.ridge_val_fraction, cfg.seed)
        head_weight = torch.cat([head_weight, rc_fit.weight.float()[None]])
        head_bias = torch.cat([head_bias, torch.tensor([rc_fit.bias], dtype=torch.float32)])
        report_rc = {"objective": cfg.rc_bt_objective, "alpha": rc_fit.alpha, "val_loss": rc_fit.val_loss,
                     "train_pairs": rc_fit.count, "test_pairs": int(intra_test.sum()), "coef": cfg.rc_bt_coef,
                     "data": ", ".join(cfg.prompt_pairs)}
    t_stage1 = time.perf_counter() - t0
    model = MultiObjectiveRewardModel(objectives + ([cfg.rc_bt_objective] if rc is not None else []), X.shape[1],
                                      ex.describe(), ranges, verbosity, cfg.gate_hidden, cfg.gate_layers,
                                      cfg.temperature, cfg.dropout)
    model.head_weight.copy_(head_weight)
    model.head_bias.copy_(head_bias)
    K = len(objectives)  # the rated heads (the Rc-BT head, if any, comes after them)

    # -- debiasing on a reference set (default: the stage-2 training responses) --------------------
    report_debias = None
    if verbosity is not None:
        if cfg.debias_reference:
            ref_rows, _ = load_ratings(cfg.debias_reference, "auto", cfg.max_rows)
            ref_src = ", ".join(cfg.debias_reference)
            ref = model.head_rewards(ex.features([r.prompt for r in ref_rows], [r.response for r in ref_rows])).double()
        else:
            ref_src = "stage-2 training pairs (chosen and rejected)"
            ref = model.head_rewards(torch.cat([Fc[tr_idx], Fr[tr_idx]])).double()
        lam, before, after = debias_lambdas(ref[:, :K], model.verbosity_index, cfg.debias_threshold,
                                            cfg.debias_max_lambda)
        model.debias_lambda[:K] = lam.float()  # the Rc-BT head keeps λ = 0
        stuck = [o for j, o in enumerate(objectives) if o != verbosity and not float(after[j]) <= cfg.debias_threshold]
        if stuck:
            warnings.warn(f"debiasing: {stuck} stay correlated with {verbosity!r} above {cfg.debias_threshold} even at "
                          f"lambda = {cfg.debias_max_lambda} (raise --debias-max-lambda)", RuntimeWarning, stacklevel=2)
        report_debias = {"objective": verbosity, "reference": ref_src, "reference_responses": int(ref.shape[0]),
                         "not_decorrelated": stuck,
                         "lambda": dict(zip(objectives, lam.tolist())),
                         "spearman_before": dict(zip(objectives, before.tolist())),
                         "spearman_after": dict(zip(objectives, after.tolist())),
                         "threshold": cfg.debias_threshold}

    # -- stage 2: the gate ------------------------------------------------------------------------
    t0 = time.perf_counter()
    gate_losses = train_gate(model, Fc[tr_idx], Fr[tr_idx], Fp[tr_idx], cfg,
                             rc[:, rc_train] if rc is not None else None)
    t_stage2 = time.perf_counter() - t0
    model.eval()

    # -- evaluation on held-out prompts -----------------------------------------------------------
    hold_rows = (~fit_rows).nonzero().flatten()
    evaluation = {
        "heldout_prompts": len(held), "train_pairs": len(train_pairs), "test_pairs": len(test_pairs),
        "pairs_train": evaluate_reward_model(model, train_pairs, Fc[tr_idx], Fr[tr_idx], Fp[tr_idx]),
    }
    if len(te_idx):
        evaluation["pairs_test"] = evaluate_reward_model(model, test_pairs, Fc[te_idx], Fr[te_idx], Fp[te_idx])
    if len(hold_rows):
        with torch.no_grad():
            pred = model.head_rewards(X[hold_rows])[:, :K]
        evaluation["heads_heldout"] = head_correlations(pred, Y[hold_rows], objectives)
    with torch.no_grad():
        evaluation["heads_train"] = head_correlations(model.head_rewards(X[fit_rows])[:, :K], Y[fit_rows], objectives)
    if rc is not None:
        evaluation["prompt_pairs_train"] = prompt_pair_accuracy(model, rc[:, rc_train])
        if bool(intra_test.any()):
            evaluation["prompt_pairs_test"] = prompt_pair_accuracy(model, rc[:, intra_test])

    report = {
        "objectives": objectives, "preference_label": label, "rating_ranges": ranges,
        "data": {"ratings": rname, "ratings_format": rfmt, "rated_responses": len(responses),
                 "pairs": pair_data.name, "pairs_used": len(pairs)},
        "stage1": {"alpha": dict(zip(objectives, fit.alpha.tolist())), "labelled": dict(zip(objectives, fit.counts.tolist())),
                   "val_mse": {o: dict(zip(map(str, cfg.ridge_alphas), fit.val_mse[k].tolist())) for k, o in enumerate(objectives)}},
        "debias": report_debias,
        "rc_bt": report_rc,
        "stage2": {"steps": cfg.gate_steps, "loss_first": gate_losses[0], "loss_last": gate_losses[-1],
                   "scale": float(model.gate.logit_scale.detach())},
        "evaluation": evaluation,
        "seconds": {"features": t_features, "stage1": t_stage1, "stage2": t_stage2, "total": time.perf_counter() - t_start},
        "feature_extraction": {"texts": len(responses) + 3 * len(pairs) + 4 * len(intra), "backbone_batches": ex.calls},
    }
    model.extra = {"preference_label": label, "evaluation": evaluation, "debias": report_debias}
    if report_rc is not None:
        model.extra["rc_bt"] = report_rc
    model.save_pretrained(out)
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2, default=float))
    model.set_extractor(ex)
    _log(cfg, f"saved to {out / CONFIG_FILE} ({report['seconds']['total']:.1f} s)")
    run_dir.unlock(out)  # taken by claim() when it replaced an older model
    return model, report


@torch.no_grad()
def prompt_pair_accuracy(model: MultiObjectiveRewardModel, rc: torch.Tensor) -> dict:
    """On prompt-side pairs (features ``rc [4, N, d]``: (x_w, y), (x_l, y), x_w, x_l): how often the Rc-BT
    head (the last head) and the gated score rank (x_w, y) above (x_l, y), and the head's mean Rc-BT loss."""
    model.eval()
    ow, ol = model(rc[0], rc[2]), model(rc[1], rc[3])
    hw, hl = ow.rewards[:, -1], ol.rewards[:, -1]
    return {"pairs": int(rc.shape[1]), "head_accuracy": float((hw > hl).double().mean()),
            "score_accuracy": float((ow.score > ol.score).double().mean()),
            "head_rc_bt_loss": float(rc_bt_loss(hw.double(), hl.double()).mean())}


def train_gate(model: MultiObjectiveRewardModel, chosen_f, rejected_f, prompt_f, cfg: RewardModelConfig,
               rc_features: torch.Tensor | None = None) -> list[float]:
    """Stage 2: Bradley-Terry on R = β·Σ g·r' with the heads (and λ) frozen; AdamW, cosine schedule,
    batches sampled with replacement (the reference code's loop).  With ``rc_features [4, N, d]``
    ((x_w, y), (x_l, y), x_w, x_l: ``--rc-bt``), each step adds ``--rc-bt-coef`` times the Rc-BT loss
    −log σ(R(x_w, y) − R(x_l, y)) of a batch of prompt-side pairs (MAPL's L_0 + λ_intra·L_intra).
    Returns the loss per step."""
    with torch.no_grad():
        rc = model.forward(chosen_f, prompt_f).debiased
        rr = model.forward(rejected_f, prompt_f).debiased
        if rc_features is not None:
            rw = model.forward(rc_features[0], rc_features[2]).debiased
            rl = model.forward(rc_features[1], rc_features[3]).debiased
    params = list(model.gate.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.gate_lr, weight_decay=cfg.gate_weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.gate_steps)
    g = torch.Generator().manual_seed(cfg.seed)
    n = rc.shape[0]
    losses = []
    model.gate.train()
    for _ in range(cfg.gate_steps):
        idx = torch.randint(0, n, (cfg.gate_batch_size,), generator=g)
        gates = model.gate(prompt_f[idx])
        sc = model.gate.logit_scale * (gates * rc[idx]).sum(-1)
        sr = model.gate.logit_scale * (gates * rr[idx]).sum(-1)
        loss = bradley_terry_loss(sc, sr).mean()
        if rc_features is not None and cfg.rc_bt_coef > 0:
            j = torch.randint(0, rw.shape[0], (cfg.gate_batch_size,), generator=g)
            sw = model.gate.logit_scale * (model.gate(rc_features[2, j]) * rw[j]).sum(-1)
            sl = model.gate.logit_scale * (model.gate(rc_features[3, j]) * rl[j]).sum(-1)
            loss = loss + cfg.rc_bt_coef * rc_bt_loss(sw, sl).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.gate.eval()
    return losses
