"""Tests for paretoalign.data: prompt loading, validation, splitting and hashing."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from paretoalign.data.prompts import (
    builtin_prompts,
    load_prompts,
    prompt_text,
    prompts_hash,
    split_prompts,
)
from paretoalign.errors import DataError, ParetoAlignError

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Review a pizza place."},
]


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _m(path: Path, *parts: str) -> str:
    """A regex matching the file name followed (anywhere later) by each part, in order."""
    return ".*".join([re.escape(path.name), *(re.escape(p) for p in parts)])


# ---------------------------------------------------------------------------------------------
# Formats


def test_jsonl_plain_and_conversation(tmp_path):
    p = _write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": CONV, "id": 2}])
    # a blank line in the middle is skipped
    p.write_text(p.read_text() + "\n  \n" + json.dumps({"prompt": "c"}) + "\n")
    assert load_prompts(p) == ["a", CONV, "c"]
    assert load_prompts(str(p)) == ["a", CONV, "c"]


def test_jsonl_custom_column_and_bare_strings(tmp_path):
    p = _write_jsonl(tmp_path / "q.jsonl", [{"text": "x"}, "y"])
    assert load_prompts(p, column="text") == ["x", "y"]


def test_json_list_of_objects(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps([{"prompt": "a"}, {"prompt": CONV}]))
    assert load_prompts(p) == ["a", CONV]


def test_json_list_of_strings(tmp_path):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(["one", "two"]))
    assert load_prompts(p) == ["one", "two"]


def test_json_that_is_really_jsonl(tmp_path):
    p = _write_jsonl(tmp_path / "p.json", [{"prompt": "a"}, {"prompt": "b"}])
    assert load_prompts(p) == ["a", "b"]


def test_csv(tmp_path):
    p = tmp_path / "p.csv"
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt"])
        w.writerow(["1", "hello, world"])
        w.writerow(["2", "two\nlines"])
        w.writerow(["3", "third"])
    assert load_prompts(p) == ["hello, world", "two\nlines", "third"]


def test_txt(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("first prompt\n\n   \nsecond prompt\r\nthird\n")
    assert load_prompts(p) == ["first prompt", "second prompt", "third"]
    assert load_prompts(p, column="ignored") == ["first prompt", "second prompt", "third"]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "n": [1, 2]}), p)
    assert load_prompts(p) == ["a", "b"]
    c = tmp_path / "c.parquet"
    pq.write_table(pa.table({"prompt": [CONV, [{"role": "user", "content": "hi"}]]}), c)
    assert load_prompts(c) == [CONV, [{"role": "user", "content": "hi"}]]


def test_save_to_disk_dataset_and_dict(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "ds"
    datasets.Dataset.from_dict({"prompt": ["a", "b"], "x": [1, 2]}).save_to_disk(str(d))
    assert load_prompts(d) == ["a", "b"]

    dd = tmp_path / "dd"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"q": ["t1", "t2"]}),
            "test": datasets.Dataset.from_dict({"q": ["e1"]}),
        }
    ).save_to_disk(str(dd))
    assert load_prompts(dd, column="q", split="train") == ["t1", "t2"]
    assert load_prompts(dd, column="q", split="test") == ["e1"]
    with pytest.raises(DataError, match=r"dd.*several splits.*train.*split="):
        load_prompts(dd, column="q")
    with pytest.raises(DataError, match=r"dd.*no split 'valid'.*train"):
        load_prompts(dd, column="q", split="valid")
    with pytest.raises(DataError, match=r"ds.*single Dataset"):
        load_prompts(d, split="train")
    with pytest.raises(DataError, match=r"dd.*split train.*missing column 'prompt'.*'q'"):
        load_prompts(dd, split="train")

    single = tmp_path / "single"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["s"]})}).save_to_disk(
        str(single)
    )
    assert load_prompts(single) == ["s"]


def test_save_to_disk_conversation_and_bad_row(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "conv"
    datasets.Dataset.from_dict({"prompt": [CONV, [{"role": "user", "content": "  "}]]}).save_to_disk(
        str(d)
    )
    with pytest.raises(DataError, match=r"conv.*row 1.*field 'prompt'.*message 1.*empty"):
        load_prompts(d)


# ---------------------------------------------------------------------------------------------
# Builtin set


def test_builtin_set():
    all_ = builtin_prompts()
    assert all_ == builtin_prompts("all") == load_prompts() == load_prompts("builtin")
    assert len(all_) >= 300
    assert all(isinstance(p, str) and p.strip() for p in all_)
    assert len(set(all_)) == len(all_)
    assert len({p.strip().lower() for p in all_}) == len(all_)
    train, held = builtin_prompts("train"), builtin_prompts("heldout")
    assert train and held
    assert not set(train) & set(held)
    assert sorted(train + held) == sorted(all_)
    assert 0.1 < len(held) / len(all_) < 0.2
    assert builtin_prompts("train") == train and builtin_prompts("heldout") == held
    # callers may mutate what they get without affecting later calls
    train.clear()
    assert builtin_prompts("train")


def test_builtin_file_records():
    from importlib import resources

    text = resources.files("paretoalign.resources").joinpath("prompts.jsonl").read_text("utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"p\d{4}", i) for i in ids)
    cats = {r["category"] for r in rows}
    assert len(cats) >= 8


def test_builtin_unknown_split():
    with pytest.raises(ValueError, match="unknown split"):
        builtin_prompts("validation")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="split"):
        load_prompts(None, split="train")


# ---------------------------------------------------------------------------------------------
# Errors


def test_error_is_paretoalign_and_value_error():
    assert issubclass(DataError, ParetoAlignError) and issubclass(DataError, ValueError)


def test_missing_file(tmp_path):
    p = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=r"nope\.jsonl.*no such file"):
        load_prompts(p)


def test_url_refused():
    # a URL is neither a local path nor a dataset name (names are tested in test_hub_datasets.py)
    with pytest.raises(DataError, match=r"no such file or folder; give a local file \(\.jsonl.*\.parquet.*"
                                        r"or a Hugging Face dataset name"):
        load_prompts("https://example.org/prompts")


def test_missing_local_file_is_not_a_dataset_name():
    with pytest.raises(DataError, match=r"^no_such_dir/prompts\.jsonl: no such file or folder; give a local file"):
        load_prompts("no_such_dir/prompts.jsonl")


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "p.xlsx"
    p.write_text("x")
    with pytest.raises(DataError, match=r"p\.xlsx.*unsupported.*only local files.*\.csv"):
        load_prompts(p)


def test_folder_not_saved_by_datasets(tmp_path):
    d = tmp_path / "plain_folder"
    d.mkdir()
    with pytest.raises(DataError, match=r"plain_folder.*save_to_disk"):
        load_prompts(d)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".txt"])
def test_empty_file(tmp_path, suffix):
    p = tmp_path / f"empty{suffix}"
    p.write_text("\n  \n" if suffix in (".jsonl", ".txt") else "")
    with pytest.raises(DataError, match=_m(p, "no prompts")):
        load_prompts(p)


def test_empty_json_list_and_header_only_csv(tmp_path):
    j = tmp_path / "e.json"
    j.write_text("[]")
    with pytest.raises(DataError, match=_m(j, "no prompts")):
        load_prompts(j)
    c = tmp_path / "h.csv"
    c.write_text("id,prompt\n")
    with pytest.raises(DataError, match=_m(c, "no prompts")):
        load_prompts(c)


def test_empty_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "e.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], type=pa.string())}), p)
    with pytest.raises(DataError, match=_m(p, "no prompts")):
        load_prompts(p)


def test_malformed_jsonl_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "ok"}\n\n{"prompt": "broken"\n')
    with pytest.raises(DataError, match=_m(p, "line 3", "malformed JSON", "Expecting ',' delimiter")):
        load_prompts(p)


def test_malformed_json(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[{"prompt": "a"},, ]')
    with pytest.raises(DataError, match=_m(p, "malformed JSON", "Expecting value")):
        load_prompts(p)


def test_json_not_a_list(tmp_path):
    p = tmp_path / "obj.json"
    p.write_text('{"prompt": "a"}')
    with pytest.raises(DataError, match=_m(p, "expected a JSON list")):
        load_prompts(p)


def test_missing_field_jsonl(tmp_path):
    p = _write_jsonl(tmp_path / "m.jsonl", [{"prompt": "a"}, {"text": "b", "id": 1}])
    with pytest.raises(DataError, match=_m(p, "line 2", "missing field 'prompt'", "'text'", "'id'")):
        load_prompts(p)


def test_missing_field_json(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}, {"question": "c"}]))
    with pytest.raises(DataError, match=_m(p, "row 2", "missing field 'prompt'", "'question'")):
        load_prompts(p)


def test_missing_column_csv(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("id,text\n1,hello\n")
    with pytest.raises(DataError, match=_m(p, "line 1", "missing column 'prompt'", "'id'", "'text'")):
        load_prompts(p)


def test_missing_column_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "m.parquet"
    pq.write_table(pa.table({"question": ["a"]}), p)
    with pytest.raises(DataError, match=_m(p, "missing column 'prompt'", "'question'")):
        load_prompts(p)


def test_missing_column_save_to_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    d = tmp_path / "nocol"
    datasets.Dataset.from_dict({"question": ["a"]}).save_to_disk(str(d))
    with pytest.raises(DataError, match=r"nocol.*missing column 'prompt'.*'question'"):
        load_prompts(d)


@pytest.mark.parametrize("value, kind", [(3, "int"), (None, "NoneType"), ({"a": 1}, "dict")])
def test_non_string_prompt(tmp_path, value, kind):
    p = _write_jsonl(tmp_path / "t.jsonl", [{"prompt": "fine"}, {"prompt": value}])
    with pytest.raises(DataError, match=_m(p, "line 2", "field 'prompt'", "expected a string", kind)):
        load_prompts(p)


def test_non_object_row(tmp_path):
    p = _write_jsonl(tmp_path / "r.jsonl", [{"prompt": "a"}, [1, 2]])
    with pytest.raises(DataError, match=_m(p, "line 2", "expected a JSON object", "list")):
        load_prompts(p)


@pytest.mark.parametrize("value", ["", "   \t "])
def test_empty_prompt_jsonl(tmp_path, value):
    p = _write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a"}, {"prompt": "b"}, {"prompt": value}])
    with pytest.raises(DataError, match=_m(p, "line 3", "field 'prompt'", "empty")):
        load_prompts(p)


def test_empty_prompt_json_strings(tmp_path):
    p = tmp_path / "e.json"
    p.write_text(json.dumps(["a", " "]))
    with pytest.raises(DataError, match=_m(p, "row 1", "field 'prompt'", "empty")):
        load_prompts(p)


def test_empty_prompt_csv_counts_multiline_rows(tmp_path):
    p = tmp_path / "e.csv"
    with p.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "id"])
        w.writerow(["spans\ntwo lines", "1"])  # lines 2-3
        w.writerow(["  ", "2"])  # line 4
    with pytest.raises(DataError, match=_m(p, "line 4", "field 'prompt'", "empty")):
        load_prompts(p)


def test_short_csv_row(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("id,prompt\n1,hello\n2\n")
    with pytest.raises(DataError, match=_m(p, "line 3", "field 'prompt'", "empty")):
        load_prompts(p)


@pytest.mark.parametrize(
    "conv, expected",
    [
        ([{"role": "user"}], "message 1.*lacks 'content'"),
        ([{"role": "system", "content": "s"}, {"content": "hi"}], "message 2.*lacks 'role'"),
        ([{"role": "bot", "content": "hi"}], "message 1.*invalid role 'bot'.*system, user, assistant"),
        ([{"role": "user", "content": 5}], "message 1.*'content' must be a string"),
        (["hello"], "message 1.*expected a"),
        ([], "no messages"),
        ([{"role": "system", "content": "s"}], "no user message"),
        ([{"role": "user", "content": " "}], "message 1.*empty"),
    ],
)
def test_bad_conversation(tmp_path, conv, expected):
    p = _write_jsonl(tmp_path / "c.jsonl", [{"prompt": CONV}, {"prompt": conv}])
    with pytest.raises(DataError, match=re.escape(p.name) + ".*line 2.*field 'prompt'.*" + expected):
        load_prompts(p)


def test_bad_conversation_json_row_index(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps([{"prompt": "a"}, {"prompt": [{"role": "robot", "content": "x"}]}]))
    with pytest.raises(DataError, match=_m(p, "row 1", "field 'prompt'", "invalid role 'robot'")):
        load_prompts(p)


def test_split_argument_on_a_file(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("a\n")
    with pytest.raises(DataError, match=_m(p, "split")):
        load_prompts(p, split="train")


# ---------------------------------------------------------------------------------------------
# prompt_text, split_prompts, prompts_hash


def test_prompt_text():
    assert prompt_text("hello") == "hello"
    assert prompt_text(CONV) == "Review a pizza place."
    conv = CONV + [
        {"role": "assistant", "content": "Sure."},
        {"role": "user", "content": "Shorter please."},
        {"role": "assistant", "content": ""},
    ]
    assert prompt_text(conv) == "Shorter please."
    with pytest.raises(DataError, match="no user message"):
        prompt_text([{"role": "system", "content": "s"}])


def test_split_prompts_deterministic_and_disjoint():
    prompts = [f"prompt {i}" for i in range(100)]
    train, held = split_prompts(prompts)
    assert len(held) == 15 and len(train) == 85
    assert not set(train) & set(held)
    assert split_prompts(prompts) == (train, held)
    # each part keeps the original relative order
    assert train == sorted(train, key=prompts.index) and held == sorted(held, key=prompts.index)
    other = split_prompts(prompts, seed=1)
    assert other[1] != held
    train3, held3 = split_prompts(prompts, heldout_fraction=0.3)
    assert len(held3) == 30


def test_split_prompts_small_and_errors():
    assert split_prompts(["a", "b"]) in ((["a"], ["b"]), (["b"], ["a"]))
    t, h = split_prompts(["a", "b", "c"], heldout_fraction=0.99)
    assert len(t) == 1 and len(h) == 2
    with pytest.raises(DataError, match="at least 2"):
        split_prompts(["only"])
    with pytest.raises(DataError, match="at least 2"):
        split_prompts([])
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_prompts(["a", "b"], heldout_fraction=0)
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_prompts(["a", "b"], heldout_fraction=1.0)


def test_split_prompts_with_conversations():
    prompts = ["a", CONV, "c", [{"role": "user", "content": "d"}]]
    train, held = split_prompts(prompts, heldout_fraction=0.5)
    assert len(train) == 2 and len(held) == 2
    assert sorted(map(prompt_text, train + held)) == sorted(map(prompt_text, prompts))


def test_prompts_hash():
    h = prompts_hash(["a", CONV])
    assert re.fullmatch(r"[0-9a-f]{64}", h)
    assert h == prompts_hash(["a", [dict(reversed(list(m.items()))) for m in CONV]])
    assert h == prompts_hash(("a", CONV))
    assert h != prompts_hash([CONV, "a"])
    assert h != prompts_hash(["a"])
    assert prompts_hash(["ünïcode"]) == prompts_hash(["ünïcode"])
    # pinned: sha256 of the compact, key-sorted JSON; must not change between releases
    assert prompts_hash(["a", "b"]) == (
        "0473ef2dc0d324ab659d3580c1134e9d812035905c4781fdd6d529b0c6860e13"
    )


def test_builtin_hash_is_stable():
    assert prompts_hash(builtin_prompts()) == prompts_hash(load_prompts("builtin"))
    assert prompts_hash(builtin_prompts("train")) != prompts_hash(builtin_prompts("heldout"))


# ---------------------------------------------------------------------------------------------
# Damaged files: one error line naming the file and the row, from the library and from the CLI


def _corrupt_parquet(path: Path) -> None:
    """A parquet file whose footer is intact but whose column pages are garbage."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"prompt": [f"question number {i} " * 5 for i in range(200)]}), path)
    raw = path.read_bytes()
    path.write_bytes(raw[:4] + bytes(b ^ 0x5A for b in raw[4 : len(raw) // 2]) + raw[len(raw) // 2 :])


# probe -> (file name, its bytes (None: a folder; a function: it writes the file), what the message says after the path)
DAMAGED = {
    "not UTF-8": ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n', ", line 2: not valid UTF-8 text (byte 0xe9)"),
    "truncated line": ("p.jsonl", b'{"prompt": "ok"}\n{"prompt": "cut sh', ", line 2: malformed JSON"),
    "not an object": ("p.jsonl", b'{"prompt": "ok"}\n[1, 2]\n', ", line 2: expected a JSON object"),
    "empty": ("p.jsonl", b"", ": no prompts found (the file is empty)"),
    "binary": ("p.txt", b"hello\n\x00\x01\x02\x03\xff", ", line 2: a NUL byte; this is a binary file"),
    "directory": ("p.jsonl", None, ": a folder that was not written by datasets' save_to_disk"),
    "corrupt parquet": ("p.parquet", _corrupt_parquet, ": column 'prompt' cannot be read; the parquet file is damaged"),
    "corrupt csv": ("p.csv", b'id,prompt\n1,hello\n2,"unclosed\n', ", line 3: malformed CSV"),
}


def _damaged(tmp_path, probe, plant):
    name, content, says = DAMAGED[probe]
    return plant(tmp_path / name, content), says


@pytest.mark.parametrize("probe", sorted(DAMAGED))
def test_damaged_prompt_files_name_the_file_and_row(tmp_path, probe, plant):
    p, says = _damaged(tmp_path, probe, plant)
    with pytest.raises(DataError) as e:
        load_prompts(p)
    assert str(e.value).startswith(f"{p}{says}") and "\n" not in str(e.value), str(e.value)


@pytest.mark.parametrize("probe", ["not UTF-8", "binary", "corrupt parquet", "corrupt csv", "directory"])
def test_damaged_prompts_flag_exits_2_with_one_line(tmp_path, capsys, probe, plant):
    from paretoalign.cli import main

    p, says = _damaged(tmp_path, probe, plant)
    rc = main(["train", "--prompts", str(p), "--objectives", "length,sentiment", "--max-steps", "1", "--model", "tiny",
               "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "4", "--progress", "false",
               "--output-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {p}{says}") and err.count("\n") == 1, err
