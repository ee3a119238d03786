"""DPA on the tiny model: rejection sampling keeps the best by v.r, the conditioned model follows the
requested direction at inference, rounds resume exactly, fronts sweep directions of one model."""

import json
import math

import pytest
import torch

from paretoalign import run_dir
from paretoalign.errors import ConfigError, RunDirError
from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target
from paretoalign.objectives.base import Objective
from paretoalign.objectives.registry import register_objective
from paretoalign.preferences import conditioned_prompt
from paretoalign.trainers.dpa_config import DPAConfig
from paretoalign.trainers.dpa_trainer import DPATrainer, select_best


class LetterShare(Objective):
    """(Share of a completion's letters in one half of the alphabet) ** power.  With power 1/2 the two
    halves pull against each other with a concave trade-off: v1*sqrt(e) + v2*sqrt(1 - e) is maximised
    at the early share e = cos^2(t), so every direction has its own best mix."""

    def __init__(self, letters: str, name: str, power: float = 0.5):
        self.name, self.letters, self.power, self.bounds = name, set(letters), power, (0.0, 1.0)

    def _score(self, prompts, completions):
        out = []
        for c in completions:
            ch = [x for x in c.lower() if x.isalpha()]
            out.append((sum(x in self.letters for x in ch) / len(ch)) ** self.power if ch else 0.0)
        return out


EARLY = "abcdefghijklm"


@pytest.fixture(autouse=True)
def letter_objectives(monkeypatch):
    """Registered for this module's tests only (the registry is global)."""
    from paretoalign.objectives import registry

    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))
    register_objective("early_letters", lambda name=None: LetterShare(EARLY, name or "early"))
    register_objective("late_letters", lambda name=None: LetterShare("nopqrstuvwxyz", name or "late"))
    register_objective("early_share", lambda name=None: LetterShare(EARLY, name or "early_share", power=1.0))
OBJ = ["early_letters", "late_letters"]


@pytest.fixture
def prompt_file(tmp_path):
    f = tmp_path / "prompts.jsonl"
    f.write_text("".join(json.dumps({"prompt": "Say something."}) + "\n" for _ in range(40)))
    return str(f)


def _cfg(tmp_path, prompt_file, name="dpa", **kw):
    base = dict(model="tiny", objectives=OBJ, prompts=prompt_file, rounds=2, prompts_per_round=4, num_candidates=3,
                max_new_tokens=4, temperature=1.0, batch_size=4, output_dir=str(tmp_path / name), progress=False)
    base.update(kw)
    return DPAConfig(**base)


def test_select_best_maximises_the_directional_utility():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.6],    # prompt 0
                           [1.0, 0.0], [0.0, 1.0], [0.6, 0.6],    # prompt 1
                           [9.0, 9.0], [0.0, 0.0], [0.1, 0.0]])   # prompt 2: the best is invalid
    valid = torch.tensor([True] * 6 + [False, True, True])
    dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    rows, util = select_best(scores, valid, dirs, 3)
    assert rows.tolist() == [0, 4, 8]
    assert util[2, 0] == -math.inf and util[2, 2] == pytest.approx(0.1)
    diag = torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]] * 3)
    assert select_best(scores, valid, diag, 3)[0].tolist()[:2] == [2, 5]  # the balanced candidate wins at 45 degrees
    none = select_best(scores[:3], torch.zeros(3, dtype=torch.bool), dirs[:1], 3)[0]
    assert none.tolist() == [-1]


def test_group_normalised_selection_ignores_the_objectives_scales():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(4 * 5, 2, generator=g)
    valid = torch.ones(20, dtype=torch.bool)
    dirs = torch.tensor([[0.8, 0.6]] * 4)
    rescaled = scores * torch.tensor([1.0, 100.0])
    best, _ = select_best(scores, valid, dirs, 5, "group")
    assert torch.equal(select_best(rescaled, valid, dirs, 5, "group")[0], best)
    # raw v.r: the x100 objective decides alone
    raw = select_best(rescaled, valid, dirs, 5)[0]
    assert torch.equal(raw, torch.arange(4) * 5 + rescaled[:, 1].view(4, 5).argmax(1))
    with pytest.raises(ValueError, match="normalization"):
        select_best(scores, valid, dirs, 5, "bogus")


