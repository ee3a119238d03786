"""The packed decode loop samples exactly the model's distribution and matches ``generate``."""

import pytest
import torch

from paretoalign.decoding import packed_decoder, sample_categorical, unsupported_reason
from paretoalign.models import build_tiny_model, build_tiny_tokenizer
from paretoalign.rollout import completion_mask_from_ids, generate, token_logprobs

PROMPTS = ["hello there friend", "hi", "a much longer prompt about the weather today", "hi"]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _lora(model, seed=0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    m = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "up_proj",
                                                              "down_proj"]))
    for mod in m.modules():  # non-zero adapters: the packed weights must include them
        if hasattr(mod, "lora_B"):
            for lin in mod.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=0.5)
    return m


def _qwen2(tok):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(1)
    m = Qwen2ForCausalLM(cfg)
    for layer in m.model.layers:  # Qwen2's q/k/v biases, non-zero
        for p in (layer.self_attn.q_proj.bias, layer.self_attn.k_proj.bias, layer.self_attn.v_proj.bias):
            torch.nn.init.normal_(p, std=0.3)
    return m


def _encode(tok, prompts):
    return tok(prompts, return_tensors="pt", padding=True, padding_side="left")


def _teacher_forced_logps(model, out, attention_mask, temperature=1.0):
    P = attention_mask.shape[1]
    am = torch.cat([attention_mask, torch.ones_like(out[:, P:])], 1)
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=out, attention_mask=am, position_ids=pos).logits
    return token_logprobs(logits[:, P - 1 : -1], out[:, P:], temperature)


@pytest.mark.parametrize("kind", ["llama", "llama+lora", "qwen2"])
def test_sampled_tokens_carry_the_models_own_log_probabilities(tok, kind):
    model = {"llama": lambda: build_tiny_model(tok, num_layers=3), "llama+lora": lambda: _lora(build_tiny_model(tok)),
             "qwen2": lambda: _qwen2(tok)}[kind]().eval()
    enc = _encode(tok, PROMPTS)  # left padding, and a repeated prompt (shared prefill)
    dec = packed_decoder(model)
    assert dec is not None
    torch.manual_seed(0)
    out, logps = dec.generate(enc["input_ids"], enc["attention_mask"], 12, tok.eos_token_id, tok.pad_token_id,
                              temperature=0.7, return_logprobs=True)
    P = enc["input_ids"].shape[1]
    live = completion_mask_from_ids(out[:, P:], tok.eos_token_id, tok.pad_token_id).bool()  # up to each EOS
    want = _teacher_forced_logps(model, out, enc["attention_mask"], 0.7)
    torch.testing.assert_close(logps[live], want[live], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lora", [False, True])
def test_greedy_decoding_equals_generate_token_for_token(tok, lora):
    model = (_lora(build_tiny_model(tok)) if lora else build_tiny_model(tok, num_layers=3)).eval()
    enc = _encode(tok, PROMPTS)
    want = model.generate(**enc, max_new_tokens=16, min_new_tokens=3, do_sample=False,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    got = packed_decoder(model).generate(enc["input_ids"], enc["attention_mask"], 16, tok.eos_token_id,
                                         tok.pad_token_id, min_new_tokens=3, do_sample=False)
    assert torch.equal(got, want)
    # rows of one prompt decode alike: the shared prefill is copied to each
    assert torch.equal(got[1], got[3])


def test_rollouts_of_both_backends_agree_under_greedy_decoding_and_ends(tok):
    model = _lora(build_tiny_model(tok))
    a = generate(model, tok, PROMPTS, num_generations=2, max_new_tokens=10, do_sample=False, backend="hf")
    b = generate(model, tok, PROMPTS, num_generations=2, max_new_tokens=10, do_sample=False, backend="hf-generate")
    assert a.completions == b.completions
    assert torch.equal(a.completion_mask, b.completion_mask) and torch.equal(a.input_ids, b.input_ids)
    with pytest.raises(ValueError, match="unknown generation backend 'vllm2'"):
        generate(model, tok, PROMPTS, backend="vllm2")


def test_packed_weights_follow_updates_and_never_touch_the_model(tok):
    model = _lora(build_tiny_model(tok))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    enc = _encode(tok, PROMPTS[:2])
    dec = packed_decoder(model)

    def greedy():
        return dec.generate(enc["input_ids"], enc["attention_mask"], 8, tok.eos_token_id, tok.pad_token_id,
                            do_sample=False)

    first = greedy()
    for n, p in model.named_parameters():  # no merge, no restore: nothing was written
        assert torch.equal(before[n], p), n
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5.0)
    loss = -model(**enc).logits[:, -1, 7].sum()
    loss.backward()
    opt.step()
    assert packed_decoder(model) is dec  # same structure: the packing is refreshed, not rebuilt
    want = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id)
    assert torch.equal(greedy(), want) and not torch.equal(first, want)
    with model.disable_adapter():  # adapters off: the base model's tokens
        base = model.generate(**enc, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id,
                              eos_token_id=tok.eos_token_id)
        assert torch.equal(packed_decoder(model).generate(
            enc["input_ids"], enc["attention_mask"], 8, tok.eos_token_id, tok.pad_token_id, do_sample=False), base)


