"""The method table is the one place a method is registered: everything else agrees with it."""

import dataclasses
import re
from pathlib import Path

import pytest

from paretoalign.cli import build_parser
from paretoalign.errors import ConfigError
from paretoalign.fronts.sweep import POINT_MAKERS, STEERING
from paretoalign.trainers.methods import (
    BY_NAME,
    ENDPOINT_FAMILIES,
    FAMILY_CLASSES,
    METHODS,
    endpoint_methods,
    markdown_table,
    method_names,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def _choices(parser, command, flag="--method"):
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return tuple(next(a for a in sub._actions if flag in a.option_strings).choices)


def test_every_row_names_a_real_config_and_trainer_and_a_paper():
    assert len(BY_NAME) == len(METHODS)  # names are unique
    for m in METHODS:
        assert m.paper and re.fullmatch(r"\d{4}\.\d{4,5}", m.arxiv)
        if m.family in ENDPOINT_FAMILIES:  # no trainer of its own: its endpoints are other methods' runs
            assert not m.trains and m.family not in FAMILY_CLASSES
            with pytest.raises(ConfigError, match="trains no model of its own"):
                m.config_class  # noqa: B018
            continue
        assert m.family in FAMILY_CLASSES and m.trains
        cfg, trainer = m.config_class, m.trainer_class
        assert dataclasses.is_dataclass(cfg) and hasattr(trainer, "train")
        assert m.paper and re.fullmatch(r"\d{4}\.\d{4,5}", m.arxiv)
        # the family's config accepts exactly its methods, as the table says
        for other in METHODS:
            kwargs = {"method": other.name, "pairs": ["x"]} if m.family == "offline" else {"method": other.name}
            if other.family == m.family:
                assert cfg(**kwargs).method == other.name
            else:
                with pytest.raises(ConfigError, match=f"{other.name!r} is a {other.family} method"):
                    cfg(**kwargs)


def test_cli_front_and_demo_take_their_methods_from_the_table():
    parser = build_parser()
    assert _choices(parser, "train") == method_names()
    assert _choices(parser, "demo") == method_names("online")
    assert set(POINT_MAKERS) == {m.name for m in METHODS if m.sweepable}
    assert STEERING == {m.name for m in METHODS if m.steerable}


def test_a_method_without_a_trainer_is_refused_by_train_in_one_line(tmp_path, capsys):
    from paretoalign.cli import main

    made = [m.name for m in METHODS if m.family in ENDPOINT_FAMILIES]
    assert made == ["rs", "mod"] and all(BY_NAME[m].steerable and BY_NAME[m].sweepable for m in made)
    for name, how in (("rs", "paretoalign merge"), ("mod", "paretoalign evaluate --mod")):
        assert main(["train", "--method", name, "--model", "tiny", "--output-dir", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: '{name}' trains no model of its own") and err.count("\n") == 1, err
        assert how in err and not (tmp_path / name).exists()
    # what trains its endpoints: the methods that take (one-hot) weights
    assert set(endpoint_methods()) == {m.name for m in METHODS if m.family in ("online", "offline") and m.sweepable}


def test_every_offline_method_has_its_strategy():
    from paretoalign.trainers.offline_methods import STRATEGIES

    assert set(STRATEGIES) == set(method_names("offline"))


def test_readme_method_table_is_the_generated_one():
    text = README.read_text()
    block = text.split("<!-- methods:begin -->\n", 1)[1].split("\n<!-- methods:end -->", 1)[0]
    assert block == markdown_table(), "README method table is stale: paste paretoalign.trainers.methods.markdown_table()"
