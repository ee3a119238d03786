"""Judges: the three-valued mixture truth tables, the failure rule, rule kinds, thresholds, python judges, bad specs."""

from __future__ import annotations

import itertools
import textwrap

import pytest
import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.judges import (
    AllOf,
    AnyOf,
    Judge,
    JudgeSet,
    available_judges,
    build_judge,
    build_judge_set,
    describe_judge,
    kleene_all,
    kleene_any,
    split_judge_specs,
)
from paretoalign.objectives.rules import LengthObjective, SentimentObjective


class Fixed(Judge):
    """A judge that returns given verdicts, whatever the batch."""

    def __init__(self, verdicts, name="fixed"):
        self.verdicts, self.name = list(verdicts), name

    def _judge(self, prompts, completions, gold):
        return self.verdicts


def _batch(n):
    return ["p"] * n, ["c"] * n


# --- truth tables -------------------------------------------------------------------------------

V = (1, 0, -1)
AND = {(1, 1): 1, (1, 0): 0, (1, -1): -1, (0, 1): 0, (0, 0): 0, (0, -1): 0, (-1, 1): -1, (-1, 0): 0, (-1, -1): -1}
OR = {(1, 1): 1, (1, 0): 1, (1, -1): 1, (0, 1): 1, (0, 0): 0, (0, -1): -1, (-1, 1): 1, (-1, 0): -1, (-1, -1): -1}


def test_two_judge_truth_tables():
    rows = list(itertools.product(V, V))
    a, b = [r[0] for r in rows], [r[1] for r in rows]
    assert kleene_all([a, b]) == [AND[r] for r in rows]
    assert kleene_any([a, b]) == [OR[r] for r in rows]
    prompts, completions = _batch(len(rows))
    assert AllOf([Fixed(a, "a"), Fixed(b, "b")])(prompts, completions) == [AND[r] for r in rows]
    assert AnyOf([Fixed(a, "a"), Fixed(b, "b")])(prompts, completions) == [OR[r] for r in rows]


def test_nested_mixture_matches_composed_tables():
    rows = list(itertools.product(V, V, V))
    cols = [[r[i] for r in rows] for i in range(3)]
    j = AllOf([Fixed(cols[0], "a"), AnyOf([Fixed(cols[1], "b"), Fixed(cols[2], "c")])])
    assert j(*_batch(len(rows))) == [AND[(x, OR[(y, z)])] for x, y, z in rows]


@pytest.mark.parametrize("rule,passed,valid", [
    ("fail", [True, False, False, False], [True] * 4),
    ("pass", [True, False, True, False], [True] * 4),
    ("skip", [True, False, False, False], [True, True, False, True]),
])
def test_failure_rule_of_the_pass_all_indicator(rule, passed, valid):
    # samples: all pass / one fails / one failed judgement / a fail and a failed judgement (the fail decides)
    js = JudgeSet([Fixed([1, 1, 1, 0], "a"), Fixed([1, 0, -1, -1], "b")], on_failure=rule)
    r = js.evaluate(*_batch(4))
    assert r.passed.tolist() == passed
    assert r.valid.tolist() == valid
    assert r.undecided.tolist() == [False, False, True, False]
    assert r.verdicts.tolist() == [[1, 1], [1, 0], [1, -1], [0, -1]]
    m = r.metrics()
    assert m["judge/b/failed"] == 2 and m["judge/a/failed"] == 0
    assert m["judge/b/pass_rate"] == 0.25 and m["judge/all/undecided"] == 1
    assert m["judge/all/pass_rate"] == pytest.approx(sum(p and v for p, v in zip(passed, valid)) / sum(valid))


def test_verdict_values_are_checked():
    assert Fixed([True, False, None, float("nan")])(*_batch(4)) == [1, 0, -1, -1]
    with pytest.raises(ObjectiveError, match="returned 2 at index 0"):
        Fixed([2, 1])(*_batch(2))
    with pytest.raises(ObjectiveError, match="3 verdicts for 2"):
        Fixed([1, 1, 1])(*_batch(2))


# --- built-in kinds -----------------------------------------------------------------------------


