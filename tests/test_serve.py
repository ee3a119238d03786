"""`paretoalign serve`: the page's logic without a browser (ServeSession, the plot), the command's start-up
checks (one `error:` line, no server), and the real page in headless Chromium against servers on tiny models:
a front folder (the nearest trained point answers, and the page says so), a DPA run (the direction in the
system message, the answer streamed token by token) and a Rewarded Soups front (its endpoints merged at the
sliders' preference).  The browser tests skip, saying why, only where Chromium,
Playwright or Gradio is missing."""

import io
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from paretoalign.errors import ConfigError
from paretoalign.serve import SKIP, ServeConfig, ServeSession, preference_figure, run_serve
from paretoalign.steering import Decoding, resolve_steerable

OBJ = ["length(name=chars,scale=10,low=0,high=100)",
       "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if p and os.path.exists(p)), None)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def prompt_file(work):
    f = work / "prompts.jsonl"
    f.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["Say something.", "Tell me a story."] * 4))
    return str(f)


@pytest.fixture(scope="module")
def dpa_run(work, prompt_file):
    from paretoalign.trainers.dpa_config import DPAConfig
    from paretoalign.trainers.dpa_trainer import DPATrainer

    out = work / "dpa"
    DPATrainer(DPAConfig(model="tiny", objectives=OBJ, prompts=prompt_file, rounds=1, prompts_per_round=2,
                         num_candidates=2, max_new_tokens=3, output_dir=str(out), progress=False)).train()
    return out


@pytest.fixture(scope="module")
def front_folder(work):
    """A MORLHF front on the tiny model: three trained points (grid:3), each its own run."""
    from paretoalign.fronts.sweep import FrontConfig, run_front

    out = work / "front"
    old = os.environ.get("PARETOALIGN_CACHE")
    os.environ["PARETOALIGN_CACHE"] = str(work / "cache")
    try:
        run_front(FrontConfig(method=["morlhf"], preferences="grid:3", output_dir=str(out), report=False,
                              eval_num_prompts=4, eval_batch_size=4),
                  dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
                       learning_rate=5e-2, max_steps=1, save_steps=1, seed=0), progress=lambda s: None)
    finally:
        if old is None:
            os.environ.pop("PARETOALIGN_CACHE", None)
        else:
            os.environ["PARETOALIGN_CACHE"] = old
    return out


def _expected(run, prompt, system_prompt, decoding: Decoding, use_chat_template=True):
    """What the model and the objectives give, computed apart from serve: the policy loaded by load_policy,
    sampled by rollout.generate (transformers' generate), scored by the objectives."""
    from paretoalign.inference import generate_rows, load_policy
    from paretoalign.objectives import build_objective_set
    from paretoalign.preferences import conditioned_prompt

    model, tok = load_policy(run)
    objectives = build_objective_set(OBJ, tok, "skip")
    p = conditioned_prompt(prompt, system_prompt) if system_prompt else prompt
    row = next(generate_rows(model, tok, [p], objectives, max_new_tokens=decoding.max_new_tokens,
                             temperature=decoding.temperature, top_p=decoding.top_p, do_sample=decoding.do_sample,
                             seed=decoding.seed, use_chat_template=use_chat_template, generation_backend="hf-generate"))
    return row["completion"], row["scores"]


# ---------------------------------------------------------------------------------------------
# the page's logic, without a browser


