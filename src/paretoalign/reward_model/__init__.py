"""Multi-objective reward models (ArmoRM's two stages): per-objective heads on frozen features, a
prompt-conditioned gate over the objectives, verbosity debiasing.  See :mod:`.armo` for the maths."""

from paretoalign.lazy import lazy_exports

# The reference code's ridge grid (ArmoRM stage 1); here so that RewardModelConfig's default needs no torch.
RIDGE_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)

# Resolved on first use (paretoalign.lazy): importing the package never pulls in torch.
_EXPORTS = {
    "GatingNetwork": "paretoalign.reward_model.armo",
    "bradley_terry_loss": "paretoalign.reward_model.armo",
    "debias": "paretoalign.reward_model.armo",
    "debias_lambdas": "paretoalign.reward_model.armo",
    "fit_ridge_heads": "paretoalign.reward_model.armo",
    "gating_weights": "paretoalign.reward_model.armo",
    "moe_score": "paretoalign.reward_model.armo",
    "ridge_solve": "paretoalign.reward_model.armo",
    "scale_ratings": "paretoalign.reward_model.armo",
    "spearman": "paretoalign.reward_model.armo",
    "FeatureExtractor": "paretoalign.reward_model.features",
    "MultiObjectiveRewardModel": "paretoalign.reward_model.model",
    "RewardOutput": "paretoalign.reward_model.model",
    "is_reward_model_folder": "paretoalign.reward_model.model",
}


__getattr__ = lazy_exports(globals(), _EXPORTS)


__all__ = ["GatingNetwork", "bradley_terry_loss", "debias", "debias_lambdas", "fit_ridge_heads", "gating_weights",
           "moe_score", "ridge_solve", "scale_ratings", "spearman", "FeatureExtractor", "MultiObjectiveRewardModel",
           "RewardOutput", "is_reward_model_folder"]
