"""Use a trained policy: load it from wherever its run folder now lives, answer a file of prompts
(``paretoalign generate``), or chat with it (``paretoalign chat``).

What loads, and how (:func:`load_policy`):

* a **run folder** (``RUN``), its ``RUN/final`` or ``RUN/final/policy``: the final policy.  A LoRA
  adapter is put on the base its ``adapter_config.json`` names, which paretoalign writes portably:
  the built-in name (``smollm2-135m-instruct``, resolved to paretoalign's cache), the Hugging Face id
  as it was given (the local cache; ``allow_download`` to fetch), ``../base`` for the tiny test model
  saved inside the run (resolved against the adapter folder, not the working directory as PEFT
  would), or a local folder's absolute path (the one base that cannot move).  A run whose adapter
  cannot name its base (written before portable run folders, then moved) falls back to the base
  named in its ``config.yaml`` (a tiny base rebuilt from the run's seed).  A full fine-tune is a
  self-contained folder.
* a **checkpoint** (``RUN/checkpoints/step-N`` or its ``policy/``): its adapter on the run's base.
* a **model folder** (``save_pretrained`` output, adapter or full) or a **model name** (built-in
  names, a cached Hugging Face id).

Targets are classified by :func:`paretoalign.evaluation.targets.resolve_target` and loaded by
:func:`~paretoalign.evaluation.targets.load_target` (the same code as ``paretoalign evaluate``);
generation goes through :func:`paretoalign.rollout.generate` (the packed decode loop), scoring through
:func:`paretoalign.objectives.build_objective_set`, prompts through
:func:`paretoalign.data.prompts.load_prompts`.  Chat streams with transformers' ``generate`` and a
streamer (the packed loop does not stream).

This module imports no torch or transformers at import time: the command line builds its
``generate`` and ``chat`` parsers (:func:`add_generate_parser`, :func:`add_chat_parser`) from it
without loading them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

from paretoalign import run_dir
from paretoalign.config_utils import check_fields, field
from paretoalign.errors import ConfigError, DataError, ModelNotFoundError, RunDirError

__all__ = ["ChatConfig", "GenerateConfig", "add_chat_parser", "add_generate_parser", "chat_loop", "generate_rows",
           "load_policy", "resolve_policy", "run_chat", "run_generate"]

DEFAULT_MAX_NEW_TOKENS = 128  # generate, for a target without a run (a run's own --max-new-tokens otherwise)
_TARGET_HELP = ("A run folder, its final/ folder, a checkpoint (RUN/checkpoints/step-N), a model folder, or a model "
                "name ('smollm2-135m-instruct', 'tiny', a Hugging Face id in the local cache).")


# ---------------------------------------------------------------------------------------------
# loading


def resolve_policy(target: str | Path):
    """Classify ``target`` (nothing is loaded): a :class:`~paretoalign.evaluation.targets.Target`.

    ``RUN/final`` and ``RUN/final/policy`` are the run (``final/`` copied out of its run is its
    ``policy/`` folder); a checkpoint's ``policy/`` is the checkpoint.  A path that does not exist,
    or a folder that holds none of a run's, a checkpoint's or a model's files, is one
    :class:`RunDirError`."""
    from paretoalign.evaluation.targets import Target, resolve_target

    s = str(target).strip()
    if not s:
        raise ConfigError("no model given: pass a run folder, a checkpoint, a model folder or a model name")
    path = Path(s).expanduser()
    if path.is_dir():
        if path.name == run_dir.POLICY and (path.parent / run_dir.STATE_FILE).is_file():
            path = path.parent  # a checkpoint's policy/: its adapter names no base, its run does
        elif path.name == run_dir.POLICY and path.parent.name == run_dir.FINAL \
                and (path.parent.parent / run_dir.CONFIG_FILE).is_file():
            path = path.parent.parent  # RUN/final/policy: the run (its config names the base too)
        elif (path / run_dir.POLICY).is_dir() and (path / run_dir.FINAL_META).is_file():  # a final/ folder
            path = path.parent if (path.parent / run_dir.CONFIG_FILE).is_file() else path / run_dir.POLICY
        if (path / run_dir.CONFIG_FILE).is_file() or (path / run_dir.STATE_FILE).is_file() \
                or (path / run_dir.CHECKPOINTS).is_dir():
            return resolve_target(str(path))
        if (path / "adapter_config.json").is_file() or (path / "config.json").is_file():
            return Target("model", str(path), str(path))
        raise RunDirError(f"{s!r} is not a run folder, a final/ folder, a checkpoint or a model folder (it holds none of "
                          f"{run_dir.CONFIG_FILE}, {run_dir.STATE_FILE}, adapter_config.json, config.json)")
    if path.exists():
        raise RunDirError(f"{s!r} is a file; pass a run folder, a checkpoint, a model folder or a model name")
    if s.startswith(("/", ".", "~")) or s.count("/") > 1 or "\\" in s:
        raise RunDirError(f"{s!r}: no such run folder or model folder")
    return Target("model", s, s)  # a built-in name or a Hugging Face id (the local cache decides)


def _load_target(t, allow_download: bool = False):
    """(model, tokenizer) in eval mode for a resolved target.  A run's final policy is loaded from its own
    folder (its adapter names its base portably; its tokenizer is saved beside it); where its adapter
    cannot name the base (an older run that moved), from the run's config as ``evaluate`` does."""
    from paretoalign.evaluation.targets import Target, load_target

    if t.kind == "run" and (t.policy_dir / "tokenizer_config.json").is_file():
        try:
            return load_target(Target("model", str(t.policy_dir), str(t.policy_dir)), allow_download)
        except ModelNotFoundError:
            if not t.base_model:
                raise
    return load_target(t, allow_download)


