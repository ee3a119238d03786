"""Checkpoints and final models, shared by every trainer (online and offline).

A checkpoint is ``checkpoints/step-NNNNNN/`` holding ``policy/`` (LoRA adapter or full model, loadable
with ``from_pretrained``), optional extra tensors (value heads, dual variables), ``optimizer.pt``,
one ``rng_state_<process>.pt`` per process and, written last, ``trainer_state.json``: a folder
without it is incomplete and ignored on resume (a kill mid-save loses nothing).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from paretoalign import run_dir
from paretoalign.models import build_tiny_model


def checkpoint_dir(out: Path, step: int) -> Path:
    return Path(out) / run_dir.CHECKPOINTS / f"step-{step:06d}"


def save_checkpoint(acc, out: Path, step: int, save_model: Callable[[Path], None], optimizer,
                    save_total_limit: int, extra_state: dict | None = None) -> Path:
    """Write a complete checkpoint at ``step`` (every process must call this)."""
    ckpt = checkpoint_dir(out, step)
    acc.wait_for_everyone()
    if acc.is_main_process:
        ckpt.mkdir(parents=True, exist_ok=True)
        save_model(ckpt)
        torch.save(optimizer.state_dict(), ckpt / "optimizer.pt")
    acc.wait_for_everyone()
    rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    torch.save(rng, ckpt / f"rng_state_{acc.process_index}.pt")
    acc.wait_for_everyone()
    if acc.is_main_process:
        state = {"step": step, "num_processes": acc.num_processes, **(extra_state or {})}
        (ckpt / run_dir.STATE_FILE).write_text(json.dumps(state))
        run_dir.prune_checkpoints(out, save_total_limit)
    acc.wait_for_everyone()
    return ckpt


def read_state(ckpt: Path) -> dict:
    return json.loads((Path(ckpt) / run_dir.STATE_FILE).read_text())


def load_policy_state(policy, folder: Path) -> None:
    """Load the weights saved by ``policy.save_pretrained(folder)`` into ``policy`` in place."""
    if hasattr(policy, "peft_config"):
        from peft import set_peft_model_state_dict
        from peft.utils import load_peft_weights

        set_peft_model_state_dict(policy, load_peft_weights(str(folder), device="cpu"))
    else:
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=next(policy.parameters()).dtype)
        policy.load_state_dict(loaded.state_dict())


def load_optimizer(optimizer, ckpt: Path) -> None:
    optimizer.load_state_dict(torch.load(Path(ckpt) / "optimizer.pt", map_location="cpu", weights_only=False))


def load_rng(acc, ckpt: Path, fallback_seed: int) -> None:
    """Restore this process's RNG states; resumed with another process count: reseed deterministically."""
    f = Path(ckpt) / f"rng_state_{acc.process_index}.pt"
    if not f.is_file():
        torch.manual_seed(fallback_seed)
        return
    rng = torch.load(f, weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])


def save_final(acc, out: Path, save_model: Callable[[Path], None], tokenizer, policy, meta: dict,
               rebuild_tiny_base_seed: int | None = None) -> Path:
    """``final/``: the policy (adapter or full model) loadable with from_pretrained, its tokenizer,
    and ``paretoalign.json``.  ``rebuild_tiny_base_seed``: the in-memory tiny base the adapter was
    trained on is rebuilt from this seed and saved, so the adapter can be loaded back."""
    final = Path(out) / "final"
    acc.wait_for_everyone()
    if acc.is_main_process:
        final.mkdir(parents=True, exist_ok=True)
        save_model(final)
        tokenizer.save_pretrained(final / "policy")
        if rebuild_tiny_base_seed is not None and hasattr(policy, "peft_config"):
            base = build_tiny_model(tokenizer, seed=rebuild_tiny_base_seed)
            base.save_pretrained(final / "base")
            tokenizer.save_pretrained(final / "base")
            cfg_file = final / "policy" / "adapter_config.json"
            adapter_cfg = json.loads(cfg_file.read_text())
            adapter_cfg["base_model_name_or_path"] = str((final / "base").resolve())
            cfg_file.write_text(json.dumps(adapter_cfg, indent=2))
        (final / "paretoalign.json").write_text(json.dumps({**meta, "lora": bool(hasattr(policy, "peft_config"))},
                                                           indent=2))
    acc.wait_for_everyone()
    return final
