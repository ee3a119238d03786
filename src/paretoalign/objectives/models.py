"""Model-backed and user-defined objectives.

- :class:`RewardModelObjective`: any Hugging Face ``AutoModelForSequenceClassification`` reward
  model (one logit per sample, e.g. the Bradley-Terry reward models of Ouyang et al. 2022 /
  OpenAssistant / Skywork), read from a local folder or the local Hugging Face cache.
- :class:`PythonObjective`: a user function ``f(prompts, completions) -> list[float] | Tensor``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import os
import site
import sys
import sysconfig
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import safe_open

from paretoalign.errors import ConfigError, ObjectiveError
from paretoalign.models import resolve_device
from paretoalign.objectives.base import Objective
from paretoalign.reward_model.model import PICKLE_SUFFIXES

__all__ = ["RewardModelObjective", "PythonObjective"]


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _looks_like_path(s: str) -> bool:
    """True for strings that can only be a filesystem path, never a hub id ``org/name``."""
    return s.startswith(("/", "./", "../", "~", "\\")) or (len(s) > 1 and s[1] == ":") or s.count("/") > 1 \
        or os.sep != "/" and os.sep in s


def _library_roots() -> tuple[str, ...]:
    """Folders whose frames are not the user's: paretoalign, the standard library, installed packages."""
    paths = {str(Path(__file__).resolve().parents[1])}
    paths.update(v for k, v in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib", "purelib", "platlib"))
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    paths.add(site.getusersitepackages() if hasattr(site, "getusersitepackages") else "")
    return tuple(str(Path(q).resolve()) + os.sep for q in paths if q)


def _user_traceback(exc: BaseException, own_file: str | None = None) -> str:
    """The frames of ``exc``'s traceback that run the user's code (plus a syntax error's location),
    formatted like Python's own traceback and indented, so one error line can show where it broke."""
    roots = _library_roots()
    own = str(Path(own_file).resolve()) if own_file else None

    def users(filename: str) -> bool:
        if filename.startswith("<"):  # importlib's frozen frames, <string>
            return False
        f = str(Path(filename).resolve())
        return f == own or not f.startswith(roots)

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if users(f.filename)]
    lines = traceback.StackSummary.from_list(frames).format()
    if isinstance(exc, SyntaxError) and exc.filename:  # where the parser stopped; the last line repeats the message
        lines += traceback.format_exception_only(type(exc), exc)[:-1]
    return "".join(lines).rstrip("\n")


def _user_error(header: str, exc: BaseException, own_file: str | None = None) -> ObjectiveError:
    """``header`` + the exception's first line, then the user's frames (and the rest of its message)."""
    text = str(exc.msg if isinstance(exc, SyntaxError) else exc).strip().splitlines()
    first = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    rest = "".join(f"\n  {line}" for line in text[1:])
    frames = _user_traceback(exc, own_file)
    return ObjectiveError(f"{header} {first}{rest}" + (f"\n{frames}" if frames else ""))


def _hub_cache() -> str:
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover - hub always installed with transformers
        return "~/.cache/huggingface/hub"


