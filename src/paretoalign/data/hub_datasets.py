"""Hugging Face datasets by name: ``--prompts trl-lib/tldr``, ``--pairs trl-lib/ultrafeedback_binarized``.

A name is ``owner/name`` (or a bare legacy ``name``), optionally followed by ``:config`` and ``:split``::

    trl-lib/tldr                 the default config, split "train"
    openai/gsm8k:main            config "main"
    openai/gsm8k:main:test       config "main", split "test"
    trl-lib/tldr::validation     the default config, split "validation"

A local path always wins: a name is looked up only when no file or folder of that name exists, and a
name ending like a file (``.jsonl``, ``.json``, ``.csv``, ``.txt``, ``.parquet``) is never one.
The split is the one asked for (``split=`` or the suffix), else the only one, else ``train``, else an
error listing the splits.

Where the data comes from:

* by default (``allow_download=False``) only from this machine, with the Hub switched off for the
  call whatever the environment says: first the Hub cache (``$HF_HUB_CACHE``: what
  ``hf download <name> --repo-type dataset`` and earlier online loads leave there; the snapshot's
  commit is the recorded revision), then the prepared ``datasets`` cache (``$HF_DATASETS_CACHE``:
  what an earlier ``load_dataset`` left);
* with ``allow_download=True`` through ``datasets.load_dataset`` online, also when
  ``HF_HUB_OFFLINE=1`` is set (the CLI sets it).  ``huggingface_hub`` and ``datasets`` read that
  variable once, at import, into module constants, so :func:`hub_access` switches the constants
  (and the variable) for the call and restores them afterwards.

Every failure is one :class:`~paretoalign.errors.DataError` line: a name in neither cache (naming
``--allow-download``, ``hf download`` and local files as the ways out), an unknown config (the
configs listed when ``datasets`` names them), an unknown split (the splits listed), a Hub that
cannot be reached, and any other ``datasets`` error quoted in one line.  :class:`HubDataset`
records what was loaded (name, config, split, revision, fingerprint, rows) so a run can be repeated.
"""

from __future__ import annotations

import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from paretoalign.data.text_files import first_line
from paretoalign.errors import DataError

__all__ = ["HubDataset", "HubName", "hub_access", "load_hub_dataset", "parse_hub_name"]

_PART = r"[A-Za-z0-9][\w.-]*"
_NAME = re.compile(rf"(?P<repo>(?:{_PART}/)?{_PART})(?::(?P<config>[\w.-]*)(?::(?P<split>[\w.-]+))?)?")
# a missing path with one of these endings is a mistyped local file, not a dataset name
_FILE_ENDINGS = (".jsonl", ".json", ".csv", ".tsv", ".txt", ".parquet", ".arrow", ".gz", ".zip")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
# Set by the paretoalign command beside the HF_HUB_OFFLINE=1 it defaults to: offline by our default, not by
# the user's choice (an explicit opt-in such as --push-to-hub may then go online; a user's HF_HUB_OFFLINE=1 wins).
OFFLINE_BY_DEFAULT_ENV = "PARETOALIGN_HUB_OFFLINE_BY_DEFAULT"


def offline_by_user() -> bool:
    """Whether the user set HF_HUB_OFFLINE themselves (not the paretoalign command's default)."""
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return value in ("1", "ON", "YES", "TRUE") and os.environ.get(OFFLINE_BY_DEFAULT_ENV) != "1"



@dataclass(frozen=True)
class HubName:
    """A parsed dataset name: the repository, and the config and split if the name gave them."""

    repo_id: str
    config: str | None = None
    split: str | None = None


def parse_hub_name(source: Any) -> HubName | None:
    """``source`` read as ``owner/name[:config[:split]]``, or ``None`` when it cannot be a dataset name."""
    if not isinstance(source, (str, Path)):
        return None
    m = _NAME.fullmatch(str(source).strip())
    if m is None or m["repo"].lower().endswith(_FILE_ENDINGS):
        return None
    return HubName(m["repo"], m["config"] or None, m["split"])


@dataclass
class HubDataset:
    """One split of a Hub dataset and where it came from (``origin``: ``"hub cache"``,
    ``"datasets cache"`` or ``"hub"``)."""

    dataset: Any  # a datasets.Dataset
    repo_id: str
    config: str | None
    split: str
    revision: str | None
    fingerprint: str | None
    origin: str

    @property
    def name(self) -> str:
        """How messages name it: ``owner/name[:config] [split s]``."""
        config = f":{self.config}" if self.config and self.config != "default" else ""
        return f"{self.repo_id}{config} [split {self.split}]"

    def record(self) -> dict:
        """What a run records to be repeated: name, config, split, revision, fingerprint, rows, origin."""
        return {"hub_dataset": self.repo_id, "config": self.config, "split": self.split,
                "revision": self.revision, "fingerprint": self.fingerprint, "rows": len(self.dataset),
                "from": self.origin}

    def describe(self) -> str:
        rev = f", revision {self.revision[:12]}" if self.revision else ""
        fp = f", fingerprint {self.fingerprint}" if self.fingerprint else ""
        return (f"{self.repo_id} (config {self.config or 'default'}, split {self.split}, {len(self.dataset)} rows"
                f"{rev}{fp}) from the {self.origin}")


