"""report.html: one self-contained page (inline CSS, images as data: URIs, no network) per front or comparison.

Sections: settings (objectives, prompt-set hash, decoding, reference point), the plots, the
hypervolume table, the table of points (mean ± s.e., win rate against the base model, dominated
or not), and sample completions side by side (one row per prompt, one column per point).
:func:`screenshot` renders it with headless Chromium, so a regression in the page can be seen.
"""

from __future__ import annotations

import base64
import html
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from paretoalign.errors import ParetoAlignError

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr.nd td{background:#eef7ee}
.wrap{overflow-x:auto}.num{text-align:right;font-variant-numeric:tabular-nums}
.sample{white-space:pre-wrap;max-width:320px;min-width:180px;font-size:12px}
.scores{color:#555;font-size:11px;margin-top:4px}
figure{display:inline-block;margin:8px 16px 8px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}.meta{font-size:13px;color:#444}code{font-size:12px}
"""


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x, d=4) -> str:
    return "–" if x is None else (f"{x:.{d}g}" if isinstance(x, float) else _e(x))


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{_e(Path(path).name)}" src="data:image/png;base64,{data}">'


def write_report(data: dict, path, images: dict | None = None, title=None, max_samples: int = 5) -> Path:
    """Write report.html for one front dict or a comparison dict (detected by its ``fronts`` key)."""
    fronts = data["fronts"] if "fronts" in data else [data]
    names = list(data["names"])
    base = data.get("base")
    title = title or ("Comparison of fronts: " + ", ".join(f["name"] for f in fronts) if "fronts" in data
                      else f"Pareto front: {data.get('name', '')}")
    objs = data.get("objectives") or [{"name": n} for n in names]
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{_e(title)}</h1>"]
    obj_txt = ", ".join(f"<b>{_e(o['name'])}</b> ({_e(o.get('direction', 'maximize'))}"
                        + (f", spec <code>{_e(o['spec'])}</code>" if o.get("spec") else "") + ")" for o in objs)
    dec = data.get("decoding") or fronts[0].get("decoding") or {}
    ref = data.get("reference_point")
    parts.append("<div class='meta'>"
                 f"<p>Objectives: {obj_txt}</p>"
                 f"<p>Prompt set sha256: <code>{_e(data.get('prompts_sha256') or fronts[0].get('prompts_sha256', ''))}</code>"
                 + (f" ({_e(fronts[0].get('prompts', {}).get('n', ''))} prompts)" if fronts[0].get("prompts") else "") + "</p>"
                 f"<p>Decoding: {_e(', '.join(f'{k}={v}' for k, v in dec.items()))}</p>"
                 + (f"<p>Hypervolume reference point: ({_e(', '.join(f'{x:.4g}' for x in ref))}) — "
                    f"{_e(data.get('reference_point_source', ''))}</p>" if ref is not None else "")
                 + "</div>")
    if images:
        parts.append("<h2>Plots</h2>")
        for cap, p in images.items():
            parts.append(f"<figure>{_img(p)}<figcaption>{_e(cap)}</figcaption></figure>")

    parts.append("<h2>Hypervolume</h2><table><tr><th>front</th><th>method</th><th>points</th>"
                 "<th>non-dominated</th><th>hypervolume</th><th>IGD+</th></tr>")
    for f in fronts:
        nd = sum(not p.get("dominated", False) for p in f["points"])
        parts.append(f"<tr><td>{_e(f.get('name'))}</td><td>{_e(f.get('method', ''))}</td><td class='num'>{len(f['points'])}</td>"
                     f"<td class='num'>{nd}</td><td class='num'>{_fmt(f.get('hypervolume'))}</td>"
                     f"<td class='num'>{_fmt(f.get('igd_plus'))}</td></tr>")
    if data.get("base_hypervolume") is not None:
        parts.append(f"<tr><td>base model alone</td><td></td><td class='num'>1</td><td></td>"
                     f"<td class='num'>{_fmt(data['base_hypervolume'])}</td><td></td></tr>")
    parts.append("</table>")

    head = "".join(f"<th>{_e(n)}<br>mean ± s.e.</th>" for n in names)
    head += "".join(f"<th>win rate vs base: {_e(n)}</th>" for n in names) if base else ""
    parts.append(f"<h2>Points</h2><div class='wrap'><table><tr><th>front</th><th>preference</th>{head}<th>dominated</th></tr>")
    for f in fronts:
        for p in f["points"]:
            cells = "".join(f"<td class='num'>{m:.4g} ± {s:.2g}</td>" for m, s in zip(p["mean"], p.get("stderr") or [0] * len(names)))
            if base:
                for n in names:
                    w = (p.get("win_rate") or {}).get(n)
                    cells += (f"<td class='num'>{w['win_rate']:.2f} [{w['ci95'][0]:.2f}, {w['ci95'][1]:.2f}]</td>" if w else "<td>–</td>")
            cls = "" if p.get("dominated") else " class='nd'"
            parts.append(f"<tr{cls}><td>{_e(f.get('name'))}</td><td>{_e(p.get('label', ''))}</td>{cells}"
                         f"<td>{'yes' if p.get('dominated') else 'no'}</td></tr>")
    if base:
        cells = "".join(f"<td class='num'>{m:.4g} ± {s:.2g}</td>" for m, s in zip(base["mean"], base.get("stderr") or [0] * len(names)))
        parts.append(f"<tr><td>base model</td><td>–</td>{cells}{'<td></td>' * len(names)}<td></td></tr>")
    parts.append("</table></div>")

    columns = [(f"{f.get('name')} {p.get('label', '')}" if len(fronts) > 1 else p.get("label", ""), p)
               for f in fronts for p in f["points"]]
    if base:
        columns.append(("base model", base))
    n_rows = min([max_samples] + [len(c[1].get("samples") or []) for c in columns])
    if n_rows > 0:
        parts.append("<h2>Sample completions, side by side</h2><div class='wrap'><table><tr><th>prompt</th>"
                     + "".join(f"<th>{_e(lab)}</th>" for lab, _ in columns) + "</tr>")
        for r in range(n_rows):
            prompt = columns[0][1]["samples"][r].get("prompt", "")
            row = f"<tr><td class='sample'>{_e(prompt)}</td>"
            for _, p in columns:
                s = p["samples"][r]
                sc = ", ".join(f"{n} {v:.3g}" for n, v in zip(names, s.get("scores") or []))
                row += f"<td class='sample'>{_e(s.get('completion', ''))}<div class='scores'>{_e(sc)}</div></td>"
            parts.append(row + "</tr>")
        parts.append("</table></div>")
    parts.append("<p class='meta'>Written by paretoalign; self-contained (no network).</p></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def find_browser(browser: str | None = None) -> str | None:
    """A headless-capable Chromium: ``browser``, ``$PARETOALIGN_CHROMIUM``, then chromium / chromium-browser / google-chrome."""
    for cand in (browser, os.environ.get("PARETOALIGN_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if cand:
            found = shutil.which(cand) or (cand if Path(cand).is_file() else None)
            if found:
                return found
    return None


def screenshot(html_path, png_path, width: int = 1280, height: int = 2000, browser: str | None = None,
               timeout: float = 90.0) -> Path:
    """Render ``html_path`` to ``png_path`` with headless Chromium; returns the PNG path."""
    exe = find_browser(browser)
    if exe is None:
        raise ParetoAlignError("no Chromium found for the screenshot; install it (Debian: apt-get install chromium) "
                               "or set PARETOALIGN_CHROMIUM to its path")
    html_path, png_path = Path(html_path).resolve(), Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    if png_path.exists():
        png_path.unlink()
    with tempfile.TemporaryDirectory() as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={png_path}",
               html_path.as_uri()]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ParetoAlignError(f"Chromium did not finish the screenshot within {timeout:.0f} s") from None
    if not png_path.is_file():
        tail = (proc.stderr or proc.stdout or "")[-800:]
        raise ParetoAlignError(f"Chromium (exit {proc.returncode}) wrote no screenshot; its output ends with:\n{tail}")
    return png_path