def test_conditioned_prompt_puts_the_direction_in_the_system_message():
    msgs = conditioned_prompt([{"role": "system", "content": "old"}, {"role": "user", "content": "hi"}], "NEW")
    assert msgs == [{"role": "system", "content": "NEW"}, {"role": "user", "content": "hi"}]
    assert conditioned_prompt("hi", "S") == [{"role": "system", "content": "S"}, {"role": "user", "content": "hi"}]


def test_the_conditioned_model_follows_the_requested_direction(tmp_path, prompt_file):
    # The tiny problem: one prompt (the direction in the system message is the only input that varies),
    # four-token completions, training directions drawn from five angles, full fine-tuning, 60 rounds
    # of best-of-8 (about 12 s on 2 cores).  The early-letter share the model produces must fall as
    # the direction turns from 'early' (10 degrees) to 'late' (80 degrees).
    angles = [10.0, 30.0, 45.0, 60.0, 80.0]
    cfg = _cfg(tmp_path, prompt_file, rounds=60, prompts_per_round=16, num_candidates=8, max_new_tokens=4,
               sft_epochs=4, batch_size=8, learning_rate=3e-3, use_lora=False, angles=angles,
               direction_template="{weighted_rating}")
    summary = DPATrainer(cfg).train()
    assert summary["rounds"] == 60
    rows = run_dir.read_metrics(cfg.output_dir)
    assert all(r["utility/selected"] >= r["utility/candidates"] - 1e-6 for r in rows)  # selection keeps the best
    shares = []
    for deg in angles:
        v = [math.cos(math.radians(deg)), math.sin(math.radians(deg))]
        ev = evaluate_target(EvalConfig(target=cfg.output_dir, direction=v, objectives=["early_share"],
                                        prompts=prompt_file, split="all", num_prompts=24, temperature=1.0,
                                        baseline="none", cache=False, output=str(tmp_path / f"eval-{deg}.json")),
                             quiet=True)
        assert ev["direction"] == pytest.approx(v)
        # the run's direction names and template, even though other objectives are evaluated
        assert ev["decoding"]["system_prompt"] == f"early*{round(100 * v[0])} + late*{round(100 * v[1])}"
        shares.append(ev["summary"]["early_share"]["mean"])
    # Noise bound: 24 samples of 4 tokens per angle, so a share moves in steps of about 1/96 and the
    # sampling noise of a mean is about 0.05; neighbouring angles may tie or wobble by up to 0.1, and
    # the share must fall by at least 0.3 from 10 to 80 degrees (the optimum falls from 0.97 to 0.03).
    for a, b in zip(shares, shares[1:]):
        assert b <= a + 0.1, shares
    assert shares[0] - shares[-1] >= 0.3, shares


