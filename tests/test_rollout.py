import pytest
import torch

from paretoalign import rollout as rollout_module
from paretoalign.models import build_tiny_model, build_tiny_tokenizer
from paretoalign.rollout import completion_mask_from_ids, generate, lora_merged, render_prompt, token_logprobs


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def lora_model(tok):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    m = get_peft_model(build_tiny_model(tok), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    for mod in m.modules():  # non-zero adapters so merging changes the weights
        if hasattr(mod, "lora_B"):
            for lin in mod.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=0.5)
    return m


def test_completion_mask_stops_after_first_eos():
    ids = torch.tensor([[5, 6, 2, 7, 2], [5, 5, 5, 5, 5], [2, 9, 9, 9, 9]])
    m = completion_mask_from_ids(ids, eos_token_id=2, pad_token_id=0)
    assert m.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]


@pytest.fixture(params=["one block", "blocks of 3 rows"])
def blocks(request, monkeypatch):
    """token_logprobs works through the logits a few rows at a time on a CPU (about 2 MB a block):
    the small test vocabularies fit one block, so also run each test with 3-row blocks, the last ragged."""
    if request.param != "one block":
        monkeypatch.setattr(rollout_module, "_block_rows", lambda vocab: 3)
    return request.param


def test_token_logprobs_match_log_softmax_gather(blocks):
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    ids = torch.randint(0, 11, (2, 6))
    got = token_logprobs(logits[:, 2:5], ids[:, 3:], temperature=0.5)
    want = torch.log_softmax(logits[:, 2:5] / 0.5, -1).gather(2, ids[:, 3:].unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_gradient_is_autograds(temperature, blocks):
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 7, (2, 5))
    weights = torch.randn(2, 5, dtype=torch.float64)
    (token_logprobs(logits, ids, temperature) * weights).sum().backward()
    fused = logits.grad.clone()
    logits.grad = None
    want = torch.log_softmax(logits / temperature, -1).gather(2, ids.unsqueeze(-1)).squeeze(-1)
    (want * weights).sum().backward()
    torch.testing.assert_close(fused, logits.grad)
    assert torch.autograd.gradcheck(lambda x: token_logprobs(x, ids, temperature), (logits,))

def test_token_logprobs_bfloat16_logits_compute_in_float32(blocks):
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 9).to(torch.bfloat16).requires_grad_()
    ids = torch.randint(0, 9, (3, 4))
    weights = torch.randn(3, 4)
    got = token_logprobs(logits, ids, 0.7)
    assert got.dtype == torch.float32
    (got * weights).sum().backward()
    ref = logits.detach().float().requires_grad_()
    want = torch.log_softmax(ref / 0.7, -1).gather(2, ids.unsqueeze(-1)).squeeze(-1)
    (want * weights).sum().backward()
    torch.testing.assert_close(got, want)
    assert logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(logits.grad.float(), ref.grad, atol=1e-2, rtol=1e-2)


def test_generate_groups_completions_and_masks(tok):
    model = build_tiny_model(tok)
    torch.manual_seed(0)
    r = generate(model, tok, ["a cat", "a dog"], num_generations=3, max_new_tokens=5)
    assert len(r.completions) == 6 and r.prompt_texts == ["a cat"] * 3 + ["a dog"] * 3
    assert r.completion_mask.shape == (6, r.input_ids.shape[1] - r.prompt_length)
    assert r.attention_mask.shape == r.input_ids.shape
    r2 = generate(model, tok, ["a cat"], num_generations=2, max_new_tokens=6, min_new_tokens=6)
    assert r2.completion_mask.sum(1).tolist() == [6, 6]


def test_render_prompt_uses_chat_template_and_system_prompt(tok):
    text = render_prompt("hello", tok, system_prompt="be kind")
    assert text.startswith("<|im_start|>system\nbe kind<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert render_prompt("hello", tok, use_chat_template=False) == "hello"
    conv = [{"role": "user", "content": "hi"}]
    assert "<|im_start|>user\nhi<|im_end|>" in render_prompt(conv, tok)


def test_lora_merge_for_generation_is_exact_and_restores_weights(tok):
    m = lora_model(tok)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    ids = tok(["the weather today"], return_tensors="pt")
    with torch.no_grad():
        unmerged = m(**ids).logits
        with lora_merged(m):
            merged = m(**ids).logits
            assert any(not torch.equal(before[n], p) for n, p in m.named_parameters() if "base_layer" in n)
    torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)
    for n, p in m.named_parameters():
        assert torch.equal(before[n], p), f"{n} changed after restore"
    assert not any(getattr(mod, "merged", False) for mod in m.modules())
    a = generate(m, tok, ["rain"], max_new_tokens=6, do_sample=False, merge_lora=True)
    b = generate(m, tok, ["rain"], max_new_tokens=6, do_sample=False, merge_lora=False)
    assert a.completions == b.completions
