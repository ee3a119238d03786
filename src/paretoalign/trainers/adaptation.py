"""What the trainers share about adapting a policy and ordering its data.

- :class:`LoraOptions`: the LoRA options of the trainer configs (a mixin).
- :func:`add_lora`: the PEFT LoRA wrapper every trainer puts on its policy (``use_lora`` and the
  ``lora_*`` options of the configs).
- :func:`epoch_indices`: the seeded order in which a trainer walks its data (prompts, pairs): epochs
  of permutations that depend on (seed, epoch) only, so any step of any process can be recomputed
  and a resumed run sees exactly the data it would have.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from paretoalign.config_utils import field, split_list


@dataclass
class LoraOptions:
    """The LoRA options every trainer config shares (a mixin: the CLI lists them after a config's own)."""

    use_lora: bool = field(True, help="Train LoRA adapters (PEFT) instead of all weights.")
    lora_r: int = field(16, help="LoRA rank.")
    lora_alpha: int = field(32, help="LoRA alpha.")
    lora_dropout: float = field(0.0, help="LoRA dropout.")
    lora_target_modules: list = field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], help="Module names LoRA adapts.")

    def check_lora(self) -> None:
        self.lora_target_modules = split_list(self.lora_target_modules)


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
