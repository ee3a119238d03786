"""Hugging Face dataset names for --prompts and --pairs, read from a temporary, network-less cache.

The module fixture points every Hugging Face cache at a temporary folder (the environment variables and
the libraries' constants, which they read once at import), switches the Hub off, and makes every socket
connect and name lookup raise.  In that cache it lays out what ``hf download <name> --repo-type dataset``
leaves: ``hub/datasets--<owner>--<name>/refs/main`` naming a commit and ``snapshots/<commit>/`` holding
the repository's files (parquet or jsonl data, a README whose YAML declares configs).  One dataset is
instead in the prepared ``datasets`` cache only (``datasets/<owner>___<name>/<config>/<version>/<commit>/``
with arrow files), which is what an earlier online ``load_dataset`` leaves and what ``datasets`` itself
reads offline.  The online path is never taken for real: ``datasets.load_dataset`` is replaced by a fake
that records whether the Hub was switched on for the call.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")
import huggingface_hub.constants as hub_constants  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from paretoalign.data.hub_datasets import HubName, hub_access, parse_hub_name  # noqa: E402
from paretoalign.data.preference_pairs import load_preference_data  # noqa: E402
from paretoalign.data.prompts import PromptList, load_prompts  # noqa: E402
from paretoalign.data.schemas import load_ratings  # noqa: E402
from paretoalign.errors import DataError  # noqa: E402

SHA = "0123456789abcdef0123456789abcdef01234567"
PREPARED_SHA = "c" * 40

TRAIN = ["Summarise the plot of Hamlet.", "Explain photosynthesis briefly.", "Write a haiku about rain."]
TEST = ["Name three prime numbers.", "What is the capital of Peru?"]
QUESTIONS = ["q one", "q two", "q three"]
CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there."}],
    [{"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "Count to three."}],
]
MAIN_TRAIN = ["main train 1", "main train 2"]
MAIN_TEST = ["main test 1"]
SOCRATIC_TRAIN = ["socratic train 1", "socratic train 2", "socratic train 3"]
PREFS_TRAIN = [
    {"prompt": "Say hi.", "chosen": "Hello! How can I help?", "rejected": "no"},
    {"prompt": [{"role": "user", "content": "Add 2 and 2."}],
     "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "22"}]},
    {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Potato."},
]
PREFS_TEST = [{"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}]
MULTI_README = """---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train.jsonl
  - split: test
    path: main/test.jsonl
- config_name: socratic
  data_files:
  - split: train
    path: socratic/train.jsonl
---
# multi
"""
NONTRAIN_README = """---
configs:
- config_name: default
  data_files:
  - split: train_prefs
    path: data/train_prefs.jsonl
  - split: test_prefs
    path: data/test_prefs.jsonl
---
"""


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _snapshot(hub_cache: Path, repo: str, files: dict, sha: str = SHA) -> Path:
    """The layout ``hf download`` leaves: refs/main -> commit, snapshots/<commit>/<the repo's files>."""
    folder = hub_cache / ("datasets--" + repo.replace("/", "--"))
    snap = folder / "snapshots" / sha
    for rel, content in files.items():
        path = snap / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, pa.Table):
            pq.write_table(content, path)
        else:
            path.write_text(content, encoding="utf-8")
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(sha)
    return snap


