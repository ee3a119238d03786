import pytest

from paretoalign.config_utils import build_config, config_to_dict
from paretoalign.errors import ConfigError
from paretoalign.trainers.online_config import OnlineConfig


def test_defaults_and_objective_spec_string_parsing():
    cfg = OnlineConfig(objectives="sentiment,length(scale=100,unit=words)")
    assert cfg.objectives == ["sentiment", "length(scale=100,unit=words)"]
    assert cfg.method == "pama" and cfg.advantage == "gae" and cfg.pama_granularity == "batch"
    assert cfg.uses_critic


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "ppo"}, "unknown method 'ppo'; choose one of pama, morlhf, mgda-ub"),
        ({"objectives": "sentiment"}, "at least 2 objectives"),
        ({"advantage": "group", "num_generations": 1}, "num-generations >= 2"),
        ({"batch_size": 0}, "option batch_size: must be >= 1, got 0"),
        ({"pama_granularity": "epoch"}, "option pama_granularity: expected one of"),
        ({"resume": True, "overwrite": True}, "contradict"),
        ({"method": "morlhf", "weights": "a,b"}, "weights must be numbers"),
        ({"kl_coef": -1.0}, "option kl_coef: must be >= 0, got -1.0"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
        ({"batch_size": 3, "num_generations": 1, "num_mini_batches": 2}, "divisible"),
    ],
)
def test_invalid_options_name_the_problem(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        OnlineConfig(**kwargs)


def test_yaml_then_flags_precedence_and_unknown_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: morlhf\nweights: [0.3, 0.7]\nmax-steps: 7\nlearning_rate: 0.001\n")
    cfg = build_config(OnlineConfig, f, {"max_steps": 3})
    assert cfg.method == "morlhf" and cfg.weights == [0.3, 0.7] and cfg.max_steps == 3
    assert cfg.learning_rate == 0.001
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_stepz: 3\n")
    with pytest.raises(ConfigError, match="unknown option.*'max_stepz' \\(did you mean 'max_steps'\\?\\)"):
        build_config(OnlineConfig, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(OnlineConfig, tmp_path / "missing.yaml")
    notmap = tmp_path / "list.yaml"
    notmap.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(OnlineConfig, notmap)


def test_config_round_trips_through_dict():
    cfg = OnlineConfig(method="morlhf", weights="0.2,0.8")
    again = OnlineConfig(**config_to_dict(cfg))
    assert again == cfg and again.weights == [0.2, 0.8]
