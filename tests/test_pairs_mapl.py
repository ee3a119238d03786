"""``paretoalign pairs --mapl``: MAPL's prompt-side pairs from existing pairs, from responses and from the
model's own samples; every label agrees with the instruction verifiers; the rules hold; the output is
deterministic from the seed; the folder reads back; bad input is one line."""

import json
from pathlib import Path

import pytest

from paretoalign.cli import main
from paretoalign.data.preference_pairs import PreferencePair, load_preference_data, save_preference_data
from paretoalign.data.prompt_pairs import load_mapl_data
from paretoalign.errors import ConfigError, DataError
from paretoalign.instructions import Instruction, compose_prompt
from paretoalign.judges import build_judge
from paretoalign.pairs import make_pairs
from paretoalign.pairs_config import PairsConfig

RESPONSES = ["Paris is the capital of France and its largest city.",
             "The sky looks blue because air scatters short wavelengths of sunlight.",
             "Drink water, sleep well and walk every day.",
             "No.",
             "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen."]


def _pairs():
    out = []
    for i in range(4):
        a, b = RESPONSES[i], RESPONSES[(i + 1) % len(RESPONSES)]
        out.append(PreferencePair(f"Question {i}: tell me something.", a, b, {"helpful": 1.0 if i % 2 else -1.0}))
    return out


@pytest.fixture
def pairs_file(tmp_path):
    return str(save_preference_data(_pairs(), tmp_path / "src.jsonl"))


def _cfg(tmp_path, pairs_in, name="mapl", **kw):
    base = dict(mapl=True, pairs_in=pairs_in, output_dir=str(tmp_path / name), progress=False)
    base.update(kw)
    return PairsConfig(**base)


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _verdict(ins: dict, response: str) -> bool:
    v = build_judge(ins["judge"])([""], [response])[0]
    assert v in (0, 1)
    return bool(v)


def test_intra_labels_agree_with_the_verifiers_and_the_rules_hold(tmp_path, pairs_file):
    card = make_pairs(_cfg(tmp_path, pairs_file, instructions=["max_words", "include_keyword", "start_with",
                                                                "end_with"], instructions_per_prompt=3))
    rows = _rows(tmp_path / "mapl" / "intra.jsonl")
    assert rows and card["mapl"]["intra"]["pairs"] == len(rows)
    assert {r["rule"] for r in rows} == {"all_vs_some", "some_vs_none"}
    for r in rows:
        y = r["response"]
        vw = [_verdict(i, y) for i in r["instructions_w"]]
        vl = [_verdict(i, y) for i in r["instructions_l"]]
        assert vw == r["verified_w"] and vl == r["verified_l"]  # recorded labels = the verifiers' verdicts
        if r["rule"] == "all_vs_some":
            assert all(vw) and not all(vl)
        else:
            assert any(vw) and not any(vl)
        # the same instruction types in the same order; the prompts are the request plus them
        assert [i["kind"] for i in r["instructions_w"]] == [i["kind"] for i in r["instructions_l"]]
        assert r["prompt_w"] == compose_prompt(r["prompt"], [Instruction(**i) for i in r["instructions_w"]])
        assert r["prompt_l"] == compose_prompt(r["prompt"], [Instruction(**i) for i in r["instructions_l"]])
        assert r["prompt_w"] != r["prompt_l"] and r["source"] in ("chosen", "rejected")
    # every distinct (prompt, response) of the pairs was used
    distinct = {(p.prompt, t) for p in _pairs() for t in (p.chosen, p.rejected)}
    assert {(r["prompt"], r["response"]) for r in rows} <= distinct
    assert card["mapl"]["intra"]["rows"] == len(distinct)


def test_inter_pairs_separate_their_responses_and_are_oriented_by_the_label(tmp_path, pairs_file):
    card = make_pairs(_cfg(tmp_path, pairs_file))
    inter = _rows(tmp_path / "mapl" / "inter.jsonl")
    assert inter and card["mapl"]["inter"]["label"] == "helpful"
    by_prompt = {p.prompt: p for p in _pairs()}
    for r in inter:
        src = by_prompt[r["original_prompt"]]
        want = (src.chosen, src.rejected) if src.labels["helpful"] == 1.0 else (src.rejected, src.chosen)
        assert (r["chosen"], r["rejected"]) == want  # oriented by the label
        keep, drop = (r["rejected"], r["chosen"]) if r["conflict"] else (r["chosen"], r["rejected"])
        for ins in r["instructions"]:
            assert _verdict(ins, keep) and not _verdict(ins, drop)
        assert r["prompt"] == compose_prompt(r["original_prompt"], [Instruction(**i) for i in r["instructions"]])
    # the original pairs are copied, so --pairs <folder> also trains plain DPO on them
    assert len(load_preference_data(tmp_path / "mapl")) == len(_pairs())
    data = load_mapl_data(tmp_path / "mapl")
    assert len(data.intra) == card["mapl"]["intra"]["pairs"] and len(data.inter) == len(inter)
    assert data.objectives == ["helpful"]
    readme = (tmp_path / "mapl" / "README.md").read_text()
    assert "MAPL prompt-side pairs" in readme and "2505.12845" in readme


