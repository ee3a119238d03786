"""A damaged multi-objective reward-model folder is one error line naming the folder and the bad file, from
`from_pretrained`, `reward-model score` and the `reward_model:<dir>` / `reward_model:<dir>#head` objectives;
nothing in such a folder is ever unpickled."""

import json
import pickle

import pytest

from paretoalign.cli import main
from paretoalign.errors import ConfigError, ModelNotFoundError, ParetoAlignError
from paretoalign.objectives import build_objective
from paretoalign.objectives.mo_reward_model import clear_shared_models
from paretoalign.reward_model.model import MultiObjectiveRewardModel


class Planted:
    """A pickle payload: unpickling it creates ``path`` (proof that something was unpickled)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def rm_dir(tmp_path):
    """A saved reward model (random heads and gate on the 'tiny' backbone; nothing is trained)."""
    clear_shared_models()
    model = MultiObjectiveRewardModel(["helpful", "short"], 8, {"backbone": "tiny", "pooling": "mean", "max_length": 64},
                                      gate_hidden=4, gate_layers=1)
    yield model.save_pretrained(tmp_path / "rm")
    clear_shared_models()


def _cut_half(f):
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _edit_config(**changes):
    def edit(f):
        cfg = json.loads(f.read_text())
        cfg.update(changes)
        f.write_text(json.dumps(cfg))
    return edit


# probe -> (file, how it is damaged, error class, what the message says after the file's path)
DAMAGE = {
    "config missing": ("config.json", lambda f: f.unlink(), ConfigError, "is not a paretoalign reward model"),
    "config empty": ("config.json", lambda f: f.write_text(""), ConfigError, "the file is empty"),
    "config truncated": ("config.json", _cut_half, ConfigError, "not valid JSON"),
    "config not JSON": ("config.json", lambda f: f.write_text("objectives: [a, b]\n"), ConfigError, "not valid JSON"),
    "config not UTF-8": ("config.json", lambda f: f.write_bytes(b'{"\xff\xfe": 1}'), ConfigError, "not UTF-8 text"),
    "config a list": ("config.json", lambda f: f.write_text("[1, 2]"), ConfigError, "expected a JSON object"),
    "config wrong field": ("config.json", _edit_config(feature_dim="eight"), ConfigError,
                           "field 'feature_dim' must be an integer >= 1"),
    "weights missing": ("model.safetensors", lambda f: f.unlink(), ModelNotFoundError, "model.safetensors: no such file"),
    "weights truncated": ("model.safetensors", _cut_half, ModelNotFoundError, "not a valid safetensors file"),
    "weights empty": ("model.safetensors", lambda f: f.write_bytes(b""), ModelNotFoundError, "not a valid safetensors file"),
    "weights of another model": ("config.json", _edit_config(feature_dim=16), ModelNotFoundError,
                                 "does not match config.json (head_weight has shape (2, 8), config.json implies (2, 16))"),
}


@pytest.mark.parametrize("probe", sorted(DAMAGE))
def test_a_damaged_folder_is_one_line_naming_the_folder_and_the_file(rm_dir, probe):
    name, damage, cls, says = DAMAGE[probe]
    damage(rm_dir / name)
    with pytest.raises(cls) as e:
        MultiObjectiveRewardModel.from_pretrained(rm_dir)
    msg = str(e.value)
    assert "\n" not in msg and str(rm_dir) in msg and says in msg, msg
    assert name in msg or "is not a paretoalign reward model" in msg, msg
    assert e.value.__suppress_context__ or e.value.__context__ is None


def test_a_folder_that_is_no_reward_model(tmp_path):
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ConfigError, match=r"'.*hf' is not a paretoalign reward model \(no config.json"):
        MultiObjectiveRewardModel.from_pretrained(tmp_path / "hf")
    with pytest.raises(ConfigError, match=r"'.*nowhere' is not a paretoalign reward model: no such folder"):
        MultiObjectiveRewardModel.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("probe", ["config truncated", "config wrong field", "weights truncated", "weights missing"])
@pytest.mark.parametrize("head", ["", "#helpful"])
def test_the_objective_kinds_on_a_damaged_folder_exit_2_with_one_line(rm_dir, tmp_path, monkeypatch, capsys, probe, head):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    name, damage, _cls, says = DAMAGE[probe]
    damage(rm_dir / name)
    rc = main(["evaluate", "tiny", "--objectives", f"reward_model:{rm_dir}{head},length", "--num-prompts", "2",
               "--max-new-tokens", "4", "--baseline", "none", "--output", str(tmp_path / "eval.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert str(rm_dir / name) in err and says in err, err


@pytest.mark.parametrize("probe", ["config not JSON", "weights truncated"])
def test_reward_model_score_on_a_damaged_folder_exits_2_with_one_line(rm_dir, tmp_path, capsys, probe):
    name, damage, _cls, says = DAMAGE[probe]
    damage(rm_dir / name)
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    assert main(["reward-model", "score", str(rm_dir), "--input", str(rows)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {rm_dir / name}: ") and says in err and err.count("\n") == 1, err


@pytest.mark.parametrize("planted_as", ["model.safetensors", "pytorch_model.bin"])
def test_pickles_are_never_unpickled(rm_dir, tmp_path, capsys, planted_as):
    marker = tmp_path / "UNPICKLED"
    (rm_dir / "model.safetensors").unlink()
    (rm_dir / planted_as).write_bytes(pickle.dumps(Planted(marker)))
    with pytest.raises(ModelNotFoundError) as e:
        MultiObjectiveRewardModel.from_pretrained(rm_dir)
    msg = str(e.value)
    assert str(rm_dir) in msg and planted_as in msg, msg
    if planted_as == "pytorch_model.bin":
        assert "never loaded" in msg
    with pytest.raises(ParetoAlignError):
        build_objective(f"reward_model:{rm_dir}#helpful")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    assert main(["reward-model", "score", str(rm_dir), "--input", str(rows)]) == 2
    assert planted_as in capsys.readouterr().err
    assert not marker.exists()
    # the payload does work: this is what loading a pickle would have done
    pickle.loads((rm_dir / planted_as).read_bytes())
    assert marker.exists()
