"""`reward-model score --input`: what is read (rows or pairs), and a damaged file is one error line naming the
file and the row, before the backbone loads."""

import json

import pytest

from paretoalign.cli import main
from paretoalign.errors import DataError
from paretoalign.reward_model.evaluate import read_score_input
from paretoalign.reward_model.model import MultiObjectiveRewardModel

ROW = b'{"prompt": "Explain rain.", "response": "Rain falls."}\n'


def test_rows_and_pairs_are_told_apart(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(ROW + b'\n{"prompt": [{"role": "user", "content": "Hi"}], "response": "Hello."}\n')
    assert read_score_input(rows) == ("rows", [("Explain rain.", "Rain falls."),
                                               ([{"role": "user", "content": "Hi"}], "Hello.")])
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    kind, data = read_score_input(pairs)
    assert kind == "pairs" and len(data) == 1 and data.pairs[0].chosen == "a"


def _corrupt_parquet(path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"prompt": [f"question number {i} " * 5 for i in range(200)], "chosen": ["a"] * 200,
                             "rejected": ["b"] * 200}), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:4] + bytes(b ^ 0x5A for b in raw[4 : len(raw) // 2]) + raw[len(raw) // 2 :])


# probe -> (file name, its bytes (None: a folder; a function writes it), the start of the message)
DAMAGED = {
    "not UTF-8": ("in.jsonl", ROW + b'{"prompt": "caf\xe9", "response": "r"}\n', "in.jsonl, line 2: not valid UTF-8 text"),
    "truncated line": ("in.jsonl", ROW + b'{"prompt": "q", "resp', "in.jsonl, line 2: not valid JSON"),
    "not an object": ("in.jsonl", ROW + b"[1, 2]\n", "{dir}/in.jsonl, line 2: expected an object with 'prompt' and "
                      "'response', got list"),
    "missing response": ("in.jsonl", ROW + b'{"prompt": "q"}\n', "{dir}/in.jsonl, line 2: missing field 'response'"),
    "bad prompt": ("in.jsonl", ROW + b'{"prompt": 3, "response": "r"}\n',
                   "{dir}/in.jsonl, line 2, field 'prompt': expected a string or a conversation, got int"),
    "empty": ("in.jsonl", b"\n\n", "{dir}/in.jsonl: no rows (the file is empty)"),
    "binary": ("in.jsonl", b"\x00\x01\x02\x03", "in.jsonl, line 1: a NUL byte; this is a binary file"),
    "directory": ("in", None, "{dir}/in: a folder that holds no pairs.jsonl"),
    "corrupt parquet": ("in.parquet", _corrupt_parquet, "{dir}/in.parquet: cannot read it as a dataset"),
    "corrupt csv": ("in.csv", b'prompt,chosen,rejected\nq,a,b\n"q,a\n', "{dir}/in.csv: cannot read it as a dataset"),
    "missing": ("in.jsonl", "missing", "--input '{dir}/in.jsonl' does not exist"),
}


def _damaged(tmp_path, probe, plant):
    name, content, says = DAMAGED[probe]
    return plant(tmp_path / name, content), says.format(dir=tmp_path)


@pytest.mark.parametrize("probe", sorted(DAMAGED))
def test_damaged_input_is_one_line_naming_the_file_and_row(tmp_path, probe, plant):
    p, says = _damaged(tmp_path, probe, plant)
    with pytest.raises(DataError) as e:
        read_score_input(p)
    assert str(e.value).startswith(says) and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("probe", sorted(DAMAGED))
def test_score_command_exits_2_with_one_line_before_the_backbone_loads(tmp_path, monkeypatch, capsys, probe, plant):
    rm = MultiObjectiveRewardModel(["helpful", "short"], 8, {"backbone": "tiny", "pooling": "mean", "max_length": 64},
                                   gate_hidden=4, gate_layers=1).save_pretrained(tmp_path / "rm")
    monkeypatch.setattr(MultiObjectiveRewardModel, "extractor", lambda *a, **k: pytest.fail("the backbone was loaded"))
    p, says = _damaged(tmp_path, probe, plant)
    assert main(["reward-model", "score", str(rm), "--input", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {says}") and err.count("\n") == 1 and "Traceback" not in err, err