def test_killed_run_resumes_after_its_last_round_and_matches(tmp_path, prompt_file, killed_at):
    full = _cfg(tmp_path, prompt_file, name="full", rounds=3)
    DPATrainer(full).train()
    cut = _cfg(tmp_path, prompt_file, name="cut", rounds=3)
    killed_at(DPATrainer, "round", 3, lambda: DPATrainer(cut).train())
    assert [r["step"] for r in run_dir.read_metrics(cut.output_dir)] == [1, 2]
    resumed = DPATrainer(_cfg(tmp_path, prompt_file, name="cut", rounds=3, resume=True))
    assert resumed.start_round == 2
    resumed.train()
    a, b = run_dir.read_metrics(full.output_dir), run_dir.read_metrics(cut.output_dir)
    assert [r["step"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        for k in ra:
            if not k.startswith("time_"):
                assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), k
    assert (tmp_path / "cut" / "final" / "policy" / "adapter_config.json").is_file()
    meta = json.loads((tmp_path / "cut" / "final" / "paretoalign.json").read_text())
    assert meta["direction_names"] == ["early", "late"] and "{weighted_rating}" in meta["direction_template"]


@pytest.mark.parametrize("kw, match", [
    ({"objectives": ["early_letters"]}, "at least 2 objectives"),
    ({"num_candidates": 1}, "num_candidates must be >= 2"),
    ({"min_angle": 50, "max_angle": 10}, "min_angle <= max_angle"),
])
def test_bad_config_is_a_clear_error(tmp_path, prompt_file, kw, match):
    with pytest.raises(ConfigError, match=match):
        _cfg(tmp_path, prompt_file, **kw)


def test_bad_template_and_existing_run_fail_before_training(tmp_path, prompt_file):
    with pytest.raises(ConfigError, match="never sees the direction"):
        DPATrainer(_cfg(tmp_path, prompt_file, name="t", direction_template="Be helpful."))
    DPATrainer(_cfg(tmp_path, prompt_file, name="r", rounds=1)).train()
    with pytest.raises(RunDirError):
        DPATrainer(_cfg(tmp_path, prompt_file, name="r", rounds=1))
    with pytest.raises(ConfigError, match="direction has 3 entries"):
        evaluate_target(EvalConfig(target=str(tmp_path / "r"), direction=[1, 0, 0], prompts=prompt_file, num_prompts=2))
    with pytest.raises(ConfigError, match="drop --system-prompt"):
        EvalConfig(target=str(tmp_path / "r"), direction=[1, 0], system_prompt="x")


def test_cli_and_front_sweep_directions_of_one_model(tmp_path, prompt_file, monkeypatch, capsys):
    from paretoalign.cli import main
    from paretoalign.fronts.sweep import build_front_config, run_front

    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "cli"
    assert main(["train", "--method", "dpa", "--model", "tiny", "--objectives", ",".join(OBJ), "--prompts", prompt_file,
                 "--rounds", "1", "--prompts-per-round", "2", "--num-candidates", "2", "--max-new-tokens", "3",
                 "--output-dir", str(run), "--progress", "false"]) == 0
    assert main(["evaluate", str(run), "--direction", "1,0", "--num-prompts", "2",  # baseline: the base model, same message
                 "--output", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["direction"] == [1.0, 0.0]
    assert "direction 1.000, 0.000" in capsys.readouterr().out

    front, train = build_front_config(None, dict(
        method="dpa", preferences="grid:3", output_dir=str(tmp_path / "front"), report=False, eval_num_prompts=3,
        eval_max_new_tokens=3, model="tiny", objectives=OBJ, prompts=prompt_file, rounds=1, prompts_per_round=2,
        num_candidates=2, max_new_tokens=3, progress=False))
    result = run_front(front, train, progress=lambda s: None)
    pts = result["points"]
    assert [p["preference"] for p in pts] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert {p["run_dir"] for p in pts} == {"model"}  # one trained model for every point
    assert pts[1]["direction"] == pytest.approx([math.sqrt(0.5)] * 2)
    assert result["decoding"]["system_prompt"] is None  # comparable with other methods' fronts
    with pytest.raises(ConfigError, match="mixes"):
        build_front_config(None, dict(method="dpa,pama"))
    from paretoalign.cli import build_parser

    args = build_parser().parse_args(["front", "--method", "dpa", "--rounds", "2", "--num-candidates", "3", "--angles", "10,80"])
    assert (args.rounds, args.num_candidates, args.angles) == (2, 3, "10,80")


def test_two_processes_under_accelerate(tmp_path, prompt_file):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29543",
           "-m", "paretoalign.cli", "train", "--method", "dpa", "--model", "tiny", "--prompts", prompt_file,
           "--objectives", "length(scale=20),keywords(words=e,whole_words=false)", "--rounds", "2",
           "--prompts-per-round", "2", "--num-candidates", "2", "--max-new-tokens", "4", "--output-dir", str(out),
           "--progress", "false"]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = run_dir.read_metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and all(r["selected"] == 2 for r in rows)  # mean over 2 processes
    assert json.loads((out / "checkpoints" / "step-000002" / "trainer_state.json").read_text())["num_processes"] == 2
    assert (out / "final" / "policy" / "adapter_config.json").is_file()


def test_the_direction_reaches_the_model_in_every_rendering(tmp_path, prompt_file, monkeypatch):
    from paretoalign.errors import ParetoAlignError
    from paretoalign.evaluation import scoring
    from paretoalign.models import load_tokenizer
    from paretoalign.rollout import render_prompt

    tok = load_tokenizer("tiny")
    # without a chat template the system message is kept in front of the user's text
    assert render_prompt(conditioned_prompt("hi", "DIR"), tok, use_chat_template=False) == "DIR\n\nhi"
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert "DIR" in render_prompt(conditioned_prompt(conv, "DIR"), tok) and "Be brief" not in render_prompt(conditioned_prompt(conv, "DIR"), tok)

    # evaluation conditions exactly like training: a prompt's own system message is replaced
    conv_file = tmp_path / "conv.jsonl"
    conv_file.write_text("".join(json.dumps({"prompt": conv}) + "\n" for _ in range(4)))
    run = tmp_path / "r"
    DPATrainer(_cfg(tmp_path, str(conv_file), name="r", rounds=1)).train()
    seen = []
    real = scoring.generate_completions

    def spy(model, tokenizer, prompts, **kw):
        seen.extend(render_prompt(p, tokenizer, kw["use_chat_template"], kw["system_prompt"]) for p in prompts)
        return real(model, tokenizer, prompts, **kw)

    monkeypatch.setattr(scoring, "generate_completions", spy)
    evaluate_target(EvalConfig(target=str(run), direction=[0.6, 0.8], split="all", num_prompts=2, baseline="none",
                               cache=False, output=str(tmp_path / "e.json")), quiet=True)
    assert seen and all("early*60 + late*80" in t and "Be brief" not in t for t in seen)

    # evaluating prompts so long that the direction would be cut warns
    long_file = tmp_path / "long.jsonl"
    long_file.write_text(json.dumps({"prompt": "word " * 400}) + "\n" + json.dumps({"prompt": "hi"}) + "\n")
    with pytest.warns(RuntimeWarning, match="1 of 2 prompts with the direction exceed"):
        evaluate_target(EvalConfig(target=str(run), direction=[1, 0], prompts=str(long_file), split="all",
                                   baseline="none", max_new_tokens=2, output=str(tmp_path / "l.json")), quiet=True)

    # a prompt so long that truncation would cut the direction is refused, not trained on blind
    with pytest.raises(ParetoAlignError, match="truncation would cut the direction"):
        DPATrainer(_cfg(tmp_path, prompt_file, name="long", rounds=1, max_prompt_length=8)).train()


def test_fine_tuning_takes_the_same_number_of_steps_when_prompts_kept_nothing(tmp_path, prompt_file):
    from paretoalign.sequences import ResponseBatch

    tr = DPATrainer(_cfg(tmp_path, prompt_file, name="f", prompts_per_round=8, batch_size=4, sft_epochs=2))
    T = 6
    batch = ResponseBatch(torch.randint(3, 50, (3, T)), torch.ones(3, T, dtype=torch.long), torch.ones(3, 2), T - 2)
    losses = tr._fine_tune(batch, 1)  # 3 kept of 8 prompts: cycled to 8 samples, 2 steps per pass
    assert len(losses) == 2 * 2
