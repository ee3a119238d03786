"""Reward-model objective on a tiny random Llama, and user Python functions as objectives."""

from __future__ import annotations

import math

import pytest
import torch

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.objectives import build_objective
from paretoalign.objectives.models import PythonObjective, RewardModelObjective

PROMPTS = ["How are you?", "Tell me a joke.", "Write a poem about the sea, please.", "Hi"]
COMPLETIONS = ["I am fine, thank you.", "Why did the fox jump? It was fun.", "The sea is wonderful and blue.", ""]


# --- reward_model -------------------------------------------------------------------------------


def test_reward_model_shape_determinism_and_batching(tiny_rm):
    rm = RewardModelObjective(str(tiny_rm), batch_size=3, device="cpu")
    assert rm.name == "tiny-rm" and rm._model is None  # located now, loaded on first score
    a = rm.score(PROMPTS, COMPLETIONS)
    assert a.shape == (4,) and a.dtype == torch.float32 and bool(torch.isfinite(a).all())
    assert torch.equal(a, rm.score(PROMPTS, COMPLETIONS))
    assert len(set(a.tolist())) > 1  # depends on the text
    # padding does not change a sample's score: one at a time == batched
    one = RewardModelObjective(str(tiny_rm), batch_size=1, device="cpu").score(PROMPTS, COMPLETIONS)
    assert torch.allclose(a, one, atol=1e-5)
    assert rm._effective_format() == "concat"  # no chat template in this tokenizer


def test_reward_model_index_selects_the_logit(tiny_rm):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    s0 = RewardModelObjective(str(tiny_rm), index=0).score(PROMPTS[:2], COMPLETIONS[:2])
    s1 = build_objective(f"reward_model:{tiny_rm}(index=1,batch_size=2,name=rm1)")
    assert s1.name == "rm1" and s1.index == 1
    out1 = s1.score(PROMPTS[:2], COMPLETIONS[:2])
    tok = AutoTokenizer.from_pretrained(tiny_rm)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_rm).eval()
    with torch.no_grad():
        ref = torch.cat([model(**tok(p + c, return_tensors="pt")).logits for p, c in zip(PROMPTS[:2], COMPLETIONS[:2])])
    assert torch.allclose(s0, ref[:, 0], atol=1e-5)
    assert torch.allclose(out1, ref[:, 1], atol=1e-5)
    with pytest.raises(ConfigError, match=r"index=5 but the model has 2 output"):
        RewardModelObjective(str(tiny_rm), index=5).score(["p"], ["c"])


def test_reward_model_chat_template_and_formats(tiny_chat_rm):
    rm = RewardModelObjective(str(tiny_chat_rm))
    texts = rm.format_texts(["Hi"], ["Hello!"])
    assert texts == ["<s>[user] Hi</s><s>[assistant] Hello!</s>"]
    chat = rm.score(PROMPTS, COMPLETIONS)
    concat = RewardModelObjective(str(tiny_chat_rm), format="concat").score(PROMPTS, COMPLETIONS)
    pair = RewardModelObjective(str(tiny_chat_rm), format="pair").score(PROMPTS, COMPLETIONS)
    assert chat.shape == concat.shape == pair.shape == (4,)
    assert not torch.allclose(chat, concat)


def test_reward_model_chat_format_needs_a_template(tiny_rm):
    with pytest.raises(ObjectiveError, match="no chat template"):
        RewardModelObjective(str(tiny_rm), format="chat").score(["p"], ["c"])


def test_reward_model_truncates_from_the_left(tiny_rm):
    rm = RewardModelObjective(str(tiny_rm), max_length=8)
    long = "word " * 200
    enc = (rm._load(), rm._encode([long], ["the end"]))[1]
    assert enc["input_ids"].shape[1] == 8
    assert rm._tokenizer.decode(enc["input_ids"][0]).endswith("the end")
    assert rm.score([long], ["the end"]).shape == (1,)


def test_reward_model_missing_path_is_one_clear_line(tmp_path):
    with pytest.raises(ObjectiveError) as e:
        build_objective(f"reward_model:{tmp_path / 'no-such-rm'}")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "no-such-rm") in msg and "save_pretrained" in msg
    assert e.value.__cause__ is None and (e.value.__context__ is None or e.value.__suppress_context__)


def test_reward_model_unloadable_folder_is_one_clear_line(tmp_path):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    rm = RewardModelObjective(str(tmp_path / "broken"))
    with pytest.raises(ObjectiveError) as e:
        rm.score(["p"], ["c"])
    msg = str(e.value)
    assert "\n" not in msg and "cannot load" in msg and "broken" in msg and "[" in msg
    assert e.value.__suppress_context__


def test_reward_model_hub_id_not_in_cache_says_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ObjectiveError) as e:
        RewardModelObjective("nobody-here/no-such-reward-model-xyz")
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("nobody-here/no-such-reward-model-xyz", "local Hugging Face cache", "hf download", "allow_download=true"):
        assert part in msg


