"""``--method mapl``: the loss is log 2 per level at π = π_ref; the logged normaliser diagnostic and intra
loss are the pure functions' values on the same batch; gradient accumulation and a resumed run give
the uninterrupted run's numbers; MAPL learns the prompt-side preference; bad input is refused clearly."""

import json
import math

import pytest
import torch

from paretoalign import run_dir
from paretoalign.cli import main
from paretoalign.data.preference_pairs import PreferencePair, load_preference_data, save_preference_data
from paretoalign.errors import ConfigError, RunDirError
from paretoalign.losses.mapl import mapl_intra_loss, normaliser_diagnostic
from paretoalign.pairs import make_pairs
from paretoalign.pairs_config import PairsConfig
from paretoalign.trainers.offline_config import OfflineConfig
from paretoalign.trainers.offline_trainer import OfflineTrainer

LOG2 = math.log(2.0)


def _pairs(n_prompts=5):
    out = []
    for i in range(n_prompts):
        long_, short_, mid = f"Yes yes indeed {i} it is so", f"No {i}", f"Maybe {i} yes"
        for a, b in ((long_, short_), (mid, short_), (long_, mid)):
            out.append(PreferencePair(f"question {i}?", a, b, {"helpful": 1.0, "short": -1.0}))
    return out


@pytest.fixture(scope="module")
def mapl_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mapl")
    src = save_preference_data(_pairs(), tmp / "src.jsonl")
    make_pairs(PairsConfig(mapl=True, pairs_in=str(src), output_dir=str(tmp / "data"), progress=False))
    return str(tmp / "data")


def _cfg(tmp_path, data, name="run", **kw):
    base = dict(method="mapl", model="tiny", pairs=[data], objectives=["helpful"], max_steps=2, batch_size=2,
                output_dir=str(tmp_path / name), progress=False, save_steps=2, max_response_length=16,
                lora_dropout=0.0)
    base.update(kw)
    return OfflineConfig(**base)


def test_at_the_reference_each_level_costs_log_2(tmp_path, mapl_dir):
    OfflineTrainer(_cfg(tmp_path, mapl_dir, "intra", mapl_pairs_coef=0.0, max_steps=1)).train()
    row = run_dir.read_metrics(tmp_path / "intra")[0]
    assert row["loss"] == pytest.approx(LOG2, abs=1e-6) and row["mapl/intra_loss"] == pytest.approx(LOG2, abs=1e-6)
    assert row["mapl/delta_w"] == 0.0 and row["mapl/delta_l"] == 0.0 and row["mapl/down_share"] == 0.0
    assert "mapl/pairs_loss" not in row and "mapl/inter_loss" not in row
    OfflineTrainer(_cfg(tmp_path, mapl_dir, "all", mapl_inter_coef=0.5, mapl_pairs_coef=2.0, max_steps=1)).train()
    row = run_dir.read_metrics(tmp_path / "all")[0]
    assert row["loss"] == pytest.approx((1 + 0.5 + 2.0) * LOG2, abs=1e-5)
    for k in ("mapl/intra_loss", "mapl/inter_loss", "mapl/pairs_loss"):
        assert row[k] == pytest.approx(LOG2, abs=1e-6)


