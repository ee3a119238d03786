"""Configuration of CGPO: ``paretoalign train --method cgpo --cgpo-optimizer crpg|codpo|crraft``.

Xu et al. 2024, *The Perfect Blend: Redefining RLHF with Mixture of Judges* (arXiv 2409.20370).
The online options (generation, prompts, objectives, LoRA, the run folder) are :class:`OnlineConfig`'s;
CGPO adds its judges, the calibration of the reward against a baseline response, the KL threshold and
the three constrained optimisers' settings, and ``--tasks`` for several tasks in one run (the paper's
"perfect blend").  Every field's ``help`` is the documentation shown by ``paretoalign train --help``.

Defaults follow TRL's unmerged PR #2190 (``CGPOConfig``: k = 4, temperature 0.9, β = 0.1, λ = 5, the KL
threshold of its docs' example, 10) where the paper's text was not at hand; ``--max-new-tokens`` keeps
the library's 48 (the PR: 64).
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Optional

from paretoalign.config_utils import coerce_value, field, load_yaml
from paretoalign.errors import ConfigError
from paretoalign.trainers.online_config import OnlineConfig
from paretoalign.trainers.options import GENERATION, METHOD, OPTIMISATION, PROMPTS

CGPO = "CGPO: judges, calibration, KL threshold and the constrained optimisers"
OPTIMIZERS = ("crpg", "codpo", "crraft")

# The options a task of --tasks may set (else it takes the command line's); "optimizer" is cgpo_optimizer.
TASK_OPTIONS = ("prompts", "prompt_column", "baseline_column", "heldout_fraction", "objectives", "weights",
                "normalize_weights", "judges", "judge_on_failure", "cgpo_optimizer", "num_generations", "batch_size",
                "kl_threshold", "cgpo_kl_gate", "crpg_baseline", "kl_coef", "codpo_beta", "codpo_lambda",
                "missing_eos_penalty", "calibration")
TASK_ALIASES = {"optimizer": "cgpo_optimizer", "kl_gate": "cgpo_kl_gate"}


@dataclass
class CGPOTask:
    """One task of a CGPO run: its prompts, reward, judges and optimiser with its hyper-parameters.

    A run without ``--tasks`` has one task, ``main``, made of the command line's options.  ``prompts``
    is a prompt source (as ``--prompts``) or an inline list of prompts; ``mix`` is the task's share of
    the loss (None: proportional to its number of training prompts).
    """

    name: str
    prompts: Any
    prompt_column: str
    baseline_column: Optional[str]
    heldout_fraction: float
    objectives: list
    weights: Optional[list]
    normalize_weights: bool
    judges: list
    judge_on_failure: str
    cgpo_optimizer: str
    num_generations: int
    batch_size: int
    kl_threshold: float
    cgpo_kl_gate: str
    crpg_baseline: str
    kl_coef: float
    codpo_beta: float
    codpo_lambda: float
    missing_eos_penalty: Optional[float]
    calibration: str
    mix: Optional[float] = None

    @property
    def kl_max(self) -> Optional[float]:
        """The KL budget of the gate (None: no KL condition)."""
        return self.kl_threshold if self.kl_threshold > 0 else None


@dataclass
class CGPOConfig(OnlineConfig):
    """Options of ``paretoalign train --method cgpo`` (the online options plus CGPO's own)."""

    FAMILY = "constrained"
    MIN_OBJECTIVES = 1  # one reward model per task is CGPO's setting; more objectives are logged and judged

    method: str = field("cgpo", help="'cgpo': constrained RLHF with a mixture of judges (CRPG, CODPO or CRRAFT, "
                        "--cgpo-optimizer); several tasks in one run with --tasks.", group=METHOD)
    advantage: Optional[Literal["gae", "group"]] = field(
        None, help="'gae' (value heads, GAE) or 'group' (critic-free group baselines). Default: 'gae' for pama/morlhf/"
        "mgda-ub, 'group' for mo-grpo. Not used by cgpo (its optimisers take no value heads).")
    num_generations: int = field(4, help="Completions sampled per prompt, k (cgpo: PR #2190's 4; >= 2 for codpo and "
                                 "--calibration group_mean).", group=OPTIMISATION)
    temperature: float = field(0.9, help="Sampling temperature (cgpo: PR #2190's 0.9).", group=GENERATION)
    kl_coef: float = field(
        0.0, help="KL coefficient beta against the reference model (paper: 0.2). cgpo: an optional KL penalty eta on "
        "CRPG's feasible samples, R_cr - eta*KL_seq (a library option; CGPO's own KL handling is --kl-threshold).",
        group=OPTIMISATION)
    weights: Optional[list] = field(
        None, help="Preference vector, one non-negative weight per objective summing to 1 (default: uniform). cgpo: the "
        "reward r(x, y) is sum_k w_k * (oriented score k); without --weights it is the FIRST objective alone (the others "
        "are logged and can be judged by name, e.g. 'length<=60').", group=PROMPTS)

    # --- judges and the reward ----------------------------------------------------------------------
    judges: Optional[list] = field(
        None, help="The judges every completion must pass (CGPO's mixture of judges, all must pass), comma-separated "
        "specs: rules such as 'length(min=5,max=40,unit=words)', 'include(words=thanks)', regex:'^\\d+$', "
        "'starts_with:Dear', 'json'; 'objective>=threshold' (e.g. 'sentiment>=0', 'rm>=0.5' for an --objectives "
        "entry named rm); 'python:module:function'; 'all(...)' / 'any(...)'. Required (or per task in --tasks).",
        group=CGPO)
    judge_on_failure: Literal["fail", "pass", "skip"] = field(
        "fail", help="A sample some judge could not decide (-1: a NaN score, a missing gold answer, a user function "
        "returning None), where it decides the outcome: 'fail' counts it as a violation (TRL's AllTrueJudge), 'pass' "
        "as satisfied, 'skip' drops it from the update. Judge failures are logged per judge (judge/<name>/failed).",
        group=CGPO)
    calibration: Literal["baseline", "group_mean", "none"] = field(
        "baseline", help="The calibrated reward R_calib = sigmoid(r(x, y) - r(x, a)) against a baseline response a "
        "(paper eq. 5): 'baseline' takes a = the prompt's reference answer when the data has one (--baseline-column, "
        "or a conversation's final assistant turn), else the reference policy's greedy answer (computed once per "
        "prompt); 'group_mean' uses the mean reward of the prompt's k samples instead (no baseline response; not the "
        "paper's); 'none' uses r itself (CRPG and CRRAFT then need r > 0 on good samples).", group=CGPO)
    baseline_column: Optional[str] = field(
        None, help="A column of --prompts holding each prompt's reference answer (e.g. 'completion'), the baseline "
        "response of --calibration baseline and CRRAFT's fallback; also the judges' gold answer.", group=CGPO)
    missing_eos_penalty: Optional[float] = field(
        None, help="Subtract this from the reward of a completion that ends without EOS (cut by --max-new-tokens), and "
        "from the baseline's when it lacks one, before calibration (PR #2155). None: no penalty.", group=CGPO)

    # --- KL -----------------------------------------------------------------------------------------
    kl_threshold: float = field(
        10.0, help="KL_max: a sample whose sequence log-ratio KL_seq = log pi_old(y|x) - log pi_ref(y|x) exceeds it "
        "earns no reward (CRPG) or cannot be the winner (CRRAFT): the paper's KL condition. 0 disables it. CODPO "
        "does not use it (its beta acts as the KL regulariser).", group=CGPO)
    cgpo_kl_gate: Literal["hard", "soft"] = field(
        "hard", help="CRPG's KL factor: 'hard' 1[KL_seq <= KL_max] (the paper) or 'soft' max(0, 1 - KL_seq/KL_max) "
        "(TRL PR #2190). CRRAFT's gate is always hard.", group=CGPO)

    # --- the optimisers -----------------------------------------------------------------------------
    cgpo_optimizer: Literal["crpg", "codpo", "crraft"] = field(
        "crraft", help="The constrained optimiser: 'crpg' (policy gradient on R_calib * 1[all judges pass] * KL gate), "
        "'codpo' (DPO of the best passing vs the worst failing sample per prompt, plus a length-normalised SFT term), "
        "'crraft' (R_calib-weighted SFT on each prompt's best feasible sample, falling back to the baseline "
        "response). Default: PR #2190's.", group=CGPO)
    crpg_baseline: Literal["none", "batch_mean", "group_mean"] = field(
        "batch_mean", help="CRPG's variance-reduction baseline subtracted from R_cr: 'none' (REINFORCE as the paper "
        "writes it), 'batch_mean' (PR #2190), 'group_mean' (the mean over the prompt's k samples).", group=CGPO)
    codpo_beta: float = field(0.1, help="CODPO's DPO beta (PR #2190: 0.1).", group=CGPO)
    codpo_lambda: float = field(5.0, help="CODPO's weight lambda of the SFT term -(lambda/|y+|) log pi(y+) (PR #2190: "
                                "5.0).", group=CGPO)

    # --- several tasks ------------------------------------------------------------------------------
    tasks: Optional[Any] = field(
        None, help="A YAML file (or, in a --config file, an inline mapping) mapping task names to their own prompts (required), objectives (the reward), weights, "
        "judges, optimizer and its settings (num_generations, batch_size, kl_threshold, kl_gate, crpg_baseline, "
        "codpo_beta, codpo_lambda, missing_eos_penalty, calibration, baseline_column, prompt_column, heldout_fraction) "
        "and mix (its share of the loss; default: proportional to its training prompts); unset keys take the "
        "command line's values. Every step draws --batch-size prompts (or the task's batch_size) from EACH task, "
        "computes each task's loss with its own optimiser and sums them with the mix shares (the paper's multi-task "
        "CGPO); metrics per task under task/<name>/.", group=CGPO)

    def __post_init__(self):
        super().__post_init__()
        self.advantage = None  # no value heads, no GAE: the optimisers are CGPO's own
        if self.ppo_epochs != 1 or self.num_mini_batches != 1:
            raise ConfigError("cgpo takes one on-policy pass per rollout: --ppo-epochs 1 and --num-mini-batches 1 (for "
                              "less memory per forward, use --gradient-accumulation-steps)")
        self.judges = _judge_list(self.judges, "--judges")
        self._tasks = self._read_tasks() if self.tasks is not None else None
        for t in self.task_specs():
            check_task(t, "" if self.tasks is None else f"{self.tasks_label}: task {t.name!r}: ")

    @property
    def uses_critic(self) -> bool:
        return False

    def _main_task(self) -> CGPOTask:
        return CGPOTask(
            name="main", prompts=self.prompts, prompt_column=self.prompt_column, baseline_column=self.baseline_column,
            heldout_fraction=self.heldout_fraction, objectives=list(self.objectives), weights=self.weights,
            normalize_weights=self.normalize_weights, judges=list(self.judges), judge_on_failure=self.judge_on_failure,
            cgpo_optimizer=self.cgpo_optimizer, num_generations=self.num_generations, batch_size=self.batch_size,
            kl_threshold=self.kl_threshold, cgpo_kl_gate=self.cgpo_kl_gate, crpg_baseline=self.crpg_baseline,
            kl_coef=self.kl_coef, codpo_beta=self.codpo_beta, codpo_lambda=self.codpo_lambda,
            missing_eos_penalty=self.missing_eos_penalty, calibration=self.calibration)

    def task_specs(self) -> list[CGPOTask]:
        """The run's tasks: those of ``--tasks`` (unset keys from the command line), else one task, ``main``."""
        return list(self._tasks) if self._tasks is not None else [self._main_task()]

    @property
    def tasks_label(self) -> str:
        """Where the tasks come from, for error messages."""
        return "tasks" if isinstance(self.tasks, dict) else f"--tasks {self.tasks}"

    def _read_tasks(self) -> list[CGPOTask]:
        where = self.tasks_label
        if isinstance(self.tasks, dict):
            data = {str(k): v for k, v in self.tasks.items()}
        elif isinstance(self.tasks, str):
            if not Path(self.tasks).is_file():
                raise ConfigError(f"{where}: no such file; give a YAML file mapping task names to their settings")
            data = load_yaml(self.tasks)  # one-line errors for unreadable YAML
        else:
            raise ConfigError(f"option tasks: expected a YAML file or a mapping of task names to settings, got "
                              f"{type(self.tasks).__name__}")
        if not data:
            raise ConfigError(f"{where}: no tasks; map each task name to its settings, e.g. chat: {{prompts: "
                              "builtin, judges: 'max_words(n=60)'}")
        hints = typing.get_type_hints(type(self))
        base = self._main_task()
        out = []
        for name, spec in data.items():
            here = f"{where}: task {name!r}"
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", str(name)):
                raise ConfigError(f"{here}: a task name is letters, digits, '_', '-' or '.' (it names metrics "
                                  "task/<name>/...)")
            if spec is None:
                spec = {}
            if not isinstance(spec, dict):
                raise ConfigError(f"{here}: expected a mapping of settings (prompts, objectives, judges, optimizer, "
                                  f"...), got {type(spec).__name__}")
            values: dict[str, Any] = {}
            for key, value in spec.items():
                key = str(key).replace("-", "_")
                key = TASK_ALIASES.get(key, key)
                if key == "mix":
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                            or value <= 0:
                        raise ConfigError(f"{here}: mix must be a number > 0 (its share of the loss); got {value!r}")
                    values["mix"] = float(value)
                    continue
                if key not in TASK_OPTIONS:
                    import difflib

                    close = difflib.get_close_matches(key, [*TASK_OPTIONS, *TASK_ALIASES, "mix"], n=1)
                    hint = f"; did you mean {close[0]!r}?" if close else ""
                    raise ConfigError(f"{here}: unknown setting {key!r}{hint} (settings: optimizer, mix, "
                                      f"{', '.join(k for k in TASK_OPTIONS if k != 'cgpo_optimizer')})")
                if key == "prompts":
                    values[key] = value
                    continue
                try:
                    values[key] = coerce_value(key, hints[key], value)
                except ConfigError as e:
                    raise ConfigError(f"{here}: {e}") from None
            if not values.get("prompts"):
                raise ConfigError(f"{here}: no prompts; give prompts: FILE (or builtin, or a dataset name, or a list "
                                  "of prompts)")
            if not isinstance(values["prompts"], (str, list)):
                raise ConfigError(f"{here}: prompts must be a source (a file, builtin, a dataset name) or a list of "
                                  f"prompts; got {type(values['prompts']).__name__}")
            if "objectives" in values:
                values["objectives"] = _objective_list(values["objectives"], here)
            if "judges" in values:
                values["judges"] = _judge_list(values["judges"], f"{here}: judges")
            if "weights" in values and values["weights"] is not None:
                try:
                    values["weights"] = [float(w) for w in _split_commas(values["weights"])]
                except (TypeError, ValueError):
                    raise ConfigError(f"{here}: weights must be numbers; got {values['weights']!r}") from None
            out.append(replace(base, name=str(name), **values))
        return out


def _split_commas(value) -> list:
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)