def test_top_p_matches_transformers_warper():
    from transformers.generation.logits_process import TopPLogitsWarper

    from paretoalign.decoding import _top_p

    torch.manual_seed(0)
    logits = torch.randn(5, 40) * 3
    for p in (0.1, 0.5, 0.9, 0.999):
        assert torch.equal(_top_p(logits, p), TopPLogitsWarper(p)(None, logits.clone()))


@pytest.mark.parametrize("block", [256, 2])  # one level (V <= block) and two levels with a padded last block
def test_inverse_cdf_sampling_draws_the_given_distribution(block):
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.15, 0.05], [0.0, 0.0, 0.0, 0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    n = 200_000
    draws = sample_categorical(probs.repeat(n // 2, 1), generator=g, block=block).view(n // 2, 2)
    freq = torch.stack([torch.bincount(draws[:, i], minlength=5).float() / (n // 2) for i in range(2)])
    assert freq[0, 1] == 0 and freq[1, :4].sum() == 0  # zero probability: never drawn
    # 4 standard errors of a binomial frequency at n/2 draws
    se = (probs * (1 - probs) / (n // 2)).sqrt()
    assert ((freq - probs).abs() <= 4 * se + 1e-12).all(), (freq, probs)
    unnormalised = sample_categorical(torch.tensor([[2.0, 0.0, 6.0]]).repeat(40_000, 1), generator=g, block=block)
    assert abs(float((unnormalised == 2).float().mean()) - 0.75) < 0.01


def test_two_level_inverse_cdf_picks_what_the_full_cumulative_sum_picks():
    # the same uniforms give the same indices as one float64 cumsum over the whole row
    torch.manual_seed(0)
    probs = (torch.randn(64, 1000) * 3).softmax(-1)
    probs[:, 300:600] = 0  # whole zero blocks, and zeros inside blocks
    probs[:, ::7] = 0
    got = sample_categorical(probs, generator=torch.Generator().manual_seed(3), block=64)
    u = torch.rand(64, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    cdf = probs.cumsum(-1, dtype=torch.float64)
    want = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    assert torch.equal(got, want)
    assert (probs[torch.arange(64), got] > 0).all()


def test_mkl_prepacked_decode_equals_plain_matmuls(tok):
    # on a CPU with MKL the decode steps run on prepacked weights; the tokens and log-probs are the plain path's
    from paretoalign.decoding import PackedDecoder, _mkl_packing_available

    model = _lora(build_tiny_model(tok)).eval()
    enc = _encode(tok, PROMPTS)
    dec = packed_decoder(model)

    def run(pack):
        PackedDecoder.mkl_pack = pack
        try:
            torch.manual_seed(0)
            return dec.generate(enc["input_ids"], enc["attention_mask"], 12, tok.eos_token_id, tok.pad_token_id,
                                temperature=0.7, return_logprobs=True)
        finally:
            PackedDecoder.mkl_pack = True

    plain, packed = run(False), run(True)
    assert (dec.head.packed is not None) == _mkl_packing_available()
    if dec.head.packed is not None:
        assert dec.head.packed[0] == len(PROMPTS)
    assert torch.equal(plain[0], packed[0])
    torch.testing.assert_close(plain[1], packed[1], rtol=1e-5, atol=1e-5)
    if _mkl_packing_available():  # [out, in] layout: the unadapted output layer is the model's tensor, uncopied,
        lm = model.get_base_model()  # and a fused LoRA block is rebuilt in its own buffer after an update
        assert dec.head.weight.data_ptr() == lm.lm_head.weight.data_ptr()
        qkv = dec.layers[0]["qkv"]
        ptr = qkv.weight.data_ptr()
        with torch.no_grad():
            lm.model.layers[0].self_attn.q_proj.lora_B["default"].weight.add_(0.1)
        run(True)
        assert qkv.weight.data_ptr() == ptr and qkv.packed is not None


def test_architectures_it_does_not_cover_fall_back_to_generate(tok):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=128,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    assert packed_decoder(gpt2) is None and "not a Llama-style" in unsupported_reason(gpt2)
    torch.manual_seed(0)
    r = generate(gpt2, tok, ["a cat"], num_generations=2, max_new_tokens=4)
    assert len(r.completions) == 2
    llama = build_tiny_model(tok)
    llama.generation_config.repetition_penalty = 1.3  # a processor the loop does not reproduce
    assert packed_decoder(llama) is None and "repetition_penalty" in unsupported_reason(llama)


@pytest.mark.parametrize("lora", [False, True])
def test_the_fixed_shape_step_samples_what_the_sliced_step_samples(tok, lora):
    """The CUDA-graph step's eager form (whole cache, masked; index writes) equals attention over the filled
    cache: same tokens from the same seed, same log-probs.  On a GPU, tests/test_cuda.py checks the graph."""
    model = (_lora(build_tiny_model(tok)) if lora else build_tiny_model(tok, num_layers=3)).eval()
    enc = _encode(tok, PROMPTS)
    dec = packed_decoder(model)
    runs = {}
    for step in ("sliced", "static"):
        torch.manual_seed(0)
        runs[step] = dec.generate(enc["input_ids"], enc["attention_mask"], 12, tok.eos_token_id, tok.pad_token_id,
                                  min_new_tokens=2, temperature=0.8, return_logprobs=True, step=step)
    assert torch.equal(runs["static"][0], runs["sliced"][0])
    torch.testing.assert_close(runs["static"][1], runs["sliced"][1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="step must be"):
        dec.generate(enc["input_ids"], enc["attention_mask"], 2, tok.eos_token_id, tok.pad_token_id, step="fast")


def test_layout_without_mkl_packing_is_the_plain_in_out_one(tok, monkeypatch):
    # where MKL packing does not apply (CUDA, non-MKL builds) blocks keep [in, out] contiguous weights, no packed copy
    import paretoalign.decoding as decoding

    monkeypatch.setattr(decoding, "_mkl_packing_available", lambda: False)
    model = _lora(build_tiny_model(tok)).eval()
    enc = _encode(tok, PROMPTS)
    dec = decoding.PackedDecoder(decoding._inner(model))
    got = dec.generate(enc["input_ids"], enc["attention_mask"], 10, tok.eos_token_id, tok.pad_token_id,
                       do_sample=False)
    want = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=tok.pad_token_id,
                          eos_token_id=tok.eos_token_id)
    assert torch.equal(got, want)
    blocks = list(dec._blocks())
    assert all(b.packed is None and b.weight_t.is_contiguous() for b in blocks)


def test_a_model_that_sampled_is_freed_with_its_packed_weights(tok):
    """The packed decoders are cached weakly by model; a decoder that held its model kept every model that ever
    sampled alive (a front sweep or bench/pama_table.py ran out of memory: 1.8 GB per SmolLM2 trainer)."""
    import gc
    import weakref

    from paretoalign import decoding
    from paretoalign.rollout import generate

    gc.collect()  # models earlier tests left behind go first
    before = len(decoding._DECODERS)
    model = build_tiny_model(tok)
    generate(model, tok, ["hello there"], num_generations=2, max_new_tokens=3)
    assert len(decoding._DECODERS) == before + 1
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None and len(decoding._DECODERS) == before
