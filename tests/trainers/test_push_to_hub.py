"""--push-to-hub: refused before training when the Hub cannot be reached (offline, no token); after a
complete run, final/ is uploaded to --hub-model-id.  The hub client is replaced: no test reaches the network."""

import json
import os
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import pytest

from paretoalign import run_dir
from paretoalign.errors import ConfigError, ParetoAlignError
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=4, progress=False,
            max_steps=1, push_to_hub=True)


@pytest.fixture
def online_hub(monkeypatch):
    """A Hub that is 'reachable' with a token; uploads are recorded, never sent."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    calls = []

    def create_repo(repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))

    def upload_folder(**kw):
        files = sorted(p.name for p in Path(kw["folder_path"]).iterdir())  # what is there when it uploads
        calls.append(("upload_folder", kw["repo_id"], {**kw, "files": files}))

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    return calls


def test_offline_by_the_users_choice_refuses_before_training(tmp_path, monkeypatch):
    from paretoalign.data.hub_datasets import OFFLINE_BY_DEFAULT_ENV

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(OFFLINE_BY_DEFAULT_ENV, raising=False)
    with pytest.raises(ConfigError, match=r"^--push-to-hub needs the Hub, but HF_HUB_OFFLINE is set in your environment"
                       r".*hf auth login"):
        OnlineTrainer(OnlineConfig(**FAST, output_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_the_command_line_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    """The user's HF_HUB_OFFLINE=1 is a refusal; the command's own offline default is not (--push-to-hub is
    the opt-in), so there the missing token is what refuses, in one line, before anything is written."""
    from paretoalign.cli import main
    from paretoalign.data.hub_datasets import OFFLINE_BY_DEFAULT_ENV

    argv = ["train", "--model", "tiny", "--objectives", ",".join(OBJ), "--push_to_hub", "--hub-model-id", "me/x",
            "--output-dir", str(tmp_path / "run")]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(OFFLINE_BY_DEFAULT_ENV, raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --push-to-hub needs the Hub")
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the command sets it, marked as its default
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --push-to-hub needs a Hugging Face token")
    assert not (tmp_path / "run").exists()


def test_no_token_refuses_before_training(tmp_path, online_hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ConfigError, match="--push-to-hub needs a Hugging Face token: log in with `hf auth login`"):
        OnlineTrainer(OnlineConfig(**FAST, output_dir=str(tmp_path / "run")))
    assert online_hub == []


def test_final_is_uploaded_after_the_run(tmp_path, online_hub):
    tr = OnlineTrainer(OnlineConfig(**FAST, hub_model_id="me/tiny-pama", output_dir=str(tmp_path / "run")))
    assert online_hub == []  # nothing before training
    tr.train()
    (kind1, repo1, kw1), (kind2, repo2, kw2) = online_hub
    assert (kind1, repo1, kw1) == ("create_repo", "me/tiny-pama", {"exist_ok": True})
    assert kind2 == "upload_folder" and repo2 == "me/tiny-pama"
    assert kw2["folder_path"] == str(tr.out / "final") and "paretoalign.json" in kw2["files"] and "policy" in kw2["files"]
    assert (tr.out / run_dir.SUMMARY_FILE).is_file()  # the run was complete before the upload


def test_the_repository_defaults_to_the_run_folder_name(tmp_path, online_hub):
    OnlineTrainer(OnlineConfig(**FAST, output_dir=str(tmp_path / "my-run"))).train()
    assert [c[1] for c in online_hub] == ["my-run", "my-run"]


def test_a_failed_upload_loses_nothing_and_says_how_to_retry(tmp_path, online_hub, monkeypatch):
    def broken(**kw):
        raise OSError("connection reset\nmore detail")

    monkeypatch.setattr(huggingface_hub, "upload_folder", broken)
    tr = OnlineTrainer(OnlineConfig(**FAST, hub_model_id="me/x", output_dir=str(tmp_path / "run")))
    with pytest.raises(ParetoAlignError) as err:
        tr.train()
    msg = str(err.value)
    assert "\n" not in msg and "connection reset" in msg and f"hf upload me/x {tr.out / 'final'}" in msg
    assert json.loads((tr.out / run_dir.SUMMARY_FILE).read_text())["steps"] == 1
    assert str(tr.out.resolve()) not in run_dir._HELD  # the folder's lock is released


def test_the_commands_offline_default_goes_online_for_the_upload_only(tmp_path, monkeypatch):
    from paretoalign.cli import main
    from paretoalign.data.hub_datasets import OFFLINE_BY_DEFAULT_ENV

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv(OFFLINE_BY_DEFAULT_ENV, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    seen = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo_id, **kw: seen.append(huggingface_hub.constants.HF_HUB_OFFLINE))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: seen.append(huggingface_hub.constants.HF_HUB_OFFLINE))
    try:
        assert main(["train", "--model", "tiny", "--objectives", ",".join(OBJ), "--push-to-hub", "--hub-model-id", "me/x",
                     "--max-steps", "1", "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "4",
                     "--progress", "false", "--output-dir", str(tmp_path / "run")]) == 0
        assert seen == [False, False]  # online during the upload
        assert huggingface_hub.constants.HF_HUB_OFFLINE is True  # and offline again after it
    finally:
        os.environ.pop(OFFLINE_BY_DEFAULT_ENV, None)  # main() set both (the same process runs other tests)
        os.environ.pop("HF_HUB_OFFLINE", None)
