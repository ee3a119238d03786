"""What ``paretoalign evaluate`` evaluates: a run, one of its checkpoints, a model, or a MOD combination
of several of them (``--mod``, :func:`resolve_mod_target`).

:func:`resolve_target` classifies a target string without loading anything, :func:`target_fingerprint`
hashes its weight and config files (what the evaluation cache is keyed by), :func:`load_target` loads it
(a run's adapter on its rebuilt base model), and :func:`default_output` says where its ``eval.json`` goes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from paretoalign import __version__, run_dir
from paretoalign.console import quiet_third_party
from paretoalign.errors import RunDirError
from paretoalign.experts import HOE_FILE
from paretoalign.models import TINY_NAME, load_causal_lm, load_tokenizer, resolve_model_path

__all__ = ["EVAL_FILE", "Target", "default_output", "load_target", "model_fingerprint", "resolve_mod_target",
           "resolve_target", "target_fingerprint"]

EVAL_FILE = "eval.json"


@dataclass
class Target:
    """What is evaluated: ``kind`` is 'run', 'checkpoint', 'model' or 'mod' (K endpoints decoded together;
    then ``base_model``, ``run`` and ``run_config`` are the first endpoint's, and ``mod`` holds the rest)."""

    kind: str
    name: str
    base_model: str  # the model name/folder a run started from (the model itself for kind 'model')
    policy_dir: Optional[Path] = None  # the saved policy (adapter or full model) of a run/checkpoint
    run: Optional[Path] = None
    run_config: Optional[dict] = None
    # kind 'mod': {"names", "endpoints" (Targets), "resolved" (mod.Endpoint), "weights", "divergence"}
    mod: Optional[dict] = None
    # an HoE run (final/ is an HoE folder): the preference its routers are mixed for (None: the centre)
    preference: Optional[list] = None

    @property
    def hoe(self) -> bool:
        return self.policy_dir is not None and (self.policy_dir / HOE_FILE).is_file()

    @property
    def seed(self) -> int:
        return int((self.run_config or {}).get("seed", 0))


def resolve_target(target: str) -> Target:
    """Classify ``target`` (no model is loaded)."""
    path = Path(target).expanduser()
    if path.is_dir() and (path / run_dir.CONFIG_FILE).is_file():
        cfg = run_dir.load_config(path)
        final = path / run_dir.FINAL / run_dir.POLICY
        if not final.is_dir() and (path / run_dir.FINAL / HOE_FILE).is_file():  # HoE: final/ is an HoE folder
            return Target("run", str(path), str(cfg.get("model", "")), path / run_dir.FINAL, path, cfg)
        if not final.is_dir():
            ckpts = run_dir.list_checkpoints(path)
            hint = (f"; evaluate its last checkpoint ({ckpts[-1][1]}) or finish it with --resume" if ckpts
                    else "; it has no checkpoint yet either")
            raise RunDirError(f"run {str(path)!r} has no final model (final/policy){hint}")
        return Target("run", str(path), str(cfg.get("model", "")), final, path, cfg)
    if path.is_dir() and (path / run_dir.STATE_FILE).is_file() and (path / run_dir.POLICY).is_dir():
        run = path.parent.parent
        cfg = run_dir.load_config(run)
        return Target("checkpoint", str(path), str(cfg.get("model", "")), path / run_dir.POLICY, run, cfg)
    if path.is_dir() and (path / run_dir.CHECKPOINTS).is_dir() and not (path / run_dir.CONFIG_FILE).is_file():
        raise RunDirError(f"{str(path)!r} has checkpoints but no {run_dir.CONFIG_FILE}; is it a paretoalign run folder?")
    return Target("model", target, target)


def resolve_mod_target(mod: list, weights: list, divergence: str) -> Target:
    """The MOD combination of ``mod`` (``name=PATH`` or ``PATH`` entries: runs, ``RUN/final``, checkpoints,
    models) under ``weights`` and ``divergence`` (as :class:`~paretoalign.evaluation.config.EvalConfig`
    checked them).  Nothing is loaded; endpoints on different base models are refused here, in one line."""
    from paretoalign.mod import check_endpoints, resolve_endpoint

    names, eps, targets = [], [], []
    for entry in mod:
        name, _, path = entry.partition("=") if "=" in entry else (None, "", entry)
        e = resolve_endpoint(path, name)
        names.append(e.name)
        eps.append(e)
        if e.run is not None:
            kind = "run" if Path(e.policy) == Path(e.run) / run_dir.FINAL / run_dir.POLICY else "checkpoint"
            targets.append(Target(kind, path, str(e.base or ""), Path(e.policy), Path(e.run), e.run_config))
        else:
            targets.append(Target("model", e.policy, e.policy))
    check_endpoints(eps, weights, divergence)
    first = targets[0]
    label = ", ".join(f"{n}={t.name}" for n, t in zip(names, targets))
    weights_text = ",".join(f"{w:g}" for w in weights)
    return Target("mod", f"mod({label}; weights {weights_text}; {divergence})", first.base_model, None, first.run,
                  first.run_config, mod={"names": names, "endpoints": targets, "resolved": eps,
                                         "weights": list(weights), "divergence": divergence})


def _hashed_files(folder: Path) -> list[Path]:
    return [f for f in sorted(p for p in folder.rglob("*") if p.is_file())
            if f.suffix in (".safetensors", ".bin", ".json", ".model", ".gguf", ".pt") and f.name != EVAL_FILE]


def _hash_files(folder: Path, h) -> None:
    for f in _hashed_files(folder):
        h.update(str(f.relative_to(folder)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)


# Model folders hashed in this process: {(folder, ((file, size, mtime_ns), ...)): hex digest}.  Evaluating a
# run hashes its base model twice otherwise (in the adapter's fingerprint, then as the default baseline).
_FOLDER_DIGESTS: dict = {}


def _folder_digest(folder: Path) -> str:
    """sha256 of :func:`_hash_files`'s stream over ``folder`` (the fingerprint format is unchanged), computed
    once per process while no hashed file changes path, size or modification time."""
    folder = folder.resolve()
    files = _hashed_files(folder)
    key = (str(folder), tuple((str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in files))
    if key not in _FOLDER_DIGESTS:
        h = hashlib.sha256()
        _hash_files(folder, h)
        _FOLDER_DIGESTS[key] = h.hexdigest()
    return _FOLDER_DIGESTS[key]


def model_fingerprint(name: str, seed: int = 0, allow_download: bool = False) -> str:
    """A content hash of a model's weight and config files (``tiny``: its name, seed and our version)."""
    if name != TINY_NAME:
        return _folder_digest(Path(resolve_model_path(name, allow_download)))
    h = hashlib.sha256()
    h.update(f"tiny:seed={seed}:paretoalign={__version__}".encode())
    return h.hexdigest()


MOD_FORMAT = 1  # the decoding of kind 'mod' targets (paretoalign.mod); part of their fingerprint


def target_fingerprint(t: Target, allow_download: bool = False) -> str:
    if t.kind == "mod":  # what decides the completions: the endpoints' contents, the weights and the rule
        parts = {"mod_format": MOD_FORMAT, "weights": t.mod["weights"], "divergence": t.mod["divergence"],
                 "endpoints": [target_fingerprint(e, allow_download) for e in t.mod["endpoints"]]}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    if t.kind == "model":
        return model_fingerprint(t.name, 0, allow_download)
    h = hashlib.sha256()
    _hash_files(t.policy_dir, h)
    if (t.policy_dir / "adapter_config.json").is_file():  # an adapter means nothing without its base
        h.update(model_fingerprint(t.base_model, t.seed, allow_download).encode())
    return h.hexdigest()


def load_target(t: Target, allow_download: bool = False):
    """(model, tokenizer) in eval mode.  A run's adapter is put on its base model (rebuilt from the
    run's config, so a tiny base is rebuilt from its seed).  Kind 'mod': a
    :class:`~paretoalign.mod.MultiObjectiveDecoder` in place of the model (LoRA endpoints on one base
    share it)."""
    if t.kind == "mod":
        from paretoalign.mod import MultiObjectiveDecoder

        dec = MultiObjectiveDecoder.from_endpoints(t.mod["resolved"], t.mod["weights"], t.mod["divergence"],
                                                   allow_download)
        return dec, dec.tokenizer
    if t.kind == "model":
        tok = load_tokenizer(t.name, allow_download)
        return load_causal_lm(t.name, tok, seed=0, allow_download=allow_download).eval(), tok
    if t.hoe:  # routed experts on the base, mixed for the preference
        from paretoalign.experts import load_hoe

        hoe = load_hoe(t.policy_dir, allow_download=allow_download)
        if t.preference is not None:
            hoe.set_preference(t.preference)
        return hoe.model.eval(), hoe.tokenizer
    tok = load_tokenizer(t.base_model, allow_download)
    if (t.policy_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_causal_lm(t.base_model, tok, seed=t.seed, allow_download=allow_download)
        try:
            with quiet_third_party():  # PEFT's FutureWarning on transformers' renamed attribute
                model = PeftModel.from_pretrained(base, str(t.policy_dir))
        except Exception as exc:  # a truncated or garbled adapter: the folder's fault, named in one line
            raise RunDirError(f"{t.policy_dir / 'adapter_model.safetensors'}: cannot load the saved adapter, damaged or "
                              f"unreadable ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200] if str(exc) else ''})") from None
    else:
        model = load_causal_lm(str(t.policy_dir), tok)  # a damaged folder is one error line
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
    return model.eval(), tok


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip("/")).strip("_") or "model"


def default_output(t: Target) -> Path:
    if t.kind == "mod":  # in the working directory: each endpoint's own eval.json stays its own
        weights = "-".join(f"{w:g}" for w in t.mod["weights"])
        return Path(f"eval-mod-{_slug('-'.join(t.mod['names']))}-w{weights}-{_slug(t.mod['divergence'])}.json")
    if t.kind == "run":
        return t.run / EVAL_FILE
    if t.kind == "checkpoint":
        return t.policy_dir.parent / EVAL_FILE
    return Path(f"eval-{_slug(Path(t.name).name or t.name)}.json")