def _prepared(datasets_cache: Path, work: Path, repo: str, splits: dict, sha: str) -> None:
    """The layout an online ``load_dataset`` leaves in the datasets cache (no Hub-cache snapshot):
    ``<owner>___<name>/default/0.0.0/<commit>/{dataset_info.json, <name>-<split>.arrow}``, built here by
    preparing local parquet files under the dataset's name and moving the result into place."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    owner, name = repo.split("/")
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, table in splits.items():
        files[split] = str(work / f"{split}.parquet")
        pq.write_table(table, files[split])
    builder = Parquet(cache_dir=str(work / "build"), dataset_name=name, config_name="default", data_files=files)
    builder.download_and_prepare()
    target = datasets_cache / f"{owner}___{name}" / "default" / "0.0.0" / sha
    shutil.copytree(builder.cache_dir, target)
    assert json.loads((target / "dataset_info.json").read_text())["config_name"] == "default"


def _no_network(*args, **kwargs):
    raise OSError("test: the network was reached")


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    hub_cache, datasets_cache = root / "hub", root / "datasets"
    mp = pytest.MonkeyPatch()
    for var, value in (("HF_HOME", root), ("HF_HUB_CACHE", hub_cache), ("HF_DATASETS_CACHE", datasets_cache)):
        mp.setenv(var, str(value))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.delenv("HF_DATASETS_OFFLINE", raising=False)
    # read at import time, so the environment alone would not move them
    mp.setattr(hub_constants, "HF_HOME", str(root))
    mp.setattr(hub_constants, "HF_HUB_CACHE", str(hub_cache))
    mp.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    mp.setattr(datasets.config, "HF_CACHE_HOME", str(root))
    mp.setattr(datasets.config, "HF_DATASETS_CACHE", datasets_cache)
    mp.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", datasets_cache / "downloads")
    mp.setattr(datasets.config, "EXTRACTED_DATASETS_PATH", datasets_cache / "downloads" / "extracted")
    mp.setattr(datasets.config, "HF_MODULES_CACHE", root / "modules")
    mp.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    mp.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    mp.setattr(socket.socket, "connect", _no_network)
    mp.setattr(socket, "create_connection", _no_network)
    mp.setattr(socket, "getaddrinfo", _no_network)

    _snapshot(hub_cache, "someuser/somedata", {
        "data/train-00000-of-00001.parquet": pa.table(
            {"prompt": TRAIN, "question": QUESTIONS, "messages": CONVERSATIONS}),
        "data/test-00000-of-00001.parquet": pa.table(
            {"prompt": TEST, "question": ["t1", "t2"], "messages": CONVERSATIONS[:2]}),
        "README.md": "# somedata\n",
    })
    _snapshot(hub_cache, "someuser/multi", {
        "README.md": MULTI_README,
        "main/train.jsonl": _jsonl({"question": q} for q in MAIN_TRAIN),
        "main/test.jsonl": _jsonl({"question": q} for q in MAIN_TEST),
        "socratic/train.jsonl": _jsonl({"question": q} for q in SOCRATIC_TRAIN),
    })
    _snapshot(hub_cache, "someuser/prefs", {
        "data/train.jsonl": _jsonl(PREFS_TRAIN), "data/test.jsonl": _jsonl(PREFS_TEST)})
    _snapshot(hub_cache, "someuser/nontrain", {  # split names as HuggingFaceH4/ultrafeedback_binarized has them
        "README.md": NONTRAIN_README,
        "data/train_prefs.jsonl": _jsonl(PREFS_TRAIN), "data/test_prefs.jsonl": _jsonl(PREFS_TEST)})
    _snapshot(hub_cache, "someuser/badrows", {"data/train.jsonl": _jsonl([{"prompt": "fine"}, {"prompt": "  "}])})
    _snapshot(hub_cache, "someuser/badprefs", {
        "data/train.jsonl": _jsonl([PREFS_TRAIN[0], {"prompt": "q", "chosen": "", "rejected": "b"}])})
    _prepared(datasets_cache, root / "work", "someuser/prepared",
              {"train": pa.table({"prompt": ["prepared one", "prepared two"]})}, PREPARED_SHA)
    yield root
    mp.undo()


def test_the_network_is_really_off(hf_cache):
    with pytest.raises(OSError, match="the network was reached"):
        socket.create_connection(("example.org", 443))
    with pytest.raises(OSError, match="the network was reached"):
        socket.socket().connect(("127.0.0.1", 9))
    assert hub_constants.HF_HUB_OFFLINE is True and datasets.config.HF_HUB_OFFLINE is True


# ---------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize("text, expected", [
    ("trl-lib/tldr", HubName("trl-lib/tldr")),
    ("openai/gsm8k:main", HubName("openai/gsm8k", "main")),
    ("openai/gsm8k:main:test", HubName("openai/gsm8k", "main", "test")),
    ("trl-lib/tldr::validation", HubName("trl-lib/tldr", None, "validation")),
    ("imdb", HubName("imdb")),
    ("wikimedia/wikipedia:20231101.en", HubName("wikimedia/wikipedia", "20231101.en")),
    ("data/prompts.jsonl", None),   # a mistyped local file, not a dataset
    ("prompts.parquet", None),
    ("./someuser/somedata", None),
    ("/abs/path", None),
    ("~/x", None),
    ("a/b/c", None),
    ("https://example.org/x", None),
    ("owner/name:cfg:split:extra", None),
])
def test_parse_hub_name(text, expected):
    assert parse_hub_name(text) == expected


# ---------------------------------------------------------------------------------------------
# prompts


def test_prompts_by_name_default_split_from_the_hub_cache(hf_cache, capsys):
    prompts = load_prompts("someuser/somedata")
    assert prompts == TRAIN and isinstance(prompts, PromptList)
    src = prompts.source
    assert {k: src[k] for k in ("hub_dataset", "config", "split", "revision", "rows", "from")} == {
        "hub_dataset": "someuser/somedata", "config": "default", "split": "train", "revision": SHA, "rows": 3,
        "from": "hub cache"}
    assert isinstance(src["fingerprint"], str) and len(src["fingerprint"]) >= 8
    err = capsys.readouterr().err
    assert (f"[paretoalign] prompts: someuser/somedata (config default, split train, 3 rows, revision {SHA[:12]}, "
            f"fingerprint {src['fingerprint']}) from the hub cache") in err
    assert load_prompts("someuser/somedata").source["fingerprint"] == src["fingerprint"]  # stable


def test_prompts_split_by_argument_and_by_name(hf_cache):
    assert load_prompts("someuser/somedata", split="test") == TEST
    by_name = load_prompts("someuser/somedata::test")
    assert by_name == TEST and by_name.source["split"] == "test"
    assert load_prompts("someuser/somedata::test", split="test") == TEST
    with pytest.raises(DataError, match=r"^someuser/somedata: two splits given, 'test' in the name and 'train'"):
        load_prompts("someuser/somedata::test", split="train")


def test_prompts_config(hf_cache):
    main = load_prompts("someuser/multi:main", column="question")
    assert main == MAIN_TRAIN and main.source["config"] == "main" and main.source["split"] == "train"
    assert load_prompts("someuser/multi:main:test", column="question") == MAIN_TEST
    assert load_prompts("someuser/multi:socratic", column="question") == SOCRATIC_TRAIN


def test_prompt_column_and_conversations(hf_cache):
    assert load_prompts("someuser/somedata", column="question") == QUESTIONS
    assert load_prompts("someuser/somedata", column="messages") == CONVERSATIONS


def test_local_path_wins_over_a_dataset_name(hf_cache, tmp_path, monkeypatch):
    local = tmp_path / "someuser" / "somedata"
    datasets.Dataset.from_dict({"prompt": ["a local prompt"]}).save_to_disk(str(local))
    monkeypatch.chdir(tmp_path)
    got = load_prompts("someuser/somedata")
    assert got == ["a local prompt"] and not isinstance(got, PromptList)


def test_prompts_from_the_prepared_datasets_cache(hf_cache):
    """No Hub-cache snapshot: what `datasets` itself keeps after an online load is used offline."""
    prompts = load_prompts("someuser/prepared")
    assert prompts == ["prepared one", "prepared two"]
    assert prompts.source["from"] == "datasets cache" and prompts.source["revision"] == PREPARED_SHA


# ---------------------------------------------------------------------------------------------
# errors: one line each


def _one_line(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_not_cached_names_every_way_out(hf_cache):
    with pytest.raises(DataError) as e:
        load_prompts("someuser/absent")
    assert _one_line(e) == (
        "someuser/absent: no such file or folder here, and no Hugging Face dataset of that name in the local "
        "cache; pass --allow-download to fetch it from the Hub, or run "
        "`hf download someuser/absent --repo-type dataset` first, or pass a local file")
    with pytest.raises(DataError, match=r"^someuser/absent:main: no such file or folder here.*--allow-download"):
        load_preference_data("someuser/absent:main")


def test_not_cached_config_of_a_prepared_dataset_lists_the_cached_ones(hf_cache):
    with pytest.raises(DataError) as e:
        load_prompts("someuser/prepared:other")
    msg = _one_line(e)
    assert msg.startswith("someuser/prepared:other: no such file or folder here")
    assert "(cached configs: default)" in msg and "--allow-download" in msg


def test_unknown_split_lists_the_splits(hf_cache):
    with pytest.raises(DataError) as e:
        load_prompts("someuser/somedata", split="validation")
    assert _one_line(e) in ("someuser/somedata: no split 'validation' (splits present: train, test)",
                            "someuser/somedata: no split 'validation' (splits present: test, train)")


def test_several_splits_without_train(hf_cache):
    with pytest.raises(DataError) as e:
        load_preference_data("someuser/nontrain")
    msg = _one_line(e)
    assert msg.startswith("someuser/nontrain: several splits (") and "train_prefs" in msg and "test_prefs" in msg
    assert msg.endswith("none is 'train'; pick one as someuser/nontrain::<split>")
    assert len(load_preference_data("someuser/nontrain::test_prefs")) == 1


def test_missing_column_lists_the_columns(hf_cache):
    with pytest.raises(DataError) as e:
        load_prompts("someuser/somedata", column="text")
    assert _one_line(e) == ("someuser/somedata [split train]: missing column 'text' (columns present: 'prompt', "
                            "'question', 'messages'); choose one with --prompt-column")


def test_unknown_config_lists_the_configs(hf_cache):
    with pytest.raises(DataError) as e:
        load_prompts("someuser/multi:nope", column="question")
    assert _one_line(e) == "someuser/multi: no config 'nope' (configs: main, socratic)"


def test_several_configs_need_one(hf_cache):
    with pytest.raises(DataError) as e:
        load_prompts("someuser/multi", column="question")
    assert _one_line(e) == ("someuser/multi: the dataset has several configs (main, socratic); pick one as "
                            "someuser/multi:main")


def test_rows_are_validated_like_local_files(hf_cache):
    with pytest.raises(DataError) as e:
        load_prompts("someuser/badrows")
    assert _one_line(e) == ("someuser/badrows [split train], row 1, field 'prompt': the prompt is empty or "
                            "whitespace only")
    with pytest.raises(DataError) as e:
        load_preference_data("someuser/badprefs")
    assert _one_line(e) == "someuser/badprefs [split train], row 2, field 'chosen': the response is empty"


# ---------------------------------------------------------------------------------------------
# pairs


def test_pairs_by_name_in_trl_format(hf_cache):
    data = load_preference_data("someuser/prefs")
    assert data.format == "trl" and data.name == "someuser/prefs" and len(data) == 3
    assert [(p.prompt, p.chosen, p.rejected) for p in data.pairs] == [
        ("Say hi.", "Hello! How can I help?", "no"),
        ([{"role": "user", "content": "Add 2 and 2."}], "4", "22"),
        ("Name a colour.", "Blue.", "Potato.")]
    assert data.objectives == ["preference"] and data.pairs[0].source == "someuser/prefs [split train], row 1"
    [src] = data.sources
    assert {k: src[k] for k in ("hub_dataset", "split", "revision", "rows", "from")} == {
        "hub_dataset": "someuser/prefs", "split": "train", "revision": SHA, "rows": 3, "from": "hub cache"}
    assert data.summary()["sources"] == data.sources


def test_pairs_split_max_rows_and_objective_sets(hf_cache):
    test = load_preference_data("someuser/prefs", split="test")
    assert [(p.prompt, p.chosen) for p in test.pairs] == [("Capital of France?", "Paris.")]
    assert len(load_preference_data("someuser/prefs", max_rows=2)) == 2
    both = load_preference_data(["helpful=someuser/prefs", "honest=someuser/prefs::test"])
    assert both.objectives == ["helpful", "honest"] and len(both) == 4
    assert [s["objective"] for s in both.sources] == ["helpful", "honest"]
    assert [s["split"] for s in both.sources] == ["train", "test"]


def test_ratings_by_name(hf_cache):
    rated, fmt = load_ratings(["someuser/prefs"])
    assert fmt == "trl" and sorted(r.response for r in rated) == sorted(
        ["Hello! How can I help?", "no", "4", "22", "Blue.", "Potato."])


# ---------------------------------------------------------------------------------------------
# online only with allow_download


class _FakeLoad:
    """Stands in for datasets.load_dataset: records whether the Hub was on, then answers or raises."""

    def __init__(self, result=None, error=None):
        self.calls, self.result, self.error = [], result, error

    def __call__(self, path, name=None, **kwargs):
        self.calls.append({"path": path, "name": name, "hub_offline": hub_constants.HF_HUB_OFFLINE,
                           "datasets_offline": datasets.config.HF_HUB_OFFLINE,
                           "env": os.environ.get("HF_HUB_OFFLINE")})
        if self.error is not None:
            raise self.error
        return self.result


def test_allow_download_is_what_turns_the_hub_on(hf_cache, monkeypatch):
    fake = _FakeLoad(result=datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["remote p"]})}))
    monkeypatch.setattr(datasets, "load_dataset", fake)
    prompts = load_prompts("someuser/remote:cfg", allow_download=True)
    assert prompts == ["remote p"] and prompts.source["from"] == "hub" and prompts.source["config"] == "cfg"
    assert fake.calls == [{"path": "someuser/remote", "name": "cfg", "hub_offline": False,
                           "datasets_offline": False, "env": "0"}]
    # switched back afterwards
    assert hub_constants.HF_HUB_OFFLINE is True and datasets.config.HF_HUB_OFFLINE is True
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_without_allow_download_the_hub_stays_off(hf_cache, monkeypatch):
    """Not in the Hub cache: datasets' own offline lookup is asked, with the Hub off, and says no."""
    fake = _FakeLoad(error=ConnectionError("Couldn't reach 'someuser/remote' on the Hub (OfflineModeIsEnabled)"))
    monkeypatch.setattr(datasets, "load_dataset", fake)
    with pytest.raises(DataError, match=r"^someuser/remote: no such file or folder here.*--allow-download"):
        load_prompts("someuser/remote")
    assert fake.calls == [{"path": "someuser/remote", "name": None, "hub_offline": True,
                           "datasets_offline": True, "env": "1"}]


