"""Where a run's results go besides its folder: experiment trackers (``--report-to``) and the Hub
(``--push-to-hub``).

Trackers are accelerate's own tracker classes (:mod:`accelerate.tracking`: TensorBoard, trackio,
Weights & Biases, MLflow), one set per run, on the main process; each gets every metrics.jsonl row
as it is written (:func:`numeric_fields`: numbers under their metrics.jsonl names, nested dicts
flattened with ``/``, the step as the step).  They are built here rather than through
``Accelerator(log_with=...)`` because one Accelerator may serve several runs (a front sweep passes
its own to every trainer), its trackers accumulate over ``init_trackers`` calls, and its
``end_training()`` also destroys the process group.  TensorBoard writes to ``RUN/logs/``; a resumed
run purges the events after its checkpoint, so the curves have one value per step.

Both features need something outside the run (a library, the network, a token), so
:func:`preflight` checks that before any work: a missing library or an offline Hub is one
:class:`~paretoalign.errors.ConfigError` line, never a crash after hours of training.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from paretoalign.errors import ConfigError, ParetoAlignError
from paretoalign.trainers.options import TRACKERS

PROJECT = "paretoalign"  # the tracker project / experiment (W&B: $WANDB_PROJECT wins; MLflow: $MLFLOW_EXPERIMENT_NAME)
LOGS_DIR = "logs"  # RUN/logs/: TensorBoard's event files


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or sys.modules[module] is None
        return False


def check_trackers(names: list[str]) -> None:
    """Every tracker in ``names`` has its library installed (one line naming the extra otherwise)."""
    for name in names:
        module, extra = TRACKERS[name]
        if not _importable(module):
            raise ConfigError(f"--report-to {name} needs the {module} package: pip install 'paretoalign[{extra}]'")


def check_hub(cfg) -> None:
    """``--push-to-hub`` can work: the Hub is reachable in principle (not offline) and there is a token."""
    if not getattr(cfg, "push_to_hub", False):
        return
    from paretoalign.data.hub_datasets import offline_by_user

    # the command's own offline default does not count: --push-to-hub is the opt-in (the upload goes online)
    if offline_by_user():
        raise ConfigError("--push-to-hub needs the Hub, but HF_HUB_OFFLINE is set in your environment: unset it "
                          "(or HF_HUB_OFFLINE=0) to upload, and log in with `hf auth login`")
    import huggingface_hub

    if not huggingface_hub.get_token():
        raise ConfigError("--push-to-hub needs a Hugging Face token: log in with `hf auth login` (or set HF_TOKEN)")


def preflight(cfg) -> None:
    """Refuse, before any work, a run whose trackers or Hub upload could not work."""
    check_trackers(list(getattr(cfg, "trackers", [])))
    check_hub(cfg)


# ---------------------------------------------------------------------------------------------
# trackers


def numeric_fields(row: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics row, under their metrics.jsonl names (nested dicts flattened with ``/``);
    ``step`` is the step itself, None (not measured), strings and booleans are left out."""
    out: dict[str, float] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(numeric_fields(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and name != "step":
            out[name] = float(value)
    return out


def _hparam(value):
    """A config value as trackers' hyper-parameter tables take it (TensorBoard's: numbers and strings)."""
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


class Trackers:
    """The run's trackers (none on other processes than the main one, or with ``--report-to none``)."""

    def __init__(self, trackers: list | None = None):
        self.trackers = list(trackers or [])

    def log(self, row: dict, step: int) -> None:
        if self.trackers:
            values = numeric_fields(row)  # NaN too: a tracker shows the gap metrics.jsonl has
            for t in self.trackers:
                t.log(values, step=step)

    def close(self) -> None:
        for t in self.trackers:
            t.finish()
        self.trackers = []


def open_trackers(cfg, out: Path, acc, config: dict, start_step: int = 0) -> Trackers:
    """Start ``cfg.trackers`` for the run in ``out`` (main process only) with ``config`` as hyper-parameters;
    ``start_step``: the checkpoint a resumed run continues from (TensorBoard drops its later events)."""
    names = list(getattr(cfg, "trackers", []))
    if not names or not acc.is_main_process:
        return Trackers()
    check_trackers(names)
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    run_name = Path(out).resolve().name
    trackers = []
    for name in names:
        cls = LOGGER_TYPE_TO_CLASS[name]
        if name == "tensorboard":
            t = cls(LOGS_DIR, str(out), **({"purge_step": start_step + 1} if start_step else {}))
        elif name == "wandb":
            t = cls(os.environ.get("WANDB_PROJECT", PROJECT), name=run_name)
        elif name == "mlflow":
            t = cls(PROJECT, run_name=run_name)
        else:  # trackio
            t = cls(PROJECT, name=run_name)
        t.start()
        t.store_init_configuration({k: _hparam(v) for k, v in config.items()})
        trackers.append(t)
    return Trackers(trackers)


# ---------------------------------------------------------------------------------------------
# the Hub


def hub_repo_id(cfg, out: Path) -> str:
    """``--hub-model-id``, else the run folder's name."""
    return (cfg.hub_model_id or Path(out).resolve().name).strip()


def push_final(cfg, out: Path) -> str:
    """Upload ``out/final/`` to the Hub repository ``--hub-model-id`` (created if missing); returns its id.
    The run is complete before this is called: a failed upload says how to retry it by hand."""
    import huggingface_hub

    repo_id = hub_repo_id(cfg, out)
    final = Path(out) / "final"
    from paretoalign.data.hub_datasets import hub_access

    try:
        with hub_access(online=True):  # the command runs offline by default; this upload is the user's opt-in
            huggingface_hub.create_repo(repo_id, exist_ok=True)
            huggingface_hub.upload_folder(repo_id=repo_id, folder_path=str(final),
                                          commit_message=f"paretoalign {cfg.method}: {Path(out).resolve().name}")
    except Exception as exc:  # the network, the token, the repository: the run itself is done
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ParetoAlignError(f"--push-to-hub: uploading {final} to {repo_id} failed ({first}); the run is "
                               f"complete: upload it with `hf upload {repo_id} {final}`") from None
    return repo_id


__all__ = ["PROJECT", "LOGS_DIR", "Trackers", "check_trackers", "check_hub", "preflight", "numeric_fields",
           "open_trackers", "hub_repo_id", "push_final"]
