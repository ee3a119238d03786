"""Preference data: the public schemas (fixtures in their exact shapes), orientation, scalarisation,
candidate pools, several pair sets, and errors that name file, row and field."""

import json
import math
from pathlib import Path

import pytest

from paretoalign.data.preference_pairs import PreferencePair, load_preference_data, save_preference_data
from paretoalign.errors import DataError

FIX = Path(__file__).parent.parent / "fixtures" / "preferences"


def test_hh_rlhf_transcripts_become_conversations():
    d = load_preference_data(FIX / "hh_rlhf.jsonl", objective="helpful")
    assert d.format == "hh-rlhf" and len(d) == 2 and d.objectives == ["helpful"]
    p = d.pairs[1]
    assert p.prompt == [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue?"},
                        {"role": "user", "content": "Another one."}]
    assert (p.chosen, p.rejected) == ("Green.", "No.")


def test_pku_saferlhf_better_and_safer_labels():
    d = load_preference_data(FIX / "pku_saferlhf.jsonl")
    assert d.format == "pku-saferlhf" and d.objectives == ["better", "safer"]
    first = d.pairs[0]  # better = response_1, safer = response_0; chosen is response_0
    assert first.chosen.startswith("Listen") and first.labels == {"better": -1.0, "safer": 1.0}
    safer = d.oriented("safer")[0]
    assert safer.chosen.startswith("Listen")
    better = d.oriented("better")[0]
    assert better.chosen == "Shout louder than them." and better.labels["safer"] == -1.0


def test_helpsteer2_pairs_within_a_prompt_with_scores():
    d = load_preference_data(FIX / "helpsteer2.jsonl")
    assert d.format == "helpsteer2" and len(d) == 2
    assert set(d.objectives) == {"helpfulness", "correctness", "coherence", "complexity", "verbosity"}
    rain = d.pairs[0]
    assert rain.labels["helpfulness"] == -1.0 and rain.labels["correctness"] == 0.0
    assert rain.rejected_scores["verbosity"] == 2.0
    assert "line 1 vs line 2" in rain.source


def test_ultrafeedback_ratings_and_na():
    d = load_preference_data(FIX / "ultrafeedback.jsonl")
    assert d.format == "ultrafeedback" and len(d) == 3  # 3 completions -> 3 pairs
    ab = d.pairs[0]
    assert math.isnan(ab.rejected_scores["honesty"]) and "honesty" not in ab.labels
    assert ab.labels["helpfulness"] == 1.0 and ab.labels["instruction_following"] == 0.0
    s = d.summary()
    assert s["objectives"]["honesty"]["unknown"] == 2


def test_trl_conversational_and_scores_and_scalarized():
    c = load_preference_data(FIX / "trl_conversational.jsonl")
    assert c.pairs[0].prompt == [{"role": "user", "content": "Hi?"}] and c.pairs[0].chosen == "Hello!"
    assert c.objectives == ["preference"]
    d = load_preference_data(FIX / "trl_scores.jsonl")
    assert d.pairs[1].labels == {"helpful": 0.0, "short": 1.0}
    # w·Δscore: pair 1: 0.5*1 + 0.5*(-10) < 0 -> flipped; pair 2: 0 + 0.5*3 > 0
    sc = d.scalarized({"helpful": 0.5, "short": 0.5})
    assert [p.chosen for p in sc] == ["Bad.", "A good answer."]
    assert sc[0].chosen_scores["short"] == -4
    only_h = d.scalarized({"helpful": 1.0, "short": 0.0})
    assert len(only_h) == 1  # the tie on helpfulness is dropped
    with pytest.raises(DataError, match="no labels for objective 'honest'.*helpful, short"):
        d.oriented("honest")
    with pytest.raises(DataError, match=">= 0"):
        d.scalarized({"helpful": -1.0})


def test_groups_deduplicate_responses():
    d = load_preference_data(FIX / "trl_scores.jsonl")
    (g,) = d.groups()
    assert g.responses == ["A good answer.", "Bad.", "Fine answer here."]
    assert g.scores["short"] == [-14.0, -4.0, -17.0]
    assert g.wins["short"] == [(1, 0), (0, 2)]