def test_reward_model_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObjectiveError, match="no config.json"):
        RewardModelObjective(str(tmp_path / "empty"))


class _Planted:
    """A pickle payload: unpickling it creates ``path`` (proof that something was unpickled)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("planted_as", ["model.safetensors", "pytorch_model.bin", "both"])
def test_reward_model_never_unpickles_weights(tiny_rm, tmp_path, planted_as):
    import pickle
    import shutil

    folder, marker = tmp_path / "rm", tmp_path / "UNPICKLED"
    shutil.copytree(tiny_rm, folder)
    payload = pickle.dumps(_Planted(marker))
    if planted_as == "both":  # safetensors next to a pickle: only the safetensors are read
        (folder / "pytorch_model.bin").write_bytes(payload)
        assert build_objective(f"reward_model:{folder}").score(["p"], ["c"]).shape == (1,)
    else:
        (folder / "model.safetensors").unlink()
        (folder / planted_as).write_bytes(payload)
        with pytest.raises(ObjectiveError) as e:
            build_objective(f"reward_model:{folder}").score(["p"], ["c"])
        msg = str(e.value)
        assert "\n" not in msg and str(folder) in msg, msg
        if planted_as == "pytorch_model.bin":
            assert "holds pytorch_model.bin but no *.safetensors" in msg and "never loaded" in msg
    assert not marker.exists()


@pytest.mark.parametrize("probe, match", [
    ("config truncated", r"config.json: not valid JSON"),
    ("config empty", r"config.json: the file is empty"),
    ("weights truncated", r"rm/model.safetensors: not a valid safetensors file"),
])
def test_reward_model_broken_folder_exits_2_with_one_line(tiny_rm, tmp_path, monkeypatch, capsys, probe, match):
    import re
    import shutil

    from paretoalign.cli import main

    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "rm"
    shutil.copytree(tiny_rm, folder)
    f = folder / ("config.json" if probe.startswith("config") else "model.safetensors")
    f.write_bytes(b"" if probe == "config empty" else f.read_bytes()[: f.stat().st_size // 2])
    rc = main(["evaluate", "tiny", "--objectives", f"reward_model:{folder},length", "--num-prompts", "2",
               "--max-new-tokens", "4", "--baseline", "none", "--output", str(tmp_path / "eval.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(match, err) and str(folder) in err, err


@pytest.mark.parametrize("kw", [{"format": "xml"}, {"batch_size": 0}, {"max_length": "long"}, {"dtype": "int8"},
                                {"index": "first"}])
def test_reward_model_bad_options(tiny_rm, kw):
    with pytest.raises(ConfigError):
        RewardModelObjective(str(tiny_rm), **kw)


# --- python -------------------------------------------------------------------------------------


def test_python_objective(user_module):
    obj = build_objective(f"python:{user_module}:n_chars")
    assert isinstance(obj, PythonObjective) and obj.name == "n_chars"
    assert obj.score(["a", "b"], ["xyz", ""]).tolist() == [3.0, 0.0]


def test_python_objective_options_become_kwargs(user_module):
    obj = build_objective(f"python:{user_module}:scaled(alpha=0.5,name=half)")
    assert obj.name == "half"
    assert obj.score(["a"], ["abcd"]).tolist() == [2.0]
    with pytest.raises(ConfigError, match="cannot call scaled"):
        build_objective(f"python:{user_module}:scaled(beta=1)")


def test_python_objective_from_file_path(user_module):
    import importlib

    file = importlib.import_module(user_module).__file__
    obj = PythonObjective(f"{file}:n_chars")
    assert obj.score([""], ["abc"]).tolist() == [3.0]


def test_python_objective_missing_values_become_nan(user_module):
    obj = PythonObjective(f"{user_module}:none_for_bad")
    out = obj.score(["", ""], ["good", "bad"]).tolist()
    assert out[0] == 2.0 and math.isnan(out[1])


def test_python_objective_errors(user_module):
    with pytest.raises(ObjectiveError, match=r"cannot import module 'no_such_module_xyz'"):
        PythonObjective("no_such_module_xyz:f")
    with pytest.raises(ObjectiveError, match=r"has no attribute 'nope'.*n_chars"):
        PythonObjective(f"{user_module}:nope")
    with pytest.raises(ObjectiveError, match=r"LIMIT is a int, not a function"):
        PythonObjective(f"{user_module}:LIMIT")
    with pytest.raises(ConfigError, match="python:<module>:<function>"):
        PythonObjective("just_a_module")
    with pytest.raises(ObjectiveError, match=r"returned 2 scores for 3 completions"):
        PythonObjective(f"{user_module}:too_few").score(["a"] * 3, ["b"] * 3)
    with pytest.raises(ObjectiveError, match=r"must return one number per completion"):
        PythonObjective(f"{user_module}:one_number").score(["a"], ["b"])
    with pytest.raises(ObjectiveError, match=r"non-number at index 0"):
        PythonObjective(f"{user_module}:words").score(["a"], ["b"])


def test_python_objective_import_errors_of_user_code_show_their_frames(tmp_path, monkeypatch):
    (tmp_path / "pa_broken_mod.py").write_text("import math\nimport a_dependency_that_is_missing_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ObjectiveError) as e:
        PythonObjective("pa_broken_mod:f")
    lines = str(e.value).splitlines()
    assert lines[0] == ("objective 'python:pa_broken_mod:f': importing module 'pa_broken_mod' raised "
                        "ModuleNotFoundError: No module named 'a_dependency_that_is_missing_xyz'")
    assert lines[1:] == [f'  File "{tmp_path / "pa_broken_mod.py"}", line 2, in <module>',
                         "    import a_dependency_that_is_missing_xyz"]


# A user module per probe: (file text, function, the first error line, a line of the user's frames).
BROKEN_USER_CODE = {
    "syntax": ("def f(prompts, completions):\n    return [1.0 for c in completions\n", "f",
               "importing {file!r} raised SyntaxError: '[' was never closed", "    return [1.0 for c in completions"),
    "import": ("import no_such_dependency_xyz\n", "f",
               "importing {file!r} raised ModuleNotFoundError: No module named 'no_such_dependency_xyz'",
               "    import no_such_dependency_xyz"),
    "missing": ("def g(prompts, completions):\n    return [1.0] * len(completions)\n", "f",
                "module {file!r} has no attribute 'f' (its functions: g)", None),
    "raises": ("import json\n\ndef helper(c):\n    return json.loads(c) / 0\n\n"
               "def f(prompts, completions):\n    return [helper('1') for c in completions]\n", "f",
               "raised ZeroDivisionError: division by zero", "    return json.loads(c) / 0"),
}


def _user_file(tmp_path, probe):
    text, fn, first, frame = BROKEN_USER_CODE[probe]
    f = tmp_path / f"pa_user_{probe}.py"
    f.write_text(text)
    spec = f"python:{f}:{fn}"
    return spec, f"objective {spec!r}" + (" " if first.startswith("raised") else ": ") + first.format(file=str(f)), frame


def _check_error_lines(err: str, first: str, frame: str | None, file) -> None:
    """One ``error:`` line naming the objective, then only the user's own frames (none of paretoalign's,
    the standard library's or an installed package's)."""
    assert "Traceback" not in err, err
    lines = err.rstrip("\n").splitlines()
    assert lines[0] == f"error: {first}", err
    if frame is None:
        assert len(lines) == 1, err
        return
    assert frame in lines and f'  File "{file}", line' in err, err
    files = [ln for ln in lines[1:] if ln.startswith("  File ")]
    assert files and all(ln.startswith(f'  File "{file}"') for ln in files), err


@pytest.mark.parametrize("probe", sorted(BROKEN_USER_CODE))
def test_python_objective_broken_user_code_is_an_error_line_with_the_users_frames(tmp_path, monkeypatch, capsys, probe):
    from paretoalign.cli import main

    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))
    spec, first, frame = _user_file(tmp_path, probe)
    rc = main(["evaluate", "tiny", "--objectives", f"{spec},length", "--num-prompts", "2", "--max-new-tokens", "4",
               "--baseline", "none", "--output", str(tmp_path / "eval.json")])
    assert rc == 2
    _check_error_lines(capsys.readouterr().err, first, frame, tmp_path / f"pa_user_{probe}.py")
    assert not (tmp_path / "eval.json").exists()


def test_python_objective_raising_during_training_is_an_error_line_with_the_users_frames(tmp_path, capsys):
    from paretoalign.cli import main

    spec, first, frame = _user_file(tmp_path, "raises")
    rc = main(["train", "--method", "pama", "--objectives", f"{spec},length", "--max-steps", "1", "--model", "tiny",
               "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "4", "--progress", "false",
               "--output-dir", str(tmp_path / "run")])
    assert rc == 2
    _check_error_lines(capsys.readouterr().err, first, frame, tmp_path / "pa_user_raises.py")


def test_python_objective_error_names_its_spec_and_keeps_multiline_messages(user_module, tmp_path, monkeypatch):
    (tmp_path / "pa_multiline.py").write_text("def f(p, c):\n    raise ValueError('bad input\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    obj = build_objective("python:pa_multiline:f(name=judge)")
    with pytest.raises(ObjectiveError) as e:
        obj.score(["p"], ["c"])
    lines = str(e.value).splitlines()
    assert lines[:2] == ["objective 'python:pa_multiline:f(name=judge)' raised ValueError: bad input", "  second line"]
    assert lines[2].startswith('  File "') and "pa_multiline.py" in lines[2]
    assert e.value.__suppress_context__


def test_reward_model_bad_device(tiny_rm):
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        RewardModelObjective(str(tiny_rm), device="gpu0")
