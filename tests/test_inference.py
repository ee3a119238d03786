"""Using a trained run: `generate` (JSONL with every objective's score), `chat` (template, history, streaming,
/reset, /exit) and their command-line parsers, on a tiny run trained in-process."""

import argparse
import io
import json
import subprocess
import sys

import pytest
import torch

import paretoalign
from paretoalign.errors import ConfigError, DataError, ParetoAlignError, RunDirError
from paretoalign.inference import (
    ChatConfig,
    GenerateConfig,
    add_chat_parser,
    add_generate_parser,
    chat_loop,
    run_chat,
    run_generate,
)

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
PROMPTS = ["Say something kind.", "Describe the sea.", "What is a tree?"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    out = tmp_path_factory.mktemp("use") / "run"
    OnlineTrainer(OnlineConfig(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8,
                               progress=False, max_steps=1, learning_rate=1e-2, output_dir=str(out))).train()
    return out


@pytest.fixture
def prompts_file(tmp_path):
    f = tmp_path / "prompts.jsonl"
    rows = [{"prompt": PROMPTS[0]}, {"prompt": PROMPTS[1]},
            {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPTS[2]}]}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    add_generate_parser(sub)
    add_chat_parser(sub)
    return p


def cli(argv):
    args = parser().parse_args(argv)
    return args.func(args)


