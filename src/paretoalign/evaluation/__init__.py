"""Evaluation: generate on held-out prompts with fixed seeds and score every objective."""

from paretoalign.evaluation.scoring import evaluate_policy, summarize_scores

__all__ = ["evaluate_policy", "summarize_scores"]
