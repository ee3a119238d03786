"""trainers/sharding.py: FSDP1, FSDP2, DeepSpeed ZeRO-2 and ZeRO-3 runs on 2 CPU processes compared with DDP
runs file by file, resumed runs with uninterrupted ones, and what does not run sharded yet refused with one line.

The launches go through accelerate's own FSDP and DeepSpeed plugins with the configs in examples/accelerate/;
tests/trainers/sharded_on_cpu.py says why a CPU launch needs a stand-in for accelerate's device check."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from paretoalign import run_dir

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("sharded_on_cpu.py")
PAIRS = "tests/fixtures/preferences/pku_saferlhf.jsonl"
# PAMA with value heads and a KL term (so the reference pass runs), a checkpoint every step, and a held-out
# evaluation (sampling outside the training step): every place a trainer reads whole weights
PAMA = ["train", "--config", "examples/pama_tiny.yaml", "--kl-coef", "0.1", "--max-steps", "2", "--save-steps", "1",
        "--eval-steps", "2", "--eval-prompts", "4", "--progress", "false"]
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
          "--dynamo_backend", "no"]
_PORTS = iter(range(29561, 29600))


def _launch(kind: str, args: list, out: Path, precision: str = "no") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    port = ["--main_process_port", str(next(_PORTS))]
    if kind == "ddp":
        env["ACCELERATE_USE_CPU"] = "1"
        cmd = [*LAUNCH, "--config_file", "examples/accelerate/cpu_2proc.yaml", *port, "-m", "paretoalign.cli"]
    else:
        config = {"fsdp1": "fsdp.yaml", "fsdp2": "fsdp2.yaml", "zero2": "deepspeed_zero2.yaml",
                  "zero3": "deepspeed_zero3.yaml"}[kind]
        gpu_only = ["--fsdp_sync_module_states", "false", "--fsdp_cpu_ram_efficient_loading", "false"]
        cmd = [*LAUNCH, "--config_file", f"examples/accelerate/{config}", "--mixed_precision", precision, *port,
               *(gpu_only if kind == "fsdp1" else []), str(HARNESS)]
    proc = subprocess.run([*cmd, *args, "--output-dir", str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _assert_same_run(a: Path, b: Path, atol: float = 0.0) -> None:
    """Same metrics (timings aside) and the same saved files: every tensor of every checkpoint and of final/
    (policy, value heads, optimizer state) within ``atol``, the optimizer's JSON equal."""
    ra, rb = run_dir.read_metrics(a), run_dir.read_metrics(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        assert {"loss", "policy_loss", "kl"} <= x.keys() & y.keys() or {"loss"} <= x.keys() & y.keys()
        for k in x.keys() & y.keys():  # a held-out evaluation row may be in one only: it uses its own RNG
            if isinstance(x[k], float) and not k.startswith("time"):
                assert y[k] == pytest.approx(x[k], abs=atol, rel=0), k
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.safetensors"))
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*.safetensors"))
    assert any("optimizer" in f for f in files) and any("adapter_model" in f for f in files)
    for f in files:
        ta, tb = load_file(a / f), load_file(b / f)
        assert ta.keys() == tb.keys() and ta, f
        for k in ta:
            torch.testing.assert_close(ta[k], tb[k], atol=atol, rtol=0, msg=f"{f}: {k}")
    for f in a.rglob("optimizer.json"):
        assert json.loads(f.read_text()) == json.loads((b / f.relative_to(a)).read_text()), f


@pytest.fixture(scope="module")
def ddp_pama(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "pama"
    _launch("ddp", PAMA, out)
    return out


@pytest.fixture(scope="module")
def fsdp1_pama(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp1") / "pama"
    _launch("fsdp1", PAMA, out)
    return out


def test_fsdp1_trains_and_saves_what_ddp_does(fsdp1_pama, ddp_pama):
    # within float rounding (measured 1.5e-8 at step 2; bit-identical in runs without the KL term's reference pass)
    _assert_same_run(fsdp1_pama, ddp_pama, atol=1e-6)
    ckpt = run_dir.list_checkpoints(fsdp1_pama)[-1][1]
    assert (ckpt / "rng_state_0.json").is_file() and (ckpt / "rng_state_1.json").is_file()
    assert "eval/chars" in run_dir.read_metrics(fsdp1_pama)[-1]


def test_fsdp1_resumes_exactly(fsdp1_pama, tmp_path):
    out = tmp_path / "resumed"
    first = list(PAMA)
    first[first.index("--max-steps") + 1] = "1"
    _launch("fsdp1", first, out)
    _launch("fsdp1", [*PAMA, "--resume"], out)
    _assert_same_run(out, fsdp1_pama)  # bit for bit


def test_fsdp2_matches_ddp_up_to_rounding(ddp_pama, tmp_path):
    """FSDP2 runs full rows (a layer once per forward), so the sums round differently; nothing else differs."""
    out = tmp_path / "pama2"
    _launch("fsdp2", PAMA, out)
    _assert_same_run(out, ddp_pama, atol=1e-5)


@pytest.mark.parametrize("args", [
    ["train", "--config", "examples/dpa_tiny.yaml", "--rounds", "2"],  # samples whole weights, then fine-tunes
    ["train", "--config", "examples/amopo_tiny.yaml", "--method", "dpo", "--max-steps", "2", "--save-steps", "1"],
], ids=["dpa", "dpo"])  # DPO: the adapter-disabled reference pass
def test_dpa_and_offline_methods_under_fsdp1_equal_ddp(args, tmp_path):
    _launch("fsdp1", [*args, "--progress", "false"], tmp_path / "fsdp")
    _launch("ddp", [*args, "--progress", "false"], tmp_path / "ddp")
    _assert_same_run(tmp_path / "fsdp", tmp_path / "ddp")


def test_mapl_under_fsdp1_equals_ddp(tmp_path):
    """MAPL's prompt-side pairs (policy and adapter-disabled reference passes on both prompts of each pair)."""
    from paretoalign.cli import main

    pairs = tmp_path / "mapl-pairs"
    assert main(["pairs", "--model", "tiny", "--objectives", "length(scale=20),keywords(words=the|a|to|and|of)",
                 "--max-prompts", "12", "--max-new-tokens", "6", "--mapl", "--instructions", "max_words,start_with",
                 "--force", "--output-dir", str(pairs), "--progress", "false"]) == 0
    args = ["train", "--config", "examples/mapl_tiny.yaml", "--pairs", str(pairs), "--max-steps", "2",
            "--save-steps", "1", "--progress", "false"]
    _launch("fsdp1", args, tmp_path / "fsdp")
    _launch("ddp", args, tmp_path / "ddp")
    _assert_same_run(tmp_path / "fsdp", tmp_path / "ddp")


@pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None,
                    reason="deepspeed is not installed (pip install 'paretoalign[deepspeed]')")
@pytest.mark.parametrize("stage, atol, resume_precision", [(2, 0.0, "bf16"), (3, 1e-5, "no")], ids=["zero2", "zero3"])
def test_deepspeed_zero_trains_what_ddp_does_and_resumes_exactly(stage, atol, resume_precision, ddp_pama, tmp_path):
    """ZeRO-2 (optimizer state split, weights whole): bit for bit; ZeRO-3 (weights split too): within rounding.
    The checkpoints hold the whole state in DDP's files, and a stopped run goes on exactly: ZeRO-2's in bf16,
    where DeepSpeed would rebuild its fp32 copy from the module's bf16 weights (measured 3e-5 off without
    sharding.prepare's restore)."""
    full = tmp_path / "full"
    _launch(f"zero{stage}", PAMA, full)
    _assert_same_run(full, ddp_pama, atol=atol)
    first = list(PAMA)
    first[first.index("--max-steps") + 1] = "1"
    if resume_precision != "no":
        full = tmp_path / f"full-{resume_precision}"
        _launch(f"zero{stage}", PAMA, full, resume_precision)
    resumed = tmp_path / "resumed"
    _launch(f"zero{stage}", first, resumed, resume_precision)
    _launch(f"zero{stage}", [*PAMA, "--resume"], resumed, resume_precision)
    _assert_same_run(resumed, full)  # bit for bit


# ---------------------------------------------------------------------------------------------------------
# in one process: refusals, the adapter file, the layouts


def _fsdp_accelerator(version=1):
    from accelerate.utils import DistributedType

    plugin = SimpleNamespace(fsdp_version=version, use_orig_params=True)
    return SimpleNamespace(distributed_type=DistributedType.FSDP, state=SimpleNamespace(fsdp_plugin=plugin),
                           is_main_process=True, num_processes=2, process_index=0, device=torch.device("cpu"))


@pytest.mark.parametrize("argv, what", [
    (["train", "--config", "examples/pama_tiny.yaml", "--method", "mgda-ub"], "MGDA-UB"),
    (["train", "--config", "examples/cgpo_tiny.yaml"], "CGPO"),
    (["train", "--config", "examples/amopo_tiny.yaml", "--method", "modpo", "--objectives", "better,safer"], "MODPO"),
    (["train", "--config", "examples/mopo_tiny.yaml", "--pairs", PAIRS, "--objectives", "better,safer"], "MOPO"),
    (["front", "--config", "examples/front_tiny.yaml"], "paretoalign front"),
], ids=["mgda-ub", "cgpo", "modpo", "mopo", "front"])
def test_what_fsdp_does_not_run_yet_is_refused_before_the_run_folder(argv, what, tmp_path, monkeypatch, capsys):
    import accelerate

    from paretoalign.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(accelerate, "Accelerator", lambda *a, **k: _fsdp_accelerator())
    out = tmp_path / "run"
    assert main([*argv, "--output-dir", str(out), "--progress", "false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {what} does not run under FSDP yet ("), err
    assert "examples/accelerate/ddp.yaml" in err[0] and not out.exists()


def test_under_deepspeed_the_same_methods_are_refused_naming_it(tmp_path, monkeypatch, capsys):
    import accelerate
    from accelerate.utils import DistributedType

    from paretoalign.cli import main

    fake = SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, is_main_process=True, num_processes=2,
                           process_index=0, device=torch.device("cpu"),
                           state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=2)))
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(accelerate, "Accelerator", lambda *a, **k: fake)
    out = tmp_path / "run"
    assert main(["train", "--config", "examples/cgpo_tiny.yaml", "--output-dir", str(out), "--progress", "false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: CGPO does not run under DeepSpeed yet (") and "\n" not in err and not out.exists()


def test_refusals_and_the_generation_backend_check_only_act_when_sharded():
    from accelerate.utils import DistributedType

    from paretoalign.errors import ConfigError
    from paretoalign.trainers import sharding

    ddp = SimpleNamespace(distributed_type="MULTI_GPU")
    sharding.refuse(ddp, "X", "y")
    sharding.check_config(_fsdp_accelerator(), SimpleNamespace(generation_backend="hf", use_lora=False))
    with pytest.raises(ConfigError, match=r"^--generation-backend vllm does not run under FSDP yet"):
        sharding.check_config(_fsdp_accelerator(2), SimpleNamespace(generation_backend="vllm", use_lora=True))
    zero = {k: SimpleNamespace(distributed_type=DistributedType.DEEPSPEED,
                               state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=k))) for k in (2, 3)}
    sharding.check_config(zero[2], SimpleNamespace(generation_backend="hf", use_lora=False))
    sharding.check_config(zero[3], SimpleNamespace(generation_backend="hf", use_lora=True))
    with pytest.raises(ConfigError, match=r"^full fine-tuning \(--use-lora false\) does not run under DeepSpeed ZeRO-3"):
        sharding.check_config(zero[3], SimpleNamespace(generation_backend="hf", use_lora=False))
    assert sharding.fsdp_version(ddp) is None and sharding.fsdp_version(_fsdp_accelerator(2)) == 2
    assert sharding.zero_stage(ddp) is None and sharding.zero_stage(_fsdp_accelerator()) is None
    with sharding.full_weights(ddp, None):  # nothing to gather
        pass