def test_session_turns_every_problem_into_a_message_and_streams_the_answer(dpa_run):
    t = resolve_steerable(dpa_run)
    t.prepare()
    logged = []
    s = ServeSession(t, Decoding(max_new_tokens=24, temperature=1.0, seed=2), log=logged.append)
    weights, note, fig, msg = s.on_weights(0, 0)
    assert "all weights are zero" in msg and "pa-error" in msg and fig is SKIP and 'data-weights=""' in weights
    weights, note, fig, msg = s.on_weights(0.2, 0.6)
    assert json.loads(weights.split('data-weights="')[1].split('"')[0].replace("&quot;", '"')) == pytest.approx([0.25, 0.75])
    assert "chars*32 + words*95" in note and fig is not None and "pa-error" not in msg and "></div>" in msg
    assert "negative" in s.on_weights(-1, 1)[3]

    (out,) = list(s.on_answer("  ", 0.5, 0.5))
    assert "write a prompt first" in out[2]
    (out,) = list(s.on_answer("hi", 0, 0))
    assert "all weights are zero" in out[2]
    outs = list(s.on_answer("word " * 600, 0.5, 0.5))
    assert "the prompt is too long" in outs[-1][2] and "context of 512" in outs[-1][2]

    outs = list(s.on_answer("Tell me a story.", 1, 3))
    assert len(outs) >= 3  # the first token, more tokens, then the answer with its scores
    answer, scores, msg, note, fig, weights = outs[-1]
    assert "answered in" in msg and fig is not None and "chars*32 + words*95" in note
    expect, expect_scores = _expected(dpa_run, "Tell me a story.", t.steer([1, 3]).system_prompt, s.decoding)
    assert answer == expect
    for name, value in expect_scores.items():
        assert f'data-objective="{name}" data-value="{json.dumps(value)}"' in scores
    assert all(o[1] is SKIP for o in outs[1:-1])  # scores come once, with the final answer

    def boom(*a, **k):
        raise RuntimeError("boom")
        yield

    t.generate_stream = boom
    (out,) = list(s.on_answer("hi", 0.5, 0.5))
    assert "internal error (RuntimeError: boom)" in out[2] and "Traceback" in logged[-1]


def test_the_plot_marks_the_preference_for_every_shape_of_front():
    from matplotlib.figure import Figure

    def target(k, front=True):
        names = [f"o{i}" for i in range(k)]
        points = [{"label": f"p{i}", "preference": [1.0 / k] * k, "mean": [float(i + j) for j in range(k)]}
                  for i in range(4)]
        f = {"name": "x", "method": "morlhf", "names": names, "points": points, "base": {"mean": [0.0] * k},
             "objectives": [{"name": n, "direction": "minimize" if i == 1 else "maximize"} for i, n in enumerate(names)]}
        return SimpleNamespace(names=names, directions=["maximize"] * k, front=f if front else None,
                               uniform=lambda: tuple([1.0 / k] * k))

    for k in (2, 3, 5):
        t = target(k)
        steering = SimpleNamespace(weights=tuple([1.0 / k] * k), point=2, direction=None)
        for scores in (None, {n: 1.5 for n in t.names}, {n: None for n in t.names}):
            fig = preference_figure(t, steering, scores)
            assert isinstance(fig, Figure)
            fig.savefig(io.BytesIO(), format="png")
    fig = preference_figure(target(2, front=False), None)
    assert "no front.json" in fig.axes[0].get_title()


# ---------------------------------------------------------------------------------------------
# the command: everything is checked before a server starts


def _serve_main(argv, capsys):
    from paretoalign.serve import main

    rc = main(argv)
    err = capsys.readouterr().err
    return rc, [line for line in err.splitlines() if line.strip() and not line.startswith("[serve]")]


