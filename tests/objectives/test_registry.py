"""Spec parsing, building by name, ObjectiveSet orientation and the NaN rule."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.objectives import (
    Objective,
    ObjectiveSet,
    available_objectives,
    build_objective,
    build_objective_set,
    check_scores,
    parse_objective_spec,
    register_objective,
    registry,
    split_objective_specs,
)
from paretoalign.objectives.rules import KeywordObjective, LengthObjective

BUILTIN = ["keywords", "length", "python", "readability", "relevance", "reward_model", "sentiment"]


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("sentiment,length(scale=100,unit=words)", ["sentiment", "length(scale=100,unit=words)"]),
    (" sentiment , length ", ["sentiment", "length"]),
    ("reward_model:/p/rm(index=1,batch_size=2),python:m.x:f", ["reward_model:/p/rm(index=1,batch_size=2)", "python:m.x:f"]),
    ("keywords(words='a,b',mode=any),length", ["keywords(words='a,b',mode=any)", "length"]),
    ("sentiment,,length,", ["sentiment", "length"]),
    ("", []),
])
def test_split_objective_specs(text, expected):
    assert split_objective_specs(text) == expected


@pytest.mark.parametrize("text", ["length(scale=1", "length)", "keywords(words='a)"])
def test_split_rejects_unbalanced(text):
    with pytest.raises(ConfigError):
        split_objective_specs(text)


@pytest.mark.parametrize("spec,expected", [
    ("sentiment", ("sentiment", None, {})),
    ("length(scale=100,unit=words)", ("length", None, {"scale": 100, "unit": "words"})),
    ("reward_model:/path/to/rm", ("reward_model", "/path/to/rm", {})),
    ("reward_model:/path/to/rm(index=1)", ("reward_model", "/path/to/rm", {"index": 1})),
    ("python:mypkg.rewards:politeness", ("python", "mypkg.rewards:politeness", {})),
    ("x(a=1, b=2.5, c=1e-3, d=true, e=False, f=hello world, g='3', h=nan, i=-4)",
     ("x", None, {"a": 1, "b": 2.5, "c": 1e-3, "d": True, "e": False, "f": "hello world", "g": "3",
                  "h": math.nan, "i": -4})),
    ("length(name=7,direction=minimize)", ("length", None, {"name": "7", "direction": "minimize"})),
    ("length()", ("length", None, {})),
])
def test_parse_objective_spec(spec, expected):
    kind, arg, opts = parse_objective_spec(spec)
    assert (kind, arg) == expected[:2]
    assert opts.keys() == expected[2].keys()
    for k, v in expected[2].items():
        if isinstance(v, float) and math.isnan(v):
            assert math.isnan(opts[k])
        else:
            assert opts[k] == v and type(opts[k]) is type(v)


@pytest.mark.parametrize("spec,match", [
    ("", "empty"),
    ("length(scale)", "not key=value"),
    ("length(scale=1,scale=2)", "given twice"),
    ("length(scale=1)x", "options must close the spec"),
    ("9lives", "not an objective name"),
    ("reward_model:", "nothing after"),
])
def test_parse_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_objective_spec(spec)


# --- building -----------------------------------------------------------------------------------


def test_available_objectives():
    assert set(BUILTIN) <= set(available_objectives())
    assert available_objectives() == sorted(available_objectives())


def test_build_by_name_with_options_and_generic_options():
    obj = build_objective("length(scale=100,unit=words,name=short,direction=minimize)")
    assert isinstance(obj, LengthObjective)
    assert (obj.name, obj.direction, obj.scale, obj.unit) == ("short", "minimize", 100.0, "words")
    assert obj.spec == "length(scale=100,unit=words,name=short,direction=minimize)"
    assert build_objective("sentiment").name == "sentiment"


def test_build_from_dict():
    a = build_objective({"name": "length", "scale": 100})
    assert (a.name, a.scale) == ("length", 100.0)
    b = build_objective({"kind": "length", "name": "short", "direction": "minimize", "unit": "words"})
    assert (b.name, b.direction, b.unit) == ("short", "minimize", "words")
    c = build_objective({"kind": "keywords", "words": ["Please", "thank you"], "mode": "any"})
    assert isinstance(c, KeywordObjective) and c.words == ["please", "thank you"]
    assert build_objective(c.spec).words == c.words  # the recorded spec rebuilds it
    with pytest.raises(ConfigError, match="give its kind"):
        build_objective({"scale": 3})
    with pytest.raises(ConfigError, match="given twice"):
        build_objective({"kind": "length(scale=2)", "scale": 3})


def test_build_from_dict_with_argument(tiny_rm, user_module):
    rm = build_objective({"kind": "reward_model", "model": str(tiny_rm), "name": "helpful", "index": 1})
    assert (rm.name, rm.index) == ("helpful", 1)
    rm2 = build_objective({"kind": f"reward_model:{tiny_rm}", "batch_size": 2})
    assert rm2.name == "tiny-rm" and rm2.batch_size == 2
    py = build_objective({"kind": "python", "function": f"{user_module}:scaled", "alpha": 2})
    assert py.score(["p"], ["abc"]).tolist() == [6.0]


def test_unknown_name_lists_available_and_suggests():
    with pytest.raises(ConfigError) as e:
        build_objective("sentimnet")
    msg = str(e.value)
    assert "did you mean 'sentiment'" in msg
    for name in BUILTIN:
        assert name in msg
    with pytest.raises(ConfigError, match="Available: implicit_dpo:<adapter>, keywords, length"):
        build_objective_set("sentiment,zzzz")


def test_unknown_option_lists_valid_options():
    with pytest.raises(ConfigError) as e:
        build_objective("length(scal=3)")
    msg = str(e.value)
    assert "unknown option 'scal'" in msg and "did you mean 'scale'" in msg
    for opt in ("scale", "low", "high", "unit", "name", "direction"):
        assert opt in msg
    with pytest.raises(ConfigError, match="Valid options of 'sentiment': name, direction"):
        build_objective("sentiment(foo=1)")


def test_argument_rules():
    with pytest.raises(ConfigError, match=r"needs an argument: reward_model:<model>"):
        build_objective("reward_model")
    with pytest.raises(ConfigError, match="takes no ':x' argument"):
        build_objective("sentiment:x")
    with pytest.raises(ConfigError, match="direction must be maximize or minimize"):
        build_objective("length(direction=up)")


def test_tokenizer_reaches_length_tokens():
    class Tok:
        def encode(self, text, add_special_tokens=False):
            return text.split()

    s = build_objective_set("length(unit=tokens,scale=2)", tokenizer=Tok())
    assert s.raw_scores(["p"], ["a b c"]).tolist() == [[1.5]]


def test_register_objective_decorator():
    class Shouty(Objective):
        def __init__(self, factor: float = 1.0, name: str = "shouty"):
            self.name, self.factor = name, factor

        def _score(self, prompts, completions):
            return [self.factor * sum(ch.isupper() for ch in c) for c in completions]

    try:
        assert register_objective("shouty")(Shouty) is Shouty
        assert "shouty" in available_objectives()
        obj = build_objective("shouty(factor=2,name=caps)")
        assert obj.name == "caps" and obj.score(["p"], ["AbC"]).tolist() == [4.0]
        with pytest.raises(ConfigError, match="Valid options of 'shouty': factor, name, direction"):
            build_objective("shouty(bogus=1)")
        register_objective("not_an_objective", lambda: 3)
        with pytest.raises(ObjectiveError, match="not an Objective"):
            build_objective("not_an_objective")
    finally:
        registry._KINDS.pop("shouty", None)
        registry._KINDS.pop("not_an_objective", None)
    with pytest.raises(ConfigError):
        register_objective("bad name", Shouty)


def test_rule_objectives_do_not_import_transformers():
    code = ("import sys; from paretoalign.objectives import build_objective_set; "
            "s = build_objective_set('length,keywords(words=a),sentiment'); s.rewards(['p'], ['a b']); "
            "print('transformers' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "False"


# --- ObjectiveSet -------------------------------------------------------------------------------


def test_set_basics_and_describe():
    s = build_objective_set("sentiment,length(scale=10,name=short,direction=minimize)")
    assert s.names == ["sentiment", "short"] and s.k == 2 and len(s) == 2
    assert [o.name for o in s] == s.names and s["short"].scale == 10.0 and s[0].name == "sentiment"
    d = s.describe()
    assert d[1]["spec"] == "length(scale=10,name=short,direction=minimize)"
    assert d[1]["direction"] == "minimize" and d[1]["bounds"] == (0.5, 1.5)
    assert build_objective_set([x["spec"] for x in d]).names == s.names
    assert torch.equal(s.signs, torch.tensor([1.0, -1.0]))


def test_minimize_objectives_are_negated():
    s = build_objective_set(["length(scale=10)", "length(scale=10,name=short,direction=minimize)"])
    raw = s.raw_scores(["p", "p"], ["x" * 5, "x" * 12])
    rewards, valid = s.rewards(["p", "p"], ["x" * 5, "x" * 12])
    assert torch.allclose(raw, torch.tensor([[0.5, 0.5], [1.2, 1.2]]))
    assert torch.allclose(rewards, torch.tensor([[0.5, -0.5], [1.2, -1.2]]))
    assert rewards.dtype == torch.float32 and rewards.shape == (2, 2)
    assert valid.dtype == torch.bool and valid.tolist() == [True, True]
    # the shorter completion has the higher oriented reward on the minimised objective
    assert rewards[0, 1] > rewards[1, 1]


def test_duplicate_names_are_rejected():
    with pytest.raises(ConfigError, match="duplicate objective name 'length'.*name="):
        build_objective_set("length,length(scale=3)")
    with pytest.raises(ConfigError, match="duplicate objective name 'x'"):
        build_objective_set("length(name=x),sentiment(name=x)")
    assert build_objective_set("length,length(name=short,direction=minimize)").names == ["length", "short"]


def test_set_argument_errors():
    with pytest.raises(ConfigError, match="no objectives given"):
        build_objective_set("")
    with pytest.raises(ConfigError, match="nan_policy"):
        build_objective_set("length", nan_policy="ignore")
    with pytest.raises(ConfigError, match="not an Objective"):
        ObjectiveSet(["length"])
    with pytest.raises(ConfigError, match="at least one"):
        ObjectiveSet([])


BATCH_P = ["p0", "p1", "p2", "p3"]
BATCH_C = ["fine", "a bad answer " + "x" * 200, "good", "bad too"]


@pytest.mark.parametrize("fn", ["nan_for_bad", "inf_for_bad", "none_for_bad"])
def test_nan_fail_policy_names_objective_count_index_and_completion(user_module, fn):
    s = build_objective_set(f"length,python:{user_module}:{fn}")
    with pytest.raises(ObjectiveError) as e:
        s.rewards(BATCH_P, BATCH_C)
    msg = str(e.value)
    assert f"objective '{fn}'" in msg and "2 of 4 sample(s)" in msg and "first at index 1" in msg
    assert "'a bad answer xxx" in msg and "x" * 81 not in msg  # truncated completion
    assert "nan_policy='skip'" in msg
    raw = s.raw_scores(BATCH_P, BATCH_C)  # for reports: unchecked, non-finite kept
    assert not bool(torch.isfinite(raw[1, 1]))


def test_nan_skip_policy_masks_warns_and_zeroes(user_module):
    s = build_objective_set(f"length(direction=minimize),python:{user_module}:nan_for_bad", nan_policy="skip")
    with pytest.warns(RuntimeWarning, match=r"objective 'nan_for_bad': 2 of 4 sample"):
        rewards, valid = s.rewards(BATCH_P, BATCH_C)
    assert valid.tolist() == [True, False, True, False]
    assert bool(torch.isfinite(rewards).all())
    assert rewards[1].tolist() == [0.0, 0.0] and rewards[3].tolist() == [0.0, 0.0]
    assert rewards[0].tolist() == pytest.approx([-0.5, 1.0])  # valid rows are oriented as usual


def test_nan_skip_policy_all_invalid_still_raises(user_module):
    s = build_objective_set(f"python:{user_module}:nan_for_bad", nan_policy="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ObjectiveError, match="every sample"):
            s.rewards(["p", "p"], ["bad", "so bad"])


def test_wrong_length_output_is_an_error(user_module):
    s = build_objective_set(f"length,python:{user_module}:too_few", nan_policy="skip")
    with pytest.raises(ObjectiveError, match="'too_few' returned 3 scores for 4 completions"):
        s.rewards(BATCH_P, BATCH_C)


def test_check_scores_directly():
    scores = torch.tensor([[1.0, float("nan")], [2.0, 3.0], [float("inf"), float("nan")]])
    with pytest.raises(ObjectiveError, match="objective 'a' .* 1 of 3.*index 2.*also 'b' \\(2\\)"):
        check_scores(scores, ["a", "b"], ["x", "y", "z"])
    with pytest.warns(RuntimeWarning) as rec:
        valid = check_scores(scores, ["a", "b"], None, "skip")
    assert valid.tolist() == [False, True, False]
    assert sorted(str(w.message).split(":")[0] for w in rec) == ["objective 'a'", "objective 'b'"]
    assert check_scores(torch.zeros(0, 2), ["a", "b"]).shape == (0,)


def test_empty_batch():
    rewards, valid = build_objective_set("length,sentiment").rewards([], [])
    assert rewards.shape == (0, 2) and valid.shape == (0,)
