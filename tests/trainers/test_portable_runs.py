"""A run folder keeps working when it moves: its adapter names its base portably (the built-in name, the
Hub id, or ../base relative to the adapter) and loads to the same logits as the model before the move."""

import json
import shutil

import pytest
import torch

import paretoalign
from paretoalign import models
from paretoalign.errors import ModelNotFoundError, RunDirError
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False, learning_rate=1e-2,
            max_steps=1)


def train(out, **kw):
    tr = OnlineTrainer(OnlineConfig(**{"model": "tiny", **FAST, "output_dir": str(out), **kw}))
    tr.train()
    return tr


def logits(model, tok, text="hello there, how are you?"):
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**ids).logits


@pytest.fixture
def moved_lora(tmp_path):
    """A trained tiny LoRA run, its logits before the move, and the folder it was moved to."""
    tr = train(tmp_path / "here" / "run")
    before = logits(tr.unwrapped.policy, tr.tokenizer)
    dest = tmp_path / "elsewhere" / "moved"
    dest.parent.mkdir()
    shutil.move(str(tr.out), str(dest))
    return tr, before, dest


def test_the_adapter_names_its_tiny_base_relative_to_itself(moved_lora, tmp_path):
    tr, _, dest = moved_lora
    adapter_cfg = json.loads((dest / "final" / "policy" / "adapter_config.json").read_text())
    assert adapter_cfg["base_model_name_or_path"] == "../base"
    meta = json.loads((dest / "final" / "paretoalign.json").read_text())
    assert meta["base"]["kind"] == "tiny" and meta["base"]["adapter_base"] == "../base" and meta["base"]["seed"] == 0
    assert len(meta["base"]["sha256"]) == 64
    for f in (dest / "final").rglob("*.json"):  # no file of final/ remembers where the run was written
        assert str(tmp_path) not in f.read_text(), f


def test_a_moved_lora_run_loads_to_identical_logits(moved_lora):
    tr, before, dest = moved_lora
    for target in (dest, dest / "final", dest / "final" / "policy", str(dest) + "/"):
        model, tok = paretoalign.load_policy(target)
        assert hasattr(model, "peft_config")
        assert torch.equal(logits(model, tok), before), target
    # what `train --model` and `evaluate` use for an adapter folder
    model = models.load_causal_lm(str(dest / "final" / "policy"))
    assert torch.equal(logits(model, tr.tokenizer), before)


def test_plain_peft_loads_the_moved_run_from_the_adapter_folder_or_given_the_base(moved_lora, monkeypatch, tmp_path):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, before, dest = moved_lora
    policy = dest / "final" / "policy"
    tok = AutoTokenizer.from_pretrained(policy)
    monkeypatch.chdir(policy)  # PEFT reads ../base against the working directory
    assert torch.equal(logits(AutoPeftModelForCausalLM.from_pretrained("."), tok), before)
    monkeypatch.chdir(tmp_path)  # from anywhere else PEFT alone cannot find it: the documented limit
    with pytest.raises((OSError, ValueError)):
        AutoPeftModelForCausalLM.from_pretrained(policy)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(dest / "final" / "base"), policy)
    assert torch.equal(logits(model, tok), before)


def test_a_moved_full_finetune_loads_with_from_pretrained(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tr = train(tmp_path / "a" / "full", use_lora=False, method="morlhf")
    before = logits(tr.unwrapped.policy, tr.tokenizer)
    dest = tmp_path / "b" / "full"
    dest.parent.mkdir()
    shutil.move(str(tr.out), str(dest))
    policy = dest / "final" / "policy"
    assert not (dest / "final" / "base").exists() and not (policy / "adapter_config.json").exists()
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(policy), AutoTokenizer.from_pretrained(policy)), before)
    model, tok = paretoalign.load_policy(dest)
    assert torch.equal(logits(model, tok), before)
    assert "library_name: transformers" in (policy / "README.md").read_text()