def read_jsonl(f):
    return [json.loads(line) for line in f.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# generate


def test_generate_writes_a_line_per_prompt_per_sample_with_every_objective_s_score(run, prompts_file, tmp_path):
    out = tmp_path / "gen" / "out.jsonl"
    res = run_generate(GenerateConfig(target=str(run), prompts=str(prompts_file), num_samples=2, max_new_tokens=12,
                                      output=str(out)), log=lambda m: None)
    rows = read_jsonl(out)
    assert res["rows"] == len(rows) == 6 and res["objectives"] == ["chars", "words"]
    assert [(r["index"], r["sample"]) for r in rows] == [(i, s) for i in range(3) for s in range(2)]
    assert [r["prompt"] for r in rows[::2]] == PROMPTS
    assert rows[4]["messages"][0] == {"role": "system", "content": "Be brief."} and "messages" not in rows[0]
    for r in rows:
        assert set(r) >= {"index", "sample", "prompt", "completion", "scores"} and set(r["scores"]) == {"chars", "words"}
    # the scores are the run's objectives' own scores of those completions
    from paretoalign.models import build_tiny_tokenizer
    from paretoalign.objectives import build_objective_set

    objs = build_objective_set(OBJ, build_tiny_tokenizer())
    want = objs.raw_scores([r["prompt"] for r in rows], [r["completion"] for r in rows])
    got = torch.tensor([[r["scores"]["chars"], r["scores"]["words"]] for r in rows])
    torch.testing.assert_close(got, want.to(got.dtype))
    assert len({r["completion"] for r in rows}) > 1
    assert not (tmp_path / "gen" / "out.jsonl.tmp").exists()


def test_generate_is_reproducible_by_seed_and_streams_to_stdout(run, prompts_file, tmp_path):
    def once(seed, **kw):
        buf = io.StringIO()
        run_generate(GenerateConfig(target=str(run), prompts=str(prompts_file), max_new_tokens=10, seed=seed, **kw),
                     stream=buf, log=lambda m: None)
        return [json.loads(line) for line in buf.getvalue().splitlines()]

    a, b, c = once(3), once(3), once(4)
    assert a == b and [r["completion"] for r in a] != [r["completion"] for r in c]
    other = once(3, objectives="length(name=n,scale=1,low=0,high=10000)")  # --objectives replaces the run's
    assert [r["completion"] for r in other] == [r["completion"] for r in a]
    assert all(set(r["scores"]) == {"n"} and r["scores"]["n"] == len(r["completion"]) for r in other)
    greedy = once(1, do_sample=False) == once(2, do_sample=False)
    assert greedy


def test_generate_from_the_command_line(run, prompts_file, tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert cli(["generate", str(run / "final"), "--prompts", str(prompts_file), "--max-new-tokens", "6",
                "--num-samples", "1", "--output", str(out), "--system", "Answer in French."]) == 0
    assert len(read_jsonl(out)) == 3 and "-> " + str(out) in capsys.readouterr().err
    assert cli(["generate", str(run), "--prompts", str(prompts_file), "--max_new_tokens", "4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["prompt"] == PROMPTS[0]


def test_a_model_without_a_run_generates_without_scores_unless_asked(prompts_file):
    buf = io.StringIO()
    run_generate(GenerateConfig(target="tiny", prompts=str(prompts_file), max_new_tokens=4), stream=buf, log=lambda m: None)
    rows = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert len(rows) == 3 and all(r["scores"] == {} for r in rows)


@pytest.mark.parametrize("kw, err, match", [
    ({"target": "nowhere/at/all"}, RunDirError, "no such run folder or model folder"),
    ({"prompts": "missing.jsonl"}, DataError, "missing.jsonl: no such file or folder"),
    ({"prompts": ""}, ConfigError, "generate needs --prompts"),
    ({"num_samples": 0}, ConfigError, "num_samples: must be >= 1"),
    ({"temperature": -1}, ConfigError, "temperature: must be > 0"),
    ({"generation_backend": "nope"}, ConfigError, "option generation_backend"),
])
def test_bad_generate_input_is_one_clear_error(run, prompts_file, kw, err, match):
    opts = {"target": str(run), "prompts": str(prompts_file), **kw}
    with pytest.raises(err, match=match):
        run_generate(GenerateConfig(**opts), stream=io.StringIO(), log=lambda m: None)


def test_bad_prompts_and_targets_through_the_handler(run, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": \n')
    with pytest.raises(DataError, match="bad.jsonl"):
        cli(["generate", str(run), "--prompts", str(bad)])
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(RunDirError, match="is not a run folder"):
        cli(["generate", str(tmp_path / "not-a-run"), "--prompts", str(bad)])
    (run.parent / "unfinished").mkdir()
    (run.parent / "unfinished" / "config.yaml").write_text("method: pama\nmodel: tiny\n")
    with pytest.raises(RunDirError, match="has no final model"):
        cli(["chat", str(run.parent / "unfinished")])
    with pytest.raises(ConfigError, match="--output .* is a folder"):
        cli(["generate", str(run), "--prompts", str(bad), "--output", str(tmp_path)])


# ---------------------------------------------------------------------------------------------
# chat


def scripted(lines):
    it = iter(lines)
    seen = []

    def read_line(prompt):
        seen.append(prompt)
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read_line, seen


def answers_written(text, reply="bot> "):
    """The streamed answers in a transcript: what follows each reply marker up to its newline."""
    return [part.split("\n", 1)[0] for part in text.split(reply)[1:]]


@pytest.fixture(scope="module")
def loaded(run):
    return paretoalign.load_policy(run)


def test_chat_streams_keeps_history_and_resets(loaded):
    model, tok = loaded
    read_line, _ = scripted(["hello", "tell me more", "/reset", "again", "/exit", "never read"])
    out = []
    torch.manual_seed(0)
    turns = chat_loop(model, tok, read_line, out.append, system_prompt="Be kind.", max_new_tokens=8)
    assert len(turns) == 3
    sys_msg = {"role": "system", "content": "Be kind."}
    assert turns[0]["messages"] == [sys_msg, {"role": "user", "content": "hello"}]
    assert turns[1]["messages"] == [sys_msg, {"role": "user", "content": "hello"},
                                    {"role": "assistant", "content": turns[0]["answer"].strip()},
                                    {"role": "user", "content": "tell me more"}]
    assert turns[2]["messages"] == [sys_msg, {"role": "user", "content": "again"}]  # /reset kept only the system
    text = "".join(out)
    assert "(conversation cleared)" in text
    assert answers_written(text) == [t["answer"] for t in turns]  # streamed text is the final answer
    assert len(out) > len(turns) * 2  # it came in pieces, not as one string per answer


def test_chat_uses_the_chat_template(loaded, monkeypatch):
    model, tok = loaded
    seen = []
    real = tok.apply_chat_template

    def spy(messages, **kw):
        seen.append([dict(m) for m in messages])
        return real(messages, **kw)

    monkeypatch.setattr(tok, "apply_chat_template", spy)
    read_line, _ = scripted(["hi"])
    chat_loop(model, tok, read_line, lambda s: None, max_new_tokens=4)
    assert seen == [[{"role": "user", "content": "hi"}]]


def test_chat_leaves_cleanly_on_eof_and_ctrl_c_and_explains_unknown_commands(loaded):
    model, tok = loaded
    read_line, prompts = scripted(["/help", "", "hi"])
    out = []
    assert len(chat_loop(model, tok, read_line, out.append, max_new_tokens=4)) == 1  # EOF after the last line
    assert "unknown command /help" in "".join(out) and prompts == ["you> "] * 4

    def interrupted(prompt):
        raise KeyboardInterrupt

    assert chat_loop(model, tok, interrupted, out.append) == []


def test_ctrl_c_while_answering_drops_that_turn_and_keeps_chatting(loaded):
    model, tok = loaded
    read_line, _ = scripted(["first", "second"])
    out, state = [], {"pieces": 0}

    def write(text):  # the user presses Ctrl-C as the first answer streams
        out.append(text)
        if out[-2:-1] == ["bot> "] and state["pieces"] == 0:
            state["pieces"] += 1
            raise KeyboardInterrupt

    turns = chat_loop(model, tok, read_line, write, max_new_tokens=6)
    assert "(interrupted; that turn was dropped)" in "".join(out)
    assert len(turns) == 1 and turns[0]["messages"] == [{"role": "user", "content": "second"}]


def test_chat_drops_the_oldest_turns_to_fit_the_context(loaded, monkeypatch):
    model, tok = loaded
    monkeypatch.setattr(model.config, "max_position_embeddings", 64)
    read_line, _ = scripted(["a fairly long first message about the sea"] * 4 + ["x " * 80])
    out = []
    turns = chat_loop(model, tok, read_line, out.append, max_new_tokens=8)
    text = "".join(out)
    assert "oldest exchange(s) were dropped" in text and "that message is too long" in text
    for t in turns:
        assert len(tok.apply_chat_template(t["messages"], tokenize=False, add_generation_prompt=True)) > 0
        n = len(tok(tok.apply_chat_template(t["messages"], tokenize=False, add_generation_prompt=True),
                    add_special_tokens=False)["input_ids"])
        assert n + 8 <= 64


def test_run_chat_loads_the_run_and_greets(run):
    read_line, _ = scripted(["hello", "/exit"])
    out = []
    turns = run_chat(ChatConfig(target=str(run), max_new_tokens=5, system_prompt="Be brief."), read_line, out.append)
    assert len(turns) == 1 and turns[0]["messages"][0]["content"] == "Be brief."
    assert "".join(out).startswith(f"chatting with {run}")


# ---------------------------------------------------------------------------------------------
# the parsers stay light; the package exports the loader lazily


def test_building_the_parsers_imports_no_torch():
    code = ("import sys, argparse\n"
            "from paretoalign.inference import add_generate_parser, add_chat_parser\n"
            "import paretoalign\n"
            "p = argparse.ArgumentParser(); s = p.add_subparsers()\n"
            "add_generate_parser(s); add_chat_parser(s)\n"
            "p.parse_args(['generate', 'RUN', '--prompts', 'x.txt'])\n"
            "assert callable(paretoalign.load_policy)\n"
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_the_package_exports_the_loader_lazily():
    assert paretoalign.load_policy.__module__ == "paretoalign.inference"
    with pytest.raises(AttributeError):
        paretoalign.no_such_thing  # noqa: B018
    assert issubclass(RunDirError, ParetoAlignError)
