"""Does one model really steer?  Fronts side by side, with intervals, from their evaluation files.

    python bench/steer_check.py ric=fronts/smol-ric/ric rs=fronts/smol-rs-morlhf/rs \
        morlhf=fronts/smol-rs-morlhf/morlhf --reference-point -1,0.5 --json bench/out/steer_check.json

For each front (a folder holding front.json; every point evaluated on the same prompts with the same
decoding, as `paretoalign front` does), with K = 2 objectives (K >= 3: Spearman of each objective's own
weight against its mean, and the hypervolume):

* the hypervolume against ONE reference point, and its 95 % interval from a paired bootstrap over
  prompts (the same resampled prompts for every point of every front);
* whether it steers: Spearman's rank correlation between the first objective's preference weight and
  each objective's mean over the points (+1 / −1 when the means follow the preference perfectly), and
  the end-to-end change (mean at w = (1, 0) minus at w = (0, 1)), each with a paired-bootstrap 95 %
  interval.  A model that ignores its preference has an interval for the change that covers 0.

This is the test the DPA benchmark failed at small scale (BENCHMARKS.md): a steerable method must move
its outputs with the preference, not only sit on a good front.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties (NaN when either side is constant)."""
    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=float)
        for u in np.unique(v):  # average ranks of ties
            m = v == u
            r[m] = r[m].mean()
        return r

    rx, ry = ranks(np.asarray(x, float)), ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def load_front(folder: Path) -> dict:
    """Preferences [P, K], per-prompt oriented scores [P, N, K] (higher is better), names, prompts hash."""
    front = json.loads((folder / "front.json").read_text())
    signs = np.array([-1.0 if o.get("direction") == "minimize" else 1.0 for o in front["objectives"]])
    prefs, scores, shas = [], [], set()
    for p in front["points"]:
        # the point's own folder first (front.json records the path as written, which a moved front no longer has)
        ev = folder / "points" / Path(p["eval"]).parent.name / "eval.json"
        if not ev.is_file():
            ev = Path(p["eval"]) if Path(p["eval"]).is_absolute() else folder / p["eval"]
        e = json.loads(ev.read_text())
        prefs.append(p["preference"])
        scores.append(np.asarray(e["scores"], float) * signs)
        shas.add(e["prompts_sha256"])
    if len(shas) != 1:
        raise SystemExit(f"error: {folder}: its points were evaluated on different prompts")
    order = np.argsort([w[0] for w in prefs])
    seconds = sum(float(p.get("train_seconds") or 0.0) for p in front["points"])
    return {"names": front["names"], "prefs": np.asarray(prefs)[order], "scores": np.stack(scores)[order],
            "sha": shas.pop(), "method": front.get("method"), "train_seconds": seconds}


def stats(front: dict, idx: np.ndarray, ref: np.ndarray) -> dict:
    from paretoalign.fronts.metrics import hypervolume

    means = front["scores"][:, idx].mean(1)  # [P, K]
    out = {"hv": hypervolume(means, ref)}
    if len(front["names"]) > 2:  # K >= 3: each objective against its own weight
        for k, name in enumerate(front["names"]):
            out[f"rho/{name}"] = spearman(front["prefs"][:, k], means[:, k])
        return out
    w1 = front["prefs"][:, 0]
    for k, name in enumerate(front["names"]):
        out[f"rho/{name}"] = spearman(w1, means[:, k])
        out[f"change/{name}"] = float(means[-1, k] - means[0, k])  # w1 = max minus w1 = min
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fronts", nargs="+", help="name=FOLDER (a folder with front.json)")
    ap.add_argument("--reference-point", default="-1,0.5", help="one reference point for every hypervolume")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    fronts = {}
    for spec in a.fronts:
        name, _, folder = spec.partition("=")
        fronts[name] = load_front(Path(folder))
    shas = {f["sha"] for f in fronts.values()}
    if len(shas) != 1:
        raise SystemExit("error: the fronts were evaluated on different prompts; compare like with like")
    ref = np.array([float(x) for x in a.reference_point.split(",")])
    n = next(iter(fronts.values()))["scores"].shape[1]
    rng = np.random.default_rng(a.seed)
    boots = [rng.integers(0, n, n) for _ in range(a.bootstrap)]
    full = np.arange(n)
    results = {}
    for name, f in fronts.items():
        point = stats(f, full, ref)
        draws = [stats(f, b, ref) for b in boots]
        ci = {k: [float(np.nanpercentile([d[k] for d in draws], 2.5)), float(np.nanpercentile([d[k] for d in draws], 97.5))]
              for k in point}
        results[name] = {"method": f["method"], "points": len(f["prefs"]), "train_seconds": f["train_seconds"],
                         "estimate": point, "ci95": ci}
    names = next(iter(fronts.values()))["names"]
    head = ["front", "points", f"HV (ref {a.reference_point}) [95% CI]"]
    for nm in names:
        head += [f"Spearman(w_{nm}, {nm}) [95% CI]"] if len(names) > 2 else \
            [f"Spearman(w1, {nm}) [95% CI]", f"{nm}: w1=1 minus w1=0 [95% CI]"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, r in results.items():
        e, c = r["estimate"], r["ci95"]
        row = [name, str(r["points"]), f"{e['hv']:.4f} [{c['hv'][0]:.4f}, {c['hv'][1]:.4f}]"]
        for nm in names:
            row += [f"{e[f'rho/{nm}']:+.2f} [{c[f'rho/{nm}'][0]:+.2f}, {c[f'rho/{nm}'][1]:+.2f}]"]
            if len(names) == 2:
                row += [f"{e[f'change/{nm}']:+.3f} [{c[f'change/{nm}'][0]:+.3f}, {c[f'change/{nm}'][1]:+.3f}]"]
        print("| " + " | ".join(row) + " |")
    print(f"({n} prompts, {a.bootstrap} paired bootstrap draws over prompts)")
    if a.json:
        Path(a.json).write_text(json.dumps({"reference_point": ref.tolist(), "prompts": n, "fronts": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