def load_policy(path: str | Path, allow_download: bool = False, device=None):
    """``(model, tokenizer)`` of a run folder, ``final/``, checkpoint, model folder or model name, in
    eval mode (see the module docs for what loads how).  ``device``: where to put the model (``"auto"``:
    the GPU when there is one; default: where it loads, the CPU).  The tokenizer pads on the left."""
    model, tok = _load_target(resolve_policy(path), allow_download)
    if device is not None:
        from paretoalign.models import resolve_device

        model.to(resolve_device(device))
    return model, tok


# ---------------------------------------------------------------------------------------------
# generate


@dataclass
class GenerateConfig:
    """Options of ``paretoalign generate`` (``None`` means: the run's value, else the default shown)."""

    target: str = field("", cli=False, help=_TARGET_HELP)
    prompts: str = field("", help="The prompts to answer (required): a .jsonl, .json, .csv, .txt or .parquet file, a "
                         "save_to_disk folder (the formats of `train --prompts`), or 'builtin'.")
    prompt_column: str = field("prompt", help="Column holding the prompt (ignored for .txt).")
    output: Optional[str] = field(None, help="JSONL file to write (written through a temporary file, so it is complete "
                                  "or absent); default: standard output, a line as each batch is done.")
    objectives: Optional[list] = field(None, help="Objective specs that score every completion (default: the run's "
                                       "objectives; none for a model without a run).")
    num_samples: int = field(1, help="Completions per prompt (one JSONL line each).")
    max_new_tokens: Optional[int] = field(None, help=f"Completion length cap (default: the run's, else {DEFAULT_MAX_NEW_TOKENS}).")
    temperature: float = field(0.7, help="Sampling temperature.")
    top_p: float = field(1.0, help="Nucleus sampling.")
    do_sample: bool = field(True, help="Sample (true) or decode greedily (false).")
    seed: int = field(0, help="Sampling seed (completions depend on it and on --batch-size).")
    batch_size: int = field(16, help="Prompts per generation call (each with --num-samples completions).")
    generation_backend: Literal["hf", "hf-generate", "vllm"] = field(
        "hf", help="'hf': paretoalign's packed decode loop where the model is Llama-like, else transformers' generate; "
        "'hf-generate': always transformers' generate; 'vllm': a vLLM engine (GPU; pip install 'paretoalign[vllm]').")
    system_prompt: Optional[str] = field(None, help="System message (default: the run's); also --system.")
    use_chat_template: Optional[bool] = field(None, help="Apply the chat template (default: the run's, else true).")
    device: str = field("auto", help="Where the model runs: auto (the GPU if there is one), cpu, cuda, cuda:1, ...")
    allow_download: bool = field(False, help="Let models be fetched from a hub (off: local only).")

    def __post_init__(self):
        check_fields(self)
        if not str(self.target).strip():
            raise ConfigError("generate needs a run folder, a checkpoint or a model (the RUN argument)")
        if not str(self.prompts).strip():
            raise ConfigError("generate needs --prompts: a file of prompts (.jsonl, .json, .csv, .txt, .parquet) or 'builtin'")
        if self.num_samples < 1:
            raise ConfigError(f"option num_samples: must be >= 1, got {self.num_samples!r}")
        if isinstance(self.objectives, str):
            from paretoalign.objectives.spec import split_objective_specs

            self.objectives = split_objective_specs(self.objectives)
        elif self.objectives is not None:
            self.objectives = [str(o) for o in self.objectives]
        if self.output is not None and self.output != "-" and Path(self.output).is_dir():
            raise ConfigError(f"--output {self.output!r} is a folder; give a file name (e.g. {self.output}/generations.jsonl)")
        from paretoalign.rollout import check_backend  # torch: when the command runs, not while --help builds

        check_backend(self.generation_backend)


