"""What the trainers share about adapting a policy and ordering its data.

- :func:`add_lora`: the PEFT LoRA wrapper every trainer puts on its policy (``use_lora`` and the
  ``lora_*`` options of :class:`paretoalign.trainers.options.LoraOptions`).
- :func:`epoch_indices`: the seeded order in which a trainer walks its data (prompts, pairs): epochs
  of permutations that depend on (seed, epoch) only, so any step of any process can be recomputed
  and a resumed run sees exactly the data it would have.
"""

from __future__ import annotations

import numpy as np


def add_lora(policy, cfg):
    """``policy`` wrapped with LoRA adapters as ``cfg`` says (``lora_r``, ``lora_alpha``,
    ``lora_dropout``, ``lora_target_modules``); a policy that is already a PEFT model is returned as is."""
    if hasattr(policy, "peft_config"):
        return policy
    from peft import LoraConfig, get_peft_model

    return get_peft_model(policy, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                             target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM"))


def epoch_indices(seed: int, n: int, start: int, count: int) -> list[int]:
    """Positions ``start .. start + count - 1`` of the endless sequence of seeded permutations of
    ``range(n)`` (epoch e is ``default_rng([seed, e]).permutation(n)``)."""
    perms: dict[int, np.ndarray] = {}
    out = []
    for i in range(start, start + count):
        epoch, pos = divmod(i, n)
        if epoch not in perms:
            perms[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        out.append(int(perms[epoch][pos]))
    return out
