"""Losses as pure tensor functions (tensors in, tensors out); trainers only orchestrate.

- :mod:`.ppo`: PPO/Noon-PPO surrogates, GAE, KL estimators; :mod:`.online`: the online methods' losses (PAMA, MORLHF, MGDA-UB).
- :mod:`.dpo`, :mod:`.modpo`, :mod:`.mopo`, :mod:`.amopo`, :mod:`.mapl`: the offline preference methods
  (:mod:`.mapl` also gives reward models their response-conditioned Bradley-Terry loss).
"""

from paretoalign.losses.amopo import (
    amopo_adaptive_weights,
    amopo_dimension_losses,
    amopo_loss,
    amopo_weight_softmax,
    average_logps,
    token_probability_stats,
)
from paretoalign.losses.dpo import dpo_loss, implicit_reward
from paretoalign.losses.mapl import mapl_inter_loss, mapl_intra_loss, normaliser_diagnostic, rc_bt_loss
from paretoalign.losses.modpo import check_modpo_weights, modpo_loss
from paretoalign.losses.mopo import (
    dual_step,
    effective_sample_fraction,
    expected_under_target,
    mopo_log_ratio,
    mopo_policy_loss,
    mopo_weights,
    pairwise_win_probabilities,
    robust_chi_step,
    robust_win_probabilities,
    win_probabilities,
)
from paretoalign.losses.ppo import (
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
    "gae", "kl_k3", "masked_mean", "noon_clip", "ppo_surrogate", "surrogate_slope", "token_rewards", "value_loss",
    "whiten",
    "dpo_loss", "implicit_reward", "modpo_loss", "check_modpo_weights",
    "pairwise_win_probabilities", "win_probabilities", "robust_win_probabilities", "mopo_log_ratio", "mopo_weights",
    "effective_sample_fraction", "mopo_policy_loss", "expected_under_target", "dual_step", "robust_chi_step",
    "average_logps", "amopo_dimension_losses", "token_probability_stats", "amopo_adaptive_weights", "amopo_loss", "amopo_weight_softmax",
    "mapl_intra_loss", "mapl_inter_loss", "normaliser_diagnostic", "rc_bt_loss",
]
