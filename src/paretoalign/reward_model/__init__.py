"""Multi-objective reward models (ArmoRM's two stages): per-objective heads on frozen features, a
prompt-conditioned gate over the objectives, verbosity debiasing.  See :mod:`.armo` for the maths."""

from paretoalign.reward_model.armo import (
    GatingNetwork,
    bradley_terry_loss,
    debias,
    debias_lambdas,
    fit_ridge_heads,
    gating_weights,
    moe_score,
    ridge_solve,
    scale_ratings,
    spearman,
)
from paretoalign.reward_model.features import FeatureExtractor
from paretoalign.reward_model.model import MultiObjectiveRewardModel, RewardOutput, is_reward_model_folder

__all__ = ["GatingNetwork", "bradley_terry_loss", "debias", "debias_lambdas", "fit_ridge_heads", "gating_weights",
           "moe_score", "ridge_solve", "scale_ratings", "spearman", "FeatureExtractor", "MultiObjectiveRewardModel",
           "RewardOutput", "is_reward_model_folder"]
