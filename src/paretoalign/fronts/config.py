"""The options of ``paretoalign front`` (:class:`FrontConfig`), apart from the sweep that runs them
(:mod:`.sweep`) so that the command line builds its parser without importing torch or numpy."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import field, split_list
from paretoalign.errors import ConfigError

__all__ = ["FRONT_SETS", "FrontConfig"]

# Training options the sweep sets itself (one run per preference).
FRONT_SETS = ("method", "weights", "output_dir", "resume", "overwrite", "normalize_weights")


@dataclass
class FrontConfig:
    """Options of ``paretoalign front`` (training options are those of ``paretoalign train``)."""

    method: list = field(["pama"], help="Method(s) to sweep, comma-separated (e.g. pama,morlhf,mgda-ub): several give "
                         "one comparison. 'rs' (Rewarded Soups) trains one endpoint per objective once and merges them "
                         "per preference (it takes the training options of --endpoint-method, so rs,morlhf is one "
                         "comparison).")
    preferences: str = field(
        "grid:5",
        help="Preference vectors: 'grid:N' (N per simplex edge; Das-Dennis for K>=3), 'random:N' (seeded), "
        "or an explicit list '0.2,0.8;0.5,0.5'.",
    )
    output_dir: str = field("fronts/front", help="Front folder (one run folder per preference inside).")
    label: Optional[str] = field(None, help="Name of the front in plots and tables (default: the method).")
    include_base: bool = field(True, help="Evaluate the base model on the same prompts and show it as a point.")
    reference_point: Optional[list] = field(
        None, help="Hypervolume reference point in each objective's units (default: automatic, recorded in front.json).",
    )
    reference_front: Optional[str] = field(
        None, help="A JSON file of known optimal points [[...K...], ...] (or a front.json): adds IGD and IGD+.",
    )
    endpoint_method: str = field(
        "morlhf", help="rs, mod: the method that trains each endpoint on one objective (one-hot weights), with the training "
        "options given here: any online or offline method that takes weights (morlhf, mo-grpo, pama, mgda-ub, dpo, "
        "modpo, amopo).")
    endpoints: Optional[list] = field(
        None, help="rs, mod: endpoints already trained, one per objective in the order of --objectives: 'RUN,RUN' or "
        "'name=RUN,...' (run folders, adapter or model folders of one base); nothing is trained then.")
    merge_mode: Literal["delta", "factors"] = field(
        "delta", help="rs: 'delta' (the paper's weighted sum of the endpoints' deltas, exact) or 'factors' (the "
        "reference code's averaging of LoRA factors; not the paper's formula).")
    merge_rank: Optional[str] = field(
        None, help="rs with LoRA endpoints: each point is an adapter of this rank: 'exact' (default: the endpoints' "
        "ranks concatenated, no error) or R (truncated SVD; the error is in each point's merge.json).")
    mod_divergence: str = field(
        "reverse_kl", help="mod: how the endpoints' next-token distributions are combined at a preference: 'reverse_kl' "
        "(weighted log-probabilities), 'forward_kl' or 'alpha:A' (the paper's closed forms; see paretoalign.mod).")
    eval_num_prompts: Optional[int] = field(None, help="Evaluate on the first N held-out prompts (default: all).")
    eval_max_new_tokens: Optional[int] = field(None, help="Evaluation completion length (default: the training one).")
    eval_temperature: float = field(0.7, help="Evaluation sampling temperature.")
    eval_seed: int = field(1234, help="Evaluation generation seed.")
    eval_batch_size: int = field(64, help="Evaluation generation batch size (the default of `paretoalign evaluate`: "
                                 "samples depend on seed and batch size, so a point equals `evaluate` on its run).")
    num_samples: int = field(5, help="Sample completions per point kept in front.json and the report.")
    resume: bool = field(False, help="Continue the sweep in --output-dir (finished points are skipped).")
    overwrite: bool = field(False, help="Delete an existing front in --output-dir and start over.")
    report: bool = field(True, help="Write the plots and report.html.")
    screenshot: bool = field(False, help="Also render report.html to report.png with headless Chromium.")

    def __post_init__(self):
        self.method = split_list(self.method)
        if not self.method:
            raise ConfigError("--method needs at least one method")
        if len(set(self.method)) != len(self.method):
            raise ConfigError(f"--method lists a method twice: {self.method}")
        if self.reference_point is not None:
            try:
                self.reference_point = [float(x) for x in split_list(self.reference_point)]
            except (TypeError, ValueError):
                raise ConfigError(f"reference_point must be numbers; got {self.reference_point!r}") from None
            if not all(math.isfinite(x) for x in self.reference_point):
                raise ConfigError(f"reference_point must be finite numbers; got {self.reference_point}")
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other; pick one")
        if self.endpoints is not None:
            self.endpoints = split_list(self.endpoints)
            if not self.endpoints:
                raise ConfigError("--endpoints is empty: give one endpoint per objective, or leave it out to train them")
        if self.merge_rank is not None:
            text = str(self.merge_rank).strip().lower()
            if text != "exact" and not (text.isdigit() and int(text) >= 1):
                raise ConfigError(f"--merge-rank {self.merge_rank!r}: expected 'exact' or a positive integer")
            self.merge_rank = text if text == "exact" else int(text)
            if self.merge_mode == "factors":
                raise ConfigError("--merge-rank applies to --merge-mode delta (factors mode keeps the endpoints' rank)")