def _objective_list(value, where: str) -> list:
    from paretoalign.objectives.spec import split_objective_specs

    items = split_objective_specs(value) if isinstance(value, str) else list(value)
    if not items:
        raise ConfigError(f"{where}: objectives is empty")
    return items


def _judge_list(value, where: str) -> list:
    """Judge specs as a list (a string is split at its top-level commas); dict specs (YAML) are kept."""
    if value is None:
        return []
    from paretoalign.judges import split_judge_specs  # here: --help imports no torch

    items = []
    for v in ([value] if isinstance(value, (str, dict)) else list(value)):
        if isinstance(v, str):
            items.extend(split_judge_specs(v))
        elif isinstance(v, dict):
            items.append(v)
        else:
            raise ConfigError(f"{where}: a judge is a spec string or a mapping; got {type(v).__name__} {v!r}")
    return items


def check_task(t: CGPOTask, where: str = "") -> None:
    """Range checks of one task's settings (one line each)."""
    if t.kl_threshold < 0:
        raise ConfigError(f"{where}option kl_threshold: must be >= 0 (0 disables the KL condition), got {t.kl_threshold!r}")
    if t.missing_eos_penalty is not None and t.missing_eos_penalty < 0:
        raise ConfigError(f"{where}option missing_eos_penalty: must be >= 0 (it is subtracted), got "
                          f"{t.missing_eos_penalty!r}")
    if not t.codpo_beta > 0:
        raise ConfigError(f"{where}option codpo_beta: must be > 0, got {t.codpo_beta!r}")
    if t.codpo_lambda < 0:
        raise ConfigError(f"{where}option codpo_lambda: must be >= 0, got {t.codpo_lambda!r}")
    if t.kl_coef < 0:
        raise ConfigError(f"{where}option kl_coef: must be >= 0, got {t.kl_coef!r}")
    for name in ("num_generations", "batch_size"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{where}option {name}: must be >= 1, got {getattr(t, name)!r}")
    if not 0 < t.heldout_fraction < 1:
        raise ConfigError(f"{where}option heldout_fraction: must be in (0, 1), got {t.heldout_fraction!r}")
    if t.num_generations < 2 and t.cgpo_optimizer == "codpo":
        raise ConfigError(f"{where}codpo pairs two of a prompt's samples: num_generations must be >= 2")
    if t.num_generations < 2 and (t.calibration == "group_mean" or t.crpg_baseline == "group_mean"
                                  and t.cgpo_optimizer == "crpg"):
        raise ConfigError(f"{where}a group mean needs num_generations >= 2 (the mean of one sample is itself)")
    if t.weights is not None and not t.objectives:
        raise ConfigError(f"{where}weights without objectives")


__all__ = ["CGPOConfig", "CGPOTask", "OPTIMIZERS", "TASK_OPTIONS", "check_task"]
