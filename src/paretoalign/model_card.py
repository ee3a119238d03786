"""The model card of a trained policy: ``final/policy/README.md``, where the Hugging Face Hub and
``from_pretrained`` users look for it.

:func:`model_card` is pure: the run's own records in, markdown out.  Its input is a dict of

``meta``
    ``final/paretoalign.json``: method, objectives, step, whether it is a LoRA adapter, the base
    model's provenance (``base``: name as given, kind builtin/hub/local/tiny, revision or sha256,
    what the adapter records as its base) and the method's row of the method table
    (``method_info``: family, summary, paper, arXiv id).
``config``
    ``config.yaml``: the resolved training configuration (hyper-parameters, prompts or pairs).
``summary``
    ``summary.json`` (first vs last training rewards, mean weights) or, before the run has written
    it, the same numbers computed from ``metrics.jsonl`` (:func:`training_summary`); may be None.
``eval``
    ``eval.json`` written by ``paretoalign evaluate RUN`` for this final model; may be None.
``name``
    the run folder's name (the card's title).

:func:`card_inputs` gathers that dict from a run folder, :func:`write_model_card` writes the card
into a policy folder (replacing PEFT's empty template), and :func:`refresh_model_card` does both
for a finished run (``paretoalign evaluate`` calls it after writing ``RUN/eval.json``, so the card
gains its held-out section).  Everything read here is JSON or YAML: nothing is unpickled.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from paretoalign import __version__, run_dir

__all__ = ["CARD_FILE", "card_inputs", "model_card", "refresh_model_card", "training_summary", "write_model_card"]

CARD_FILE = "README.md"
PROJECT = "paretoalign"
TAGS = ("paretoalign", "multi-objective-alignment")

# Hyper-parameters shown, in this order, when the run's config has them; "<method>:" restricts one
# to a method (the others would show options the method ignores).
_HYPER = (
    "learning_rate", "batch_size", "max_steps", "rounds", "seed", "num_generations", "max_new_tokens", "temperature",
    "top_p", "kl_coef", "clip_eps", "advantage", "ppo_epochs", "num_mini_batches", "pama:pama_granularity",
    "pama:pama_ratio", "pama:noon", "group_aggregation", "scale_rewards", "beta", "label_smoothing",
    "mopo:constraints", "mopo:mopo_form", "mopo:tau", "amopo:amopo_beta", "amopo:amopo_gamma", "amopo:sft_coef",
    "prompts_per_round", "num_candidates", "sft_epochs", "min_angle", "max_angle", "use_lora", "lora_r",
    "lora_alpha", "lora_dropout", "lora_target_modules", "weight_decay", "max_grad_norm", "mixed_precision",
    "system_prompt", "use_chat_template",
)
_GROUP_ONLY = ("group_aggregation", "scale_rewards")  # shown for group advantages only
_LINEAR = ("morlhf", "mo-grpo")  # methods whose weights are fixed linear weights (else: a scale of their solve)


# ---------------------------------------------------------------------------------------------
# gathering the inputs (files of a run folder; damaged or missing ones are left out)


def _read_json(f: Path):
    try:
        data = json.loads(Path(f).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_yaml(f: Path) -> dict:
    try:
        data = yaml.safe_load(Path(f).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def training_summary(rows: list[dict], names: list[str]) -> dict | None:
    """First vs last training rewards from ``metrics.jsonl`` rows, as the trainers' summaries give them
    (each the mean over the first/last ``window`` steps, window = min(5, steps // 2), at least 1)."""
    rows = [r for r in rows if isinstance(r, dict)]
    if not rows:
        return None
    n = max(1, min(5, len(rows) // 2))

    def mean(key, part):
        vals = [v for v in (_finite(r.get(key)) for r in part) if v is not None]
        return sum(vals) / len(vals) if vals else None

    out: dict = {"steps": len(rows), "window": n, "objectives": list(names)}
    for name in names:
        first, last = mean(f"reward/{name}", rows[:n]), mean(f"reward/{name}", rows[-n:])
        if first is not None or last is not None:
            out[name] = {"first": first, "last": last, "weight": mean(f"weight/{name}", rows)}
    if any("loss" in r for r in rows) and not any(name in out for name in names):
        out["loss"] = {"first": mean("loss", rows[:n]), "last": mean("loss", rows[-n:])}
    return out


def _names(meta: dict) -> list[str]:
    return [o.get("name", "?") if isinstance(o, dict) else str(o) for o in meta.get("objectives") or []]


def card_inputs(run: str | Path, final: str | Path | None = None, summary: dict | None = None,
                eval_result: dict | None = None) -> dict:
    """The input of :func:`model_card` for the run folder ``run``.

    ``final``: the folder holding ``paretoalign.json`` (default ``RUN/final``; the trainers pass the
    ``final.tmp`` being written).  ``summary``: the run's summary (default: ``summary.json`` when it
    describes as many steps as the final model, else computed from ``metrics.jsonl``).
    ``eval_result``: a fresh evaluation of this final model (default: ``RUN/eval.json`` when it was
    written after the final model, else none: an older one evaluated an earlier model)."""
    run = Path(run)
    final = Path(final) if final is not None else run / run_dir.FINAL
    meta = _read_json(final / run_dir.FINAL_META) or {}
    config = _read_yaml(run / run_dir.CONFIG_FILE)
    if summary is None:
        saved = _read_json(run / run_dir.SUMMARY_FILE)
        if saved is not None and saved.get("steps") == meta.get("step"):
            summary = saved
        else:
            summary = training_summary(run_dir.read_metrics(run), _names(meta))
    if eval_result is None:
        f = run / "eval.json"
        try:
            fresh = f.is_file() and f.stat().st_mtime >= (final / run_dir.FINAL_META).stat().st_mtime
        except OSError:
            fresh = False
        eval_result = _read_json(f) if fresh else None
    if eval_result is not None and eval_result.get("kind") not in (None, "run"):
        eval_result = None
    return {"meta": meta, "config": config, "summary": summary, "eval": eval_result, "name": run.name}


def write_model_card(policy_dir: str | Path, info: dict) -> Path:
    """Write :func:`model_card` of ``info`` to ``policy_dir/README.md`` (replacing PEFT's template)."""
    f = Path(policy_dir) / CARD_FILE
    run_dir.atomic_write_text(f, model_card(info))
    return f


def refresh_model_card(run: str | Path, eval_result: dict | None = None, summary: dict | None = None) -> Path | None:
    """Rewrite ``RUN/final/policy/README.md`` from the run's current records; returns its path, or
    None when the run has no final model yet.

    ``paretoalign evaluate RUN`` calls this after writing ``RUN/eval.json``, passing its result
    (``eval_result``), so the card shows the held-out numbers; without it, ``RUN/eval.json`` is used
    when it is newer than the final model.  ``summary``: the run's summary (default: summary.json)."""
    run = Path(run)
    policy = run / run_dir.FINAL / run_dir.POLICY
    if not policy.is_dir() or not (run / run_dir.FINAL / run_dir.FINAL_META).is_file():
        return None
    return write_model_card(policy, card_inputs(run, summary=summary, eval_result=eval_result))


# ---------------------------------------------------------------------------------------------
# the card


def _num(x, digits: int = 3) -> str:
    v = _finite(x)
    return "n/a" if v is None else f"{v:.{digits}f}"


def _signed(x, digits: int = 3) -> str:
    v = _finite(x)
    return "n/a" if v is None else f"{v:+.{digits}f}"


def _cell(value) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value))
    return str(value).replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    return f"`{text}`" if "`" not in str(text) else str(text)


def _objective_rows(meta: dict, config: dict) -> list[dict]:
    """Each objective as {name, direction, spec}, from the final metadata (or the config's specs)."""
    out = []
    for i, o in enumerate(meta.get("objectives") or config.get("objectives") or []):
        if isinstance(o, dict):
            out.append({"name": o.get("name", f"objective {i}"), "direction": o.get("direction"),
                        "spec": o.get("spec") or o.get("kind") or ""})
        else:
            out.append({"name": str(o), "direction": None, "spec": ""})
    specs = config.get("objectives") or []
    for row, spec in zip(out, specs if len(specs) == len(out) else []):
        row["spec"] = row["spec"] or str(spec)
    return out


def _weights(meta: dict, config: dict, names: list[str]) -> list | None:
    w = meta.get("weights")
    if w is None:
        w = config.get("weights")
    if isinstance(w, (list, tuple)) and len(w) == len(names):
        return [_finite(x) for x in w]
    return None


def _preference_text(method: str, family: str, weights: list | None, names: list[str], meta: dict, config: dict) -> str:
    if family == "steerable":
        template = meta.get("direction_template") or config.get("direction_template")
        text = ("Steerable: one model for every preference. At inference, write a direction over the objectives "
                f"({', '.join(names)}) into the system message")
        return text + (f" with the template {_code(template)}." if template else ".") + \
            " `paretoalign evaluate RUN --direction 0.8,0.6` does this for you."
    if method == "mopo":
        cons = config.get("constraints")
        return ("Constrained: the primary objective is optimised subject to lower bounds on the others"
                + (f" (constraints: {_code(json.dumps(cons))})." if cons else "."))
    if weights is not None:
        pairs = ", ".join(f"{n} {_num(w)}" for n, w in zip(names, weights))
        if method in _LINEAR or family == "offline":
            return f"Fixed weights: {pairs}."
        return f"Preference (scales of the method's own weight solve): {pairs}."
    if method in _LINEAR:
        return "Uniform weights (1/K each; no `--weights` given)."
    if family == "online":
        return ("No preference given: the method solves its own weights at every step (their means are in the "
                "training table below).")
    return "No weights recorded."


def _base_line(base: dict, meta: dict) -> str:
    kind, name = base.get("kind"), base.get("name") or meta.get("base_model") or "?"
    if kind == "builtin":
        src = base.get("source") or "the bundled model"
        sha = f", GGUF sha256 `{base['sha256'][:16]}…`" if base.get("sha256") else ""
        return f"`{name}`, paretoalign's built-in model ({src}{sha})"
    if kind == "hub":
        rev = f" at revision `{base['revision']}`" if base.get("revision") else ""
        return f"`{name}` from the Hugging Face Hub{rev}"
    if kind == "tiny":
        where = " (saved beside the adapter in `final/base`)" if base.get("adapter_base") else ""
        return (f"`tiny`: a random 2-layer test model rebuilt from seed {base.get('seed', '?')}{where}; "
                "for tests only, never for results")
    if kind == "adapter":
        return f"the earlier adapter `{base.get('path', name)}` (training continued on it; its base: `{base.get('adapter_base')}`)"
    if kind == "local":
        return (f"the local folder `{base.get('path', name)}` (recorded as an absolute path: a local base can "
                "only be found where it was; move it and the adapter must be loaded onto it explicitly)")
    return f"`{name}`"


def _load_section(base: dict, lora: bool) -> list[str]:
    kind, adapter_base = base.get("kind"), base.get("adapter_base")
    out = ["## How to load", "", "With paretoalign (any copy of the run folder, wherever it now lives):", "",
           "```python", "import paretoalign", "",
           'model, tokenizer = paretoalign.load_policy("path/to/run")  # or path/to/run/final/policy',
           "```", "",
           "```bash",
           "paretoalign chat path/to/run",
           "paretoalign generate path/to/run --prompts prompts.jsonl --output generations.jsonl",
           "```", "", "With transformers and PEFT alone:", ""]
    if not lora:
        out += ["```python", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                'model = AutoModelForCausalLM.from_pretrained("path/to/run/final/policy")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/run/final/policy")', "```", "",
                "The folder is self-contained (full fine-tuning): it loads from anywhere."]
        return out
    if kind == "hub":
        out += ["```python", "from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                'model = AutoPeftModelForCausalLM.from_pretrained("path/to/run/final/policy")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/run/final/policy")', "```", "",
                f"The adapter names its base by its Hub id (`{adapter_base}`): it loads from anywhere the base is "
                "in the Hugging Face cache or can be downloaded."]
        return out
    if kind == "builtin":
        base_expr = "paretoalign.models.smollm2_path()  # the converted model in paretoalign's cache"
        note = (f"The adapter names its base by paretoalign's built-in name (`{adapter_base}`), which PEFT alone "
                "cannot resolve (it is not a Hub id: the built-in model is a de-quantised GGUF, not the Hub's "
                "weights), so give PEFT the base model yourself:")
        out += [note, "", "```python", "import paretoalign.models", "from peft import PeftModel",
                "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                f"base = AutoModelForCausalLM.from_pretrained({base_expr})",
                'model = PeftModel.from_pretrained(base, "path/to/run/final/policy")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/run/final/policy")', "```"]
        return out
    if adapter_base and not Path(str(adapter_base)).is_absolute():
        out += [f"The adapter names its base by a path relative to the adapter folder (`{adapter_base}`, saved inside "
                "the run). PEFT reads that path relative to the working directory, so either load from the adapter "
                "folder itself or give PEFT the base:", "",
                "```python", "import os", "from peft import AutoPeftModelForCausalLM, PeftModel",
                "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                'os.chdir("path/to/run/final/policy")',
                'model = AutoPeftModelForCausalLM.from_pretrained(".")', "# or, from any working directory:",
                'base = AutoModelForCausalLM.from_pretrained("path/to/run/final/base")',
                'model = PeftModel.from_pretrained(base, "path/to/run/final/policy")',
                'tokenizer = AutoTokenizer.from_pretrained("path/to/run/final/policy")', "```"]
        return out
    out += ["```python", "from peft import AutoPeftModelForCausalLM, PeftModel",
            "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
            'model = AutoPeftModelForCausalLM.from_pretrained("path/to/run/final/policy")',
            "# if the base model has moved:",
            'model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("/new/place/of/base"), '
            '"path/to/run/final/policy")',
            'tokenizer = AutoTokenizer.from_pretrained("path/to/run/final/policy")', "```", "",
            (f"The adapter names its base by the absolute path `{adapter_base}`: it loads while that folder is there."
             if adapter_base else "The adapter does not name its base model: load it onto the base explicitly.")]
    return out


def _training_section(summary: dict | None, objectives: list[dict], steps) -> list[str]:
    out = ["## Training rewards", ""]
    if not summary:
        return out + ["No training metrics were recorded."]
    n = summary.get("window", 1)
    rows = []
    for o in objectives:
        s = summary.get(o["name"])
        if isinstance(s, dict):
            change = (_finite(s.get("last")) - _finite(s.get("first"))
                      if _finite(s.get("last")) is not None and _finite(s.get("first")) is not None else None)
            rows.append(f"| {_cell(o['name'])} | {_num(s.get('first'))} | {_num(s.get('last'))} | {_signed(change)} | "
                        f"{_num(s.get('weight'))} |")
    if rows:
        out += [f"Mean reward on the training batches over the first and last {n} step(s) of {steps}. These are the "
                "rewards the trainer optimised: **minimised objectives are negated, so higher is better in every "
                "row**. Training batches are not a held-out evaluation.", "",
                f"| objective | first {n} | last {n} | change | mean weight |", "|---|---:|---:|---:|---:|", *rows]
    loss = summary.get("loss")
    if isinstance(loss, dict):
        out += ["", f"Training loss: {_num(loss.get('first'), 4)} over the first {n} step(s), "
                f"{_num(loss.get('last'), 4)} over the last {n}."]
    util = summary.get("utility")
    if isinstance(util, dict):
        out += ["", f"Utility of the selected completions: {_num(util.get('first'))} in the first round, "
                f"{_num(util.get('last'))} in the last."]
    if len(out) == 2:
        out.append("No per-objective training rewards were recorded.")
    return out


def _eval_section(ev: dict | None) -> list[str]:
    out = ["## Held-out evaluation", ""]
    if not ev:
        return out + ["Not evaluated yet. `paretoalign evaluate path/to/run` scores the held-out prompts and "
                      "rewrites this card with the results."]
    names = ev.get("names") or list((ev.get("summary") or {}).keys())
    signs = ev.get("signs") or [1.0] * len(names)
    summ, wins = ev.get("summary") or {}, ev.get("win_rate") or {}
    base = ev.get("baseline") or {}
    bsum = base.get("summary") or {}
    prompts, dec = ev.get("prompts") or {}, ev.get("decoding") or {}
    n = prompts.get("n", "?")
    out.append(f"{n} prompts ({prompts.get('split', '?')} split of `{prompts.get('prompts', '?')}`), one completion "
               f"each, temperature {dec.get('temperature', '?')}, up to {dec.get('max_new_tokens', '?')} new tokens, "
               f"seed {dec.get('seed', '?')}. Raw objective scores (each objective's own units and direction).")
    if ev.get("direction"):
        out.append(f"Steered with the direction {', '.join(_num(x) for x in ev['direction'])} "
                   f"(system message: {_code(_cell(dec.get('system_prompt') or ''))}).")
    out.append("")
    header = "| objective | better | mean ± s.e. |"
    sep = "|---|---|---:|"
    if wins:
        header += f" baseline (`{_cell(base.get('target', 'base'))}`) | win rate vs baseline [95 % CI] |"
        sep += "---:|---:|"
    out += [header, sep]
    for name, sign in zip(names, signs):
        s = summ.get(name) or {}
        row = f"| {_cell(name)} | {'higher' if (_finite(sign) or 1) > 0 else 'lower'} | " \
              f"{_num(s.get('mean'))} ± {_num(s.get('stderr'))} |"
        if wins:
            w = wins.get(name) or {}
            ci = w.get("ci95") or [None, None]
            row += f" {_num((bsum.get(name) or {}).get('mean'))} | {_num(w.get('win_rate'), 2)} " \
                   f"[{_num(ci[0], 2)}, {_num(ci[1], 2)}] |"
        out.append(row)
    return out


def model_card(info: dict) -> str:
    """The markdown model card (YAML front matter + body) of a trained policy; ``info`` as in the module docs."""
    meta, config = info.get("meta") or {}, info.get("config") or {}
    mi = meta.get("method_info") or {}
    method = str(meta.get("method") or config.get("method") or "unknown")
    family = mi.get("family") or ""
    lora = bool(meta.get("lora", config.get("use_lora", True)))
    base = meta.get("base") or {"name": meta.get("base_model") or config.get("model")}
    objectives = _objective_rows(meta, config)
    names = [o["name"] for o in objectives]
    steps = meta.get("step", config.get("max_steps", config.get("rounds", "?")))
    weights = _weights(meta, config, names)

    front: dict = {"library_name": "peft" if lora else "transformers"}
    if base.get("kind") == "hub" and base.get("name"):
        front["base_model"] = base["name"]
    front["tags"] = [TAGS[0], method, TAGS[1]] + (["lora"] if lora else [])
    front["pipeline_tag"] = "text-generation"
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).strip(), "---", ""]

    title = info.get("name") or "policy"
    lines += [f"# {title}: {method} on {', '.join(names) or 'its objectives'}", ""]
    kind = f"A LoRA adapter (r={config.get('lora_r', '?')}, alpha={config.get('lora_alpha', '?')})" if lora \
        else "A fully fine-tuned model"
    lines += [f"{kind} trained with `{PROJECT}` "
              f"{meta.get('paretoalign', __version__)} to align a language model to {len(names)} objective(s) at "
              f"once with **{method}**.", ""]
    if base.get("kind") == "tiny":
        lines += ["> **Test model.** The base is paretoalign's random `tiny` model: the weights mean nothing.", ""]

    lines += ["## Method", ""]
    summary_line = mi.get("summary")
    lines.append(f"**`{method}`**" + (f" ({family})" if family else "") + (f": {summary_line}." if summary_line else "."))
    if mi.get("paper"):
        link = f" ([arXiv {mi['arxiv']}](https://arxiv.org/abs/{mi['arxiv']}))" if mi.get("arxiv") else ""
        lines += ["", f"Paper: {mi['paper']}{link}."]
    lines.append("")

    lines += ["## Objectives", "", "| objective | direction | spec | weight |", "|---|---|---|---:|"]
    for i, o in enumerate(objectives):
        w = _num(weights[i]) if weights is not None else "—"
        lines.append(f"| {_cell(o['name'])} | {o['direction'] or '—'} | {_code(_cell(o['spec'])) if o['spec'] else '—'} "
                     f"| {w} |")
    lines += ["", _preference_text(method, family, weights, names, meta, config), ""]

    lines += ["## Training", ""]
    lines.append(f"- **Base model:** {_base_line(base, meta)}")
    if config.get("pairs"):
        lines.append(f"- **Preference pairs:** {_cell(config['pairs'])}")
    if config.get("prompts") is not None and not config.get("pairs"):
        held = config.get("heldout_fraction")
        lines.append(f"- **Prompts:** `{config['prompts']}` (column `{config.get('prompt_column', 'prompt')}`"
                     + (f"; {held:g} held out for evaluation" if _finite(held) is not None else "") + ")")
    unit = "rounds" if family == "steerable" or ("rounds" in config and "max_steps" not in config) else "steps"
    lines.append(f"- **{unit.capitalize()}:** {steps}")
    hyper, grouped = [], config.get("advantage") == "group" or method == "mo-grpo"
    for key in _HYPER:
        only, _, k = key.rpartition(":")
        if (only and only != method) or k not in config or config[k] is None:
            continue
        if (k.startswith("lora_") and not lora) or (k in _GROUP_ONLY and not grouped):
            continue
        hyper.append(f"| `{k}` | {_cell(config[k])} |")
    if hyper:
        lines += ["", "| hyper-parameter | value |", "|---|---|", *hyper]
    lines.append("")

    lines += _training_section(info.get("summary"), objectives, steps) + [""]
    lines += _eval_section(info.get("eval")) + [""]
    lines += _load_section(base, lora) + [""]
    lines += ["## Files", "",
              f"Written by `{PROJECT}` with the run folder: `config.yaml` (every option), `metrics.jsonl` (per step), "
              "`summary.json`, `final/paretoalign.json` (this model's metadata and base-model provenance)."]
    return "\n".join(lines).rstrip() + "\n"