def test_an_older_run_whose_absolute_base_moved_loads_from_its_config(moved_lora):
    """A run written before portable folders names its tiny base by an absolute path; moved, the loader
    rebuilds the base from the run's config instead."""
    _, before, dest = moved_lora
    f = dest / "final" / "policy" / "adapter_config.json"
    f.write_text(json.dumps({**json.loads(f.read_text()), "base_model_name_or_path": "/gone/run/final/base"}))
    for target in (dest, dest / "final" / "policy"):
        model, tok = paretoalign.load_policy(target)
        assert torch.equal(logits(model, tok), before)
    alone = shutil.copytree(dest / "final" / "policy", dest.parent / "policy-alone")
    with pytest.raises(ModelNotFoundError, match="local folder '/gone/run/final/base'"):
        paretoalign.load_policy(alone)  # out of its run, nothing else says what the base was


def test_a_missing_relative_base_is_one_clear_error(moved_lora):
    _, before, dest = moved_lora
    alone = shutil.copytree(dest / "final", dest.parent / "final-alone")
    shutil.rmtree(dest / "final" / "base")
    model, tok = paretoalign.load_policy(dest / "final" / "policy")  # in its run: the base from its config
    assert torch.equal(logits(model, tok), before)
    shutil.rmtree(alone / "base")
    with pytest.raises(ModelNotFoundError, match=r"'\.\./base' \(relative to the adapter folder\), is missing"):
        paretoalign.load_policy(alone)


def _fake_hub_snapshot(cache, repo, commit):
    """A Hugging Face cache entry for ``repo`` at ``commit`` holding the tiny model (as a download leaves it)."""
    snap = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    tok = models.build_tiny_tokenizer()
    models.build_tiny_model(tok, seed=3).save_pretrained(snap)
    tok.save_pretrained(snap)
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text(commit)
    return snap


def test_a_hub_base_is_recorded_by_its_id_and_loads_after_a_move(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    repo, commit = "paretoalign-test/tiny-llama", "0123456789abcdef0123456789abcdef01234567"
    _fake_hub_snapshot(tmp_path / "hub", repo, commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    tr = train(tmp_path / "a" / "run", model=repo)
    before = logits(tr.unwrapped.policy, tr.tokenizer)
    dest = tmp_path / "b" / "run"
    dest.parent.mkdir()
    shutil.move(str(tr.out), str(dest))
    policy = dest / "final" / "policy"
    assert json.loads((policy / "adapter_config.json").read_text())["base_model_name_or_path"] == repo
    base = json.loads((dest / "final" / "paretoalign.json").read_text())["base"]
    assert base["kind"] == "hub" and base["name"] == repo and base["revision"] == commit
    assert not (dest / "final" / "base").exists()
    monkeypatch.chdir(tmp_path)
    model = AutoPeftModelForCausalLM.from_pretrained(policy)  # plain PEFT, from any working directory
    assert torch.equal(logits(model, AutoTokenizer.from_pretrained(policy)), before)
    model, tok = paretoalign.load_policy(policy)
    assert torch.equal(logits(model, tok), before)
    card = (policy / "README.md").read_text()
    assert f"base_model: {repo}" in card and commit in card


def test_the_builtin_base_is_recorded_by_its_name_and_resolved_to_the_cache(tmp_path, monkeypatch):
    """No training on SmolLM2 here (too slow for the suite): the provenance and the resolution, separately."""
    class Model:
        config = type("C", (), {"_commit_hash": None})()

    prov = ckpt_lib._base_provenance(models.SMOLLM2_NAME, Model(), None, lora=False)
    assert prov["kind"] == "builtin" and prov["adapter_base"] == models.SMOLLM2_NAME
    assert prov["sha256"] is None or len(prov["sha256"]) == 64
    base = tmp_path / "cache" / "converted"
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    monkeypatch.setattr(models, "smollm2_path", lambda: base)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": models.SMOLLM2_NAME}))
    assert models.adapter_base(adapter) == str(base)
    local = tmp_path / "my-model"
    local.mkdir()
    prov = ckpt_lib._base_provenance(str(local), Model(), None, lora=True)
    assert prov["kind"] == "local" and prov["adapter_base"] == str(local.resolve())


def test_a_path_that_is_not_a_run_is_refused_in_one_line(tmp_path):
    with pytest.raises(RunDirError, match="no such run folder"):
        paretoalign.load_policy(tmp_path / "nothing" / "here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunDirError, match="is not a run folder, a final/ folder, a checkpoint or a model folder"):
        paretoalign.load_policy(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        paretoalign.load_policy(tmp_path / "file.txt")