def _score_value(x: float):
    return float(x) if math.isfinite(float(x)) else None


def generate_rows(model, tokenizer, prompts: list, objectives=None, num_samples: int = 1, max_new_tokens: int = 128,
                  temperature: float = 0.7, top_p: float = 1.0, do_sample: bool = True, seed: int = 0,
                  batch_size: int = 16, use_chat_template: bool = True, system_prompt: str | None = None,
                  generation_backend: str = "hf"):
    """Yield one dict per prompt per sample, batch by batch: ``index`` (the prompt's 0-based place),
    ``sample``, ``prompt`` (the text the objectives see), ``messages`` (for a conversation prompt),
    ``completion`` and ``scores`` ({objective: raw score, null where not finite}; every objective of
    ``objectives``, an :class:`~paretoalign.objectives.base.ObjectiveSet` or None).  The seed is set
    once, the caller's RNG state is restored afterwards."""
    import torch

    from paretoalign.rollout import generate

    names = list(objectives.names) if objectives is not None else []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            ro = generate(model, tokenizer, prompts[start : start + batch_size], num_generations=num_samples,
                          max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, do_sample=do_sample,
                          use_chat_template=use_chat_template, system_prompt=system_prompt, backend=generation_backend)
            scores = objectives.raw_scores(ro.prompt_texts, ro.completions).tolist() if names else None
            for r, (prompt, text, completion) in enumerate(zip(ro.prompts, ro.prompt_texts, ro.completions)):
                row = {"index": start + r // num_samples, "sample": r % num_samples, "prompt": text}
                if isinstance(prompt, (list, tuple)):
                    row["messages"] = list(prompt)
                row["completion"] = completion
                row["scores"] = {n: _score_value(v) for n, v in zip(names, scores[r])} if scores else {}
                yield row


def run_generate(cfg: GenerateConfig, stream=None, log=None) -> dict:
    """``paretoalign generate``: answer ``cfg.prompts`` with ``cfg.target`` and write JSONL to ``cfg.output``
    (or ``stream``, default standard output).  Everything the user gave is checked before the model loads.
    Returns {rows, prompts, objectives, output}."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t = resolve_policy(cfg.target)
    rc = t.run_config or {}
    from paretoalign.data.prompts import load_prompts

    prompts = load_prompts(cfg.prompts, column=cfg.prompt_column)
    if not prompts:
        raise DataError(f"{cfg.prompts}: no prompts")
    specs = cfg.objectives if cfg.objectives is not None else [str(s) for s in rc.get("objectives") or []]
    max_new_tokens = int(cfg.max_new_tokens or rc.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
    system_prompt = cfg.system_prompt if cfg.system_prompt is not None else rc.get("system_prompt")
    use_chat_template = cfg.use_chat_template if cfg.use_chat_template is not None else bool(rc.get("use_chat_template", True))
    model, tok = _load_target(t, cfg.allow_download)
    from paretoalign.models import resolve_device

    model.to(resolve_device(cfg.device))
    objectives = None
    if specs:
        from paretoalign.objectives import build_objective_set

        objectives = build_objective_set(specs, tok, "skip")  # a NaN score is written as null, not an error
    names = list(objectives.names) if objectives is not None else []
    to_stdout = cfg.output in (None, "-")
    out_path = None if to_stdout else Path(cfg.output)
    log(f"[generate] {t.name}: {len(prompts)} prompts x {cfg.num_samples} sample(s), up to {max_new_tokens} new tokens; "
        f"scores: {', '.join(names) if names else 'none (pass --objectives)'}")
    rows = generate_rows(model, tok, prompts, objectives, cfg.num_samples, max_new_tokens, cfg.temperature, cfg.top_p,
                         cfg.do_sample, cfg.seed, cfg.batch_size, use_chat_template, system_prompt,
                         cfg.generation_backend)
    n = 0
    if to_stdout:
        stream = stream or sys.stdout
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
            if row["sample"] == cfg.num_samples - 1:
                stream.flush()
    else:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + run_dir.TMP_SUFFIX)
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                for row in rows:
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    n += 1
            tmp.replace(out_path)
        finally:
            if tmp.exists():
                tmp.unlink()
        log(f"[generate] {n} lines -> {out_path}")
    return {"rows": n, "prompts": len(prompts), "objectives": names, "output": str(out_path) if out_path else None}


def _overrides(args, cls) -> dict:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def _cmd_generate(args) -> int:
    from paretoalign.config_utils import build_config

    run_generate(build_config(GenerateConfig, args.config, _overrides(args, GenerateConfig)))
    return 0


def add_generate_parser(sub):
    """Register ``generate`` on the subparsers object ``sub`` (imports neither torch nor transformers)."""
    import argparse

    from paretoalign.config_utils import add_dataclass_arguments

    p = sub.add_parser(
        "generate",
        help="Answer a file of prompts with a run's policy (or any model): JSONL with every objective's score.",
        description="Sample completions for every prompt of --prompts with a run's final policy (or its final/ "
        "folder, a checkpoint, a model folder or name) and score each with the run's objectives (--objectives to "
        "choose others). Writes one JSON line per prompt per sample: index, sample, prompt, completion, scores "
        "(raw objective values; null where an objective gave no finite score).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("target", metavar="RUN", help=_TARGET_HELP)
    p.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    add_dataclass_arguments(p, GenerateConfig)
    p.add_argument("--system", dest="system_prompt", default=argparse.SUPPRESS, help="The same as --system-prompt.")
    p.set_defaults(func=_cmd_generate)
    return p


# ---------------------------------------------------------------------------------------------
# chat


@dataclass
class ChatConfig:
    """Options of ``paretoalign chat``."""

    target: str = field("", cli=False, help=_TARGET_HELP)
    system_prompt: Optional[str] = field(None, help="System message opening the conversation (default: the run's "
                                         "--system-prompt, else none); also --system.")
    max_new_tokens: int = field(256, help="Length cap of each answer.")
    temperature: float = field(0.7, help="Sampling temperature.")
    top_p: float = field(1.0, help="Nucleus sampling.")
    do_sample: bool = field(True, help="Sample (true) or decode greedily (false).")
    seed: int = field(0, help="Sampling seed (set once, at the start of the conversation).")
    device: str = field("auto", help="Where the model runs: auto (the GPU if there is one), cpu, cuda, cuda:1, ...")
    allow_download: bool = field(False, help="Let models be fetched from a hub (off: local only).")

    def __post_init__(self):
        check_fields(self)
        if not str(self.target).strip():
            raise ConfigError("chat needs a run folder, a checkpoint or a model (the RUN argument)")


_COMMAND = re.compile(r"^/[A-Za-z]+$")
CHAT_HELP = "commands: /reset (forget the conversation), /exit (or Ctrl-D) to leave"


def _streamer(tokenizer, write: Callable[[str], None]):
    from transformers import TextStreamer

    class _Stream(TextStreamer):
        """transformers' streamer, writing each finished piece of text to ``write`` instead of printing it."""

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                write(text)

    return _Stream(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _render(tokenizer, messages: list[dict]):
    """Token ids [1, T] of the conversation, ready for the assistant's next answer."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # no template: a plain transcript
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def chat_loop(model, tokenizer, read_line: Callable[[str], str] = input, write: Callable[[str], None] | None = None,
              system_prompt: str | None = None, max_new_tokens: int = 256, temperature: float = 0.7,
              top_p: float = 1.0, do_sample: bool = True, prompt: str = "you> ", reply: str = "bot> ") -> list[dict]:
    """Chat with ``model`` until ``/exit``, end of input (``read_line`` raises EOFError) or Ctrl-C at the prompt.

    Each line read is a user message, answered with the whole conversation so far (chat template
    applied) and streamed to ``write`` as it is generated; ``/reset`` forgets the conversation (the
    system message stays).  Ctrl-C while answering drops that turn and returns to the prompt.  The
    oldest turns are dropped when the conversation outgrows the model's context.  Returns the turns:
    ``{"messages": what the model saw, "answer": its answer (decoded from the generated tokens)}``."""
    import torch

    write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    start = [{"role": "system", "content": system_prompt}] if system_prompt else []
    history = list(start)
    turns: list[dict] = []
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    device = next(model.parameters()).device
    while True:
        try:
            line = read_line(prompt)
        except (EOFError, KeyboardInterrupt):
            write("\n")
            return turns
        text = line.strip()
        if not text:
            continue
        if _COMMAND.match(text):
            cmd = text.lower()
            if cmd in ("/exit", "/quit"):
                return turns
            if cmd == "/reset":
                history = list(start)
                write("(conversation cleared)\n")
            else:
                write(f"(unknown command {text}; {CHAT_HELP})\n")
            continue
        messages = history + [{"role": "user", "content": text}]
        ids = _render(tokenizer, messages)
        dropped = 0
        while limit and ids.shape[1] + max_new_tokens > limit and len(messages) > len(start) + 1:
            messages = start + messages[len(start) + 2 :]  # the oldest user/assistant exchange
            ids = _render(tokenizer, messages)
            dropped += 1
        if limit and ids.shape[1] + max_new_tokens > limit:
            write(f"(that message is too long: {ids.shape[1]} tokens + {max_new_tokens} new ones exceed the model's "
                  f"context of {limit}; write less or lower --max-new-tokens)\n")
            continue
        if dropped:
            write(f"(the {dropped} oldest exchange(s) were dropped to fit the model's context)\n")
            history = messages[:-1]
        kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id,
                      eos_token_id=tokenizer.eos_token_id)
        if do_sample:
            kwargs.update(temperature=max(temperature, 1e-5), top_p=top_p, top_k=0)
        write(reply)
        ids = ids.to(device)
        try:
            with torch.no_grad():
                out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                     streamer=_streamer(tokenizer, write), **kwargs)
        except KeyboardInterrupt:
            write("\n(interrupted; that turn was dropped)\n")
            continue
        write("\n")
        answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
        turns.append({"messages": messages, "answer": answer})
        history = messages + [{"role": "assistant", "content": answer.strip()}]


def run_chat(cfg: ChatConfig, read_line: Callable[[str], str] = input, write: Callable[[str], None] | None = None) -> list[dict]:
    """``paretoalign chat``: load ``cfg.target`` and chat with it (see :func:`chat_loop`)."""
    write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    t = resolve_policy(cfg.target)
    rc = t.run_config or {}
    system_prompt = cfg.system_prompt if cfg.system_prompt is not None else rc.get("system_prompt")
    import torch

    model, tok = _load_target(t, cfg.allow_download)
    if hasattr(model, "merge_and_unload"):  # an adapter folded into its base once: each token costs the base's
        model = model.merge_and_unload()
    from paretoalign.models import resolve_device

    model.to(resolve_device(cfg.device)).eval()
    torch.manual_seed(cfg.seed)
    write(f"chatting with {t.name} ({CHAT_HELP})\n")
    if system_prompt:
        write(f"(system: {system_prompt})\n")
    return chat_loop(model, tok, read_line, write, system_prompt, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
                     cfg.do_sample)


def _cmd_chat(args) -> int:
    from paretoalign.config_utils import build_config

    cfg = build_config(ChatConfig, args.config, _overrides(args, ChatConfig))
    try:
        import readline  # noqa: F401  (line editing and history for input(), where the platform has it)
    except ImportError:
        pass
    run_chat(cfg)
    return 0


def add_chat_parser(sub):
    """Register ``chat`` on the subparsers object ``sub`` (imports neither torch nor transformers)."""
    import argparse

    from paretoalign.config_utils import add_dataclass_arguments

    p = sub.add_parser(
        "chat",
        help="Chat with a run's policy (or any model) in the terminal: chat template, multi-turn, streamed answers.",
        description="An interactive conversation with a run's final policy (or its final/ folder, a checkpoint, a "
        "model folder or name): each answer is generated from the whole conversation with the model's chat "
        f"template and printed as it is produced. {CHAT_HELP[0].upper() + CHAT_HELP[1:]}; Ctrl-C while it answers "
        "stops that answer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("target", metavar="RUN", help=_TARGET_HELP)
    p.add_argument("--config", default=None, help="YAML file of options (flags given here override it).")
    add_dataclass_arguments(p, ChatConfig)
    p.add_argument("--system", dest="system_prompt", default=argparse.SUPPRESS, help="The same as --system-prompt.")
    p.set_defaults(func=_cmd_chat)
    return p
