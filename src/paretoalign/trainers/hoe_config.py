"""Configuration of HoE's router training: ``paretoalign train --method hoe``.

The online options (generation, scoring, PPO/GRPO updates) are :class:`OnlineConfig`'s; HoE adds where its
experts come from, the anchors (one router each), the Tchebycheff reference point, the mirror-descent step
and the gates' temperature.  Every field's ``help`` is the documentation shown by ``paretoalign train --help``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from paretoalign.config_utils import field, split_list
from paretoalign.errors import ConfigError
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.options import METHOD, MODEL, OPTIMISATION

HOE = "HoE: experts, anchors and routers"


@dataclass
class HoEConfig(OnlineConfig):
    """Options of ``paretoalign train --method hoe`` (the online options plus HoE's own)."""

    FAMILY = "experts"

    method: str = field("hoe", help="'hoe': routers over frozen LoRA experts, one per anchor preference, trained "
                        "on a Tchebycheff scalarisation with mirror-descent weights.", group=METHOD)
    use_lora: bool = field(False, help="Not used by hoe (its only trainable parameters are the routers).", group=MODEL)
    advantage: Optional[Literal["gae", "group"]] = field(
        None, help="'gae' (value heads, GAE) or 'group' (critic-free group baselines). Default: 'group' for hoe (only "
        "router parameters train), 'gae' for pama/morlhf/mgda-ub, 'group' for mo-grpo.")
    learning_rate: float = field(1e-3, help="AdamW learning rate (hoe: the routers', freshly initialised; the "
                                 "online methods' LoRA: 1e-4).", group=OPTIMISATION)

    # --- experts ------------------------------------------------------------------------------------
    experts: Optional[str] = field(None, help="An experts folder of `paretoalign experts extract` (or an HoE run), "
                                   "its experts in objective order.", group=HOE)
    endpoints: Optional[list] = field(None, help="Instead of --experts: one single-objective endpoint per objective, "
                                      "in --objectives order, e.g. sentiment=runs/a,length=runs/b (run, adapter or "
                                      "model folders of --model), extracted now.", group=HOE)
    expert_rank: str = field("8", help="--endpoints: the experts' rank, an integer or 'energy:x' (the smallest rank "
                             "per layer keeping a fraction x of the delta's squared singular values).", group=HOE)
    expert_targets: Optional[list] = field(None, help="--endpoints: module names that get experts (default: every "
                                           "2-D weight but the embeddings and the output layer).", group=HOE)
    shared_deltas: Literal["keep", "drop"] = field(
        "keep", help="--endpoints: parameters that moved but get no expert (norms, biases, embeddings): keep them as "
        "dense shared deltas (mixed with the preference) or drop them.", group=HOE)
    merged_experts: bool = field(False, help="Add one merged expert per interior anchor (task arithmetic of the "
                                 "experts with the anchor's weights, then SVD to --expert-rank).", group=HOE)

    # --- routers ------------------------------------------------------------------------------------
    anchors: Optional[list] = field(None, help="The anchor preferences, one router each, e.g. '1,0;0.5,0.5;0,1' "
                                    "(default: the simplex's vertices and its centre). A preference is served by "
                                    "mixing the routers of the anchors around it.", group=HOE)
    gate_temperature: float = field(1.0, help="Temperature T of the gates softmax(router(h) / T).", group=HOE)
    router_init: Literal["anchor", "uniform"] = field(
        "anchor", help="'anchor': each router starts as its anchor's soup of the experts (gates = the anchor's "
        "weights); 'uniform': gates 1/E.", group=HOE)

    # --- Tchebycheff with online mirror descent ------------------------------------------------------
    tchebycheff_reference: Optional[list] = field(
        None, help="The reference point z of max min_k a_k (J_k - z_k), one value per objective (oriented: larger is "
        "better). Default: the base model's mean score minus --reference-margin standard deviations.", group=HOE)
    reference_margin: float = field(0.1, help="Default z: the base model's mean minus this many standard deviations "
                                    "of its scores, per objective.", group=HOE)
    reference_prompts: int = field(16, help="Default z: training prompts the base model answers to measure it.",
                                   group=HOE)
    omd_step_size: float = field(0.5, help="Step eta of the dual update u_k <- u_k exp(-eta a_k (J_k - z_k)) "
                                 "(normalised), once per router step on the batch's mean rewards.", group=HOE)

    def __post_init__(self):
        if self.advantage is None:
            self.advantage = "group"  # only the routers train: no value heads unless asked for
        super().__post_init__()
        if self.use_lora:
            raise ConfigError("--method hoe trains routers over frozen experts; it puts no LoRA adapter on the "
                              "policy (drop --use-lora)")
        if self.weights is not None:
            raise ConfigError("--method hoe trains one router per anchor: give --anchors, not --weights")
        if self.experts and self.endpoints:
            raise ConfigError("give the experts once: --experts DIR or --endpoints name=RUN,..., not both")
        from paretoalign.experts import check_anchors, default_anchors, parse_endpoint_list, parse_expert_rank

        if self.endpoints is not None:
            self.endpoints = split_list(self.endpoints)
            pairs = parse_endpoint_list(self.endpoints)
            if len(pairs) != len(self.objectives):
                raise ConfigError(f"--endpoints: {len(pairs)} endpoints for {len(self.objectives)} objectives; give one "
                                  "single-objective endpoint per objective, in --objectives order")
        self.expert_rank = str(parse_expert_rank(self.expert_rank))
        if self.expert_targets is not None:
            self.expert_targets = split_list(self.expert_targets)
        k = len(self.objectives)
        self.anchors = default_anchors(k) if self.anchors is None else check_anchors(self.anchors, k)
        if self.tchebycheff_reference is not None:
            try:
                z = [float(x) for x in split_list(self.tchebycheff_reference)]
            except (TypeError, ValueError):
                raise ConfigError(f"--tchebycheff-reference {self.tchebycheff_reference!r}: expected numbers") from None
            if len(z) != k or not all(math.isfinite(x) for x in z):
                raise ConfigError(f"--tchebycheff-reference {z}: expected {k} finite numbers, one per objective")
            self.tchebycheff_reference = z
        for name, ok in (("gate_temperature", self.gate_temperature > 0), ("omd_step_size", self.omd_step_size > 0),
                         ("reference_margin", self.reference_margin >= 0), ("reference_prompts", self.reference_prompts >= 1)):
            if not ok:
                bound = ">= 0" if name == "reference_margin" else ">= 1" if name == "reference_prompts" else "> 0"
                raise ConfigError(f"option {name}: must be {bound}, got {getattr(self, name)!r}")

    @property
    def linear(self) -> bool:
        return True  # the policy step ascends sum_k u_k a_k A_k: linear weights set every step