@pytest.mark.parametrize("spec,completions,expected", [
    ("max_words(n=3)", ["one two three", "one two three four", ""], [1, 0, 1]),
    ("min_words(n=2)", ["one", "one two"], [0, 1]),
    ("length(min=3,max=5,unit=chars)", ["ab", "abc", "abcde", "abcdef"], [0, 1, 1, 0]),
    ("include(words=paris|france)", ["Paris, France!", "paris only", "parisian france"], [1, 0, 0]),
    ("include(words=paris|france,mode=any)", ["paris only", "nothing", "parisian"], [1, 0, 0]),
    ("exclude(words=sorry)", ["I am SORRY.", "sorrysome", "fine"], [0, 1, 1]),
    ("regex:'\\d{3}'", ["a123b", "12"], [1, 0]),
    ("regex:'\\d+'(match=full)", ["123", "a123"], [1, 0]),
    ("regex:'as an ai'(ignore_case=true,negate=true)", ["As an AI, no", "sure"], [0, 1]),
    ("starts_with:'Dear Sir'", ["  Dear Sir, hi", "dear sir", "Hi Dear Sir"], [1, 0, 0]),
    ("starts_with:'Dear Sir'(ignore_case=true)", ["dear sir", "Hi"], [1, 0]),
    ("ends_with:'The end.'", ["So. The end.  ", "The end. Or not"], [1, 0]),
    ("valid_json", ['{"a": [1, 2]}', "```json\n{\"a\": 1}\n```", "{a: 1}", ""], [1, 1, 0, 0]),
    ("valid_json(strip_fences=false)", ["```json\n{\"a\": 1}\n```"], [0]),
    ("no_repeat(n=2)", ["a b c a d", "a b c a b", "the The end"], [1, 0, 1]),
    ("no_repeat(n=1)", ["the The"], [0]),
])
def test_rule_judges(spec, completions, expected):
    assert build_judge(spec)(["p"] * len(completions), completions) == expected


def test_matches_gold_without_gold_is_a_failed_judgement():
    j = build_judge("matches_gold")
    assert j(["p"] * 3, [" 42 ", "41", "x"], gold=["42", "42", None]) == [1, 0, -1]
    assert j(["p"], ["x"]) == [-1]
    assert build_judge("matches_gold(mode=contains)")(["p"], ["the answer is 42."], gold=["42"]) == [1]


def test_length_in_tokens_uses_the_tokenizer():
    def tok(texts, add_special_tokens=False):
        return {"input_ids": [list(t) for t in texts]}  # one token per character

    assert build_judge("length(max=3,unit=tokens)", tokenizer=tok)(["p", "p"], ["abc", "abcd"]) == [1, 0]
    with pytest.raises(ConfigError, match="needs the policy's tokenizer"):
        build_judge("length(max=3,unit=tokens)")


@pytest.mark.parametrize("spec,score_op", [
    ("sentiment>=0.2", lambda s: s >= 0.2),
    ("sentiment>0", lambda s: s > 0),
    ("sentiment<=-0.1", lambda s: s <= -0.1),
    ("sentiment<0.5", lambda s: s < 0.5),
])
def test_threshold_judge_agrees_with_the_score(spec, score_op):
    texts = ["I love it, wonderful!", "This is terrible.", "A table.", "good", "bad bad bad", "fine, I guess"]
    scores = SentimentObjective().score(["p"] * len(texts), texts).tolist()
    assert build_judge(spec)(["p"] * len(texts), texts) == [int(score_op(s)) for s in scores]


def test_threshold_reuses_the_callers_objective_and_nan_is_a_failed_judgement(tmp_path):
    rm = LengthObjective(scale=10, name="rm")
    j = build_judge("rm>=0.8", objectives=[rm])
    assert j.objective is rm and j.name == "rm>=0.8"
    assert j(["p", "p"], ["x" * 9, "x" * 7]) == [1, 0]
    mod = tmp_path / "scores.py"
    mod.write_text("def f(prompts, completions):\n    return [None if c == '?' else len(c) for c in completions]\n")
    assert build_judge(f"python:{mod}:f>=2")(["p"] * 3, ["?", "ab", "a"]) == [-1, 1, 0]