# ---------------------------------------------------------------------------------------------
# online / offline


@contextmanager
def hub_access(online: bool) -> Iterator[None]:
    """Let ``huggingface_hub`` and ``datasets`` reach the Hub (``online``) or not, for the ``with`` block.

    Both libraries read ``HF_HUB_OFFLINE`` (``datasets`` also ``HF_DATASETS_OFFLINE``) when imported
    and keep the answer in module constants, so setting the variable later changes nothing: the
    constants are set here (the variables too, for code that reads them late) and restored on exit.
    """
    from huggingface_hub import constants as hub_constants

    # datasets only where it is already imported (model downloads use this too and need not import it);
    # imported later, it reads the environment variables set below
    datasets_config = sys.modules.get("datasets.config")
    offline = not online
    saved = [(mod, attr, getattr(mod, attr))
             for mod, attr in ((hub_constants, "HF_HUB_OFFLINE"), (datasets_config, "HF_HUB_OFFLINE"),
                               (datasets_config, "HF_DATASETS_OFFLINE"))
             if mod is not None and hasattr(mod, attr)]
    saved_env = {k: os.environ.get(k) for k in _OFFLINE_ENV}
    try:
        for mod, attr, _ in saved:
            setattr(mod, attr, offline)
        for k in _OFFLINE_ENV:
            os.environ[k] = "1" if offline else "0"
        yield
    finally:
        for mod, attr, value in saved:
            setattr(mod, attr, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """``datasets``' warnings (and, unless ``progress``, its progress bars) off: our one line comes first."""
    import datasets

    verbosity, bars = datasets.logging.get_verbosity(), not datasets.are_progress_bars_disabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    if not progress:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars and not progress:
            datasets.enable_progress_bars()


# ---------------------------------------------------------------------------------------------
# loading


def load_hub_dataset(name: HubName, split: str | None = None, allow_download: bool = False,
                     what: str = "data") -> HubDataset:
    """One split of the dataset ``name``: from the local caches, or from the Hub if ``allow_download``.

    ``split`` (e.g. from ``--split``) and a split in the name must agree.  Prints one line to stderr
    saying what was loaded (``what`` names the use: ``"prompts"``, ``"pairs"``).
    """
    if split is not None and name.split is not None and split != name.split:
        raise DataError(f"{name.repo_id}: two splits given, {name.split!r} in the name and {split!r}; give one")
    split = split if split is not None else name.split
    with _quiet(progress=allow_download), hub_access(online=allow_download):
        if allow_download:
            dsets, origin, revision = _load_online(name)
        else:
            dsets, origin, revision = _load_cached(name)
    ds, split = _pick_split(dsets, split, name)
    info = getattr(ds, "info", None)
    config = name.config or getattr(info, "config_name", None)
    loaded = HubDataset(ds, name.repo_id, config, split, revision, getattr(ds, "_fingerprint", None), origin)
    print(f"[paretoalign] {what}: {loaded.describe()}", file=sys.stderr, flush=True)
    return loaded


def _not_cached(name: HubName, detail: str = "") -> DataError:
    return DataError(
        f"{_label(name)}: no such file or folder here, and no Hugging Face dataset of that name in the local "
        f"cache{detail}; pass --allow-download to fetch it from the Hub, or run "
        f"`hf download {name.repo_id} --repo-type dataset` first, or pass a local file")


def _label(name: HubName) -> str:
    return name.repo_id + (f":{name.config}" if name.config else "")


def _load_cached(name: HubName):
    """(datasets, origin, revision) from the Hub cache's snapshot, else from the prepared datasets cache."""
    import datasets
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(name.repo_id, repo_type="dataset", local_files_only=True)
    except Exception:  # no snapshot (or an incomplete one): the prepared cache may still hold it
        folder = None
    if folder is not None:
        try:
            return datasets.load_dataset(folder, name=name.config), "hub cache", Path(folder).name
        except FileNotFoundError:  # this config's files are not in the snapshot (an earlier load took another)
            pass
        except Exception as e:
            raise _load_error(e, name, "the copy in the Hugging Face cache") from None
    try:
        dsets = datasets.load_dataset(name.repo_id, name=name.config)
    except (ConnectionError, FileNotFoundError):  # offline and not in the prepared cache
        raise _not_cached(name) from None
    except Exception as e:
        msg = str(e)
        if "Couldn't find cache" in msg:  # this config is not cached; others are
            cached = _quoted_list(msg)
            raise _not_cached(name, f" (cached configs: {', '.join(cached)})" if cached else "") from None
        if "multiple" in msg and "configurations in the cache" in msg:
            configs = msg.split("configurations in the cache:", 1)[1].splitlines()[0].strip()
            raise DataError(f"{name.repo_id}: several configs are cached ({configs}); pick one as "
                            f"{name.repo_id}:<config>") from None
        raise _load_error(e, name, "the copy in the datasets cache") from None
    return dsets, "datasets cache", _revision_of(dsets)


def _load_online(name: HubName):
    """(datasets, origin, revision) through ``datasets.load_dataset`` with the Hub reachable."""
    import datasets

    try:
        dsets = datasets.load_dataset(name.repo_id, name=name.config)
    except Exception as e:
        kinds = {c.__name__ for c in type(e).__mro__}
        if "DatasetNotFoundError" in kinds:
            raise DataError(f"{_label(name)}: no such file or folder here, and the Hub has no dataset of that "
                            f"name that you can read ({first_line(e)}); check the name, or log in with "
                            "`hf auth login` for a private or gated one") from None
        if isinstance(e, ConnectionError):
            raise DataError(f"{_label(name)}: cannot reach the Hugging Face Hub ({first_line(e)}); check the "
                            f"network, or run `hf download {name.repo_id} --repo-type dataset` where it works "
                            "and copy the cache") from None
        raise _load_error(e, name, "it") from None
    return dsets, "hub", _hub_cache_revision(name.repo_id) or _revision_of(dsets)


def _load_error(e: Exception, name: HubName, what: str) -> DataError:
    """One line for a failed ``load_dataset``: a config error in our words, anything else quoted."""
    msg = str(e)
    if "BuilderConfig" in msg and "not found" in msg:
        configs = _quoted_list(msg.split("Available:", 1)[-1]) if "Available:" in msg else []
        listed = f" (configs: {', '.join(configs)})" if configs else ""
        return DataError(f"{name.repo_id}: no config {name.config!r}{listed}")
    if "Config name is missing" in msg:
        configs = _quoted_list(msg)
        listed = f" ({', '.join(configs)})" if configs else ""
        example = configs[0] if configs else "<config>"
        return DataError(f"{name.repo_id}: the dataset has several configs{listed}; pick one as "
                         f"{name.repo_id}:{example}")
    if type(e).__name__ == "DatasetGenerationError":  # the reader's error is the one that explains
        e = e.__cause__ or e.__context__ or e
    return DataError(f"{_label(name)}: cannot load {what} ({type(e).__name__}: {first_line(e)})")


def _quoted_list(msg: str) -> list[str]:
    """The names in the first ``[...]`` list of a library message (``['a', 'b']``)."""
    m = re.search(r"\[([^\]]*)\]", msg)
    return re.findall(r"'([^']*)'", m.group(1)) if m else []


def _pick_split(dsets, split: str | None, name: HubName):
    """The ``Dataset`` of ``split`` (default: the only split, else ``train``) and the split's name."""
    splits = list(dsets.keys())
    label = _label(name)
    if split is None:
        if len(splits) == 1:
            split = splits[0]
        elif "train" in splits:
            split = "train"
        else:
            raise DataError(f"{label}: several splits ({', '.join(splits)}) and none is 'train'; pick one as "
                            f"{name.repo_id}:{name.config or ''}:<split>")
    if split not in dsets:
        raise DataError(f"{label}: no split {split!r} (splits present: {', '.join(splits) or 'none'})")
    return dsets[split], split


def _revision_of(dsets) -> str | None:
    """The commit a prepared dataset was built from: its cache folder is named by it (Hub loads)."""
    for ds in dsets.values():
        for f in getattr(ds, "cache_files", None) or []:
            folder = Path(f.get("filename", "")).parent.name
            if _COMMIT.fullmatch(folder):
                return folder
    return None


def _hub_cache_revision(repo_id: str) -> str | None:
    """The commit ``refs/main`` of the dataset's Hub-cache folder points at (set by an online load)."""
    try:
        from huggingface_hub import constants
        from huggingface_hub.file_download import repo_folder_name

        ref = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="dataset") / "refs" / "main"
        commit = ref.read_text().strip()
    except Exception:  # no cache folder, or a hub client without these helpers: nothing to record
        return None
    return commit if _COMMIT.fullmatch(commit) else None
