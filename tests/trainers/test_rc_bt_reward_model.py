"""``reward-model train --rc-bt``: the Rc-BT head's fit is exact (the regularised loss's gradient vanishes;
on a reward table the optimum is logit(p)); end to end the head ranks the same response higher under
the prompt whose instructions it satisfies, is saved and loaded as one more objective, keeps λ = 0,
and the gate's loss adds the Rc-BT term; bad input is one line."""

import json
import math
from pathlib import Path

import pytest
import torch

from paretoalign.cli import main
from paretoalign.errors import ConfigError
from paretoalign.pairs import make_pairs
from paretoalign.pairs_config import PairsConfig
from paretoalign.reward_model.features import FeatureExtractor
from paretoalign.reward_model.model import MultiObjectiveRewardModel
from paretoalign.reward_model.rc_bt import fit_rc_bt_head, rc_bt_objective, solve_rc_bt
from paretoalign.trainers.reward_model_config import RewardModelConfig
from paretoalign.trainers.reward_model_trainer import train_reward_model

HS2 = str(Path(__file__).resolve().parents[1] / "fixtures" / "reward" / "helpsteer2_small.jsonl")


def test_the_head_is_the_regularised_optimum():
    g = torch.Generator().manual_seed(0)
    fw, fl = torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randn(40, 6, generator=g, dtype=torch.float64)
    fit = fit_rc_bt_head(fw, fl, alphas=[1e-2, 1e-1], val_fraction=0.25, seed=0)
    w = fit.weight.clone().requires_grad_(True)
    rc_bt_objective(w, fw - fl, torch.ones(40, dtype=torch.float64), fit.alpha).backward()
    assert float(w.grad.abs().max()) < 1e-8  # the KKT condition of the convex problem
    assert set(fit.val_loss) == {"0.01", "0.1"} and fit.alpha == min((0.01, 0.1), key=lambda a: fit.val_loss[str(a)])
    # the bias centres the head on its training rows
    assert float((torch.cat([fw, fl]) @ fit.weight).mean() + fit.bias) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_on_a_reward_table_the_optimum_is_logit_p(p):
    """Features one-hot in the (prompt, response) cell make r a free table; one triple (x_w, x_l, y)
    labelled x_w ≻ x_l with frequency p: the unregularised minimiser has r(x_w, y) − r(x_l, y) = logit(p)."""
    n = 50
    fw, fl = torch.zeros(n, 3, dtype=torch.float64), torch.zeros(n, 3, dtype=torch.float64)
    fw[:, 0], fl[:, 1] = 1.0, 1.0  # cell 2 is another response, never compared
    targets = torch.zeros(n, dtype=torch.float64)
    targets[: round(p * n)] = 1.0
    w = solve_rc_bt(fw - fl, 0.0, targets)
    assert float(w[0] - w[1]) == pytest.approx(math.log(p / (1 - p)), abs=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rcbt")
    make_pairs(PairsConfig(mapl=True, pairs_in=HS2, output_dir=str(tmp / "mapl"), progress=False, max_prompts=16))
    cfg = RewardModelConfig(ratings=[HS2], backbone="tiny", pooling="mean", gate_hidden=32, gate_layers=1,
                            gate_steps=40, gate_batch_size=64, output_dir=str(tmp / "rm"),
                            feature_cache=str(tmp / "features"), progress=False, temperature=1.0, dropout=0.0,
                            rc_bt=True, prompt_pairs=[str(tmp / "mapl")], rc_bt_coef=2.0,
                            rc_bt_alphas=[1e-5, 1e-4, 1e-3])
    model, report = train_reward_model(cfg)
    return tmp, cfg, model, report


def test_rc_bt_head_trains_saves_and_ranks_the_complied_prompt_higher(trained):
    tmp, cfg, model, rep = trained
    rated = ["helpfulness", "correctness", "coherence", "complexity", "verbosity"]
    assert model.objectives == rated + ["instruction_following"] and rep["objectives"] == rated
    assert float(model.debias_lambda[-1]) == 0.0  # the compliance head is not debiased against verbosity
    rc = rep["rc_bt"]
    assert rc["objective"] == "instruction_following" and rc["train_pairs"] > 0 and rc["test_pairs"] > 0
    ev = rep["evaluation"]
    assert ev["prompt_pairs_train"]["head_accuracy"] > 0.9 and ev["prompt_pairs_train"]["pairs"] == rc["train_pairs"]
    assert ev["prompt_pairs_test"]["pairs"] == rc["test_pairs"] and ev["prompt_pairs_test"]["head_accuracy"] > 0.5
    # the held-out prompt-side pairs' requests are held out of every stage
    for k in ("pairs_train", "heads_train"):
        assert k in ev
    loaded = MultiObjectiveRewardModel.from_pretrained(tmp / "rm")
    loaded.set_extractor(FeatureExtractor("tiny", "mean", cache_dir=tmp / "features"))
    rows = [json.loads(line) for line in (tmp / "mapl" / "intra.jsonl").read_text().splitlines()[:6]]
    w = loaded.score([r["prompt_w"] for r in rows], [r["response"] for r in rows])
    lo = loaded.score([r["prompt_l"] for r in rows], [r["response"] for r in rows])
    again = model.score([r["prompt_w"] for r in rows], [r["response"] for r in rows])
    torch.testing.assert_close(w.rewards, again.rewards, atol=1e-5, rtol=1e-5)
    assert w.rewards.shape == (6, 6) and float((w.rewards[:, -1] > lo.rewards[:, -1]).float().mean()) >= 0.5


def test_the_gate_loss_adds_the_rc_bt_term(trained, tmp_path):
    """Same data and seed: the first gate step's loss is BT(pairs batch) + coef x Rc-BT(prompt-side batch) at the
    same initial gate, so it is affine in --rc-bt-coef: loss(2) - loss(0) = 2 (loss(1) - loss(0)) > 0."""
    _, cfg, _, rep = trained
    first = {2.0: rep["stage2"]["loss_first"]}
    for coef in (0.0, 1.0):
        c = RewardModelConfig(**{**cfg.__dict__, "output_dir": str(tmp_path / f"rm{coef}"), "rc_bt_coef": coef})
        _, r = train_reward_model(c)
        first[coef] = r["stage2"]["loss_first"]
        assert r["rc_bt"]["alpha"] == rep["rc_bt"]["alpha"]  # stage 1 does not depend on the coefficient
    assert first[1.0] - first[0.0] > 0
    assert first[2.0] - first[0.0] == pytest.approx(2 * (first[1.0] - first[0.0]), rel=1e-4)


def test_bad_input(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--rc-bt needs --prompt-pairs"):
        RewardModelConfig(ratings=[HS2], rc_bt=True)
    with pytest.raises(ConfigError, match="give --rc-bt too"):
        RewardModelConfig(ratings=[HS2], prompt_pairs=["x"])
    with pytest.raises(ConfigError, match="rc_bt_alphas must be positive"):
        RewardModelConfig(ratings=[HS2], rc_bt=True, prompt_pairs=["x"], rc_bt_alphas=[0.0])
    # a pairs file without the prompt-side fields: one line, before any feature is computed
    assert main(["reward-model", "train", "--ratings", HS2, "--backbone", "tiny", "--rc-bt", "--prompt-pairs", HS2,
                 "--output-dir", str(tmp_path / "rm"), "--progress", "false"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not MAPL prompt-side pairs" in err and err.count("\n") == 1, err
    make_pairs(PairsConfig(mapl=True, pairs_in=HS2, output_dir=str(tmp_path / "mapl"), progress=False, max_prompts=4))
    assert main(["reward-model", "train", "--ratings", HS2, "--backbone", "tiny", "--rc-bt", "--prompt-pairs",
                 str(tmp_path / "mapl"), "--rc-bt-objective", "verbosity", "--output-dir", str(tmp_path / "rm2")]) == 2
    err = capsys.readouterr().err
    assert "--rc-bt-objective 'verbosity' is also a rating" in err and err.count("\n") == 1, err
