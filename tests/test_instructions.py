"""MAPL's data builder: generators agree with their verifiers, the pair rules hold, and it is deterministic."""

from __future__ import annotations

import random

import pytest

from paretoalign.errors import ConfigError
from paretoalign.instructions import (
    GENERATORS,
    Instruction,
    build_inter_pairs,
    build_intra_pairs,
    compose_prompt,
    generate_instruction,
    parse_instruction_kinds,
    verify,
)

_VOCAB = ["the", "cat", "Sat", "on", "a", "mat", "It's", '"quoted"', "e.g.", "(maybe)", "x=1,", "naïve", "café",
          "42", "done!", "well-known", "Hello", "WORLD", "snake_case", "—", "why?", "Certainly", "end."]


def _random_response(rng: random.Random) -> str:
    words = [rng.choice(_VOCAB) for _ in range(rng.randint(0, 25))]
    seps = [rng.choice([" ", " ", " ", "  ", "\n", "\t", ", "]) for _ in words]
    text = "".join(w + s for w, s in zip(words, seps))
    return rng.choice(["", " ", "\n"]) + text


def test_generators_agree_with_their_verifiers_on_random_responses():
    rng = random.Random(0)
    made = {k: [0, 0] for k in GENERATORS}
    for _ in range(300):
        response = _random_response(rng)
        for kind in GENERATORS:
            for satisfied in (True, False):
                ins = generate_instruction(kind, response, satisfied, rng)
                if ins is None:
                    continue
                made[kind][satisfied] += 1
                assert ins.kind == kind
                assert verify(ins, response) is satisfied, (kind, satisfied, response, ins)
    for kind, (violated, satisfied) in made.items():  # every kind produced both variants, many times
        assert violated > 100 and satisfied > 100, (kind, made[kind])


@pytest.mark.parametrize("kind,response", [
    ("max_words", "one"),  # no cap of at least one word that a one-word response violates
    ("max_words", ""),
    ("min_words", ""),  # "at least 0 words" says nothing
])
def test_generators_decline_what_cannot_be_written(kind, response):
    satisfied = kind == "min_words"
    assert generate_instruction(kind, response, satisfied, random.Random(0)) is None


def test_instruction_texts():
    rng = random.Random(3)
    ins = generate_instruction("max_words", "a b c", True, rng)
    assert ins.text.startswith("Answer in at most ") and ins.judge.startswith("max_words(n=")
    ins = generate_instruction("start_with", "Dear Sir, hello", True, random.Random(0))
    assert ins.judge.startswith("starts_with:") and "Dear" in ins.text
    assert compose_prompt("Q?", [Instruction("k", "Do A.", "x"), Instruction("k", "Do B.", "y")]) == "Q?\n\nDo A.\nDo B."
    assert compose_prompt("Q?", []) == "Q?"


ROWS = [
    ("Tell me about cats.", "Cats are small, furry animals. They love to sleep in the sun!"),
    ("Greet me.", "Hello there, friend."),
    ("Explain rain.", "Water vapour condenses into droplets,\nwhich fall when they grow heavy enough."),
    ("One word?", "Yes"),
    ("List colours.", "Red, green and blue are the primary colours of light."),
]


def test_intra_pairs_follow_the_rules():
    kinds = list(GENERATORS)
    pairs, stats = build_intra_pairs(ROWS, kinds=kinds, n_instructions=3, seed=1)
    assert stats["rows"] == len(ROWS) and stats["pairs"] == len(pairs) > len(ROWS)
    assert stats["rejected_by_verifier"] == 0
    for p in pairs:
        assert p["prompt_w"].startswith(p["prompt"]) and p["prompt_l"].startswith(p["prompt"])
        assert [i["kind"] for i in p["instructions_w"]] == [i["kind"] for i in p["instructions_l"]]
        assert len({i["kind"] for i in p["instructions_w"]}) == len(p["instructions_w"])
        # the stored verdicts are the verifiers', recomputed here
        for side in ("w", "l"):
            got = [verify(Instruction(**i), p["response"]) for i in p[f"instructions_{side}"]]
            assert got == p[f"verified_{side}"]
        if p["rule"] == "all_vs_some":
            assert all(p["verified_w"]) and not all(p["verified_l"])
        else:
            assert any(p["verified_w"]) and not any(p["verified_l"])
        assert p["prompt_w"] != p["prompt_l"]


def test_intra_pairs_are_deterministic_and_rows_independent():
    a, _ = build_intra_pairs(ROWS, seed=7)
    b, _ = build_intra_pairs(ROWS, seed=7)
    assert a == b
    c, _ = build_intra_pairs(ROWS, seed=8)
    assert a != c
    alone, _ = build_intra_pairs(ROWS[:1], seed=7)
    assert alone == [p for p in a if p["prompt"] == ROWS[0][0]]


def test_one_instruction_gives_one_pair_per_row():
    pairs, stats = build_intra_pairs(ROWS[:3], kinds="include_keyword", n_instructions=1)
    assert len(pairs) == 3 and all(len(p["instructions_w"]) == 1 for p in pairs)
    _, stats = build_intra_pairs([("Q", "")], kinds="include_keyword,max_words")
    assert stats["skipped_rows"] == 1 and stats["pairs"] == 0


def test_inter_pairs_and_conflicts():
    rows = [("Describe a cat.", "Cats purr softly when they are content and warm.", "Dogs bark."),
            ("Short?", "Yes.", "Indeed it is quite short, as you can clearly see here.")]
    pairs, stats = build_inter_pairs(rows, kinds="min_words", n_instructions=1)
    assert stats == {"rows": 2, "pairs": 2, "conflicts": 1, "skipped_rows": 0, "rejected_by_verifier": 0}
    normal, conflict = pairs
    assert not normal["conflict"] and conflict["conflict"]
    for p in pairs:
        keep, drop = (p["rejected"], p["chosen"]) if p["conflict"] else (p["chosen"], p["rejected"])
        for i in p["instructions"]:
            assert verify(Instruction(**i), keep) is True and verify(Instruction(**i), drop) is False
        assert p["prompt"].startswith(p["original_prompt"])
    none, stats = build_inter_pairs([("Q", "same text", "same text")], kinds="max_words,include_keyword")
    assert none == [] and stats["skipped_rows"] == 1


@pytest.mark.parametrize("call,message", [
    (lambda: parse_instruction_kinds("max_words,shout"), "unknown instruction kind 'shout'"),
    (lambda: parse_instruction_kinds(""), "no instruction kinds"),
    (lambda: parse_instruction_kinds("max_words,max_words"), "repeat"),
    (lambda: build_intra_pairs(ROWS, rules=("all_vs_all",)), "unknown pair rule"),
    (lambda: build_intra_pairs(ROWS, n_instructions=0), "positive integer"),
    (lambda: generate_instruction("nope", "x", True, random.Random(0)), "unknown instruction kind"),
])
def test_bad_inputs_are_one_line_errors(call, message):
    with pytest.raises(ConfigError, match=message) as e:
        call()
    assert "\n" not in str(e.value)