class RewardModelObjective(Objective):
    """Score (prompt, completion) with a sequence-classification reward model: logit ``index``.

    ``model``: a local folder, or a Hugging Face id found in the local cache (``local_files_only``;
    nothing is downloaded unless ``allow_download=True``).  Where the model is looked for is
    checked when the objective is built; the weights load on the first :meth:`score`, once.

    Input format (``format``):

    - ``"auto"`` (default): ``"chat"`` if the tokenizer has a chat template, else ``"concat"``;
    - ``"chat"``: ``[{"role": "user", "content": prompt}, {"role": "assistant", "content":
      completion}]`` rendered with the tokenizer's chat template (how chat reward models such as
      Skywork-Reward are trained);
    - ``"concat"``: the string ``prompt + completion`` (a completion that continues its prompt);
    - ``"pair"``: the tokenizer's text pair ``(prompt, completion)`` (BERT/DeBERTa reward models
      such as OpenAssistant's).

    Texts longer than ``max_length`` tokens (default 1024) are truncated from the left, so the end
    of the completion -- what is being judged -- is kept (``pair``: longest-first).  Samples are
    scored ``batch_size`` at a time (default 8) under ``torch.no_grad`` on ``device``
    (``"auto"``: the current CUDA device if there is one, else the CPU).  ``dtype``: ``"auto"``
    (the checkpoint's), ``"float32"``, ``"bfloat16"`` or ``"float16"``.

    Padding: a tokenizer without a pad token gets the model's ``pad_token_id``, else its EOS
    token.  Decoder reward models pool the rightmost non-pad token, so with pad = EOS a trailing
    EOS in the text is skipped (harmless for models trained the same way, which is the norm).
    """

    FORMATS = ("auto", "chat", "concat", "pair")
    DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

    def __init__(self, model: str, index: int = 0, batch_size: int = 8, max_length: int = 1024,
                 device: str = "auto", format: str = "auto", dtype: str = "auto", allow_download: bool = False,
                 name: str | None = None):
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("objective 'reward_model': give the model, e.g. reward_model:/path/to/rm or "
                              "reward_model:org/name")
        model = model.strip()
        self.name = name or Path(model.rstrip("/\\")).name or "reward_model"
        if format not in self.FORMATS:
            raise ConfigError(f"objective {self.name!r}: format must be one of {', '.join(self.FORMATS)}; got {format!r}")
        if dtype not in self.DTYPES:
            raise ConfigError(f"objective {self.name!r}: dtype must be one of {', '.join(self.DTYPES)}; got {dtype!r}")
        for opt, val, lo in (("batch_size", batch_size, 1), ("max_length", max_length, 2)):
            if not isinstance(val, int) or isinstance(val, bool) or val < lo:
                raise ConfigError(f"objective {self.name!r}: {opt} must be an integer >= {lo}; got {val!r}")
        if not isinstance(index, int) or isinstance(index, bool):
            raise ConfigError(f"objective {self.name!r}: index must be an integer; got {index!r}")
        self.model_id, self.index, self.batch_size, self.max_length = model, index, batch_size, max_length
        self.format, self.dtype, self.allow_download = format, dtype, bool(allow_download)
        if device != "auto":
            resolve_device(device, f"objective {self.name!r}")  # a bad device fails now, not at the first score
        self.device = device
        self.source = self._locate()  # a folder path, or the hub id itself
        self._model = None
        self._tokenizer = None

    # -- locating and loading ------------------------------------------------------------------

    def _not_found(self, detail: str = "") -> ObjectiveError:
        m = self.model_id
        folder = Path(m).expanduser().resolve()
        if _looks_like_path(m):
            msg = (f"objective {self.name!r}: reward model folder {str(folder)!r} not found (or it has no "
                   "config.json); give a folder saved with save_pretrained (model + tokenizer)")
        else:
            msg = (f"objective {self.name!r}: reward model {m!r} is neither a local folder ({str(folder)!r}) nor in "
                   f"the local Hugging Face cache ({_hub_cache()}); fetch it once with `hf download {m}` where "
                   "there is network (then copy the cache or the folder here), pass a local folder, "
                   "or add allow_download=true")
        return ObjectiveError(msg + (f" [{detail}]" if detail else ""))

    def _locate(self) -> str:
        folder = Path(self.model_id).expanduser()
        if folder.is_dir():
            if not (folder / "config.json").is_file():
                raise self._not_found()
            self._check_weights(folder)
            return str(folder.resolve())
        if _looks_like_path(self.model_id):
            raise self._not_found()
        if not self.allow_download:
            try:
                from huggingface_hub import try_to_load_from_cache  # heavy (hub client): only for a hub id

                hit = try_to_load_from_cache(self.model_id, "config.json")
            except Exception:  # invalid repo id and the like
                hit = None
            if not isinstance(hit, str):
                raise self._not_found()
        return self.model_id

    def _check_weights(self, folder: Path) -> None:
        """Only safetensors are read (pickled ``pytorch_model.bin`` can run code when loaded); each one's
        header is checked now, so that a damaged file is named before any model loads."""
        weights = sorted(folder.glob("*.safetensors"))
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if not weights and pickles:
            raise ObjectiveError(f"objective {self.name!r}: {str(folder)!r} holds {', '.join(pickles)} but no "
                                 "*.safetensors weights; pickle files are never loaded (they can run code): "
                                 "save the model with save_pretrained(safe_serialization=True)")
        for f in weights:
            try:
                with safe_open(str(f), framework="pt"):
                    pass
            except Exception as e:  # truncated, corrupt, or not safetensors at all (never unpickled)
                raise ObjectiveError(f"objective {self.name!r}: {f}: not a valid safetensors file "
                                     f"[{_first_line(e)}]; the file is damaged or cut short") from None

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from paretoalign.console import quiet_third_party
        from paretoalign.data.hub_datasets import hub_access

        kw = {"local_files_only": not self.allow_download}
        # the CLI runs offline unless told otherwise: allow_download=true switches the hub client on for this load
        online = hub_access(online=True) if self.allow_download else contextlib.nullcontext()
        try:
            with online, quiet_third_party():
                tok = AutoTokenizer.from_pretrained(self.source, **kw)
                # safetensors only: a pickled checkpoint (pytorch_model.bin) is refused, never unpickled
                model = AutoModelForSequenceClassification.from_pretrained(self.source, dtype=self.DTYPES[self.dtype],
                                                                           use_safetensors=True, **kw)
        except Exception as e:  # one line, never a deep traceback (the cause is in the message)
            if Path(self.source).is_dir():
                raise ObjectiveError(
                    f"objective {self.name!r}: cannot load a sequence-classification reward model and its "
                    f"tokenizer from {self.source!r} [{_first_line(e)}]; save both there with "
                    "save_pretrained (AutoModelForSequenceClassification + AutoTokenizer)"
                ) from None
            raise self._not_found(_first_line(e)) from None
        n = int(model.config.num_labels)
        if not -n <= self.index < n:
            raise ConfigError(f"objective {self.name!r}: index={self.index} but the model has {n} output(s)"
                              f" (valid: 0..{n - 1})")
        if tok.pad_token is None:
            pad_id = model.config.pad_token_id
            if pad_id is not None:
                tok.pad_token_id = pad_id
            elif tok.eos_token is not None:
                tok.pad_token = tok.eos_token
            else:
                raise ObjectiveError(f"objective {self.name!r}: the tokenizer of {self.model_id!r} has neither a "
                                     "pad nor an EOS token; cannot batch")
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        model.eval().to(resolve_device(self.device, f"objective {self.name!r}"))
        self._tokenizer, self._model = tok, model

    # -- scoring ---------------------------------------------------------------------------------

    def _effective_format(self) -> str:
        if self.format != "auto":
            return self.format
        return "chat" if getattr(self._tokenizer, "chat_template", None) else "concat"

    def format_texts(self, prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
        """The strings fed to the tokenizer (``chat`` and ``concat`` formats; loads the tokenizer)."""
        self._load()
        fmt = self._effective_format()
        if fmt == "concat":
            return [p + c for p, c in zip(prompts, completions)]
        if fmt == "chat":
            if not getattr(self._tokenizer, "chat_template", None):
                raise ObjectiveError(f"objective {self.name!r}: format=chat but the tokenizer of {self.model_id!r} "
                                     "has no chat template; use format=concat or format=pair")
            out = []
            for p, c in zip(prompts, completions):
                conv = [{"role": "user", "content": p}, {"role": "assistant", "content": c}]
                try:
                    out.append(self._tokenizer.apply_chat_template(conv, tokenize=False))
                except Exception as e:
                    raise ObjectiveError(f"objective {self.name!r}: the chat template of {self.model_id!r} failed: "
                                         f"{_first_line(e)}; try format=concat") from None
            return out
        raise ValueError("format_texts is not used with format=pair")

    def _encode(self, prompts: list[str], completions: list[str]):
        tok = self._tokenizer
        fmt = self._effective_format()
        if fmt == "pair":
            return tok(prompts, completions, padding=True, truncation="longest_first", max_length=self.max_length,
                       return_tensors="pt")
        texts = self.format_texts(prompts, completions)
        side = tok.truncation_side
        tok.truncation_side = "left"
        try:
            # chat templates already contain the special tokens (BOS and the like)
            return tok(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                       add_special_tokens=(fmt == "concat"))
        finally:
            tok.truncation_side = side

    @torch.no_grad()
    def _score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        self._load()
        device = next(self._model.parameters()).device
        out = []
        for i in range(0, len(prompts), self.batch_size):
            enc = self._encode(prompts[i : i + self.batch_size], completions[i : i + self.batch_size]).to(device)
            logits = self._model(**enc).logits  # [b, num_labels]
            out.append(logits[:, self.index].float().cpu())
        return torch.cat(out)

    def describe(self) -> dict:
        return {**super().describe(), "kind": "reward_model", "model": self.model_id, "index": self.index,
                "format": self.format, "max_length": self.max_length}


class PythonObjective(Objective):
    """A user function as an objective: ``"python:<module>:<function>"``.

    ``<module>`` is an importable module (``mypkg.rewards``) or a path to a ``.py`` file.  The
    function is called as ``f(prompts, completions, **options)`` and must return one number per
    completion: a list, tuple, NumPy array or tensor of length ``B``.  ``None`` (a missing score),
    NaN and ±inf are passed on as NaN/inf for :class:`~paretoalign.objectives.ObjectiveSet`'s NaN
    rule.  Extra options in the spec (``python:m:f(alpha=2)``) become keyword arguments of ``f``
    and are checked against its signature.  The default name is the function's name.

    An exception raised while importing the module or inside the function becomes one
    :class:`~paretoalign.errors.ObjectiveError` naming the objective, followed by the user's own
    traceback frames (those of paretoalign, the standard library and installed packages are left out).
    """

    def __init__(self, target: str, name: str | None = None, **options: Any):
        self.target = target
        module_name, sep, func_name = (target or "").rpartition(":")
        if not sep or not module_name or not func_name:
            raise ConfigError(f"objective 'python:{target}': expected python:<module>:<function>, "
                              "e.g. python:mypkg.rewards:politeness")
        label = f"python:{target}"
        self._label = label
        module = self._import(module_name, label)
        if not hasattr(module, func_name):
            names = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                           and getattr(v, "__module__", None) == module.__name__)
            raise ObjectiveError(f"objective {label!r}: module {module_name!r} has no attribute {func_name!r}"
                                 + (f" (its functions: {', '.join(names)})" if names else ""))
        fn = getattr(module, func_name)
        if not callable(fn):
            raise ObjectiveError(f"objective {label!r}: {module_name}.{func_name} is a {type(fn).__name__}, "
                                 "not a function f(prompts, completions)")
        self._check_signature(fn, options, label)
        self.fn: Callable = fn
        self.options = dict(options)
        self.name = name or func_name

    @staticmethod
    def _import(module_name: str, label: str):
        if module_name.endswith(".py") or os.sep in module_name or "/" in module_name:
            path = Path(module_name).expanduser().resolve()
            if not path.is_file():
                raise ObjectiveError(f"objective {label!r}: no such file {str(path)!r}")
            mod_name = f"paretoalign_user_{path.stem}_{abs(hash(str(path)))}"
            if mod_name in sys.modules:
                return sys.modules[mod_name]
            spec = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[mod_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as e:  # the user's module is broken: where, in their code
                sys.modules.pop(mod_name, None)
                raise _user_error(f"objective {label!r}: importing {str(path)!r} raised", e, str(path)) from None
            except BaseException:
                sys.modules.pop(mod_name, None)
                raise
            return module
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                raise ObjectiveError(f"objective {label!r}: cannot import module {module_name!r} ({e}); install it, "
                                     "or put its folder on PYTHONPATH, or give a .py file path") from None
            # a module the user's module imports is missing: show where in their code
            raise _user_error(f"objective {label!r}: importing module {module_name!r} raised", e) from None
        except Exception as e:  # a syntax error or an exception at the module's top level
            raise _user_error(f"objective {label!r}: importing module {module_name!r} raised", e) from None

    @staticmethod
    def _check_signature(fn: Callable, options: dict, label: str) -> None:
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):  # builtins without a signature
            return
        try:
            sig.bind(["p"], ["c"], **options)
        except TypeError as e:
            raise ConfigError(f"objective {label!r}: cannot call {getattr(fn, '__name__', fn)}{sig} as "
                              f"f(prompts, completions{''.join(', ' + k + '=...' for k in options)}): {e}") from None

    def _score(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        try:
            out = self.fn(prompts, completions, **self.options)
        except Exception as e:  # a bug in the user's function: one error line plus their frames
            label = getattr(self, "spec", None) or self._label
            own = getattr(getattr(self.fn, "__code__", None), "co_filename", None)
            raise _user_error(f"objective {label!r} raised", e, own) from None
        if isinstance(out, torch.Tensor):
            return out.detach().float().cpu().reshape(-1) if out.dim() else self._bad(out)
        if hasattr(out, "tolist") and not isinstance(out, (list, tuple)):  # NumPy arrays
            out = out.tolist()
        if isinstance(out, (str, bytes, dict)) or not hasattr(out, "__iter__"):
            self._bad(out)
        vals = []
        for i, v in enumerate(out):
            if v is None:
                vals.append(math.nan)
                continue
            try:
                vals.append(float(v))
            except (TypeError, ValueError):
                raise ObjectiveError(f"objective {self.name!r}: {self.target} returned a non-number at index {i}: "
                                     f"{v!r:.60}") from None
        return torch.tensor(vals, dtype=torch.float32)

    def _bad(self, out):
        raise ObjectiveError(f"objective {self.name!r}: {self.target} must return one number per completion "
                             f"(a list or tensor of length B); got {type(out).__name__} {out!r:.60}")

    def describe(self) -> dict:
        return {**super().describe(), "kind": "python", "target": self.target, "options": dict(self.options)}