def test_bad_start_up_input_is_one_error_line_and_no_server(dpa_run, tmp_path, capsys):
    from paretoalign import run_dir

    plain = tmp_path / "plain"
    (plain / "final" / "policy").mkdir(parents=True)
    run_dir.save_config(plain, {"method": "pama", "model": "tiny"})
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        cases = [
            ([str(plain)], "not steerable; give a front folder"),
            ([str(dpa_run), "--weights", "0,0"], "all weights are zero"),
            ([str(dpa_run), "--weights", "0.5,0.2,0.3"], r"expected 2 weights \(one per objective: chars, words\)"),
            ([str(dpa_run), "--weights", "1,-1"], "negative"),
            ([str(dpa_run), "--port", "70000"], "port: must be in"),
            ([str(dpa_run), "--port", str(busy.getsockname()[1])], "is in use; pass --port 0"),
            ([str(dpa_run), "--host", " "], "give an address"),
            ([str(tmp_path / "nowhere")], "no such folder"),
            ([str(dpa_run), "--max-models", "0"], "max_models: must be >= 1"),
            ([str(dpa_run), "--max-new-tokens", "600", "--port", "0"], "leaves no room for a prompt in the model's "
             "context of 512 tokens"),
        ]
        for argv, match in cases:
            rc, lines = _serve_main(argv, capsys)
            assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, lines)
            import re

            assert re.search(match, lines[0]), (argv, lines)
    finally:
        busy.close()
    # the command as a person runs it: exit status 2, one line, no traceback, no server
    res = subprocess.run([sys.executable, *_serve_command(), str(plain), "--port", "0"], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and res.stderr.startswith("error: "), res.stderr


def test_only_loopback_addresses_count_as_private_and_urls_are_printable():
    from paretoalign.serve import _url, is_loopback, pick_port

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.5", "example.org"))
    assert _url("127.0.0.1", 80) == "http://127.0.0.1:80/" and _url("::1", 80) == "http://[::1]:80/"
    assert 0 < pick_port("127.0.0.1", 0) < 65536


def test_serve_help_imports_nothing_heavy():
    code = ("import argparse, sys\nfrom paretoalign.serve import add_serve_parser\n"
            "p = argparse.ArgumentParser(prog='paretoalign')\nadd_serve_parser(p.add_subparsers())\n"
            "try:\n    p.parse_args(['serve', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = ('torch', 'transformers', 'gradio', 'matplotlib', 'peft', 'fastapi')\n"
            "print('HEAVY', sorted(m for m in heavy if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--port" in res.stdout and "--weights" in res.stdout and "127.0.0.1" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_a_missing_gradio_is_one_error_before_anything_loads(dpa_run, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    with pytest.raises(ConfigError, match=r"serve needs gradio: pip install 'paretoalign\[app\]'"):
        run_serve(ServeConfig(target=str(dpa_run), port=0), block=False)


# ---------------------------------------------------------------------------------------------
# the real page, in headless Chromium


def _serve_command() -> list:
    """`paretoalign serve` once cli.py registers it, else the module's own entry point (the same parser)."""
    from paretoalign.cli import build_parser

    sub = next(a for a in build_parser()._actions if getattr(a, "dest", None) == "command")
    return ["-m", "paretoalign.cli", "serve"] if "serve" in sub.choices else ["-m", "paretoalign.serve"]


class Server:
    """`paretoalign serve TARGET --port 0 ...` in a subprocess; ``url`` once it says where it listens."""

    def __init__(self, target, *args, env_extra=None):
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
        self.proc = subprocess.Popen([sys.executable, *_serve_command(), str(target), "--port", "0", *args], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.err: list = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.lines.put, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, self.err.append, False), daemon=True).start()
        self.url = None
        deadline = time.monotonic() + 180
        while self.url is None:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise AssertionError("the server did not start in time:\n" + "".join(self.err)) from None
            if line is None:
                raise AssertionError(f"the server exited ({self.proc.wait()}):\n" + "".join(self.err))
            if "listening on " in line:
                self.url = line.split("listening on ")[1].split()[0]

    @staticmethod
    def _read(stream, put, end_mark):
        for line in stream:
            put(line)
        if end_mark:
            put(None)  # the process closed its output

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def browser():
    if CHROMIUM is None:
        pytest.skip("no Chromium here (apt-get install chromium); the page is tested in a real browser")
    pytest.importorskip("playwright.sync_api", reason="Playwright is not installed (pip install playwright; the "
                        "system Chromium is used, no browser download)")
    pytest.importorskip("gradio", reason="Gradio is not installed (pip install 'paretoalign[app]')")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


def _page(browser, url):
    """A page that may reach the server and nothing else: every request elsewhere is aborted and recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    outside: list = []

    def route(r):
        if r.request.url.startswith((url.rstrip("/"), "data:", "blob:")):
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url)
    page.wait_for_selector("#note .pa-note:not(:empty)", timeout=60_000)
    return page, outside


def _set_slider(page, i, value):
    """Move slider ``i`` to ``value`` (Playwright sets the range input's value and fires its input and change
    events, as dragging does)."""
    page.locator(f"#weight-{i} input[type=range]").fill(str(value))


def _weights(page):
    raw = page.get_attribute("#weights .pa-weights", "data-weights")
    return json.loads(raw) if raw else None


def _wait_weights(page, expected):
    page.wait_for_function(
        "([w]) => { const d = document.querySelector('#weights .pa-weights'); if (!d || !d.dataset.weights) return false;"
        " const v = JSON.parse(d.dataset.weights); return v.every((x, i) => Math.abs(x - w[i]) < 1e-9); }",
        arg=[expected], timeout=30_000)


def _answer(page, prompt, record=False):
    page.fill("#prompt textarea", prompt)
    if record:  # every value the answer box shows while the answer streams, frame by frame
        page.evaluate("""() => { window.__seen = []; const tick = () => {
            const t = document.querySelector('#answer textarea');
            if (t && window.__seen[window.__seen.length - 1] !== t.value) window.__seen.push(t.value);
            window.__tick = requestAnimationFrame(tick); }; tick(); }""")
    before = int(page.get_attribute("#message .pa-message", "data-seq") or 0)
    page.click("#submit")
    page.wait_for_function("([before]) => { const m = document.querySelector('#message .pa-message');"
                           " return m && Number(m.dataset.seq) > before"
                           " && (m.innerText.includes('answered in') || m.classList.contains('pa-error')); }",
                           arg=[before], timeout=120_000)
    seen = page.evaluate("() => { cancelAnimationFrame(window.__tick); return window.__seen; }") if record else None
    return page.input_value("#answer textarea"), seen


def _scores(page):
    rows = page.locator("#scores tr[data-objective]")
    return {rows.nth(i).get_attribute("data-objective"): json.loads(rows.nth(i).get_attribute("data-value"))
            for i in range(rows.count())}


def _message(page):
    return page.inner_text("#message")


def _textarea(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")  # what a textarea's value holds


def test_the_page_serves_a_front_folder_with_the_nearest_point(browser, front_folder, tmp_path):
    server = Server(front_folder, "--do-sample", "false", "--max-new-tokens", "16",
                    env_extra={"PARETOALIGN_CACHE": str(tmp_path / "cache")})
    try:
        assert server.url.startswith("http://127.0.0.1:")
        page, outside = _page(browser, server.url)
        assert "is a trained point: w=(0.50,0.50) (points/w0.50-0.50) answers" in page.inner_text("#note")
        assert _weights(page) == [0.5, 0.5]
        greedy = Decoding(max_new_tokens=16, do_sample=False)
        prompt = "Write a short review of a film."
        answer, _ = _answer(page, prompt)
        expect, expect_scores = _expected(front_folder / "points" / "w0.50-0.50", prompt, None, greedy)
        assert answer == _textarea(expect) and _scores(page) == expect_scores

        _set_slider(page, 1, 0.1)  # words down: (0.5, 0.1) -> (5/6, 1/6), nearest trained point (1, 0)
        _wait_weights(page, [5 / 6, 1 / 6])
        page.wait_for_function("() => document.querySelector('#note').innerText.includes('w=(1.00,0.00)')")
        note = page.inner_text("#note")
        assert ("morlhf is not steerable (one model per trained point): the trained point nearest your preference "
                f"(0.833, 0.167) answers: w=(1.00,0.00) (points/w1.00-0.00), at distance {(2 / 36) ** 0.5:.3f}") in note

        answer, _ = _answer(page, prompt)  # the same prompt, now answered by the other point's model
        expect, expect_scores = _expected(front_folder / "points" / "w1.00-0.00", prompt, None, greedy)
        assert answer == _textarea(expect)
        assert _scores(page) == expect_scores
        assert "held-out mean of w=(1.00,0.00)" in page.inner_text("#scores")
        assert "answered in" in _message(page)
        src = page.get_attribute("#plot img", "src")
        assert src and src.startswith("data:image/png;base64,")
        page.screenshot(path=str(tmp_path / "serve-front.png"), full_page=True)
        assert (tmp_path / "serve-front.png").stat().st_size > 10_000

        # what a person can get wrong is a message on the page, never a traceback
        _set_slider(page, 0, 0)
        _set_slider(page, 1, 0)
        page.wait_for_function("() => document.querySelector('#message').innerText.includes('all weights are zero')")
        _answer(page, "hi")
        assert "all weights are zero" in _message(page)
        _set_slider(page, 0, 1)
        _wait_weights(page, [1.0, 0.0])
        _answer(page, "")
        assert "write a prompt first" in _message(page)
        assert "Traceback" not in page.content()
        assert outside == []  # the page loaded nothing from outside this machine
    finally:
        server.stop()
    assert server.proc.returncode is not None


def test_the_page_steers_a_dpa_run_and_streams_the_answer(browser, dpa_run, tmp_path):
    from paretoalign.preferences import DEFAULT_DIRECTION_TEMPLATE, direction_prompt, validate_direction

    decoding = Decoding(max_new_tokens=48, temperature=1.0, seed=5)
    server = Server(dpa_run, "--max-new-tokens", "48", "--temperature", "1.0", "--seed", "5", "--weights", "1,1",
                    env_extra={"PARETOALIGN_CACHE": str(tmp_path / "cache")})
    try:
        page, outside = _page(browser, server.url)
        _set_slider(page, 0, 0.2)  # (0.2, 0.5) -> (2/7, 5/7)
        w = [2 / 7, 5 / 7]
        _wait_weights(page, w)
        system = direction_prompt(validate_direction(w, 2), ["chars", "words"], DEFAULT_DIRECTION_TEMPLATE)
        assert system.endswith("chars*37 + words*93")
        page.wait_for_function("([s]) => document.querySelector('#note').innerText.includes(s)", arg=[system])
        assert "DPA steers one model: your preference (0.286, 0.714) is the direction (0.371, 0.928)" in page.inner_text("#note")

        prompt = "Tell me a story."
        answer, seen = _answer(page, prompt, record=True)
        expect, expect_scores = _expected(dpa_run, prompt, system, decoding)
        assert answer == _textarea(expect) and len(answer) > 5
        assert _scores(page) == expect_scores
        # streamed: the box showed parts of the answer before the whole of it
        partial = [s for s in seen if s and s.strip() != answer]
        assert partial and all(answer.startswith(p.strip().rstrip("\ufffd")) for p in partial), seen
        assert page.get_attribute("#plot img", "src").startswith("data:image/png;base64,")  # the preference, as bars
        page.screenshot(path=str(tmp_path / "serve-dpa.png"), full_page=True)
        assert (tmp_path / "serve-dpa.png").stat().st_size > 10_000

        _answer(page, "word " * 600)
        assert "the prompt is too long" in _message(page) and "context of 512" in _message(page)
        assert "Traceback" not in page.content() and outside == []
    finally:
        server.stop()


@pytest.fixture(scope="module")
def rs_front(work):
    """A Rewarded Soups front on the tiny model (grid:2): two one-step endpoints, merged at each preference."""
    from paretoalign.fronts.sweep import build_front_config, run_front

    out = work / "rs"
    old = os.environ.get("PARETOALIGN_CACHE")
    os.environ["PARETOALIGN_CACHE"] = str(work / "cache")
    try:
        front, train = build_front_config(None, dict(
            method="rs", preferences="grid:2", output_dir=str(out), report=False, eval_num_prompts=2,
            eval_batch_size=2, model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8,
            progress=False, learning_rate=5e-2, max_steps=1, save_steps=1, seed=0))
        run_front(front, train, progress=lambda s: None)
    finally:
        if old is None:
            os.environ.pop("PARETOALIGN_CACHE", None)
        else:
            os.environ["PARETOALIGN_CACHE"] = old
    return out


def test_the_page_serves_a_rewarded_soups_front_merged_at_the_sliders(browser, rs_front, tmp_path):
    from paretoalign.inference import generate_rows
    from paretoalign.merging import soup
    from paretoalign.models import load_tokenizer
    from paretoalign.objectives import build_objective_set

    server = Server(rs_front, "--do-sample", "false", "--max-new-tokens", "12",
                    env_extra={"PARETOALIGN_CACHE": str(tmp_path / "cache")})
    try:
        page, outside = _page(browser, server.url)
        assert "Rewarded Soups: the 2 endpoints merged at w=(0.500, 0.500)" in page.inner_text("#note")
        _set_slider(page, 1, 0.2)  # (0.5, 0.2) -> (5/7, 2/7), merged at the weights rounded to 0.001
        _wait_weights(page, [5 / 7, 2 / 7])
        page.wait_for_function("() => document.querySelector('#note').innerText.includes('merged at w=(0.714, 0.286)')")
        assert "rounded to steps of 0.001" in page.inner_text("#note")

        prompt = "Write a short review of a film."
        answer, _ = _answer(page, prompt)
        endpoints = [(e["name"], str(rs_front / e["run_dir"]))
                     for e in json.loads((rs_front / "front.json").read_text())["training"]["endpoints"]]
        tok = load_tokenizer(str(Path(endpoints[0][1]) / "final" / "policy"))
        (row,) = generate_rows(soup(endpoints, [0.714, 0.286], rank="exact"), tok, [prompt],
                               build_objective_set(OBJ, tok, "skip"), max_new_tokens=12, do_sample=False,
                               generation_backend="hf-generate")
        assert answer == _textarea(row["completion"]) and _scores(page) == row["scores"]
        assert "answered in" in _message(page) and "held-out mean of w=(1.00,0.00)" in page.inner_text("#scores")
        assert page.get_attribute("#plot img", "src").startswith("data:image/png;base64,")
        assert "Traceback" not in page.content() and outside == []
    finally:
        server.stop()
