"""``paretoalign serve TARGET``: a local web page with one slider per objective, a prompt box, the answer
streamed token by token, its score on every objective, and the method's front with the preference marked.

TARGET is anything :func:`paretoalign.steering.resolve_steerable` accepts: a DPA run (the preference
becomes the direction in its system message, as ``evaluate --direction`` writes it), a Rewarded Soups
front (its endpoints merged at the preference), a MOD front (its endpoints decoded together at the
preference), another front folder (the trained point nearest the preference answers; the page says
which and how far), or a kind registered with :func:`paretoalign.steering.register_steerable`.  A run
trained at one preference is refused (``paretoalign chat`` talks to it).  Everything the command is given is checked, the target
resolved and its first model loaded before the server starts: a problem is one ``error:`` line.  On
the page, a preference that cannot be normalised (all zero), an empty prompt or one longer than the
model's context is a message, never a traceback.

The page is a Gradio app (``pip install 'paretoalign[app]'``), imported only when the command serves;
it listens on 127.0.0.1 unless ``--host`` says otherwise (then it warns: the page has no login).
:class:`ServeSession` is what the page does, as plain functions (tested without a browser);
:func:`build_app` wires it to Gradio components.  This module imports neither gradio nor torch at
import time: the command line builds ``serve``'s parser (:func:`add_serve_parser`) from it.
"""

from __future__ import annotations

import html
import itertools
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Iterator, Optional

from paretoalign.config_utils import check_fields, field
from paretoalign.errors import ConfigError, ParetoAlignError

__all__ = ["ServeConfig", "ServeSession", "add_serve_parser", "build_app", "preference_figure", "run_serve"]

SKIP = object()  # "leave this output as it is" (gr.skip() on the page)
LOOPBACK_NAMES = ("localhost",)
_TARGET_HELP = ("A DPA run folder (its preference goes into the system message) or a front folder (front.json): "
                "Rewarded Soups merges its endpoints at the sliders' preference, MOD decodes them together at it, "
                "other methods answer with the trained point nearest the sliders.")


