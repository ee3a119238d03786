"""Fixtures for the objective tests: a tiny random reward model and a user module of reward functions.

Nothing here touches the network: the tokenizer is trained in-process with ``tokenizers`` and the
model is built from a config with random weights.
"""

from __future__ import annotations

import itertools
import textwrap

import pytest

_counter = itertools.count()

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "I love this movie, it was wonderful and fun.",
    "This is terrible; I hate it and want my money back.",
    "How do I bake bread at home? Mix flour, water, yeast and salt.",
    "Please help me write a polite email to my neighbour. Thank you!",
] * 20


def make_tokenizer(vocab_size: int = 300, chat_template: str | None = None):
    """A byte-level BPE tokenizer of a few hundred tokens, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat_template:
        fast.chat_template = chat_template
    return fast


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>[{{ m['role'] }}] {{ m['content'] }}</s>{% endfor %}"
)


def make_reward_model(folder, num_labels: int = 2, chat_template: str | None = None, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = make_tokenizer(chat_template=chat_template)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                      num_labels=num_labels, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(cfg).eval()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_rm(tmp_path_factory):
    """Folder of a random 2-layer Llama reward model with 2 outputs, without a chat template."""
    return make_reward_model(tmp_path_factory.mktemp("rm") / "tiny-rm")


@pytest.fixture(scope="session")
def tiny_chat_rm(tmp_path_factory):
    """The same kind of model, with a tokenizer that has a chat template."""
    return make_reward_model(tmp_path_factory.mktemp("rm") / "tiny-chat-rm", chat_template=CHAT_TEMPLATE)


USER_MODULE = '''
import math
import torch

LIMIT = 3  # not callable

def n_chars(prompts, completions):
    return [float(len(c)) for c in completions]

def scaled(prompts, completions, alpha=1.0):
    return torch.tensor([alpha * len(c) for c in completions])

def nan_for_bad(prompts, completions):
    return [math.nan if "bad" in c else 1.0 for c in completions]

def inf_for_bad(prompts, completions):
    return [-math.inf if "bad" in c else 1.0 for c in completions]

def none_for_bad(prompts, completions):
    return [None if "bad" in c else 2.0 for c in completions]

def too_few(prompts, completions):
    return [1.0] * (len(completions) - 1)

def one_number(prompts, completions):
    return 0.5

def words(prompts, completions):
    return ["high" for c in completions]
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """The module name of a fresh copy of USER_MODULE, importable from sys.path."""
    name = f"pa_user_rewards_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(USER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name