def test_several_sets_one_per_objective(tmp_path):
    d = load_preference_data([f"helpful={FIX / 'hh_rlhf.jsonl'}", f"harmless={FIX / 'trl_conversational.jsonl'}"])
    assert d.objectives == ["helpful", "harmless"] and len(d) == 3
    assert len(d.oriented("helpful")) == 2 and len(d.oriented("harmless")) == 1


def test_round_trip_and_parquet_and_datasets_folder(tmp_path):
    import datasets

    pairs = [PreferencePair("q", "a", "b", {"x": 1.0}, {"x": 2.0}, {"x": 1.0})]
    f = save_preference_data(pairs, tmp_path / "p.jsonl")
    back = load_preference_data(f)
    assert back.pairs[0].chosen_scores == {"x": 2.0} and back.pairs[0].labels == {"x": 1.0}
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "p.parquet"))
    assert load_preference_data(tmp_path / "p.parquet", objective="o").pairs[0].labels == {"o": 1.0}
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "disk"))
    assert load_preference_data(tmp_path / "disk").pairs[0].rejected == "b"


def _write(tmp_path, rows, name="bad.jsonl"):
    p = tmp_path / name
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


@pytest.mark.parametrize(
    "rows, fmt, match",
    [
        ([{"prompt": "q", "chosen": "a"}], "trl", r"bad.jsonl, line 1: missing field 'rejected'"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": " ", "rejected": "b"}], "trl",
         r"bad.jsonl, line 2, field 'chosen': the response is empty"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b", "labels": {"x": 2}}], "trl", r"line 1, field 'labels'.*must be 1"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b", "chosen_scores": {"x": "hi"}}], "trl",
         r"line 1, field 'chosen_scores': score of 'x' is not a number"),
        ([{"prompt": [{"content": "hi"}], "chosen": "a", "rejected": "b"}], "trl", r"line 1, field 'prompt', message 1.*'role'"),
        ([{"prompt": "q", "response_0": "a", "response_1": "b", "better_response_id": 0}], "auto",
         r"line 1: missing field 'safer_response_id'"),
        ([{"prompt": "q", "response_0": "a", "response_1": "b", "better_response_id": 3, "safer_response_id": 0}], "auto",
         r"field 'better_response_id': must be 0 or 1"),
        ([{"prompt": "q", "response": "a", "helpfulness": "x", "correctness": 1, "coherence": 1, "complexity": 1,
           "verbosity": 1}], "auto", r"line 1, field 'helpfulness': not a number"),
        ([{"foo": 1}], "auto", r"cannot detect the schema"),
        ([{"prompt": "q", "chosen": "a", "rejected": "b"}], "nope", r"unknown preference format 'nope'"),
    ],
)
def test_errors_name_file_row_and_field(tmp_path, rows, fmt, match):
    with pytest.raises(DataError, match=match):
        load_preference_data(_write(tmp_path, rows), format=fmt)