@dataclass
class ServeConfig:
    """Options of ``paretoalign serve``."""

    target: str = field("", cli=False, help=_TARGET_HELP)
    host: str = field("127.0.0.1", help="Address to listen on. Anything but a loopback address (127.0.0.1, ::1, "
                      "localhost) makes the page reachable from other machines, without a login (a warning says so).")
    port: int = field(7860, help="Port to listen on (0: any free port; the address is printed).")
    weights: Optional[list] = field(None, help="Where the sliders start, e.g. 0.7,0.3 (one per objective, >= 0, "
                                    "normalised to sum to 1; default: uniform).")
    max_new_tokens: Optional[int] = field(None, help="Length cap of an answer (default: the run's or the front's, "
                                          "else 128).")
    temperature: float = field(0.7, help="Sampling temperature.")
    top_p: float = field(1.0, help="Nucleus sampling.")
    do_sample: bool = field(True, help="Sample (true) or decode greedily (false).")
    seed: int = field(0, help="Sampling seed, set before every answer (the same prompt at the same preference gives "
                      "the same answer).")
    device: str = field("auto", help="Where the models run: auto (the GPU if there is one), cpu, cuda, cuda:1, ...")
    allow_download: bool = field(False, help="Let models be fetched from a hub (off: local only).")
    max_models: int = field(2, help="Models kept loaded at once (a front folder's points are one model each; "
                            "the least recently used is dropped).")

    def __post_init__(self):
        check_fields(self)
        if not str(self.target).strip():
            raise ConfigError("serve needs a TARGET: a front folder or a DPA run")
        if not str(self.host).strip():
            raise ConfigError("option host: give an address to listen on, e.g. 127.0.0.1")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"option port: must be in [0, 65535] (0: any free port), got {self.port}")
        if self.max_models < 1:
            raise ConfigError(f"option max_models: must be >= 1, got {self.max_models}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"option max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if isinstance(self.weights, str):
            self.weights = [w.strip() for w in self.weights.split(",")]


# ---------------------------------------------------------------------------------------------
# the page, as plain functions


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _better(direction: str) -> str:
    return "lower is better" if direction == "minimize" else "higher is better"


def _fmt_score(v) -> str:
    return "n/a (no finite score)" if v is None else f"{v:.4g}"


class ServeSession:
    """What the page does, without Gradio.  Every method returns plain values (HTML strings, a matplotlib
    figure, the answer text) and turns any problem into a message; nothing raises into the page."""

    def __init__(self, target, decoding, weights=None, log=None):
        self.target = target
        self.decoding = decoding
        self.initial = tuple(weights) if weights is not None else target.uniform()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._seq = itertools.count(1)

    # -- pieces of the page
    def header_html(self) -> str:
        return (f'<div id="pa-header"><h2 style="margin:0">paretoalign serve</h2>'
                f"<p>{_e(self.target.describe())}</p></div>")

    def weights_html(self, w) -> str:
        parts = " &middot; ".join(f"<b>{_e(n)}</b> {x:.3f}" for n, x in zip(self.target.names, w))
        return (f'<div class="pa-weights" data-weights="{_e(json.dumps(list(w)))}">normalised preference '
                f"(sums to 1): {parts}</div>")

    def message_html(self, text: str, error: bool = False) -> str:
        """The message line; ``data-seq`` numbers the messages, so a script (a test) can tell a new message
        from an old one with the same text."""
        seq = next(self._seq)
        cls = "pa-message pa-error" if error else "pa-message"
        style = ' style="color:#b00020;font-weight:600"' if error and text else ""
        return f'<div class="{cls}" data-seq="{seq}"{style}>{_e(text)}</div>'

    def note_html(self, steering) -> str:
        point = steering.point if steering.point is not None else ""
        return f'<div class="pa-note" data-point="{_e(point)}">{_e(steering.note)}</div>'

    def scores_html(self, scores: dict, steering=None) -> str:
        """The answer's raw score per objective (``data-value``: the exact number, JSON), beside the held-out
        mean of the front point marked on the plot."""
        point, label = None, ""
        if steering is not None and steering.point is not None and self.target.front:
            p = self.target.front["points"][steering.point]
            point = dict(zip(self.target.front["names"], p.get("mean") or []))
            label = p.get("label", "")
        head = "<tr><th>objective</th><th>this answer</th>"
        head += f"<th>held-out mean of {_e(label)}</th></tr>" if point else "</tr>"
        rows = []
        for n, d in zip(self.target.names, self.target.directions):
            v = scores.get(n)
            cell = f"<td>{point[n]:.4g}</td>" if point and n in point else ("<td></td>" if point else "")
            rows.append(f'<tr data-objective="{_e(n)}" data-value="{_e(json.dumps(v))}"><td>{_e(n)} '
                        f"<small>({_e(_better(d))})</small></td><td>{_e(_fmt_score(v))}</td>{cell}</tr>")
        return f'<table class="pa-scores">{head}{"".join(rows)}</table>'

    def figure(self, steering=None, scores=None):
        try:
            return preference_figure(self.target, steering, scores)
        except Exception as exc:  # a plot must never take the page down
            self.log(f"[serve] could not draw the plot: {type(exc).__name__}: {exc}")
            return None

    # -- events
    def on_weights(self, *values):
        """Sliders moved: (weights, note, plot, message)."""
        try:
            s = self.target.steer(list(values))
        except ParetoAlignError as exc:
            return ('<div class="pa-weights" data-weights="">normalised preference: &mdash;</div>',
                    '<div class="pa-note"></div>', SKIP, self.message_html(str(exc), error=True))
        except Exception as exc:
            return SKIP, SKIP, SKIP, self._internal(exc)
        return self.weights_html(s.weights), self.note_html(s), self.figure(s), self.message_html("")

    def on_answer(self, prompt, *values) -> Iterator[tuple]:
        """The prompt submitted: (answer, scores, message, note, plot, weights), once per new token, then once
        more with the scores and the plot with this answer marked."""
        empty = '<table class="pa-scores"></table>'
        try:
            s = self.target.steer(list(values))
            if not isinstance(prompt, str) or not prompt.strip():
                raise ConfigError("write a prompt first")
        except ParetoAlignError as exc:
            yield "", empty, self.message_html(str(exc), error=True), SKIP, SKIP, SKIP
            return
        except Exception as exc:
            yield "", empty, self._internal(exc), SKIP, SKIP, SKIP
            return
        t0 = time.perf_counter()
        text = ""
        first = True
        try:
            for text in self.target.generate_stream(prompt, s.weights, self.decoding):
                if first:
                    yield (text, empty, self.message_html("answering\u2026"), self.note_html(s), SKIP,
                           self.weights_html(s.weights))
                    first = False
                else:
                    yield text, SKIP, SKIP, SKIP, SKIP, SKIP
            scores = self.target.score(prompt, text)
        except ParetoAlignError as exc:
            yield text if not first else "", empty, self.message_html(str(exc), error=True), self.note_html(s), SKIP, SKIP
            return
        except Exception as exc:
            yield text if not first else "", empty, self._internal(exc), self.note_html(s), SKIP, SKIP
            return
        done = f"answered in {time.perf_counter() - t0:.1f} s"
        yield (text, self.scores_html(scores, s), self.message_html(done), self.note_html(s), self.figure(s, scores),
               self.weights_html(s.weights))

    def _internal(self, exc: BaseException) -> str:
        self.log("[serve] internal error:\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        return self.message_html(f"internal error ({type(exc).__name__}: {str(exc)[:200]}); the server's log has the "
                                 "details", error=True)


# ---------------------------------------------------------------------------------------------
# the plot


def preference_figure(target, steering=None, scores: dict | None = None):
    """A matplotlib figure: the target's front (K = 2: points, non-dominated staircase, base model; K = 3, 4:
    pairwise panels; more: parallel coordinates) with the point that answers at the preference ringed and
    this answer's scores marked; without a front, the preference itself as bars."""
    import numpy as np
    from matplotlib.figure import Figure

    from paretoalign.steering import fmt_weights

    w = steering.weights if steering is not None else target.uniform()
    front = target.front
    if not front:
        fig = Figure(figsize=(6.4, 1.2 + 0.5 * len(target.names)), dpi=100)
        ax = fig.add_subplot()
        ax.barh(list(target.names)[::-1], list(w)[::-1], color="#1f77b4")
        ax.set_xlim(0, 1)
        ax.set_xlabel("weight")
        ax.set_title(f"your preference {fmt_weights(w)} (no front.json to draw)", fontsize=10)
        fig.tight_layout()
        return fig
    from paretoalign.fronts.plots import parallel_coordinates, staircase

    names = list(front["names"])
    K = len(names)
    signs = np.array([1.0 if o.get("direction", "maximize") == "maximize" else -1.0 for o in front["objectives"]])
    means = np.array([p["mean"] for p in front["points"]], dtype=float)
    labels = [p.get("label", "") for p in front["points"]]
    sel = steering.point if steering is not None else None
    steered = bool(steering is not None and steering.direction is not None)
    sel_label = getattr(steering, "point_label", None) or ("nearest evaluated direction" if steered else "answers now")
    ans = np.array([np.nan if (scores or {}).get(n) is None else float(scores[n]) for n in names]) if scores else None
    base = np.asarray(front["base"]["mean"], dtype=float) if front.get("base") else None
    title = f"{front.get('name', front.get('method', 'front'))}: your preference {fmt_weights(w)}"
    if K > 4:
        fig = Figure(figsize=(7.2, 4.4), dpi=100)
        ax = fig.add_subplot()
        rows = [means] + ([ans[None]] if ans is not None else [])
        scaled = parallel_coordinates(np.concatenate(rows), signs)
        xs = np.arange(K)
        for i, row in enumerate(scaled[: len(means)]):
            ax.plot(xs, row, color="#ff7f0e" if i == sel else "#1f77b4", lw=2.5 if i == sel else 1, alpha=1 if i == sel else 0.5,
                    label=f"{sel_label}: {labels[i]}" if i == sel else None)
        if ans is not None:
            ax.plot(xs, scaled[-1], color="#d62728", ls="--", lw=2, label="this answer")
        ax.set_xticks(xs, [n if s > 0 else f"{n} (lower is better)" for n, s in zip(names, signs)], rotation=20)
        ax.set_ylabel("scaled (1 = best of these)")
        ax.legend(fontsize=8, loc="best")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        return fig
    pairs = [(0, 1)] if K == 2 else [(i, j) for i in range(K) for j in range(i + 1, K)]
    ncols = min(3, len(pairs))
    nrows = int(math.ceil(len(pairs) / ncols))
    fig = Figure(figsize=(6.4 if K == 2 else 4.2 * ncols, 4.8 if K == 2 else 3.8 * nrows), dpi=100)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, (i, j) in zip(axes.ravel(), pairs):
        ax.scatter(means[:, i], means[:, j], color="#1f77b4", s=36, zorder=3, label="front points")
        if K == 2:
            st = staircase(means * signs) * signs
            ax.plot(st[:, 0], st[:, 1], color="#1f77b4", lw=1, alpha=0.6)
            for x, y, lab in zip(means[:, i], means[:, j], labels):
                ax.annotate(lab, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color="#555555")
        if base is not None:
            ax.scatter([base[i]], [base[j]], marker="*", s=140, color="black", zorder=4, label="base model")
        if sel is not None:
            ax.scatter([means[sel, i]], [means[sel, j]], s=260, facecolors="none", edgecolors="#ff7f0e", linewidths=2.5,
                       zorder=5, label=f"{sel_label}: {labels[sel]}")
        if ans is not None and np.isfinite(ans[[i, j]]).all():
            ax.scatter([ans[i]], [ans[j]], marker="X", s=110, color="#d62728", zorder=6, label="this answer")
        ax.set_xlabel(names[i] if signs[i] > 0 else f"{names[i]} (lower is better)")
        ax.set_ylabel(names[j] if signs[j] > 0 else f"{names[j]} (lower is better)")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(pairs):]:
        ax.axis("off")
    axes.ravel()[0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# the app


def _import_gradio():
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check, no telemetry: nothing leaves
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio as gr
    except ImportError:
        raise ConfigError("serve needs gradio: pip install 'paretoalign[app]'") from None
    return gr


def _check_gradio_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise ConfigError("serve needs gradio: pip install 'paretoalign[app]'")


def build_app(session: ServeSession):
    """The Gradio Blocks of the page (ids for scripts and tests: weight-<i>, weights, note, prompt, submit,
    answer, scores, message, plot)."""
    gr = _import_gradio()
    target = session.target

    def unskip(values):
        return tuple(gr.skip() if v is SKIP else v for v in values)

    def on_weights(*values):
        return unskip(session.on_weights(*values))

    def on_answer(prompt, *values):
        for out in session.on_answer(prompt, *values):
            yield unskip(out)

    with gr.Blocks(title=f"paretoalign serve: {target.path.name}", analytics_enabled=False) as app:
        gr.HTML(session.header_html(), elem_id="header")
        with gr.Row():
            with gr.Column(scale=1):
                sliders = [gr.Slider(0.0, 1.0, value=float(x), step=0.01, label=f"{n} ({_better(d)})",
                                     elem_id=f"weight-{i}")
                           for i, (n, d, x) in enumerate(zip(target.names, target.directions, session.initial))]
                weights = gr.HTML(session.weights_html(session.initial), elem_id="weights")
                note = gr.HTML(elem_id="note")
                prompt = gr.Textbox(label="Prompt", lines=3, elem_id="prompt",
                                    placeholder="Ask something, then press Answer")
                submit = gr.Button("Answer", variant="primary", elem_id="submit")
                answer = gr.Textbox(label="Answer", lines=8, interactive=False, elem_id="answer")
                scores = gr.HTML('<table class="pa-scores"></table>', elem_id="scores")
                message = gr.HTML(elem_id="message")
            with gr.Column(scale=1):
                plot = gr.Plot(show_label=False, elem_id="plot", format="png")
        for s in sliders:
            s.change(on_weights, sliders, [weights, note, plot, message], trigger_mode="always_last",
                     show_progress="hidden")
        for trigger in (submit.click, prompt.submit):
            trigger(on_answer, [prompt, *sliders], [answer, scores, message, note, plot, weights],
                    concurrency_limit=1, concurrency_id="answer", show_progress="minimal")
        app.load(on_weights, sliders, [weights, note, plot, message])
    return app


# ---------------------------------------------------------------------------------------------
# the command


def is_loopback(host: str) -> bool:
    import ipaddress

    h = host.strip().strip("[]")
    if h.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def pick_port(host: str, port: int) -> int:
    """``port`` if it can be listened on at ``host`` (0: a free one, chosen here), else one ConfigError."""
    import socket

    h = host.strip().strip("[]")
    try:
        infos = socket.getaddrinfo(h, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"option host: cannot listen on {host!r} ({exc.strerror or exc})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(addr)
        except OSError as exc:
            what = "is in use" if getattr(exc, "errno", None) in (98, 48, 10048) else f"cannot be used ({exc.strerror or exc})"
            raise ConfigError(f"port {port} on {host} {what}; pass --port 0 for a free one") from None
        return int(sock.getsockname()[1])


def _url(host: str, port: int) -> str:
    h = host.strip()
    return f"http://[{h.strip('[]')}]:{port}/" if ":" in h.strip("[]") else f"http://{h}:{port}/"


def run_serve(cfg: ServeConfig, block: bool = True, out=None, log=None):
    """``paretoalign serve``: check everything, resolve the target, load its first model, then serve.
    Returns the Gradio app (``block=False``: running in the background; ``app.close()`` stops it)."""
    out = out or sys.stdout
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    from paretoalign.steering import Decoding, TargetOptions, fmt_weights, resolve_steerable

    _check_gradio_installed()
    target = resolve_steerable(cfg.target, TargetOptions(cfg.device, cfg.allow_download, cfg.max_models))
    weights = target.normalise(cfg.weights) if cfg.weights is not None else target.uniform()
    port = pick_port(cfg.host, cfg.port)
    decoding = Decoding(max_new_tokens=int(cfg.max_new_tokens or target.max_new_tokens), temperature=cfg.temperature,
                        top_p=cfg.top_p, do_sample=cfg.do_sample, seed=cfg.seed)
    log(f"[serve] {target.describe()}")
    log(f"[serve] loading the model for {fmt_weights(weights, target.names)} ...")
    target.prepare(weights)
    if target.context and decoding.max_new_tokens >= target.context:
        raise ConfigError(f"--max-new-tokens {decoding.max_new_tokens} leaves no room for a prompt in the model's context "
                          f"of {target.context} tokens; lower it")
    session = ServeSession(target, decoding, weights, log=log)
    app = build_app(session)
    if not is_loopback(cfg.host):
        log(f"warning: --host {cfg.host} makes the page reachable from other machines, without a login: anyone who can "
            f"reach port {port} can run the model")
    try:
        app.queue(default_concurrency_limit=1)
        app.launch(server_name=cfg.host.strip().strip("[]"), server_port=port, quiet=True, prevent_thread_lock=True,
                   show_error=False, inbrowser=False, share=False)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {cfg.host}:{port} ({exc}); pass --port 0 for a free port") from None
    print(f"[serve] listening on {_url(cfg.host, port)} (Ctrl-C stops it)", file=out, flush=True)
    if block:
        try:
            app.block_thread()
        finally:
            app.close()
    return app


def _cmd_serve(args) -> int:
    import dataclasses

    from paretoalign.config_utils import build_config

    names = {f.name for f in dataclasses.fields(ServeConfig)}
    cfg = build_config(ServeConfig, args.config, {k: v for k, v in vars(args).items() if k in names})
    run_serve(cfg)
    return 0


def add_serve_parser(sub):
    """Register ``serve`` on the subparsers object ``sub`` (imports neither torch nor gradio)."""
    import argparse

    from paretoalign.config_utils import add_dataclass_arguments

    p = sub.add_parser(
        "serve",
        help="A local web page to steer a front or a DPA run: one slider per objective, answers streamed with their "
        "scores, the front with the preference marked.",
        description="Serve a preference-slider page on this machine (127.0.0.1 unless --host): one slider per objective "
        "(normalised to sum to 1), a prompt box, the answer streamed token by token, its score on every objective, and "
        "the method's front with the current preference marked. TARGET: a DPA run (the preference becomes the "
        "direction in its system message, as `evaluate --direction` writes it) or a front folder (the trained point "
        "nearest the preference answers; the page says which). A run trained at one preference is not steerable "
        "(`paretoalign chat` talks to it). Needs gradio: pip install 'paretoalign[app]'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("target", metavar="TARGET", help=_TARGET_HELP)
    p.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    add_dataclass_arguments(p, ServeConfig)
    p.set_defaults(func=_cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    """``python -m paretoalign.serve TARGET ...``: the ``serve`` command on its own (the same checks, the same
    one-line errors)."""
    import argparse

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="paretoalign")
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_parser(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.func(args)
    except ParetoAlignError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
