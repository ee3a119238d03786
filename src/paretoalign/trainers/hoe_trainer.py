"""HoE's router training (``paretoalign train --method hoe``): one router per anchor preference over frozen
LoRA experts, each trained by the online trainer on a Tchebycheff scalarisation whose weights follow online
mirror descent.

Li et al. 2025, *Multi-objective Large Language Model Alignment with Hierarchical Experts* (arXiv 2505.20925):
routers trained with the backbone frozen, on Tchebycheff with OMD weights [P, as secondary summaries report
it].  The loop below is the HoE-lite reconstruction of ``specs/next-methods.md`` §5.2 [R]:

* the experts come from ``--experts`` (a folder of ``paretoalign experts extract``) or are extracted now
  from ``--endpoints`` (:mod:`paretoalign.experts`), expert k standing for objective k;
* the base model (``--model``) gets routed layers (:class:`paretoalign.experts.RoutedLoraModel`); the
  routers are the only trainable parameters (plus value heads with ``--advantage gae``);
* steps go round robin over the anchors: step s trains router m = (s − 1) mod M, so ``--max-steps`` counts
  the steps of all routers together, and every router sees the same learning-rate schedule shape;
* a router step is the online trainer's step with linear weights c_k ∝ u_k a_k on the per-objective
  signals (:func:`paretoalign.combiners.tchebycheff_policy_weights`); after it, the anchor's dual u moves
  by u_k ∝ u_k exp(−η a_k (J_k − z_k)) with J the batch's mean rewards
  (:func:`paretoalign.combiners.tchebycheff_dual_update`): more weight on the objective furthest behind;
* z (``--tchebycheff-reference``) defaults to the base model's mean score minus ``--reference-margin``
  standard deviations on ``--reference-prompts`` training prompts (measured once, with its own seed);
* the KL reference (``--kl-coef`` > 0) is the routed model as it started (with ``--router-init anchor``:
  the anchor's soup of the experts), routed by the same anchor.

Checkpoints hold the routers (``routers.safetensors``), the optimizer, the RNG states and, in
``trainer_state.json``, the duals and z, so a resumed run continues exactly.  ``final/`` is an HoE folder
(:func:`paretoalign.experts.save_hoe`: experts, routers, anchors, base) plus ``paretoalign.json``;
:func:`paretoalign.experts.load_hoe` loads the run, steerable by ``set_preference(λ)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from paretoalign import run_dir
from paretoalign.combiners import tchebycheff_dual_update, tchebycheff_policy_weights
from paretoalign.errors import ConfigError, RunDirError
from paretoalign.experts import (
    ARXIV,
    PAPER,
    ROUTERS_FILE,
    RoutedLoraModel,
    check_same_base,
    extract_experts,
    load_base,
    load_experts,
    load_router_state_dict,
    merge_experts,
)
from paretoalign.models import load_tokenizer
from paretoalign.rollout import generate
from paretoalign.trainers import checkpoint as ckpt_lib
from paretoalign.trainers.hoe_config import HoEConfig
from paretoalign.trainers.online_trainer import OnlineTrainer

STATE_KEY = "hoe"  # the duals and z, in a checkpoint's trainer_state.json


class HoETrainer(OnlineTrainer):
    """Trains HoE's routers through :class:`OnlineTrainer` (same arguments; ``model``: the base model)."""

    sharded_refusal = ("HoE", "its routers and experts are read and saved outside the sharded model")

    def __init__(self, config: HoEConfig, model=None, tokenizer=None, objectives=None, prompts=None, accelerator=None):
        cfg = config
        if not cfg.experts and not cfg.endpoints:
            raise ConfigError("--method hoe needs its experts: --experts DIR (from `paretoalign experts extract`) or "
                              "--endpoints name=RUN,... (one single-objective endpoint per objective, extracted now)")
        tok = tokenizer or load_tokenizer(cfg.model, cfg.allow_download)
        base_model, base_ref = load_base(model if model is not None else cfg.model, tok, cfg.seed, cfg.allow_download)
        k = len(cfg.objectives)
        if cfg.experts:
            experts, rec, _ = load_experts(cfg.experts)
            check_same_base(rec, base_ref, f"--experts {cfg.experts}")
        else:
            experts, _, _ = extract_experts(cfg.endpoints, None, cfg.expert_rank, cfg.expert_targets, cfg.shared_deltas,
                                            cfg.allow_download, tok, base_pair=(base_model, base_ref),
                                            progress=print)
        for e in experts:
            if e.objective_weights is None or len(e.objective_weights) != k:
                n = None if e.objective_weights is None else len(e.objective_weights)
                raise ConfigError(f"expert {e.name!r} stands for {n} objectives, --objectives has {k}: give one "
                                  "single-objective expert per objective, in --objectives order")
        if cfg.merged_experts:
            singles = experts[:k]
            for a in cfg.anchors:
                if sum(1 for x in a if x > 0) > 1:
                    experts.append(merge_experts(singles, a, cfg.expert_rank, "anchor " + ",".join(f"{x:g}" for x in a)))
        self.hoe = RoutedLoraModel(base_model, experts, cfg.anchors, cfg.gate_temperature, cfg.router_init, None, tok,
                                   base_ref=base_ref)
        self.hoe.use_router(0)
        super().__init__(cfg, model=base_model, tokenizer=tok, objectives=objectives, prompts=prompts,
                         accelerator=accelerator)
        self.hoe.objectives = list(self.names)
        self.anchor_weights = torch.tensor(cfg.anchors, dtype=torch.float64)
        M = len(cfg.anchors)
        if self.resume_from is not None:
            state = ckpt_lib.read_state(self.resume_from).get(STATE_KEY)
            if not isinstance(state, dict) or "dual" not in state or "reference" not in state:
                raise RunDirError(f"{self.resume_from / run_dir.STATE_FILE}: the HoE duals are missing; the run cannot "
                                  "continue exactly; start over with --overwrite")
            self.dual = torch.tensor(state["dual"], dtype=torch.float64)
            self.reference = torch.tensor(state["reference"], dtype=torch.float64)
        else:
            self.dual = torch.full((M, self.K), 1.0 / self.K, dtype=torch.float64)
            z = cfg.tchebycheff_reference
            self.reference = torch.tensor(z, dtype=torch.float64) if z is not None else self.base_reference()
            if self.accelerator.is_main_process:
                print(f"[hoe] reference point z: {dict(zip(self.names, [round(x, 4) for x in self.reference.tolist()]))}")

    # ------------------------------------------------------------------------------------------
    def base_reference(self) -> torch.Tensor:
        """z = the base model's mean score minus ``reference_margin`` standard deviations, per objective, on the
        first ``reference_prompts`` training prompts (zero gates: W_0 only; its own seed, the run's RNG untouched)."""
        cfg = self.config
        prompts = self.prompts[: cfg.reference_prompts]
        mode = dict(self.hoe.mode)
        self.hoe.set_gates([0.0] * len(self.hoe.experts))
        try:
            with torch.random.fork_rng(devices=[self.accelerator.device] if self.accelerator.device.type == "cuda" else []):
                torch.manual_seed(cfg.seed)
                r = generate(self.unwrapped.policy, self.tokenizer, prompts, num_generations=cfg.num_generations,
                             max_new_tokens=cfg.max_new_tokens, max_prompt_length=cfg.max_prompt_length,
                             min_new_tokens=cfg.min_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                             use_chat_template=cfg.use_chat_template, system_prompt=cfg.system_prompt,
                             backend=cfg.generation_backend)
                scores, valid = self.objectives.rewards(r.prompt_texts, r.completions)
        finally:
            self.hoe.set_router_mixture(mode["mixture"]) if "mixture" in mode else self.hoe.set_gates(mode["gates"])
        s = scores.double()[valid.bool()]
        if not s.shape[0]:
            raise ConfigError("the base model's completions got no valid score; pass --tchebycheff-reference")
        return s.mean(0) - cfg.reference_margin * s.std(0, unbiased=False)

    def step(self, step: int) -> dict:
        """Router m = (step − 1) mod M takes one online step with weights ∝ u_m ⊙ a_m; then u_m's mirror-descent update."""
        m = (step - 1) % len(self.config.anchors)
        a = self.anchor_weights[m]
        self.hoe.use_router(m)
        if self.ref_model is not None:
            self.hoe.apply_to(self.ref_model)
        self.weights = tchebycheff_policy_weights(self.dual[m], a).to(torch.float32)
        row = super().step(step)
        J = torch.tensor([row[f"reward/{n}"] for n in self.names], dtype=torch.float64)
        if bool(torch.isfinite(J).all()):  # a batch with no valid score on an objective leaves u as it was
            self.dual[m] = tchebycheff_dual_update(self.dual[m], J, a, self.reference, self.config.omd_step_size)
        row["anchor"] = m
        for k, n in enumerate(self.names):
            row[f"dual/{n}"] = float(self.dual[m, k])
            row[f"tchebycheff/{n}"] = float(a[k] * (J[k] - self.reference[k]))
        row["gate_entropy"] = self.hoe.gate_entropy()
        return row

    def checkpoint_extra(self) -> dict:
        return {STATE_KEY: {"dual": self.dual.tolist(), "reference": self.reference.tolist()}}

    def _save_model(self, folder: Path, state: dict | None = None) -> None:
        """A checkpoint's trained weights: the routers (and value heads), never the frozen base or experts."""
        save_file(self.hoe.router_state_dict(), folder / ROUTERS_FILE)
        m = self.unwrapped
        if m.value_head is not None:
            save_file({k: v.contiguous() for k, v in m.value_head.state_dict().items()}, folder / "value_head.safetensors")

    def _load_policy(self, policy, ckpt: Path) -> None:
        f = ckpt / ROUTERS_FILE
        if not f.is_file():
            raise RunDirError(f"{f} is missing: the routers would restart and the run would not continue exactly; "
                              "start over with --overwrite")
        try:
            load_router_state_dict(policy, ckpt_lib.load_tensors(f), str(f))
        except ConfigError as exc:
            raise RunDirError(str(exc)) from None

    def save_final(self) -> Path:
        """``final/``: an HoE folder (experts, routers, anchors, base, tokenizer) and ``paretoalign.json``."""
        from paretoalign import __version__
        from paretoalign.trainers.methods import BY_NAME

        cfg = self.config

        def fill(tmp: Path) -> None:
            extra = {"objectives_spec": self.objectives.describe(), "reference_point": self.reference.tolist(),
                     "dual": self.dual.tolist(), "omd_step_size": cfg.omd_step_size, "method_config": {
                         "kl_coef": cfg.kl_coef, "advantage": cfg.advantage, "max_steps": cfg.max_steps}}
            self.hoe.save(tmp, routers=True, extra=extra)  # the routing mode survives (plain_base restores it)
            row = BY_NAME.get(cfg.method)
            meta = {"base_model": cfg.model, "method": cfg.method, "objectives": self.objectives.describe(),
                    "step": cfg.max_steps, "lora": False, "hoe": True, "value_head": self.unwrapped.value_head is not None,
                    "method_info": {"family": row.family, "summary": row.summary, "paper": PAPER, "arxiv": ARXIV}
                    if row else None, "paretoalign": __version__}
            run_dir.write_json(tmp / run_dir.FINAL_META, meta)

        return ckpt_lib.write_final(self.accelerator, self.out, fill)
