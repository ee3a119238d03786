"""The CUDA path: the packed decode loop and a trainer's update on a GPU.  Skipped where no CUDA device is
visible (CI has none); ``scripts/gpu_check.sh`` runs this file on a GPU machine first."""

import pytest
import torch

from paretoalign.decoding import packed_decoder
from paretoalign.models import build_tiny_model, build_tiny_tokenizer
from paretoalign.rollout import completion_mask_from_ids, token_logprobs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

PROMPTS = ["hello there friend", "hi", "a much longer prompt about the weather today", "hi"]
OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=6, progress=False,
            learning_rate=1e-2, method="pama", advantage="group", kl_coef=0.1, max_steps=1)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _lora(model):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    m = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj",
                                                              "down_proj"]))
    for mod in m.modules():  # non-zero adapters, so the packed weights must include them
        if hasattr(mod, "lora_B"):
            for lin in mod.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=0.5)
    return m


def _encode(tok, device):
    enc = tok(PROMPTS, return_tensors="pt", padding=True, padding_side="left")
    return {k: v.to(device) for k, v in enc.items()}


@pytest.mark.parametrize("lora", [False, True])
@pytest.mark.parametrize("step", ["graph", "sliced"])
def test_packed_decoding_on_cuda_carries_the_models_log_probabilities(tok, lora, step):
    model = build_tiny_model(tok, num_layers=3)
    model = (_lora(model) if lora else model).to("cuda").eval()
    enc = _encode(tok, "cuda")
    torch.manual_seed(0)
    out, logps = packed_decoder(model).generate(enc["input_ids"], enc["attention_mask"], 12, tok.eos_token_id,
                                                tok.pad_token_id, temperature=0.7, return_logprobs=True, step=step)
    assert out.device.type == "cuda" and logps.device.type == "cuda"
    P = enc["input_ids"].shape[1]
    am = torch.cat([enc["attention_mask"], torch.ones_like(out[:, P:])], 1)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=am, position_ids=(am.cumsum(-1) - 1).clamp(min=0)).logits
    want = token_logprobs(logits[:, P - 1:-1], out[:, P:], 0.7)
    live = completion_mask_from_ids(out[:, P:], tok.eos_token_id, tok.pad_token_id).bool()
    torch.testing.assert_close(logps[live], want[live], rtol=1e-3, atol=1e-3)


def test_packed_greedy_on_cuda_equals_generate(tok, monkeypatch):
    import paretoalign.decoding as decoding

    model = _lora(build_tiny_model(tok)).to("cuda").eval()
    enc = _encode(tok, "cuda")
    want = model.generate(**enc, max_new_tokens=16, min_new_tokens=3, do_sample=False,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    captures = []
    monkeypatch.setattr(decoding._FixedStep, "__init__", lambda self, *a, _init=decoding._FixedStep.__init__, **kw:
                        captures.append(kw.get("capture")) or _init(self, *a, **kw))
    got = packed_decoder(model).generate(enc["input_ids"], enc["attention_mask"], 16, tok.eos_token_id,
                                         tok.pad_token_id, min_new_tokens=3, do_sample=False)
    assert captures == [True]  # "auto" on CUDA is the CUDA graph
    assert torch.equal(got, want)
    # a second call (new caches, a new graph) after the weights change follows them
    with torch.no_grad():
        model.base_model.model.model.norm.weight.mul_(-1)
    want = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id)
    got = packed_decoder(model).generate(enc["input_ids"], enc["attention_mask"], 8, tok.eos_token_id,
                                         tok.pad_token_id, do_sample=False)
    assert torch.equal(got, want)


@pytest.mark.parametrize("use_lora", [True, False])
def test_an_update_on_cuda_with_gradient_checkpointing_equals_one_without(one_update, use_lora, fresh_accelerate_state,
                                                                          monkeypatch):
    monkeypatch.setenv("PARETOALIGN_SHARED_PROMPTS", "0")  # as checkpointed models run (see test_precision.py)
    plain, row, want = one_update(FAST, "plain", use_lora=use_lora)
    assert next(plain.unwrapped.policy.parameters()).device.type == "cuda"
    _, row_ckpt, got = one_update(FAST, "ckpt", use_lora=use_lora, gradient_checkpointing=True)
    assert row_ckpt["loss"] == pytest.approx(row["loss"], rel=1e-4, abs=1e-6)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_update_on_cuda(one_update, precision, fresh_accelerate_state):
    trainer, row, params = one_update(FAST, precision, mixed_precision=precision)
    assert trainer.accelerator.mixed_precision == precision
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in params.values())
    assert all(torch.isfinite(p).all() for p in params.values())
    assert torch.isfinite(torch.tensor(row["loss"]))


def test_a_short_run_on_cuda_saves_a_model_that_loads(tmp_path, fresh_accelerate_state):
    from transformers import AutoModelForCausalLM

    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    out = tmp_path / "run"
    OnlineTrainer(OnlineConfig(**{**FAST, "max_steps": 2, "use_lora": False}, output_dir=str(out))).train()
    model = AutoModelForCausalLM.from_pretrained(out / "final" / "policy")  # full fine-tuning: a whole model
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_shared_prompts_on_cuda_equal_full_rows_with_gradients(tok, monkeypatch):
    from paretoalign.models import SHARED_PROMPTS_ENV, completion_logits

    model = _lora(build_tiny_model(tok, num_layers=3)).to("cuda")
    enc = _encode(tok, "cuda")  # PROMPTS repeats "hi": rows 1 and 3 share a prompt
    g = torch.Generator(device="cuda").manual_seed(0)
    completion = torch.randint(3, len(tok), (4, 5), device="cuda", generator=g)
    ids = torch.cat([enc["input_ids"], completion], 1)
    mask = torch.cat([enc["attention_mask"], torch.ones_like(completion)], 1)
    P = enc["input_ids"].shape[1]
    results = []
    for shared in ("1", "0"):
        monkeypatch.setenv(SHARED_PROMPTS_ENV, shared)
        model.zero_grad()
        logits = completion_logits(model, ids, mask, P)
        logits.float().square().mean().backward()
        results.append((logits.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-5)