def test_deterministic_from_the_seed(tmp_path, pairs_file):
    make_pairs(_cfg(tmp_path, pairs_file, name="a", seed=3))
    make_pairs(_cfg(tmp_path, pairs_file, name="b", seed=3))
    make_pairs(_cfg(tmp_path, pairs_file, name="c", seed=4))
    for f in ("intra.jsonl", "inter.jsonl"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    assert (tmp_path / "a" / "intra.jsonl").read_bytes() != (tmp_path / "c" / "intra.jsonl").read_bytes()


def test_options_kinds_and_count(tmp_path, pairs_file):
    make_pairs(_cfg(tmp_path, pairs_file, instructions="min_words", instructions_per_prompt=1,
                    mapl_rules=["all_vs_some"], mapl_inter=False))
    rows = _rows(tmp_path / "mapl" / "intra.jsonl")
    assert rows and all(len(r["instructions_w"]) == 1 and r["instructions_w"][0]["kind"] == "min_words" for r in rows)
    assert {r["rule"] for r in rows} == {"all_vs_some"}
    assert not (tmp_path / "mapl" / "inter.jsonl").exists()


def test_from_a_response_file_and_conversations(tmp_path):
    src = tmp_path / "responses.jsonl"
    lines = [{"prompt": f"Say something about topic {i}.", "response": r} for i, r in enumerate(RESPONSES)]
    lines.append({"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why rain?"}],
                  "response": "Water vapour cools, condenses into droplets and falls."})
    src.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    card = make_pairs(_cfg(tmp_path, str(src)))
    assert card["pairs"] == 0 and "inter" not in card["mapl"]
    assert not (tmp_path / "mapl" / "pairs.jsonl").exists()
    data = load_mapl_data(tmp_path / "mapl")
    assert data.pairs is None and not data.inter and data.intra
    conv = [e for e in data.intra if isinstance(e.prompt, list)]
    assert conv
    for e in conv:  # instructions go into the last user message; the system message is kept
        assert e.prompt_w[0] == {"role": "system", "content": "Be brief."}
        assert e.prompt_w[-1]["content"].startswith("Why rain?\n\n") and e.prompt_w[-1]["role"] == "user"
        assert e.prompt_w[:-1] == e.prompt[:-1] == e.prompt_l[:-1]


def test_from_the_models_own_samples(tmp_path):
    """The sampling path: pairs as `pairs` makes them, plus the MAPL sets built from the same samples."""
    cfg = PairsConfig(model="tiny", objectives=["length(scale=20)"], max_prompts=6, num_completions=3,
                      max_new_tokens=8, output_dir=str(tmp_path / "s"), progress=False, force=True, mapl=True,
                      instructions=["max_words", "start_with"])
    card = make_pairs(cfg)
    pairs = load_preference_data(tmp_path / "s")
    rows = _rows(tmp_path / "s" / "intra.jsonl")
    assert card["pairs"] == len(pairs) and card["mapl"]["intra"]["pairs"] == len(rows) > 0
    samples = {(p.prompt, t) for p in pairs.pairs for t in (p.chosen, p.rejected)}
    for r in rows:
        assert (r["prompt"], r["response"]) in samples and r["source"] == "sample"
        assert all(_verdict(i, r["response"]) for i in r["instructions_w"]) or r["rule"] == "some_vs_none"
        assert not any(_verdict(i, r["response"]) for i in r["instructions_l"]) or r["rule"] == "all_vs_some"
    assert card["mapl"]["inter"]["label"] == "length"


@pytest.mark.parametrize("argv, message", [
    (["--mapl", "--instructions", "max_words,shout"], "unknown instruction kind 'shout'"),
    (["--mapl", "--mapl-rules", "best_vs_worst"], "unknown MAPL pair rule"),
    (["--pairs-in", "x.jsonl"], "give --mapl too"),
])
def test_bad_options_are_one_line(tmp_path, capsys, argv, message):
    assert main(["pairs", "--output-dir", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_a_file_of_neither_pairs_nor_responses_is_one_line(tmp_path, capsys):
    src = tmp_path / "odd.jsonl"
    src.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    assert main(["pairs", "--mapl", "--pairs-in", str(src), "--output-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "neither preference pairs" in err and "'question'" in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()


def test_the_reader_refuses_plain_pairs_and_bad_rows(tmp_path, pairs_file):
    with pytest.raises(DataError, match=r"not MAPL prompt-side pairs.*'prompt_w', 'prompt_l'.*pairs --mapl"):
        load_mapl_data(pairs_file)
    folder = tmp_path / "plain"
    folder.mkdir()
    save_preference_data(_pairs(), folder / "pairs.jsonl")
    with pytest.raises(DataError, match="no intra.jsonl"):
        load_mapl_data(folder)
    bad = tmp_path / "bad.jsonl"
    good = {"prompt": "p", "response": "r", "prompt_w": "p\n\nA", "prompt_l": "p\n\nB"}
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "prompt_l": "p\n\nA"}) + "\n")
    with pytest.raises(DataError, match="bad.jsonl, line 2: prompt_w and prompt_l are the same"):
        load_mapl_data(bad)
    bad.write_text(json.dumps(good) + "\n" + json.dumps({**good, "response": 3}) + "\n")
    with pytest.raises(DataError, match="line 2, field 'response'"):
        load_mapl_data(bad)
    with pytest.raises(ConfigError, match="--mapl-inter-label 'nope' is not a label"):
        make_pairs(_cfg(tmp_path, pairs_file, mapl_inter_label="nope"))
