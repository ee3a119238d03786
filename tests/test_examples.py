"""Every YAML in examples/ is a valid config headed by the command that runs it."""

from pathlib import Path

import pytest

from paretoalign.cli import train_config
from paretoalign.fronts.sweep import build_front_config

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid_and_documents_its_command(path):
    head = path.read_text().splitlines()[:6]
    assert any(f"--config examples/{path.name}" in line for line in head if line.startswith("#"))
    if path.name.startswith("front_"):
        front, train = build_front_config(path)
        assert len(train["objectives"]) >= 2 and front.preferences
        return
    if path.name.startswith("reward_model_"):
        from paretoalign.config_utils import build_config
        from paretoalign.trainers.reward_model_config import RewardModelConfig

        cfg = build_config(RewardModelConfig, path, {})
        assert all((path.parents[1] / r).is_file() for r in cfg.ratings)
        return
    cfg = train_config(path)
    assert len(cfg.objectives) >= 2


def test_there_are_examples_for_each_method():
    methods = {train_config(p).method for p in EXAMPLES if not p.name.startswith(("front_", "reward_model_"))}
    assert methods >= {"pama", "morlhf", "mgda-ub", "mo-grpo", "modpo", "mopo", "amopo", "dpa"}
