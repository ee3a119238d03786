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


def _train_flags():
    """The train command's options: (action, its dataclass field name)."""
    from paretoalign.cli import build_parser

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    return train, [a for a in train._actions if a.option_strings and a.dest not in ("help", "config")]


def test_every_train_option_takes_both_spellings():
    train, actions = _train_flags()
    assert len(actions) > 60  # every family's options, the new ones included
    for action in actions:
        dash = "--" + action.dest.replace("_", "-")
        assert dash in action.option_strings, action.dest
        if "_" in action.dest:
            assert "--" + action.dest in action.option_strings, action.dest
        value = (str(action.choices[0]) if action.choices else "true" if action.metavar == "BOOL" else
                 {int: "2", float: "0.5"}.get(action.type, "a,b"))
        parsed = [getattr(train.parse_args([flag, value]), action.dest) for flag in action.option_strings]
        assert len(set(map(repr, parsed))) == 1, (action.dest, parsed)


def test_new_training_options_are_in_the_help_under_their_headings():
    from paretoalign.trainers.options import EVAL, LOGGING, OPTIMISATION, RUN

    train, _ = _train_flags()
    groups = {g.title: {a.dest for a in g._group_actions} for g in train._action_groups}
    assert {"gradient_accumulation_steps", "lr_scheduler_type", "warmup_steps", "warmup_ratio"} <= groups[OPTIMISATION]
    assert {"eval_steps", "eval_prompts", "eval_samples"} <= groups[EVAL]
    assert {"push_to_hub", "hub_model_id"} <= groups[RUN]
    assert "report_to" in groups[LOGGING]


def test_yaml_keys_take_both_spellings_and_one_option_once(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("max-steps: 3\nlearning_rate: 0.01\nreport-to: tensorboard\ngradient_accumulation_steps: 2\n"
                 "lr-scheduler-type: cosine\nwarmup_ratio: 0.1\neval-steps: 5\nhub_model_id: me/x\n")
    cfg = build_config(OnlineConfig, f)
    assert (cfg.max_steps, cfg.learning_rate, cfg.report_to, cfg.gradient_accumulation_steps) == (3, 0.01, ["tensorboard"], 2)
    assert (cfg.lr_scheduler_type, cfg.warmup_ratio, cfg.eval_steps, cfg.hub_model_id) == ("cosine", 0.1, 5, "me/x")
    both = tmp_path / "both.yaml"
    both.write_text("max-steps: 3\nmax_steps: 4\n")
    with pytest.raises(ConfigError, match="gives option max_steps twice"):
        build_config(OnlineConfig, both)


def test_train_without_model_is_the_bundled_smollm2_never_the_random_tiny_model():
    from paretoalign.models import SMOLLM2_NAME

    assert OnlineConfig().model == OfflineConfig(pairs="x").model == DPAConfig().model == SMOLLM2_NAME
    train, actions = _train_flags()
    model = next(a for a in actions if a.dest == "model")
    assert f"(default: '{SMOLLM2_NAME}')" in " ".join(model.help.split())
