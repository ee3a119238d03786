import os

import pytest
import torch

from paretoalign.errors import ModelNotFoundError
from paretoalign.models import (
    MultiValueHead,
    PolicyWithValueHeads,
    build_tiny_model,
    build_tiny_tokenizer,
    completion_logits,
    load_causal_lm,
    load_tokenizer,
    resolve_model_path,
)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def test_tiny_tokenizer_round_trips_text_and_has_chat_template(tok):
    text = "Write a cheerful note about rain."
    assert tok.decode(tok(text)["input_ids"]) == text
    assert 200 < len(tok) <= 512
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token is not None


def test_tiny_model_is_deterministic_per_seed(tok):
    a, b, c = build_tiny_model(tok, seed=0), build_tiny_model(tok, seed=0), build_tiny_model(tok, seed=1)
    pa, pb, pc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.config.num_hidden_layers == 2 and a.config.hidden_size == 64


def test_multi_value_head_has_one_independent_head_per_objective():
    head = MultiValueHead(8, 3)
    h = torch.randn(2, 5, 8)
    out = head(h)
    assert out.shape == (2, 5, 3)
    # head k only depends on row k of the packed weight
    loss = out[..., 1].sum()
    loss.backward()
    assert torch.all(head.linear.weight.grad[[0, 2]] == 0)
    assert torch.any(head.linear.weight.grad[1] != 0)


def test_policy_with_value_heads_returns_completion_positions_wired_to_the_shared_representation(tok):
    model = PolicyWithValueHeads(build_tiny_model(tok), num_objectives=2)
    ids = torch.randint(0, len(tok), (3, 7))
    mask = torch.ones_like(ids)
    logits, hidden, values = model(ids, mask, prompt_length=3)
    assert logits.shape == (3, 4, len(tok))  # positions 2..5 predict tokens 3..6
    assert hidden.shape == (3, 4, 64) and values.shape == (3, 4, 2)
    full = model.policy(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(logits, full[:, 2:6])
    torch.testing.assert_close(completion_logits(model.policy, ids, mask, 3), full[:, 2:6])
    # MGDA-UB differentiates the loss w.r.t. this representation: it must be the logits' ancestor
    (g,) = torch.autograd.grad(logits.sum(), hidden)
    assert g.abs().sum() > 0
    assert PolicyWithValueHeads(build_tiny_model(tok), 2, with_values=False)(ids, mask, 3)[2] is None


def test_missing_model_gives_one_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a local folder.*smollm2-135m-instruct.*local Hugging Face cache"):
        resolve_model_path("no-such-org/no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="neither config.json nor adapter_config.json"):
        load_causal_lm(str(empty))


def test_local_folder_round_trip(tmp_path, tok):
    model = build_tiny_model(tok, seed=3)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded = load_causal_lm(str(tmp_path / "m"))
    assert torch.equal(next(loaded.parameters()), next(model.parameters()))
    t2 = load_tokenizer(str(tmp_path / "m"))
    assert t2.padding_side == "left" and len(t2) == len(tok)


def test_a_batch_that_cannot_fit_is_refused_before_any_model_loads(monkeypatch):
    from paretoalign.errors import ConfigError
    from paretoalign.models import check_batch_fits, kv_bytes_per_token, logit_bytes_per_token

    assert kv_bytes_per_token("tiny") == 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads of 16, float32
    assert logit_bytes_per_token(100) == 800
    monkeypatch.setattr("paretoalign.models.memory_bytes", lambda device=None: 2**30)
    check_batch_fits(16, 64, 1024, "--batch-size")  # 1 MiB of 1 GiB: fine
    with pytest.raises(ConfigError, match=r"--batch-size: 100000 sequences of up to 300 tokens need at least 29 GiB"
                                          r".*this machine has 1 GiB; lower the batch size"):
        check_batch_fits(100_000, 300, 1024, "--batch-size")


def test_kv_bytes_come_from_the_config_without_reading_weights(tmp_path):
    import json

    from paretoalign.models import kv_bytes_per_token

    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 9, "num_key_value_heads": 3,
                                                      "num_hidden_layers": 30, "hidden_size": 576}))
    assert kv_bytes_per_token(str(tmp_path)) == 2 * 30 * 3 * 64 * 4  # SmolLM2-135M's shape
    (tmp_path / "config.json").write_text("{not json")
    assert kv_bytes_per_token(str(tmp_path)) == 0  # unknown: no bound rather than a wrong one


