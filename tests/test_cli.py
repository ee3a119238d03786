"""The command line: flags, YAML configs, one-line errors, and a 2-process accelerate launch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from paretoalign import run_dir
from paretoalign.cli import main

REPO = Path(__file__).resolve().parents[1]
OBJ = "length(name=chars,scale=10,low=0,high=100),length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"
SMALL = ["--model", "tiny", "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "6",
         "--progress", "false"]


def test_train_smoke_from_flags_writes_a_run_folder(tmp_path, capsys):
    out = tmp_path / "smoke"
    rc = main(["train", "--method", "pama", "--objectives", OBJ, "--max-steps", "2", "--output-dir", str(out), *SMALL])
    assert rc == 0
    rows = run_dir.read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and "weight/chars" in rows[0]
    printed = capsys.readouterr().out
    assert "first 1 steps" in printed and "chars" in printed and "words" in printed
    assert run_dir.load_config(out)["objectives"][0].startswith("length(name=chars")


def test_yaml_config_with_flag_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"method: morlhf\nweights: [0.25, 0.75]\nmax_steps: 5\noutput_dir: {tmp_path / 'ignored'}\n"
                   f"objectives: [\"length(name=chars,scale=10,low=0,high=100)\", sentiment]\n")
    out = tmp_path / "y"
    rc = main(["train", "--config", str(cfg), "--max-steps", "1", "--output-dir", str(out), *SMALL])
    assert rc == 0
    saved = run_dir.load_config(out)
    assert saved["max_steps"] == 1 and saved["method"] == "morlhf" and saved["weights"] == [0.25, 0.75]
    assert run_dir.read_metrics(out)[0]["weight/chars"] == pytest.approx(0.25)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--objectives", "sentiment,lenght"], "unknown objective 'lenght'.*did you mean 'length'"),
        (["--method", "morlhf", "--weights", "0.5,0.6"], "sum.*--normalize-weights"),
        (["--method", "morlhf", "--weights", "1,-0.5,0.5", "--objectives", "sentiment,length,readability"], "negative"),
        (["--method", "morlhf", "--weights", "0.5,nan"], "NaN|not finite|finite"),
        (["--method", "morlhf", "--weights", "1.0"], "2 objectives|expected 2|length"),
        (["--prompts", "/nonexistent/prompts.jsonl"], "prompts.jsonl"),
        (["--model", "nobody/nothing"], "model 'nobody/nothing' not found"),
    ],
)
def test_bad_input_is_one_error_line_without_traceback(tmp_path, capsys, args, message):
    rc = main(["train", "--max-steps", "1", "--output-dir", str(tmp_path / "bad"), *SMALL, *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_normalize_weights_flag_accepts_unnormalised_weights(tmp_path):
    rc = main(["train", "--method", "morlhf", "--weights", "2,6", "--normalize-weights", "--objectives", OBJ,
               "--max-steps", "1", "--output-dir", str(tmp_path / "n"), *SMALL])
    assert rc == 0
    assert run_dir.read_metrics(tmp_path / "n")[0]["weight/chars"] == pytest.approx(0.25)


def test_existing_run_refused_then_resumed(tmp_path, capsys):
    out = str(tmp_path / "r")
    base = ["train", "--objectives", OBJ, "--output-dir", out, "--save-steps", "1", *SMALL]
    assert main([*base, "--max-steps", "1"]) == 0
    assert main([*base, "--max-steps", "2"]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*base, "--max-steps", "2", "--resume"]) == 0
    assert [r["step"] for r in run_dir.read_metrics(out)] == [1, 2]


def test_help_shows_field_documentation(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--pama-granularity" in out and "Theorem-1" in out and "--nan-policy" in out


def test_objectives_command_lists_builtins(capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out
    for name in ("length", "sentiment", "readability", "relevance", "reward_model", "python"):
        assert name in out


def test_two_process_accelerate_launch(tmp_path):
    """DDP over gloo with 2 CPU processes: both processes train, metrics count both."""
    out = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
           "-m", "paretoalign.cli", "train", "--method", "mgda-ub", "--objectives", OBJ, "--max-steps", "2",
           "--save-steps", "1", "--output-dir", str(out), *SMALL]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = run_dir.read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["samples"] == 2 * 2 * 2  # 2 processes x 2 prompts x 2 completions
    ckpt = run_dir.list_checkpoints(out)[-1][1]
    assert (ckpt / "rng_state_0.json").is_file() and (ckpt / "rng_state_1.json").is_file()
    assert json.loads((ckpt / "trainer_state.json").read_text())["num_processes"] == 2
    assert (out / "final" / "policy" / "adapter_config.json").is_file()


def test_mo_grpo_gdpo_under_two_processes(tmp_path):
    """GDPO's batch standardisation over the gathered batch of 2 processes (gloo)."""
    out = tmp_path / "gdpo"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29535",
           "-m", "paretoalign.cli", "train", "--method", "mo-grpo", "--group-aggregation", "normalize_then_sum",
           "--objectives", OBJ, "--max-steps", "2", "--output-dir", str(out), *SMALL]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = run_dir.read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["samples"] == 8 and rows[0]["value_loss"] == 0.0


HEAVY = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "vaderSentiment", "moocore",
         "matplotlib", "huggingface_hub", "tqdm")
COMMANDS = ["train", "evaluate", "front", "compare", "report", "pairs", "reward-model", "demo", "generate", "chat",
            "merge", "serve", "objectives"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_prints_and_imports_nothing_heavy(command):
    """--help answers before any heavy library loads (the cause of a slow --help; the time itself, as a
    ratio to `python -c pass`, is in bench/cli_startup.py: no timing assertions in unit tests)."""
    argv = ["--help"] if command is None else [command, "--help"]
    code = ("import sys\nfrom paretoalign.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "usage: paretoalign" in res.stdout
    assert res.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_objectives_lists_each_kind_with_its_options_and_defaults(capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out
    assert "length(scale=140.0, low=0.5, high=1.5, unit='chars')" in out
    assert "reward_model:<model>(index=0," in out and "python:<function>(...)" in out
    assert "VADER compound sentiment" in out


def test_evaluate_has_one_cache_flag():
    from paretoalign.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command").choices["evaluate"]
    flags = [s for a in sub._actions for s in a.option_strings if "cache" in s]
    assert flags == ["--no-cache"]


def test_loading_is_quiet_unless_verbose(tmp_path, capfd, monkeypatch):
    """No per-tensor progress bar when a saved model loads; --verbose (anywhere on the line) brings it back,
    and the setting does not outlive the command."""
    from paretoalign.console import VERBOSE_ENV
    from paretoalign.models import build_tiny_model, build_tiny_tokenizer

    monkeypatch.delenv(VERBOSE_ENV, raising=False)
    folder = tmp_path / "m"
    tok = build_tiny_tokenizer()
    build_tiny_model(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    base = ["evaluate", str(folder), "--objectives", "length", "--num-prompts", "2", "--max-new-tokens", "2",
            "--output", str(tmp_path / "e.json"), "--no-cache"]
    capfd.readouterr()
    assert main(base) == 0
    assert "Loading weights" not in capfd.readouterr().err
    assert main(base + ["--verbose"]) == 0
    assert "Loading weights" in capfd.readouterr().err
    assert VERBOSE_ENV not in os.environ
