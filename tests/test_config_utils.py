"""Config values from YAML and flags: typed, range-checked, one message naming key, value and expectation."""

import pytest

from paretoalign.config_utils import build_config
from paretoalign.errors import ConfigError
from paretoalign.trainers.dpa_config import DPAConfig
from paretoalign.trainers.offline_config import OfflineConfig
from paretoalign.trainers.online_config import OnlineConfig


@pytest.mark.parametrize("key, value, match", [
    ("max_steps", "two", r"option max_steps: expected an integer, got 'two'"),
    ("max_steps", 2.7, r"option max_steps: expected an integer, got 2.7"),
    ("max_steps", True, r"option max_steps: expected an integer, got True"),
    ("learning_rate", "abc", r"option learning_rate: expected a number, got 'abc'"),
    ("learning_rate", float("inf"), r"option learning_rate: expected a finite number, got inf"),
    ("learning_rate", 0, r"option learning_rate: must be > 0, got 0"),
    ("max_grad_norm", float("nan"), r"option max_grad_norm: expected a finite number, got nan"),
    ("top_p", 5, r"option top_p: must be in \(0, 1\], got 5.0"),
    ("top_p", 0, r"option top_p: must be in \(0, 1\], got 0.0"),
    ("temperature", 0, r"option temperature: must be > 0, got 0.0"),
    ("lora_r", 0, r"option lora_r: must be >= 1, got 0"),
    ("seed", -1, r"option seed: must be >= 0, got -1"),
    ("use_lora", "maybe", r"option use_lora: expected true or false, got 'maybe'"),
    ("use_lora", 2, r"option use_lora: expected true or false, got 2"),
    ("batch_size", 0, r"option batch_size: must be >= 1, got 0"),
    ("objectives", 3, r"option objectives: expected a list"),
    ("method", "ppo", r"unknown method 'ppo'; choose one of pama"),
    ("gamma", 1.5, r"option gamma: must be in \[0, 1\], got 1.5"),
    ("weights", {"a": 1}, r"option weights: expected a list .* or null"),
])
def test_bad_values_name_the_key_the_value_and_what_is_expected(tmp_path, key, value, match):
    import yaml

    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({key: value}))
    with pytest.raises(ConfigError, match=match):
        build_config(OnlineConfig, f)
    with pytest.raises(ConfigError, match=match):  # the library path checks the same
        OnlineConfig(**{key: value})


def test_strings_from_yaml_and_flags_are_parsed(tmp_path):
    f = tmp_path / "c.yaml"
    # PyYAML reads 1e-5 as a string (YAML 1.1); yes/no and "3" are common spellings
    f.write_text("learning_rate: 1e-5\nuse_lora: 'no'\nmax_steps: '3'\nmax_new_tokens: 8.0\n")
    cfg = build_config(OnlineConfig, f)
    assert cfg.learning_rate == 1e-5 and cfg.use_lora is False and cfg.max_steps == 3 and cfg.max_new_tokens == 8


@pytest.mark.parametrize("cls, kwargs, match", [
    (OfflineConfig, {"pairs": "x", "beta": 0}, "option beta: must be > 0"),
    (OfflineConfig, {"pairs": "x", "label_smoothing": 0.5}, r"option label_smoothing: must be in \[0, 0.5\)"),
    (DPAConfig, {"rounds": 0}, "option rounds: must be >= 1"),
    (DPAConfig, {"temperature": -1}, "option temperature: must be > 0"),
])
def test_every_trainer_config_checks_its_ranges(cls, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        cls(**kwargs)


def test_help_states_the_range():
    from paretoalign.cli import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "[in (0, 1]]" in " ".join(text.split())  # --top-p


def test_flags_take_both_the_dash_and_the_underscore_spelling(tmp_path):
    from paretoalign.cli import build_parser

    parser = build_parser()
    a = parser.parse_args(["train", "--max_steps", "3", "--learning-rate", "0.01", "--use_lora", "false"])
    b = parser.parse_args(["train", "--max-steps", "3", "--learning_rate", "0.01", "--use-lora", "false"])
    for args in (a, b):
        assert (args.max_steps, args.learning_rate, args.use_lora) == (3, 0.01, False)