def test_allow_download_fetches_a_hub_model_online_for_that_call_only(monkeypatch, tmp_path):
    """The CLI runs with HF_HUB_OFFLINE=1; --allow-download must still reach the Hub (the hub client reads
    the variable at import, so it is switched in its constants), for the download call only, and never
    fetch pickled weights."""
    import huggingface_hub
    from huggingface_hub import constants

    from paretoalign import models

    seen = []

    def fake_snapshot(name, local_files_only=False, ignore_patterns=None, **kw):
        if local_files_only:
            raise FileNotFoundError("not cached")
        seen.append((name, constants.HF_HUB_OFFLINE, os.environ.get("HF_HUB_OFFLINE"), ignore_patterns))
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert models.resolve_model_path("someone/some-model", allow_download=True) == str(tmp_path)
    (name, offline_const, offline_env, ignored), = seen
    assert name == "someone/some-model" and offline_const is False and offline_env == "0"
    assert "*.bin" in ignored and "*.pt" in ignored
    assert constants.HF_HUB_OFFLINE is True and os.environ["HF_HUB_OFFLINE"] == "1"  # restored
    with pytest.raises(models.ModelNotFoundError, match="--allow-download"):
        models.resolve_model_path("someone/some-model", allow_download=False)


# ---- rows that share a prompt run it once ------------------------------------------------------
@pytest.fixture
def grouped_batch(tok):
    """A LoRA policy and a batch as the online trainer builds it: 3 prompts of different lengths (left
    padding) x 3 completions, rows of one prompt not all adjacent, one completion ended early (EOS, then
    masked padding)."""
    from peft import LoraConfig, get_peft_model

    policy = get_peft_model(build_tiny_model(tok, seed=3), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    for m in policy.modules():  # non-zero adapters, so LoRA's path and its gradients are exercised
        if hasattr(m, "lora_B"):
            for lin in m.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=0.2)
    enc = tok(["a cat sat on the mat", "dogs", "the weather is nice today, is it not"], padding=True, return_tensors="pt")
    P = enc["input_ids"].shape[1]
    order = torch.tensor([0, 1, 0, 2, 1, 2, 0, 2, 1])
    g = torch.Generator().manual_seed(0)
    completion = torch.randint(3, len(tok), (9, 6), generator=g)
    cmask = torch.ones_like(completion)
    completion[4, 2], cmask[4, 3:] = tok.eos_token_id, 0
    ids = torch.cat([enc["input_ids"][order], completion], 1)
    mask = torch.cat([enc["attention_mask"][order], cmask], 1)
    return policy, ids, mask, P


def _value_and_lora_grads(policy, fn):
    policy.zero_grad()
    out = fn()
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.requires_grad}


def _embedding_calls(policy):
    shapes = []
    handle = policy.get_input_embeddings().register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    return shapes, handle


@pytest.mark.parametrize("what", ["logits", "hidden states"])
def test_shared_prompts_run_once_and_equal_the_full_forward_with_gradients(grouped_batch, monkeypatch, what):
    from paretoalign.models import SHARED_PROMPTS_ENV, completion_hidden_states

    policy, ids, mask, P = grouped_batch
    T = ids.shape[1] - P
    fn = completion_logits if what == "logits" else completion_hidden_states
    shapes, handle = _embedding_calls(policy)
    shared, shared_grads = _value_and_lora_grads(policy, lambda: fn(policy, ids, mask, P))
    # one pass over the 3 distinct prompts but their last token, then the 9 rows' last prompt token + completion
    assert shapes == [(3, P - 1), (9, T)]
    shapes.clear()
    monkeypatch.setenv(SHARED_PROMPTS_ENV, "0")
    full, full_grads = _value_and_lora_grads(policy, lambda: fn(policy, ids, mask, P))
    handle.remove()
    assert shapes == [(9, P + T)]
    assert shared.shape == full.shape == ((9, T, policy.config.vocab_size) if what == "logits" else (9, T, 64))
    torch.testing.assert_close(shared, full, atol=1e-5, rtol=1e-5)
    assert shared_grads.keys() == full_grads.keys() and len(full_grads) == 12  # 3 projections x A, B x 2 layers
    for name in full_grads:
        assert full_grads[name].abs().sum() > 0, name
        torch.testing.assert_close(shared_grads[name], full_grads[name], atol=1e-4, rtol=1e-4)


