"""Given (prompt, response) texts -> tokens in the rollout layout -> response log-probabilities.

The offline methods score responses they did not sample (preference pairs); the layout is the one
:func:`paretoalign.rollout.generate` produces (prompts rendered with the chat template and
left-padded to a common length P, responses after them, right-padded, ending with EOS), so the
same :func:`~paretoalign.models.completion_logits` path computes their log-probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from paretoalign.models import completion_logits
from paretoalign.rollout import render_prompt, token_logprobs


@dataclass
class ResponseBatch:
    input_ids: torch.Tensor  # [N, P + T]
    attention_mask: torch.Tensor  # [N, P + T]
    response_mask: torch.Tensor  # [N, T]: 1 on response tokens (EOS included)
    prompt_length: int  # P

    def to(self, device) -> "ResponseBatch":
        return ResponseBatch(self.input_ids.to(device), self.attention_mask.to(device),
                             self.response_mask.to(device), self.prompt_length)

    def select(self, idx) -> "ResponseBatch":
        return ResponseBatch(self.input_ids[idx], self.attention_mask[idx], self.response_mask[idx],
                             self.prompt_length)


def encode_responses(tokenizer, prompts: list, responses: list[str], max_prompt_length: int = 256,
                     max_response_length: int = 256, use_chat_template: bool = True,
                     system_prompt: str | None = None, prompt_texts: list[str] | None = None) -> ResponseBatch:
    """Tokenise ``prompts[i]`` (rendered like generation does, unless ``prompt_texts`` gives the rendered
    strings) followed by ``responses[i]`` + EOS.  Prompts are truncated from the left, responses
    from the right (EOS kept)."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts for {len(responses)} responses")
    texts = prompt_texts or [render_prompt(p, tokenizer, use_chat_template, system_prompt) for p in prompts]
    pad = tokenizer.pad_token_id
    eos = tokenizer.eos_token_id
    p_ids = [tokenizer(t, add_special_tokens=False)["input_ids"][-max_prompt_length:] for t in texts]
    r_ids = [tokenizer(r, add_special_tokens=False)["input_ids"][: max_response_length - 1] + [eos]
             for r in responses]
    P = max(len(x) for x in p_ids)
    T = max(len(x) for x in r_ids)
    n = len(texts)
    ids = torch.full((n, P + T), pad, dtype=torch.long)
    attn = torch.zeros((n, P + T), dtype=torch.long)
    rmask = torch.zeros((n, T), dtype=torch.long)
    for i, (p, r) in enumerate(zip(p_ids, r_ids)):
        ids[i, P - len(p) : P] = torch.tensor(p, dtype=torch.long)
        ids[i, P : P + len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, P - len(p) : P + len(r)] = 1
        rmask[i, : len(r)] = 1
    return ResponseBatch(ids, attn, rmask, P)


def response_token_logps(model, batch: ResponseBatch) -> torch.Tensor:
    """Per-token log-probabilities ``[N, T]`` of the responses (0 where ``response_mask`` is 0)."""
    logits = completion_logits(model, batch.input_ids, batch.attention_mask, batch.prompt_length)
    logp = token_logprobs(logits, batch.input_ids[:, batch.prompt_length :])
    return logp * batch.response_mask.to(logp.dtype)