def test_empty_missing_and_bad_json(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl: no rows"):
        load_preference_data(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="no such file"):
        load_preference_data(tmp_path / "missing.jsonl")
    (tmp_path / "broken.jsonl").write_text('{"prompt": "q"}\n{oops\n')
    with pytest.raises(DataError, match="broken.jsonl, line 2: not valid JSON"):
        load_preference_data(tmp_path / "broken.jsonl")
    with pytest.raises(DataError, match="objective=path"):
        load_preference_data([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")])


# --- damaged files: one error line naming the file and the row ----------------------------------

ROW = b'{"prompt": "q", "chosen": "a", "rejected": "b"}\n'


def _corrupt_parquet(path):
    """A parquet file of pairs whose footer is intact but whose column pages are garbage."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": [f"question number {i} " * 5 for i in range(200)], "chosen": ["yes"] * 200,
                             "rejected": ["no"] * 200}), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:4] + bytes(b ^ 0x5A for b in raw[4 : len(raw) // 2]) + raw[len(raw) // 2 :])


# probe -> (file name, its bytes (None: a folder; a function writes it), the start of the message)
DAMAGED = {
    "not UTF-8": ("p.jsonl", ROW + b'{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n',
                  "p.jsonl, line 2: not valid UTF-8 text (byte 0xe9)"),
    "truncated line": ("p.jsonl", ROW + b'{"prompt": "q", "chos', "p.jsonl, line 2: not valid JSON"),
    "not an object": ("p.jsonl", ROW + b'"just a string"\n', "p.jsonl, line 2: expected a JSON object, got str"),
    "empty": ("p.jsonl", b"", "p.jsonl: no rows (the file is empty)"),
    "binary": ("p.jsonl", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "p.jsonl, line 1: not valid UTF-8 text (byte 0x89)"),
    "not UTF-8 json": ("p.json", b'[{"prompt": "caf\xe9"}]', "{dir}/p.json, line 1: not valid UTF-8 text"),
    "truncated json": ("p.json", b'[{"prompt": "q", "chosen": "a"', "p.json: not valid JSON"),
    "directory": ("p", None, "{dir}/p: a folder that holds no pairs.jsonl and was not written by datasets' save_to_disk"),
    "corrupt parquet": ("p.parquet", _corrupt_parquet, "{dir}/p.parquet: cannot read it as a dataset"),
    "corrupt csv": ("p.csv", b'prompt,chosen,rejected\nq,a,b\n"q,a\n', "{dir}/p.csv: cannot read it as a dataset"),
    "binary csv": ("p.csv", b"prompt,chosen,rejected\n\x00\x01,a,b\n", "{dir}/p.csv, line 2: a NUL byte"),
}


def _damaged(tmp_path, probe, plant):
    name, content, says = DAMAGED[probe]
    return plant(tmp_path / name, content), says.format(dir=tmp_path)


@pytest.mark.parametrize("probe", sorted(DAMAGED))
def test_damaged_pair_files_name_the_file_and_row(tmp_path, probe, plant):
    p, says = _damaged(tmp_path, probe, plant)
    with pytest.raises(DataError) as e:
        load_preference_data(str(p))
    assert str(e.value).startswith(says) and "\n" not in str(e.value), str(e.value)


def _train_dpo(tmp_path, pairs):
    from paretoalign.cli import main

    return main(["train", "--method", "dpo", "--model", "tiny", "--pairs", str(pairs), "--max-steps", "1",
                 "--batch-size", "1", "--progress", "false", "--output-dir", str(tmp_path / "run")])


@pytest.mark.parametrize("probe", ["not UTF-8", "binary", "corrupt parquet", "corrupt csv", "directory"])
def test_damaged_pairs_flag_exits_2_with_one_line(tmp_path, capsys, probe, plant):
    p, says = _damaged(tmp_path, probe, plant)
    assert _train_dpo(tmp_path, p) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {says}") and err.count("\n") == 1 and "Traceback" not in err, err


def test_pairs_with_identical_chosen_and_rejected_are_dropped_with_one_warning(tmp_path, capsys):
    p = _write(tmp_path, [{"prompt": "q", "chosen": "same", "rejected": "same"},
                          {"prompt": "q", "chosen": "a", "rejected": "b"},
                          {"prompt": "r", "chosen": "x y", "rejected": "x y"},
                          {"prompt": "r", "chosen": "x y", "rejected": "x  y"}], name="dups.jsonl")
    data = load_preference_data(p)
    assert [(q.chosen, q.rejected) for q in data.pairs] == [("a", "b"), ("x y", "x  y")]
    assert capsys.readouterr().err == (f"warning: {p}: dropped 2 pair(s) whose chosen and rejected responses "
                                       "are identical\n")
    load_preference_data(_write(tmp_path, [{"prompt": "q", "chosen": "a", "rejected": "b"}], name="clean.jsonl"))
    assert capsys.readouterr().err == ""


def test_pairs_that_are_all_identical_are_an_error(tmp_path, capsys):
    p = _write(tmp_path, [{"prompt": "q", "chosen": "same", "rejected": "same"}] * 2, name="dups.jsonl")
    with pytest.raises(DataError, match=r"dups.jsonl: all 2 pair\(s\) have identical chosen and rejected responses"):
        load_preference_data(p)
    assert _train_dpo(tmp_path, p) == 2
    err = capsys.readouterr().err
    assert err == f"error: {p}: all 2 pair(s) have identical chosen and rejected responses; nothing is left to learn from\n"