def test_default_is_offline_even_when_the_environment_says_online(hf_cache, monkeypatch):
    """Library use without the CLI: HF_HUB_OFFLINE unset.  The cache is still all that is read."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    real = datasets.load_dataset
    seen = []

    def spy(*args, **kwargs):
        seen.append((hub_constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE")))
        return real(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", spy)
    assert load_prompts("someuser/somedata") == TRAIN
    assert seen == [(True, True, "1")]
    assert hub_constants.HF_HUB_OFFLINE is False and datasets.config.HF_HUB_OFFLINE is False
    assert "HF_HUB_OFFLINE" not in os.environ


@pytest.mark.parametrize("error, match", [
    (datasets.exceptions.DatasetNotFoundError("Dataset 'someuser/remote' doesn't exist on the Hub"),
     r"^someuser/remote: no such file or folder here, and the Hub has no dataset of that name that you can read "
     r"\(Dataset 'someuser/remote' doesn't exist on the Hub\); check the name, or log in with `hf auth login`"),
    (ConnectionError("Couldn't reach 'someuser/remote' on the Hub (ConnectError)"),
     r"^someuser/remote: cannot reach the Hugging Face Hub \(Couldn't reach"),
    (ValueError("BuilderConfig 'x' not found. Available: ['a', 'b']"), r"^someuser/remote: no config 'x' \(configs: a, b\)$"),
])
def test_online_failures_are_one_line(hf_cache, monkeypatch, error, match):
    monkeypatch.setattr(datasets, "load_dataset", _FakeLoad(error=error))
    with pytest.raises(DataError, match=match) as e:
        load_preference_data("someuser/remote:x" if "BuilderConfig" in str(error) else "someuser/remote",
                             allow_download=True)
    _one_line(e)


def test_hub_access_restores_after_an_error(hf_cache):
    with pytest.raises(RuntimeError):
        with hub_access(online=True):
            assert hub_constants.HF_HUB_OFFLINE is False and os.environ["HF_HUB_OFFLINE"] == "0"
            raise RuntimeError("boom")
    assert hub_constants.HF_HUB_OFFLINE is True and datasets.config.HF_DATASETS_OFFLINE is True
    assert os.environ["HF_HUB_OFFLINE"] == "1" and "HF_DATASETS_OFFLINE" not in os.environ