def _perturb_lora(tr, scale=0.05):
    """Move the LoRA B matrices off zero so that π ≠ π_ref before the first step (seed 3: log π(y|x_l) rises
    on some triples and falls on others, so the diagnostic's share and the drop hinge are both non-trivial)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for n, p in tr.unwrapped.named_parameters():
            if "lora_B" in n:
                p.copy_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("anchor", ["none", "sft", "drop"])
def test_logged_diagnostic_and_loss_equal_the_pure_functions_on_the_same_batch(tmp_path, mapl_dir, anchor):
    cfg = _cfg(tmp_path, mapl_dir, anchor, mapl_pairs_coef=0.0, max_steps=1, mapl_anchor=anchor,
               mapl_anchor_coef=0.3, mapl_drop_margin=0.01, beta=0.5, batch_size=4)
    tr = OfflineTrainer(cfg)
    _perturb_lora(tr)
    idx = tr.indices_for_step(1)
    tr.model.train()
    with torch.no_grad():
        pw, pl, rw, rl, n = tr.strategy.intra_logps([tr.examples[i] for i in idx])
    want = normaliser_diagnostic(pw, pl, rw, rl)
    loss = mapl_intra_loss(pw, pl, rw, rl, 0.5, anchor, 0.3, n, 0.01).mean()
    assert abs(want["mapl/delta_w"]) > 1e-3 and 0.0 < want["mapl/down_share"] < 1.0  # a non-trivial batch
    tr.train()
    row = run_dir.read_metrics(tmp_path / anchor)[0]
    for k, v in want.items():
        assert row[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    assert row["loss"] == pytest.approx(float(loss), rel=1e-5)
    margin = 0.5 * ((pw - rw) - (pl - rl))
    assert row["mapl/intra_accuracy"] == pytest.approx(float((margin > 0).float().mean()))
    if anchor != "none":
        assert abs(row["loss"] - row["mapl/intra_loss"]) < 1e-6
        plain = mapl_intra_loss(pw, pl, rw, rl, 0.5).mean()
        assert float(loss) != pytest.approx(float(plain), rel=1e-4)  # the anchor changed the loss


def test_gradient_accumulation_sees_the_same_examples(tmp_path, mapl_dir):
    kw = dict(mapl_inter_coef=1.0, max_steps=2)
    OfflineTrainer(_cfg(tmp_path, mapl_dir, "one", batch_size=2, **kw)).train()
    OfflineTrainer(_cfg(tmp_path, mapl_dir, "two", batch_size=1, gradient_accumulation_steps=2, **kw)).train()
    a, b = run_dir.read_metrics(tmp_path / "one"), run_dir.read_metrics(tmp_path / "two")
    for ra, rb in zip(a, b):
        for k in ("loss", "mapl/intra_loss", "mapl/inter_loss", "mapl/pairs_loss", "mapl/logp_w", "mapl/logp_l"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4), k


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path, mapl_dir, killed_at):
    kw = dict(mapl_inter_coef=0.5, mapl_anchor="drop", max_steps=4, save_steps=2, learning_rate=1e-3)
    OfflineTrainer(_cfg(tmp_path, mapl_dir, "full", **kw)).train()
    full = run_dir.read_metrics(tmp_path / "full")
    killed_at(OfflineTrainer, "step", 3, lambda: OfflineTrainer(_cfg(tmp_path, mapl_dir, "cut", **kw)).train())
    with pytest.raises(RunDirError, match="already holds a run"):
        OfflineTrainer(_cfg(tmp_path, mapl_dir, "cut", **kw))
    tr = OfflineTrainer(_cfg(tmp_path, mapl_dir, "cut", resume=True, **kw))
    assert tr.start_step == 2
    tr.train()
    cut = run_dir.read_metrics(tmp_path / "cut")
    assert [r["step"] for r in cut] == [1, 2, 3, 4]
    for a, b in zip(full, cut):
        for k in ("loss", "mapl/down_share", "mapl/inter_loss", "mapl/pairs_loss", "mapl/logp_l"):
            assert a[k] == pytest.approx(b[k], rel=1e-5), k
    meta = json.loads((tmp_path / "cut" / "final" / "paretoalign.json").read_text())
    assert meta["method"] == "mapl"


def test_mapl_learns_the_prompt_side_preference(tmp_path, mapl_dir):
    cfg = _cfg(tmp_path, mapl_dir, "learn", mapl_pairs_coef=0.0, max_steps=20, learning_rate=1e-3, beta=0.5,
               save_steps=100, batch_size=8)
    tr = OfflineTrainer(cfg)
    tr.train()
    rows = run_dir.read_metrics(cfg.output_dir)
    assert sum(r["mapl/intra_loss"] for r in rows[-3:]) / 3 < 0.7 * rows[0]["mapl/intra_loss"]
    # on every training triple, the implicit reward of y is now higher under x_w than under x_l
    with torch.no_grad():
        tr.model.eval()
        pw, pl, rw, rl, _ = tr.strategy.intra_logps(tr.examples)
    assert float(((pw - rw) - (pl - rl) > 0).float().mean()) > 0.85


def test_l0_is_dpo_on_the_folders_pairs_scalarised_by_the_weights(tmp_path, mapl_dir):
    tr = OfflineTrainer(_cfg(tmp_path, mapl_dir, "w", objectives=["helpful", "short"], weights=[0.25, 0.75]))
    want = load_preference_data(mapl_dir).scalarized({"helpful": 0.25, "short": 0.75})
    assert [(p.chosen, p.rejected) for p in tr.strategy.pairs] == [(p.chosen, p.rejected) for p in want]
    assert all(len(p.chosen) < len(p.rejected) for p in tr.strategy.pairs)  # 'short' dominates


def test_bad_input(tmp_path, mapl_dir):
    plain = str(save_preference_data(_pairs(), tmp_path / "plain.jsonl"))
    with pytest.raises(Exception, match="not MAPL prompt-side pairs"):
        OfflineTrainer(_cfg(tmp_path, plain, "a"))
    with pytest.raises(ConfigError, match="plain preference pairs"):
        OfflineTrainer(_cfg(tmp_path, mapl_dir, "b"), data=load_preference_data(plain))
    with pytest.raises(ConfigError, match="mapl-intra-coef must be > 0"):
        _cfg(tmp_path, mapl_dir, mapl_intra_coef=0.0)
    with pytest.raises(ConfigError, match="option mapl_anchor_coef: must be >= 0"):
        _cfg(tmp_path, mapl_dir, mapl_anchor_coef=-1.0)
    with pytest.raises(ConfigError, match="mapl_anchor"):
        _cfg(tmp_path, mapl_dir, mapl_anchor="kl")
    with pytest.raises(ConfigError, match=r"objective\(s\) \['sentiment'\] are not labelled"):
        OfflineTrainer(_cfg(tmp_path, mapl_dir, "c", objectives=["sentiment"]))
    # a folder without inter.jsonl, and without original pairs
    src = tmp_path / "responses.jsonl"
    src.write_text("\n".join(json.dumps({"prompt": f"q {i}?", "response": f"Answer number {i} is here now."})
                             for i in range(4)) + "\n")
    make_pairs(PairsConfig(mapl=True, pairs_in=str(src), output_dir=str(tmp_path / "resp"), progress=False))
    with pytest.raises(ConfigError, match="no inter.jsonl"):
        OfflineTrainer(_cfg(tmp_path, str(tmp_path / "resp"), "d", mapl_inter_coef=1.0))
    with pytest.warns(UserWarning, match="no original pairs"):
        tr = OfflineTrainer(_cfg(tmp_path, str(tmp_path / "resp"), "e", objectives=["sentiment"], max_steps=1))
    tr.train()
    assert "mapl/pairs_loss" not in run_dir.read_metrics(tmp_path / "e")[0]


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    plain = str(save_preference_data(_pairs(), tmp_path / "plain.jsonl"))
    assert main(["train", "--method", "mapl", "--model", "tiny", "--pairs", plain, "--objectives", "helpful",
                 "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "prompt_w" in err and "pairs --mapl" in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exit_:  # argparse's choices: its error, in the project's one-line format
        main(["train", "--method", "mapl", "--model", "tiny", "--pairs", plain, "--mapl-conflict-rule", "coin",
              "--output-dir", str(tmp_path / "o")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "coin" in err and err.count("\n") == 1, err


def test_front_sweeps_the_label_weights_with_the_prompt_side_levels_fixed(tmp_path):
    """`front --method mapl`: one run per preference, the weights scalarising the original pairs' labels (L_0);
    the prompt-side levels are the same at every point.  Labels named like scorer objectives, so the front
    evaluates them."""
    from paretoalign import run_dir
    from paretoalign.fronts.sweep import build_front_config, run_front

    pairs = []
    for i in range(5):
        a, b = f"Great wonderful answer number {i} indeed", f"bad {i}"
        pairs.append(PreferencePair(f"question {i}?", a, b, {"sentiment": 1.0, "length": 1.0}))
        pairs.append(PreferencePair(f"question {i}?", f"ok {i}", a, {"sentiment": -1.0, "length": -1.0}))
    src = save_preference_data(pairs, tmp_path / "src.jsonl")
    make_pairs(PairsConfig(mapl=True, pairs_in=str(src), output_dir=str(tmp_path / "data"), progress=False))
    front, train = build_front_config(None, dict(
        method="mapl", preferences="grid:2", output_dir=str(tmp_path / "front"), report=False, eval_num_prompts=2,
        eval_max_new_tokens=3, model="tiny", pairs=[str(tmp_path / "data")], objectives=["sentiment", "length"],
        max_steps=1, batch_size=2, max_response_length=16, progress=False))
    pts = run_front(front, train, progress=lambda s: None)["points"]
    assert [p["preference"] for p in pts] == [[0.0, 1.0], [1.0, 0.0]]
    for p in pts:
        cfg = run_dir.load_config(tmp_path / "front" / p["run_dir"])
        assert cfg["method"] == "mapl" and cfg["weights"] == pytest.approx(p["preference"])
