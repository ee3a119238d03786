"""Losses as pure tensor functions (tensors in, tensors out); trainers only orchestrate."""

from paretoalign.losses.noon_ppo import (
    gae,
    kl_k3,
    masked_mean,
    noon_clip,
    ppo_surrogate,
    surrogate_slope,
    token_rewards,
    value_loss,
    whiten,
)

__all__ = [
    "gae",
    "kl_k3",
    "masked_mean",
    "noon_clip",
    "ppo_surrogate",
    "surrogate_slope",
    "token_rewards",
    "value_loss",
    "whiten",
]