def test_policy_with_value_heads_shares_prompts_too(grouped_batch, monkeypatch):
    from paretoalign.models import SHARED_PROMPTS_ENV

    policy, ids, mask, P = grouped_batch
    model = PolicyWithValueHeads(policy, num_objectives=2)
    torch.nn.init.normal_(model.value_head.linear.weight)
    shared = model(ids, mask, P)
    monkeypatch.setenv(SHARED_PROMPTS_ENV, "0")
    full = model(ids, mask, P)
    for a, b in zip(shared, full):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_prompt_groups_finds_the_first_row_of_each_distinct_prompt():
    from paretoalign.models import prompt_groups

    ids = torch.tensor([[0, 5, 6, 9], [7, 7, 7, 9], [0, 5, 6, 1], [0, 5, 6, 2], [7, 7, 7, 3]])
    mask = torch.ones_like(ids)
    first, inverse = prompt_groups(ids, mask, 3)
    assert [first[i].item() for i in inverse] == [0, 1, 0, 0, 1]
    assert prompt_groups(ids, mask, 4) is None  # every row distinct over 4 positions
    # the same ids with another padding mask are another prompt
    mask2 = mask.clone()
    mask2[2, 0] = 0
    first, inverse = prompt_groups(ids, mask2, 3)
    assert len(first) == 3 and inverse[2] != inverse[0] and inverse[3] == inverse[0]


@pytest.mark.parametrize("case", ["distinct prompts", "gradient checkpointing", "one-token prompt", "switched off"])
def test_shared_prompts_fall_back_to_the_full_forward(grouped_batch, monkeypatch, case):
    from paretoalign.models import SHARED_PROMPTS_ENV

    policy, ids, mask, P = grouped_batch
    if case == "distinct prompts":
        ids, mask = ids[:2], mask[:2]  # rows 0 and 1 have different prompts
    elif case == "gradient checkpointing":
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        policy.train()
    elif case == "one-token prompt":
        ids, mask, P = ids[:, P - 1 :], mask[:, P - 1 :], 1
    else:
        monkeypatch.setenv(SHARED_PROMPTS_ENV, "0")
    shapes, handle = _embedding_calls(policy)
    logits = completion_logits(policy, ids, mask, P)
    handle.remove()
    assert shapes == [tuple(ids.shape)] and logits.shape[:2] == (ids.shape[0], ids.shape[1] - P)


def test_release_memory_collects_and_trims_the_heap(monkeypatch):
    """release_memory frees what is unreachable and hands glibc's kept heap back (malloc_trim(0)); where there is
    no glibc it still collects, and says nothing."""
    import gc
    import weakref

    from paretoalign import models

    calls = []
    monkeypatch.setattr(models, "_malloc_trim", lambda: (lambda pad: calls.append(pad) or 1))

    class Cycle:
        pass

    a, b = Cycle(), Cycle()
    a.other, b.other = b, a  # only the cycle collector frees these
    gone = weakref.ref(a)
    del a, b
    gc.disable()
    try:
        models.release_memory()
    finally:
        gc.enable()
    assert gone() is None and calls == [0]
    monkeypatch.setattr(models, "_malloc_trim", lambda: None)
    models.release_memory()  # no glibc: nothing to trim, no error
    if __import__("sys").platform.startswith("linux"):
        import ctypes.util

        if ctypes.util.find_library("c") and "musl" not in (ctypes.util.find_library("c") or ""):
            monkeypatch.undo()
            assert models._malloc_trim() is not None  # the real one, on this glibc system