def test_the_adapter_file_written_from_a_state_is_the_one_peft_writes(tmp_path):
    """FSDP1 hides the adapter from PEFT's own pick (module names with _fsdp_wrapped_module inside), so the
    adapter file is written from the gathered state: it must be PEFT's file, name for name."""
    from paretoalign.models import build_tiny_model, build_tiny_tokenizer
    from paretoalign.trainers.adaptation import add_lora
    from paretoalign.trainers.sharding import save_pretrained

    tok = build_tiny_tokenizer()
    policy = add_lora(build_tiny_model(tok), SimpleNamespace(lora_r=4, lora_alpha=8, lora_dropout=0.0,
                                                             lora_target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_()
    policy.save_pretrained(tmp_path / "peft")
    save_pretrained(policy, tmp_path / "ours", policy.state_dict())
    a, b = load_file(tmp_path / "peft" / "adapter_model.safetensors"), load_file(tmp_path / "ours" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and len(a) == 12
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["r"] == 4


def test_a_full_model_from_a_state_is_saved_once_per_tied_weight(tmp_path):
    from paretoalign.models import build_tiny_model
    from paretoalign.trainers.sharding import _tied_output_key, save_pretrained

    model = build_tiny_model()  # tied input and output embeddings
    assert _tied_output_key(model) == "lm_head.weight"
    state = {k: v.clone() for k, v in model.state_dict().items()}  # a gathered state holds both names
    assert "lm_head.weight" in state
    model.save_pretrained(tmp_path / "plain")
    save_pretrained(model, tmp_path / "ours", state)
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "ours" / "model.safetensors")
    assert a.keys() == b.keys() and "lm_head.weight" not in b
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_without_fsdp_states_are_the_optimizers_own_and_parts_strip_their_prefix():
    from paretoalign.trainers import sharding

    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones(2)
    opt.step()
    ddp = SimpleNamespace(distributed_type="MULTI_GPU")
    assert sharding.model_state(ddp, None) is None and sharding.part(None, "policy.") is None
    state = sharding.optimizer_state(ddp, None, opt)
    assert torch.equal(state["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    sharding.load_optimizer_state(ddp, None, opt, state)
    assert sharding.part({"policy.a.b": 1, "value_head.w": 2}, "policy.") == {"a.b": 1}