def test_python_judge(tmp_path):
    mod = tmp_path / "myjudges.py"
    mod.write_text(textwrap.dedent("""
        def polite(prompts, completions, word="please"):
            return [word in c for c in completions]

        def gold_len(prompts, completions, gold=None):
            return [None if g is None else len(c) == len(g) for c, g in zip(completions, gold or [None] * len(completions))]

        def bad(prompts, completions):
            return [0.5 for _ in completions]

        def boom(prompts, completions):
            raise RuntimeError("judge service down")
    """))
    assert build_judge(f"python:{mod}:polite")(["p", "p"], ["please do", "do"]) == [1, 0]
    assert build_judge(f"python:{mod}:polite(word=thanks)")(["p"], ["thanks"]) == [1]
    assert build_judge(f"python:{mod}:gold_len")(["p"] * 3, ["ab", "ab", "ab"], gold=["xy", "x", None]) == [1, 0, -1]
    with pytest.raises(ObjectiveError, match="returned 0.5"):
        build_judge(f"python:{mod}:bad")(["p"], ["c"])
    with pytest.raises(ObjectiveError, match="raised RuntimeError: judge service down"):
        build_judge(f"python:{mod}:boom")(["p"], ["c"])
    with pytest.raises(ConfigError, match="cannot call"):
        build_judge(f"python:{mod}:polite(tone=warm)")


def test_spec_forms_and_canonical_round_trip():
    for text in ["regex:'(a|b)+$'", "starts_with:'Dear Sir'(ignore_case=true)", "max_words(n=5)",
                 "all(max_words(n=5),any(include(words=a),sentiment>=0.1))"]:
        j = build_judge(text)
        assert build_judge(j.spec).spec == j.spec
    assert build_judge("max_words(n=5,name=short)").name == "short"
    assert build_judge({"kind": "max_words", "n": 5, "name": "short"}).spec == "max_words(n=5)"
    d = build_judge({"any": ["max_words(n=1)", {"kind": "sentiment>=0.5"}], "name": "brief_or_happy"})
    assert isinstance(d, AnyOf) and d.name == "brief_or_happy"
    assert d(["p", "p", "p"], ["ok", "I love this so much, wonderful!", "a plain table"]) == [1, 1, 0]
    assert split_judge_specs("max_words(n=60), regex:'a,b' ,all(x,y)") == ["max_words(n=60)", "regex:'a,b'", "all(x,y)"]
    js = build_judge_set("max_words(n=60),sentiment>=0.2")
    assert js.names == ["max_words(n=60)", "sentiment>=0.2"]
    # the CGPO spec's own example spelling (its threshold: prefix)
    js = build_judge_set("max_words(n=60),regex:\\d+$,threshold:sentiment>=0.2,no_repeat(n=3)")
    assert js.names[2] == "sentiment>=0.2" and js(["p"], ["I love 42"]) == [1]
    assert {"length", "include", "regex", "python", "valid_json"} <= set(available_judges())
    assert describe_judge("regex") == ("regex:<pattern>(match, ignore_case, negate)",
                                       "The completion matches the pattern (match=search anywhere, or full); negate=true inverts.")


@pytest.mark.parametrize("spec,message", [
    ("foo", "unknown judge 'foo'"),
    ("max_word(n=3)", "did you mean 'max_words'"),
    ("max_words", "option 'n' is required"),
    ("max_words(m=3)", "unknown option 'm'"),
    ("sentiment>=1.5", "outside the range [-1, 1]"),
    ("length(scale=10)<=2", "outside the range [0.5, 1.5]"),
    ("sentiment>=x", "not a finite number"),
    ("sentiment>=nan", "not a finite number"),
    ("nosuch>=0.5", "unknown objective 'nosuch'"),
    ("regex:'('", "bad regular expression"),
    ("regex:a>=b", "quote the argument"),
    ("regex:a(b)", "quote an argument"),
    ("length(min=5,max=2)", "0 <= min <= max"),
    ("include", "at least one keyword"),
    ("include(words=a,mode=some)", "mode must be all or any"),
    ("all()", "at least one judge"),
    ("sentiment>=0.1>=0.2", "more than one comparison"),
    ("", "empty judge spec"),
])
def test_bad_specs_are_one_line_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")) as e:
        build_judge(spec)
    assert "\n" not in str(e.value)


def test_bad_sets():
    with pytest.raises(ConfigError, match="duplicate judge"):
        build_judge_set("max_words(n=3),max_words(n=3)")
    with pytest.raises(ConfigError, match="no judges given"):
        build_judge_set("")
    with pytest.raises(ConfigError, match="on_failure"):
        build_judge_set("max_words(n=3)", on_failure="ignore")


def test_report_shapes_on_an_empty_batch():
    r = build_judge_set("max_words(n=3),valid_json").evaluate([], [])
    assert r.verdicts.shape == (0, 2) and r.passed.dtype == torch.bool and r.passed.numel() == 0
