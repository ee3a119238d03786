"""Steerable targets: something that answers a prompt *at a preference* ``w`` on the simplex.

``paretoalign serve TARGET`` (:mod:`paretoalign.serve`) puts one slider per objective in front of a
steerable target; this module says what a target is and finds the right kind for a ``TARGET``
string.  It imports no gradio, and neither torch nor transformers at import time.

The protocol (:class:`SteerableTarget`)::

    kind                 'dpa', 'front', ... (the name it was registered under)
    names                the objectives, in slider order (K >= 2)
    objective_specs      the specs that score an answer (build_objective_set)
    directions           'maximize' / 'minimize' per objective
    front                front.json's content to draw (None: no front)
    describe()           one line for the page and the console
    steer(w)          -> Steering: cheap, loads nothing; w is checked and normalised here
    prepare(w)           start-up: load what the first answer needs, build the objectives
    load(steering)    -> (model, tokenizer) for a Steering (cached by steering.model_key)
    model_for(w)      -> (model, tokenizer, system_prompt, note)
    generate_stream(prompt, w, decoding) -> yields the answer so far, token by token; the last
                         value is the final answer (stripped, as rollout.generate returns it)
    score(prompt, answer) -> {objective: raw score, None where not finite}

Kinds built in:

* ``dpa`` — a DPA run folder (or its ``final/``), or a front folder of ``--method dpa``: one model; the
  preference becomes the direction v = w/‖w‖ written into its system message, exactly as
  ``paretoalign evaluate --direction`` writes it
  (:func:`paretoalign.evaluation.evaluate.direction_system_prompt`, the run's names and template).
* ``rs`` — a front folder of ``--method rs`` (alone, or the ``rs/`` sub-front of a comparison): the
  K endpoints of ``front.json``'s ``training.endpoints`` merged at the preference, as the front merged
  them (``training.merge``; by default LoRA deltas summed exactly into one adapter of the concatenated
  rank, :func:`paretoalign.merging.merge`), with the weights rounded to steps of 0.001
  (:func:`round_to_step`: nearby slider positions share one merge; the last ``max_models`` merges stay
  loaded).  Endpoints that cannot be merged (different bases or tokenizers, ...) are the merging
  module's one-line error when the target is resolved.
* ``mod`` — a front folder of ``--method mod``: the same K endpoints decoded together at the preference
  by one :class:`paretoalign.mod.MultiObjectiveDecoder` (its weights set per answer, nothing reloads;
  the divergence of ``training.decoding.divergence``, default reverse_kl), streamed token by token
  through the decoder's ``on_token`` callback (:func:`stream_mod_answer`).
* ``front`` — a front folder (``front.json``, one run per point) of a method that is not steerable (or
  of a steerable one without a serve kind): the trained point nearest the preference (Euclidean
  distance on the simplex; a tie goes to the point listed first in ``front.json``) answers, and the
  page says which one and how far it is.

For ``rs`` and ``mod`` the front's evaluated point nearest the preference is ringed on the plot (the
answer itself comes from the endpoints at the preference, not from that point).

A run that is not steerable (one trained preference), a checkpoint, a model or a comparison of
several fronts is refused with one :class:`~paretoalign.errors.ConfigError` saying what to give
instead (``paretoalign chat`` talks to a single run).

Plugging in another kind (RiC, HoE, or another way to serve a Rewarded Soups endpoint set: the sketch
below is the idea of the built-in :class:`SoupTarget`): subclass :class:`SteerableTarget` in a module of this layer or above
(``tests/test_layering.py``; lower modules such as :mod:`paretoalign.merging` or :mod:`paretoalign.mod`
only lend it their functions), and register a resolver::

    from paretoalign.steering import SteerableTarget, Steering, fmt_weights, register_steerable

    class SoupTarget(SteerableTarget):
        kind = "rs"
        def steer(self, weights):                 # cheap: no model
            w = self.normalise(weights)
            return Steering(w, model_key="rs@" + ",".join(f"{x:.6f}" for x in w), system_prompt=None,
                            note=f"the {len(self.endpoints)} endpoints merged at w = {fmt_weights(w)}")
        def load(self, steering):                 # cached by model_key (--max-models)
            from paretoalign.merging import merge
            return merge(self.base, self.endpoints, list(steering.weights), checked=True).load(), self.tokenizer

    def soup_resolver(path, options):             # None: not mine; an error: mine but broken
        front = ...                               # e.g. a front.json of method 'rs' with its 'endpoints'
        if front is None:
            return None
        return SoupTarget(path, options, ...)     # self.base = merging.check_endpoints(endpoints): mismatched
                                                  # bases are its one-line ConfigError, before the server starts

    register_steerable("rs", soup_resolver)       # or "module:function", imported on first use

Registered resolvers are tried in registration order before the built-in ones; a resolver returns
``None`` for a path that is not its kind and raises a :class:`~paretoalign.errors.ParetoAlignError`
for one that is but cannot be served (it becomes one ``error:`` line before the server starts).
Installed packages can do the same through the ``paretoalign.steerable`` entry-point group
(name = kind, value = ``module:resolver``).  A kind whose answers do not come from one model (MOD,
:class:`ModTarget`) overrides :meth:`SteerableTarget.generate_stream` (yield the answer so far after each token, then the
final answer) and :meth:`SteerableTarget.prepare` (build the decoder, then :meth:`build_objectives`)
instead of :meth:`SteerableTarget.load`.
"""

from __future__ import annotations

import math
import queue
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from paretoalign import run_dir
from paretoalign.errors import ConfigError, FrontError, ParetoAlignError, RunDirError

__all__ = ["Decoding", "Steering", "SteerableTarget", "TargetOptions", "DPATarget", "FrontTarget", "ModTarget",
           "SoupTarget", "fmt_weights", "nearest_point", "on_simplex", "register_steerable", "resolve_steerable",
           "round_to_step", "stream_answer", "stream_mod_answer"]

DEFAULT_MAX_NEW_TOKENS = 128  # for a target whose run or front does not say
TIE_TOLERANCE = 1e-12  # distances this close are a tie (the point listed first in front.json wins)


# ---------------------------------------------------------------------------------------------
# records


@dataclass
class TargetOptions:
    """How a target loads its models (the command's --device, --allow-download, --max-models)."""

    device: str = "auto"
    allow_download: bool = False
    max_models: int = 2  # models kept loaded at once (a front's points are one model each)


@dataclass
class Decoding:
    """How an answer is decoded (the command's generation options)."""

    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    temperature: float = 0.7
    top_p: float = 1.0
    do_sample: bool = True
    seed: int = 0  # set before every answer: the same prompt at the same preference gives the same answer


@dataclass(frozen=True)
class Steering:
    """What answers at one preference (computed without loading anything).

    ``weights``: the preference, normalised onto the simplex; ``model_key``: which model answers
    (equal keys share one loaded model; None for a kind that has no single model); ``system_prompt``:
    the system message the model gets (None: none); ``note``: a sentence or two for the page;
    ``point``: the index in ``front["points"]`` to mark on the plot (the point that answers, or the
    nearest evaluated direction of a steerable model); ``distance``: from the preference to that
    point's preference; ``direction``: the unit direction given to a DPA model; ``point_label``: what the
    marked point is, for the plot's legend (None: the page's default)."""

    weights: tuple
    model_key: Optional[str]
    system_prompt: Optional[str]
    note: str
    point: Optional[int] = None
    distance: Optional[float] = None
    direction: Optional[tuple] = None
    point_label: Optional[str] = None


def fmt_weights(w: Sequence[float], names: Sequence[str] | None = None) -> str:
    """``(0.70, 0.30)`` or ``chars 0.70, words 0.30`` (3 decimals where 2 would hide a difference)."""
    d = 2 if all(abs(round(x, 2) - x) < 5e-4 for x in w) else 3
    if names:
        return ", ".join(f"{n} {x:.{d}f}" for n, x in zip(names, w))
    return "(" + ", ".join(f"{x:.{d}f}" for x in w) + ")"


def on_simplex(weights, names: Sequence[str], normalize: bool = False) -> tuple:
    """``weights`` checked by :func:`paretoalign.preferences.validate_weights` (one ConfigError per problem:
    wrong count, NaN, negative, all zero, or a sum other than 1 without ``normalize``) and divided by their
    sum in float64."""
    from paretoalign.preferences import validate_weights

    validate_weights(weights, len(names), list(names), normalize=normalize)
    values = [float(x) for x in (weights.split(",") if isinstance(weights, str) else weights)]
    total = math.fsum(values)
    return tuple(v / total for v in values)


def nearest_point(weights: Sequence[float], preferences: Sequence[Sequence[float]]) -> tuple[int, float, list[int]]:
    """``(index, distance, tied)``: the preference nearest ``weights`` by Euclidean distance (both on the
    simplex); among points within :data:`TIE_TOLERANCE` of the smallest distance the first listed wins
    (``tied`` lists them all, in order)."""
    if not preferences:
        raise FrontError("the front has no points to choose from")
    dist = [math.sqrt(math.fsum((float(a) - float(b)) ** 2 for a, b in zip(weights, p))) for p in preferences]
    best = min(dist)
    tied = [i for i, d in enumerate(dist) if d - best <= TIE_TOLERANCE]
    return tied[0], dist[tied[0]], tied


# ---------------------------------------------------------------------------------------------
# the protocol


class SteerableTarget:
    """Base class of a steerable target (see the module docs for the protocol).  Subclasses set the
    attributes in ``__init__`` and implement :meth:`steer`; the rest has working defaults for kinds whose
    answer at a preference comes from one model."""

    kind = ""

    def __init__(self, path: Path, options: TargetOptions | None = None):
        self.path = Path(path)
        self.options = options or TargetOptions()
        self.names: list[str] = []
        self.objective_specs: list[str] = []
        self.directions: list[str] = []
        self.front: Optional[dict] = None
        self.use_chat_template = True
        self.max_new_tokens = DEFAULT_MAX_NEW_TOKENS  # the run's or front's own (the command's default)
        self.objective_set = None  # built by prepare()
        self.context: Optional[int] = None  # the first model's context length (prepare), where it says
        self._models: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    # -- what it is
    def describe(self) -> str:
        return f"{self.kind} target {self.path}"

    def normalise(self, weights) -> tuple:
        """The preference as a tuple on the simplex: K finite, non-negative numbers, not all zero,
        divided by their sum; else one ConfigError saying what is wrong."""
        return on_simplex(weights, self.names, normalize=True)

    def uniform(self) -> tuple:
        return tuple(1.0 / len(self.names) for _ in self.names)

    def steer(self, weights) -> Steering:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- models
    def load(self, steering: Steering):
        """(model, tokenizer) for ``steering`` (default: ``load_policy(steering.model_key)``, adapters folded
        into the base once, as ``paretoalign chat`` does; put on ``options.device``)."""
        from paretoalign.inference import load_policy

        model, tok = load_policy(steering.model_key, self.options.allow_download, device=self.options.device)
        if hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        return model.eval(), tok

    def _cached(self, steering: Steering):
        key = steering.model_key
        if key in self._models:
            self._models.move_to_end(key)
            return self._models[key]
        while len(self._models) >= max(1, int(self.options.max_models)):
            self._models.popitem(last=False)
        self._models[key] = self.load(steering)
        return self._models[key]

    def model_for(self, weights):
        """``(model, tokenizer, system_prompt, note)`` at preference ``weights``."""
        s = self.steer(weights)
        model, tok = self._cached(s)
        return model, tok, s.system_prompt, s.note

    def prepare(self, weights=None) -> None:
        """Start-up: load the model of the first answer and build the objectives, so that every problem
        is one error before the server starts."""
        model, tok, _, _ = self.model_for(weights if weights is not None else self.uniform())
        self.context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.build_objectives(tok)

    def build_objectives(self, tokenizer) -> None:
        from paretoalign.objectives import build_objective_set

        objs = build_objective_set(list(self.objective_specs), tokenizer, "skip")
        if list(objs.names) != list(self.names):
            raise ConfigError(f"{self.path}: the objectives {list(objs.names)} (from {self.objective_specs}) are not "
                              f"the target's {self.names}")
        self.objective_set = objs

    # -- answers
    def generate_stream(self, prompt: str, weights, decoding: Decoding) -> Iterator[str]:
        """The answer at ``weights`` so far, once per generated token; the last value is the final answer."""
        with self._lock:  # one answer (and one model load) at a time per target
            model, tok, system_prompt, _ = self.model_for(weights)
            yield from stream_answer(model, tok, prompt, system_prompt, decoding, self.use_chat_template)

    def score(self, prompt: str, answer: str) -> dict:
        """Every objective's raw score of ``answer`` to ``prompt`` (None where it gave no finite score)."""
        if self.objective_set is None:
            raise ConfigError("the objectives are not built yet (call prepare() first)")
        row = self.objective_set.raw_scores([prompt], [answer])[0].tolist()
        return {n: (float(v) if math.isfinite(float(v)) else None) for n, v in zip(self.names, row)}


# ---------------------------------------------------------------------------------------------
# generation, streamed


def check_prompt(prompt) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("write a prompt first")
    return prompt


def prompt_ids(tokenizer, prompt: str, system_prompt: str | None, use_chat_template: bool = True):
    """The token ids [1, T] the model sees: the prompt as a user message under ``system_prompt``, rendered
    by :func:`paretoalign.rollout.render_prompt` (the text ``generate``/``evaluate`` feed the model)."""
    from paretoalign.preferences import conditioned_prompt
    from paretoalign.rollout import render_prompt

    conv = conditioned_prompt(prompt, system_prompt) if system_prompt else prompt
    text = render_prompt(conv, tokenizer, use_chat_template)
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]


def check_context(model, n_prompt: int, max_new_tokens: int) -> None:
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if limit and n_prompt + max_new_tokens > limit:
        raise ConfigError(f"the prompt is too long: {n_prompt} tokens (with the system message and chat template) + "
                          f"{max_new_tokens} new ones exceed the model's context of {limit}; shorten it"
                          + (" or lower --max-new-tokens" if max_new_tokens >= limit // 4 else ""))


class _Stopped(Exception):
    """Raised in the worker when the reader has gone (a closed page, a new question): generation stops."""


def _stream_from_worker(produce, tokenizer, stop: threading.Event):
    """Run ``produce(put)`` in a worker thread (it calls ``put(token_id)`` per new token and returns the
    final result); yield the decoded text whenever it changes.  Returns ``(tokens, last text, result)``
    (result None if the worker stopped early); the worker's exception is raised here.  Closing this
    generator sets ``stop`` (and makes ``put`` raise in the worker), so the worker ends at its next token."""
    q: queue.Queue = queue.Queue()
    done = object()
    failure: list = []
    result: list = []

    def put(token) -> None:
        if stop.is_set():
            raise _Stopped
        q.put(int(token))

    def run():
        try:
            result.append(produce(put))
        except _Stopped:
            pass
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)
        finally:
            q.put(done)

    worker = threading.Thread(target=run, name="paretoalign-serve-generate", daemon=True)
    worker.start()
    tokens: list[int] = []
    shown = None
    try:
        while True:
            item = q.get()
            if item is done:
                break
            tokens.append(item)
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            if text != shown:
                shown = text
                yield text
    finally:  # also when the caller closes this generator early: the worker stops at its next token
        stop.set()
        worker.join()
    if failure:
        raise failure[0]
    return tokens, shown, (result[0] if result else None)


def stream_answer(model, tokenizer, prompt: str, system_prompt: str | None, decoding: Decoding,
                  use_chat_template: bool = True) -> Iterator[str]:
    """Answer ``prompt`` with transformers' ``generate``, yielding the decoded answer after every new token;
    the last value is the final answer: the generated tokens up to the first EOS, decoded without special
    tokens and stripped (what :func:`paretoalign.rollout.generate` returns with ``backend='hf-generate'``
    for the same prompt, system message and settings).  The seed is set for this answer alone (the
    caller's RNG state is restored).  A prompt that does not fit the model's context is a ConfigError."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList
    from transformers.generation.streamers import BaseStreamer

    check_prompt(prompt)
    ids = prompt_ids(tokenizer, prompt, system_prompt, use_chat_template)
    check_context(model, ids.shape[1], decoding.max_new_tokens)
    device = next(model.parameters()).device
    ids = ids.to(device)
    stop = threading.Event()  # set when the caller stops reading (a closed page, a new question)

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            return torch.full((input_ids.shape[0],), stop.is_set(), dtype=torch.bool, device=input_ids.device)

    kwargs = dict(max_new_tokens=decoding.max_new_tokens, min_new_tokens=0, do_sample=decoding.do_sample,
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                  stopping_criteria=StoppingCriteriaList([_Stop()]))
    if decoding.do_sample:
        kwargs.update(temperature=max(float(decoding.temperature), 1e-5), top_p=decoding.top_p, top_k=0)

    def produce(put):
        class _Tokens(BaseStreamer):
            """Each new token id to the reader (generate's first put is the prompt: skipped)."""

            def __init__(self):
                self.prompt_seen = False

            def put(self, value):
                if not self.prompt_seen:
                    self.prompt_seen = True
                    return
                for t in value.reshape(-1).tolist():
                    put(t)

            def end(self):
                pass

        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(int(decoding.seed))
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=_Tokens(), **kwargs)
        return out[0, ids.shape[1]:].tolist()

    eos = set(tokenizer.eos_token_id if isinstance(tokenizer.eos_token_id, list) else [tokenizer.eos_token_id])
    tokens, _shown, result = yield from _stream_from_worker(produce, tokenizer, stop)
    new = result if result is not None else tokens
    cut = next((i for i, t in enumerate(new) if t in eos), None)  # up to the first EOS, as rollout masks
    final = tokenizer.decode(new if cut is None else new[: cut + 1], skip_special_tokens=True).strip()
    yield final


# ---------------------------------------------------------------------------------------------
# DPA: one model, the direction in its system message


def _read_meta(run: Path) -> dict:
    f = run / run_dir.FINAL / run_dir.FINAL_META
    if not f.is_file():
        return {}
    return run_dir.read_json_object(f, RunDirError)


def _specs_from(objectives: list, fallback) -> list[str] | None:
    specs = [o.get("spec") for o in objectives or [] if isinstance(o, dict)]
    if specs and all(isinstance(s, str) and s for s in specs):
        return specs
    if fallback:
        from paretoalign.objectives.spec import split_objective_specs

        return split_objective_specs(fallback) if isinstance(fallback, str) else [str(s) for s in fallback]
    return None


class DPATarget(SteerableTarget):
    """A DPA run: one model; the preference w becomes the direction v = w/‖w‖ in its system message."""

    kind = "dpa"

    def __init__(self, run: Path, options: TargetOptions | None = None, front: dict | None = None):
        super().__init__(run, options)
        from paretoalign.evaluation.targets import resolve_target

        self.target = resolve_target(str(run))  # a run without final/policy: one RunDirError naming it
        rc = self.target.run_config or {}
        meta = _read_meta(Path(self.target.run))
        objectives = meta.get("objectives") or []
        specs = _specs_from(objectives, rc.get("objectives"))
        if not specs:
            raise RunDirError(f"{run}: cannot tell its objectives (neither final/{run_dir.FINAL_META} nor "
                              f"{run_dir.CONFIG_FILE} lists them)")
        self.objective_specs = specs
        names = [o.get("name") for o in objectives if isinstance(o, dict)]
        self.names = list(meta.get("direction_names") or names)
        if not self.names:
            raise RunDirError(f"{run}: final/{run_dir.FINAL_META} names no objectives; is the run complete?")
        self.directions = [str(o.get("direction", "maximize")) for o in objectives] or ["maximize"] * len(self.names)
        self.use_chat_template = bool(rc.get("use_chat_template", True))
        self.max_new_tokens = int(rc.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
        self.front = front
        self.key = str(self.target.run)

    def describe(self) -> str:
        f = f"; its front ({len(self.front['points'])} evaluated directions) is drawn" if self.front else ""
        return (f"DPA run {self.path}: one model, steered by the direction w/|w| written into its system message "
                f"(objectives {', '.join(self.names)}){f}")

    def system_prompt(self, weights) -> tuple[str, list]:
        """The system message for preference ``weights`` and its unit direction: ``evaluate --direction``'s."""
        from types import SimpleNamespace

        from paretoalign.evaluation.evaluate import direction_system_prompt

        return direction_system_prompt(SimpleNamespace(direction=list(weights), direction_template=None),
                                       self.target, self.names)

    def steer(self, weights) -> Steering:
        w = self.normalise(weights)
        system, v = self.system_prompt(w)
        note = (f"DPA steers one model: your preference {fmt_weights(w)} is the direction "
                f"{fmt_weights(v)} in its system message: \u201c{system}\u201d")
        point, distance, label = self.nearest_evaluated(w)
        if point is not None:
            note += f" The front's nearest evaluated direction is {label} (distance {distance:.3f})."
        return Steering(w, self.key, system, note, point, distance, tuple(v))

    def nearest_evaluated(self, w) -> tuple:
        """(index, distance, label) of the drawn front's point nearest the preference ``w`` (Nones without a
        front): the point a one-model run's page marks."""
        evaluated = [(i, p["preference"]) for i, p in enumerate((self.front or {}).get("points") or [])
                     if isinstance(p.get("preference"), list) and len(p["preference"]) == len(w)]
        if not evaluated:
            return None, None, None
        j, distance, _ = nearest_point(w, [p for _, p in evaluated])
        point = evaluated[j][0]
        return point, distance, self.front["points"][point].get("label", "")


# ---------------------------------------------------------------------------------------------
# RiC: one model, target scores at the end of the user's message


class RicTarget(DPATarget):
    """A RiC run: one model; the preference w becomes target scores (the run's mapping, its saved score
    statistics) written after the user's message as ``<rm1_score> t1 <rm2_score> t2``."""

    kind = "ric"

    def __init__(self, run: Path, options: TargetOptions | None = None, front: dict | None = None):
        super().__init__(run, options, front)
        from paretoalign.ric import RewardStats

        self.stats = RewardStats.load(self.target.policy_dir.parent)  # missing or broken: one DataError
        self.names = list(self.stats.names)
        self.mapping = str((self.target.run_config or {}).get("mapping", "linf"))

    def describe(self) -> str:
        f = f"; its front ({len(self.front['points'])} evaluated preferences) is drawn" if self.front else ""
        return (f"RiC run {self.path}: one model, steered by the target scores ({self.mapping} mapping) written after "
                f"your message (objectives {', '.join(self.names)}){f}")

    def targets(self, weights) -> list:
        from paretoalign.ric import clip_targets, map_preference

        w = self.normalise(weights)
        return clip_targets(map_preference(w, self.stats.low, self.stats.high, self.mapping), self.stats,
                            warn=False).tolist()

    def steer(self, weights) -> Steering:
        from paretoalign.ric import score_tags

        w = self.normalise(weights)
        t = self.targets(w)
        note = (f"RiC steers one model: your preference {fmt_weights(w)} maps ({self.mapping}) to the target scores "
                f"{fmt_weights(t, self.names)} (in the training data's standard deviations), written after your "
                f"message as “{score_tags(t)}”")
        point, distance, label = self.nearest_evaluated(w)
        if point is not None:
            note += f" The front's nearest evaluated preference is {label}."
        return Steering(w, self.key, None, note, point, distance)

    def generate_stream(self, prompt: str, weights, decoding: Decoding) -> Iterator[str]:
        from paretoalign.ric import reward_prompt

        with self._lock:
            model, tok, _, _ = self.model_for(weights)
            yield from stream_answer(model, tok, reward_prompt(check_prompt(prompt), self.targets(weights)), None,
                                     decoding, self.use_chat_template)


# ---------------------------------------------------------------------------------------------
# HoE: one routed model, its anchors' routers mixed for the preference


class HoETarget(DPATarget):
    """An HoE run: the base with its routed LoRA experts, loaded once; each answer first mixes the anchors'
    routers for the preference (``RoutedLoraModel.set_preference``, as ``evaluate --preference`` does)."""

    kind = "hoe"

    def __init__(self, run: Path, options: TargetOptions | None = None, front: dict | None = None):
        super().__init__(run, options, front)
        self.hoe = None

    def describe(self) -> str:
        f = f"; its front ({len(self.front['points'])} evaluated preferences) is drawn" if self.front else ""
        return (f"HoE run {self.path}: the base model with routed LoRA experts, the anchors' routers mixed for your "
                f"preference (objectives {', '.join(self.names)}){f}")

    def steer(self, weights) -> Steering:
        w = self.normalise(weights)
        note = (f"HoE steers one routed model: your preference {fmt_weights(w)} mixes the routers of the anchors "
                "around it (barycentric weights); at an anchor its own router answers")
        point, distance, label = self.nearest_evaluated(w)
        if point is not None:
            note += f". The front's nearest evaluated preference is {label}."
        return Steering(w, self.key, None, note, point, distance)

    def load(self, steering: Steering):
        import torch

        from paretoalign.experts import load_hoe

        device = self.options.device
        if device == "auto":  # as load_policy: the GPU when there is one
            device = "cuda" if torch.cuda.is_available() else None
        self.hoe = load_hoe(self.target.policy_dir, device=device, allow_download=self.options.allow_download)
        return self.hoe.model.eval(), self.hoe.tokenizer

    def generate_stream(self, prompt: str, weights, decoding: Decoding) -> Iterator[str]:
        with self._lock:
            model, tok, _, _ = self.model_for(weights)
            self.hoe.set_preference(list(self.normalise(weights)))
            yield from stream_answer(model, tok, prompt, None, decoding, self.use_chat_template)


# ---------------------------------------------------------------------------------------------
# a front folder of a method that is not steerable: the nearest trained point answers


def _front_settings(target: SteerableTarget, folder: Path, front: dict) -> None:
    """What every front folder's target reads from front.json (and front_config.yaml): the objectives, the
    decoding the front was evaluated with, and its points' preferences (``target.preferences``)."""
    where = folder / "front.json"
    target.front = front
    target.names = list(front["names"])
    target.directions = [str(o.get("direction", "maximize")) for o in front["objectives"]]
    cfg_file = folder / "front_config.yaml"
    cfg = run_dir.load_config_file(cfg_file) if cfg_file.is_file() else {}
    specs = _specs_from(front["objectives"], (cfg.get("train") or {}).get("objectives"))
    if not specs:
        raise FrontError(f"{where}: its objectives carry no spec and there is no front_config.yaml; "
                         "cannot tell how to score an answer")
    target.objective_specs = specs
    decoding = front.get("decoding") or {}
    target.system = decoding.get("system_prompt")
    target.use_chat_template = bool(decoding.get("use_chat_template", True))
    target.max_new_tokens = int(decoding.get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)
    target.preferences = []
    for i, p in enumerate(front["points"]):
        try:
            target.preferences.append(on_simplex(p.get("preference"), target.names))
        except ConfigError as exc:
            raise FrontError(f"{where}: point {i} ({p.get('label', '?')}): its preference is not a point of the "
                             f"simplex: {exc}") from None


class FrontTarget(SteerableTarget):
    """A front folder: one trained run per preference; the point nearest the preference answers."""

    kind = "front"

    def __init__(self, folder: Path, front: dict, options: TargetOptions | None = None):
        super().__init__(folder, options)
        _front_settings(self, folder, front)
        self.runs = [folder / p["run_dir"] for p in front["points"]]

    def _why(self) -> str:
        method = self.front.get("method", "this method")
        if _steerable_method(method):
            return f"{method} is steered here by its points only (no serve kind registered for it)"
        return f"{method} is not steerable"

    def describe(self) -> str:
        return (f"front folder {self.path}: {self._why()}, so each of its {len(self.runs)} trained points is its own "
                "model; the point nearest your preference answers")

    def check(self) -> None:
        """Every point's run folder holds a final policy (nothing is loaded)."""
        from paretoalign.inference import resolve_policy

        for i, run in enumerate(self.runs):
            where = f"{self.path / 'front.json'}: point {i} ({self.front['points'][i].get('label')})"
            if not run.is_dir():
                raise RunDirError(f"{where} names the run folder {str(run)!r}, which does not exist (was the front "
                                  "moved without its points/?)")
            try:
                resolve_policy(run)
            except ParetoAlignError as exc:
                raise type(exc)(f"{where}: {exc}") from None

    def prepare(self, weights=None) -> None:
        self.check()
        super().prepare(weights)

    def steer(self, weights) -> Steering:
        w = self.normalise(weights)
        i, d, tied = nearest_point(w, self.preferences)
        label = self.front["points"][i].get("label") or fmt_weights(self.preferences[i])
        run = self.front["points"][i]["run_dir"]
        if d <= TIE_TOLERANCE:
            where = f"your preference {fmt_weights(w)} is a trained point: {label} ({run}) answers."
        else:
            where = (f"the trained point nearest your preference {fmt_weights(w)} answers: {label} ({run}), "
                     f"at distance {d:.3f}.")
        note = f"{self._why()} (one model per trained point): {where}"
        if len(tied) > 1:
            others = ", ".join(self.front["points"][j].get("label", str(j)) for j in tied[1:])
            note += f" ({others} {'is' if len(tied) == 2 else 'are'} as near; the point listed first in front.json answers.)"
        if self.system:
            note += f" System message: \u201c{self.system}\u201d"
        return Steering(w, str(self.runs[i]), self.system, note, i, d)


# ---------------------------------------------------------------------------------------------
# fronts made from K one-objective endpoints: Rewarded Soups (merged at w), MOD (decoded together at w)

RS_STEP = 1000  # a soup merges at weights rounded to multiples of 1/RS_STEP (0.001)


def round_to_step(weights: Sequence[float], step: int = RS_STEP) -> tuple:
    """``weights`` (a point of the simplex) rounded to multiples of ``1/step`` that still sum to 1: each is
    rounded down, and the units left over go to the largest remainders (ties to the first listed)."""
    scaled = [round(float(x) * step, 9) for x in weights]
    units = [math.floor(x) for x in scaled]
    left = step - sum(units)
    for i in sorted(range(len(units)), key=lambda i: (-(scaled[i] - units[i]), i))[:max(0, left)]:
        units[i] += 1
    return tuple(u / step for u in units)


def _fmt3(w: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.3f}" for x in w) + ")"


def _looks_like_path(s: str) -> bool:
    return s.startswith(("/", ".", "~")) or "/" in s or "\\" in s


def _front_endpoints(folder: Path, front: dict) -> list[tuple[str, str, str]]:
    """``[(objective, name, source)]`` of a front made from K endpoints (front.json's ``training.endpoints``,
    in the order of its objectives); a missing record or endpoint folder is one error naming it."""
    where = folder / "front.json"
    method = front.get("method")
    training = front.get("training")
    eps = training.get("endpoints") if isinstance(training, dict) else None
    if not isinstance(eps, list) or not eps or not all(isinstance(e, dict) and isinstance(e.get("run_dir"), str)
                                                         and e["run_dir"].strip() for e in eps):
        raise FrontError(f"{where}: a front of {method} lists its endpoints in training.endpoints (objective, name, "
                         "run_dir for each); this one lists none that can be read")
    names = list(front["names"])
    if len(eps) != len(names):
        raise FrontError(f"{where}: {len(eps)} endpoint(s) for {len(names)} objectives ({', '.join(names)}); a front "
                         f"of {method} has one endpoint per objective")
    objectives = [e.get("objective") for e in eps]
    if all(o is not None for o in objectives):
        if sorted(map(str, objectives)) != sorted(names):
            raise FrontError(f"{where}: its endpoints are for the objectives {objectives}, its points for {names}")
        eps = [eps[objectives.index(n)] for n in names]
    out = []
    for n, e in zip(names, eps):
        raw = e["run_dir"].strip()
        given = Path(raw).expanduser()
        folder_of = given if given.is_absolute() else folder / given
        label = f"endpoint {e.get('name') or raw!r} ({n})"
        if folder_of.is_dir():
            source = str(folder_of)
        elif not given.is_absolute() and given.is_dir():  # given (--endpoints) relative to where the front ran
            source = str(given)
        elif not _looks_like_path(raw):  # a model name (--endpoints a=smollm2-135m-instruct, ...)
            source = raw
        else:
            raise RunDirError(f"{where}: {label} names the folder {str(folder_of)!r}, which does not exist (was the "
                              "front moved without its endpoints?)")
        out.append((n, str(e.get("name") or n), source))
    if len({name for _, name, _ in out}) != len(out):  # names must differ: the objectives' do
        out = [(n, n, src) for n, _, src in out]
    return out


def _with_where(where: Path, exc: ParetoAlignError) -> ParetoAlignError:
    """``exc`` (one line) prefixed with the front it concerns, of the same class."""
    try:
        return type(exc)(f"{where}: {exc}")
    except Exception:  # an error class with another signature: keep it as it is
        return exc


class EndpointsTarget(SteerableTarget):
    """A front folder of a method made from K one-objective endpoints (Rewarded Soups, MOD): the
    endpoints, not the points, answer at every preference; the point nearest the preference is marked."""

    point_label = "nearest evaluated point"

    def __init__(self, folder: Path, front: dict, options: TargetOptions | None = None):
        super().__init__(folder, options)
        _front_settings(self, folder, front)
        self.where = folder / "front.json"
        self.endpoint_records = _front_endpoints(folder, front)

    @property
    def endpoint_names(self) -> list[str]:
        return [name for _, name, _ in self.endpoint_records]

    def _nearest(self, w) -> tuple[Optional[int], Optional[float], str]:
        """The evaluated point nearest ``w`` (to mark on the plot) and a sentence saying so."""
        if not self.preferences:
            return None, None, ""
        i, d, _ = nearest_point(w, self.preferences)
        label = self.front["points"][i].get("label") or fmt_weights(self.preferences[i])
        what = "is an evaluated point of the front" if d <= TIE_TOLERANCE else \
            f"is nearest the front's evaluated point {label} (distance {d:.3f}, ringed on the plot)"
        return i, d, f" Your preference {what}."

    def _system_note(self) -> str:
        return f" System message: \u201c{self.system}\u201d" if self.system else ""


class SoupTarget(EndpointsTarget):
    """A Rewarded Soups front (``front --method rs``): the K endpoints merged at the preference, exactly as the
    front merged them (``training.merge``: LoRA deltas summed into one adapter of the concatenated rank by
    default); the last ``max_models`` merges stay loaded, keyed by the weights rounded to 0.001."""

    kind = "rs"
    point_label = "nearest evaluated merge"

    def __init__(self, folder: Path, front: dict, options: TargetOptions | None = None):
        super().__init__(folder, front, options)
        from paretoalign.merging import check_endpoints, parse_rank, resolve_endpoint

        merge = (front.get("training") or {}).get("merge") or {}
        try:
            self.endpoints = [resolve_endpoint(src, name, self.options.allow_download)
                              for _, name, src in self.endpoint_records]
            self.mode = str(merge.get("mode") or "delta")
            if self.mode not in ("delta", "factors"):
                raise FrontError(f"training.merge.mode is {self.mode!r}; expected 'delta' or 'factors'")
            lora = self.endpoints[0].kind == "lora"
            rank = merge["rank"] if "rank" in merge else ("exact" if lora and self.mode == "delta" else None)
            self.rank = parse_rank(rank)
            self.base = check_endpoints(self.endpoints, self.mode, self.rank)  # bases, tokenizers, modules: one line
        except ParetoAlignError as exc:
            raise _with_where(self.where, exc) from None

    def how(self) -> str:
        if self.mode == "factors":
            return "the reference code's average of the LoRA factors, not the paper's exact merge"
        if self.endpoints[0].kind != "lora":
            return "exact: theta_0 + sum_i w_i (theta_i - theta_0) over every weight"
        if self.rank == "exact":
            return "exact: the weighted LoRA deltas as one adapter of the concatenated rank"
        if self.rank is None:
            return "exact: the weighted LoRA deltas added into the base weights"
        return f"the weighted LoRA deltas truncated to rank {self.rank}"

    def describe(self) -> str:
        return (f"Rewarded Soups front {self.path}: its {len(self.endpoints)} endpoints "
                f"({', '.join(self.endpoint_names)}) are merged at your preference ({self.how()}; weights rounded to "
                f"steps of {1 / RS_STEP:g}; the last {self.options.max_models} merges stay loaded)")

    def steer(self, weights) -> Steering:
        w = self.normalise(weights)
        r = round_to_step(w)
        point, distance, nearest = self._nearest(r)
        note = (f"Rewarded Soups: the {len(self.endpoints)} endpoints merged at w={_fmt3(r)} ({self.how()}; weights "
                f"are rounded to steps of {1 / RS_STEP:g}, so nearby slider positions share one merge).{nearest}"
                f"{self._system_note()}")
        return Steering(w, "rs@" + ",".join(f"{x:.3f}" for x in r), self.system, note, point, distance,
                        point_label=self.point_label)

    def load(self, steering: Steering):
        """The endpoints merged at ``steering.weights`` rounded (what :func:`paretoalign.merging.soup` gives
        for those weights and the front's mode and rank), on ``options.device``, with its tokenizer."""
        from paretoalign.merging import merge
        from paretoalign.models import resolve_device

        try:
            m = merge(self.base, self.endpoints, list(round_to_step(steering.weights)), self.mode, self.rank,
                      allow_download=self.options.allow_download, checked=True)
        except ParetoAlignError as exc:
            raise _with_where(self.where, exc) from None
        model = m.load()
        model.to(resolve_device(self.options.device))
        return model.eval(), m.tokenizer


_RULES = {"reverse_kl": "softmax(sum_k w_k log pi_k) (reverse KL: the exact optimum for w)",
          "forward_kl": "the weighted harmonic mean of the endpoints' sequence probabilities (forward KL)",
          "alpha": "the alpha-divergence rule on the endpoints' sequence probabilities"}


class ModTarget(EndpointsTarget):
    """A MOD front (``front --method mod``): the K endpoints decoded together at the preference by one
    :class:`paretoalign.mod.MultiObjectiveDecoder` (its weights set per answer; nothing reloads), with the
    front's divergence (``training.decoding.divergence``, default reverse_kl); the answer streams token by
    token."""

    kind = "mod"
    point_label = "nearest evaluated preference"

    def __init__(self, folder: Path, front: dict, options: TargetOptions | None = None):
        super().__init__(folder, front, options)
        import warnings

        from paretoalign.mod import check_endpoints, parse_divergence, resolve_endpoint

        self.divergence = str(((front.get("training") or {}).get("decoding") or {}).get("divergence") or "reverse_kl")
        self.warnings: list[str] = []
        try:
            self.rule, self.alpha = parse_divergence(self.divergence)
            self.endpoints = [resolve_endpoint(src, name) for _, name, src in self.endpoint_records]
            with warnings.catch_warnings(record=True) as caught:  # different betas: said in describe(), once
                warnings.simplefilter("always")
                check_endpoints(self.endpoints, self.uniform(), self.divergence)  # one base model (reference)
            self.warnings = [str(c.message) for c in caught]
        except ParetoAlignError as exc:
            raise _with_where(self.where, exc) from None
        self.decoder = None

    def describe(self) -> str:
        warn = "".join(f"; warning: {m}" for m in self.warnings)
        return (f"MOD front {self.path}: its {len(self.endpoints)} endpoints ({', '.join(self.endpoint_names)}) are "
                f"decoded together at your preference (divergence {self.divergence}), the answer streamed token by "
                f"token{warn}")

    def steer(self, weights) -> Steering:
        w = self.normalise(weights)
        point, distance, nearest = self._nearest(w)
        rule = _RULES[self.rule] + (f", alpha = {self.alpha:g}" if self.alpha is not None else "")
        note = (f"MOD: the {len(self.endpoints)} endpoints decoded together at w={_fmt3(w)}: every token comes from "
                f"{rule}.{nearest}{self._system_note()}")
        return Steering(w, None, self.system, note, point, distance, point_label=self.point_label)

    def _decoder(self, weights=None):
        """The decoder (built on first use, on ``options.device``)."""
        if self.decoder is None:
            from paretoalign.mod import MultiObjectiveDecoder
            from paretoalign.models import resolve_device

            w = list(weights) if weights is not None else list(self.uniform())
            try:
                dec = MultiObjectiveDecoder.from_endpoints(self.endpoints, w, self.divergence,
                                                           self.options.allow_download)
            except ParetoAlignError as exc:  # e.g. different tokenizers
                raise _with_where(self.where, exc) from None
            device = resolve_device(self.options.device)
            for m in dec.models:
                m.to(device)
            self.decoder = dec
            self.context = getattr(getattr(dec.models[0], "config", None), "max_position_embeddings", None)
        return self.decoder

    def load(self, steering: Steering):  # pragma: no cover - MOD has no one model
        raise ConfigError("a MOD target decodes with its endpoints together: it has no single model to load")

    def model_for(self, weights):
        """``(decoder, tokenizer, system_prompt, note)``: the decoder, set to ``weights``, stands for the model."""
        s = self.steer(weights)
        with self._lock:
            dec = self._decoder(s.weights)
            dec.set_weights(list(s.weights))
        return dec, dec.tokenizer, s.system_prompt, s.note

    def prepare(self, weights=None) -> None:
        w = self.normalise(weights) if weights is not None else self.uniform()
        with self._lock:
            dec = self._decoder(w)
        self.build_objectives(dec.tokenizer)

    def generate_stream(self, prompt: str, weights, decoding: Decoding) -> Iterator[str]:
        with self._lock:
            s = self.steer(weights)
            dec = self._decoder(s.weights)
            dec.set_weights(list(s.weights))
            yield from stream_mod_answer(dec, prompt, s.system_prompt, decoding, self.use_chat_template)


def stream_mod_answer(decoder, prompt: str, system_prompt: str | None, decoding: Decoding,
                      use_chat_template: bool = True) -> Iterator[str]:
    """:func:`stream_answer` for a :class:`paretoalign.mod.MultiObjectiveDecoder` (at its current weights):
    the decoded answer after every new token (its ``on_token`` callback, from a worker thread), then the
    final answer, which is ``decoder.generate([prompt], ...).completions[0]`` for the same seed and settings
    (greedy or sampling; serve does no beam search, whose answer would come whole at the end)."""
    import torch

    from paretoalign.rollout import MAX_PROMPT_LENGTH

    check_prompt(prompt)
    tok = decoder.tokenizer
    ids = prompt_ids(tok, prompt, system_prompt, use_chat_template)
    check_context(decoder.models[0], ids.shape[1], decoding.max_new_tokens)
    def produce(put):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(decoding.seed))
            ro = decoder.generate([prompt], max_new_tokens=decoding.max_new_tokens, do_sample=decoding.do_sample,
                                  temperature=decoding.temperature, top_p=decoding.top_p,
                                  use_chat_template=use_chat_template, system_prompt=system_prompt,
                                  max_prompt_length=max(MAX_PROMPT_LENGTH, int(ids.shape[1])),
                                  on_token=lambda new_ids: put(new_ids.reshape(-1)[0]))
        return ro.completions[0]

    _tokens, shown, result = yield from _stream_from_worker(produce, tok, threading.Event())
    yield result if result is not None else (shown or "").strip()


# ---------------------------------------------------------------------------------------------
# resolution and registration

Resolver = Callable[[Path, TargetOptions], Optional[SteerableTarget]]
_REGISTERED: "OrderedDict[str, Union[Resolver, str]]" = OrderedDict()
ENTRY_POINT_GROUP = "paretoalign.steerable"


def register_steerable(kind: str, resolver: Union[Resolver, str]) -> None:
    """Serve a new kind of target: ``resolver(path, options)`` returns a :class:`SteerableTarget` for a path
    of that kind, ``None`` for any other path, and raises a ParetoAlignError for one of its kind that cannot
    be served.  ``resolver`` may be ``"module:function"`` (imported when a TARGET is first resolved).
    Registered kinds are tried in registration order, before the built-in ones; registering a kind again
    replaces it."""
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"a steerable kind needs a name, got {kind!r}")
    _REGISTERED[kind] = resolver
    _REGISTERED.move_to_end(kind)


def _load_resolver(kind: str, r) -> Resolver:
    if callable(r):
        return r
    import importlib

    module, _, name = str(r).partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"steerable kind {kind!r}: cannot load its resolver {r!r} ({exc})") from None


def _entry_points() -> list:
    try:
        from importlib.metadata import entry_points

        return [(ep.name, ep.value) for ep in entry_points(group=ENTRY_POINT_GROUP)]
    except Exception:  # a broken installation's metadata must not stop the built-in kinds
        return []


def _front_of(path: Path) -> Optional[dict]:
    from paretoalign.fronts.front import FRONT_FILE, load_front

    return load_front(path) if (path / FRONT_FILE).is_file() else None


def _steerable_method(method) -> bool:
    from paretoalign.trainers.methods import METHODS

    return any(m.name == method and m.steerable for m in METHODS)


def _steerers() -> dict:
    """Steerable methods -> how a run of theirs is served (a steerable method without an entry is refused)."""
    return {"dpa": DPATarget, "ric": RicTarget, "hoe": HoETarget}


def _dpa_front_of(run: Path) -> Optional[dict]:
    """The front a DPA run was swept in (``FRONT/model``), if it sits in one: drawn on the page."""
    try:
        front = _front_of(run.parent)
    except ParetoAlignError:
        return None
    method = run_dir.load_config(run).get("method") if (run / run_dir.CONFIG_FILE).is_file() else "dpa"
    if front and front.get("method") == method and all(p.get("run_dir") == run.name for p in front["points"]):
        return front
    return None


def _endpoint_front(method: str, make) -> Resolver:
    """The resolver of a front folder (or a comparison's sub-front) of ``method``, served by ``make``."""

    def resolve(path: Path, options: TargetOptions) -> Optional[SteerableTarget]:
        from paretoalign.fronts.front import FRONT_FILE

        if not (path / FRONT_FILE).is_file():
            return None
        front = _front_of(path)
        if front is None or front.get("method") != method:
            return None
        return make(path, front, options)

    return resolve


def _holds_model(folder: Path) -> bool:
    """A run, a checkpoint, an adapter or a model folder (what :func:`paretoalign.inference.resolve_policy` loads)."""
    return any((folder / f).exists() for f in (run_dir.CONFIG_FILE, run_dir.STATE_FILE, "adapter_config.json",
                                               "config.json"))


def _builtin_front(path: Path, options: TargetOptions) -> Optional[SteerableTarget]:
    from paretoalign.fronts.front import COMPARISON_FILE, FRONT_FILE

    if (path / COMPARISON_FILE).is_file() and not (path / FRONT_FILE).is_file():
        subs = sorted(p.parent.name for p in path.glob(f"*/{FRONT_FILE}"))
        which = f": serve one of them, e.g. {path / subs[0]}" if subs else ""
        raise ConfigError(f"{str(path)!r} holds a comparison of fronts ({', '.join(subs) or 'none found'}), not one "
                          f"front{which}")
    front = _front_of(path)
    if front is None:
        return None
    method = front.get("method")
    runs = {p.get("run_dir") for p in front["points"]}
    make = _steerers().get(method)
    if make is not None:  # one model steered at every point
        if len(runs) != 1:
            raise FrontError(f"{path / FRONT_FILE}: a front of {method} should have one model for every point; "
                             f"its points name {sorted(runs)}")
        model = path / runs.pop()
        if not model.is_dir():
            raise RunDirError(f"{path / FRONT_FILE}: its model folder {str(model)!r} does not exist")
        return make(model, options, front=front)
    if _steerable_method(method):
        unsteered = "`serve` cannot steer it yet (register its kind: paretoalign.steering.register_steerable)"
        if len(runs) < len(front["points"]):
            raise ConfigError(f"{str(path)!r} is a front of {method}, whose points share one model; {unsteered}")
        if not all(_holds_model(path / r) for r in runs):
            raise ConfigError(f"{str(path)!r} is a front of {method}, whose points are evaluations, not models (it is "
                              f"steered at decoding time); {unsteered}")
    # a model per point (for a steerable method without a registered kind, e.g. Rewarded Soups' merges: the
    # nearest merge answers until its kind is registered)
    return FrontTarget(path, front, options)


def _builtin_run(path: Path, options: TargetOptions) -> Optional[SteerableTarget]:
    if path.name == run_dir.POLICY and path.parent.name == run_dir.FINAL:
        path = path.parent  # RUN/final/policy: RUN/final
    if path.name == run_dir.FINAL and (path.parent / run_dir.CONFIG_FILE).is_file():
        path = path.parent  # RUN/final: the run
    if not (path / run_dir.CONFIG_FILE).is_file():
        return None
    if (path / run_dir.STATE_FILE).is_file():
        return None  # a checkpoint: refused below
    cfg = run_dir.load_config(path)
    method = cfg.get("method")
    make = _steerers().get(method)
    if make is not None:
        return make(path, options, front=_dpa_front_of(path))
    if _steerable_method(method):
        raise ConfigError(f"{str(path)!r} is a {method} run, a steerable method that `serve` cannot steer yet "
                          "(register its kind: paretoalign.steering.register_steerable)")
    return None


_BUILTIN: "OrderedDict[str, Resolver]" = OrderedDict([
    ("rs", _endpoint_front("rs", SoupTarget)),  # before "front": the endpoints merged at w, not the nearest point
    ("mod", _endpoint_front("mod", ModTarget)),
    ("front", _builtin_front),
    ("dpa", _builtin_run),
])


def _not_steerable(path: Path, raw: str) -> ConfigError:
    hint = "give a front folder (`paretoalign front`) or a DPA run"
    if not path.exists():
        return ConfigError(f"{raw!r}: no such folder; {hint}")
    if not path.is_dir():
        return ConfigError(f"{raw!r} is a file; {hint}")
    if (path / run_dir.STATE_FILE).is_file():
        return ConfigError(f"{raw!r} is a checkpoint: not steerable; {hint}")
    if (path / "front_config.yaml").is_file():
        return ConfigError(f"{raw!r} holds a front sweep that has not finished (no front.json yet): finish it with "
                           "`paretoalign front ... --resume`, then serve it")
    if (path / run_dir.CONFIG_FILE).is_file():
        method = run_dir.load_config(path).get("method", "?")
        owner = path.parent.parent if path.parent.name == "points" else None
        if owner is not None and (owner / "front.json").is_file():
            return ConfigError(f"{raw!r} is one point of the front {str(owner)!r} (a {method} run, trained at one "
                               f"preference): serve the front folder, where the sliders choose among its points")
        return ConfigError(f"{raw!r} is a {method} run, trained at one preference: not steerable; {hint} "
                           f"(`paretoalign chat {raw}` talks to this run)")
    return ConfigError(f"{raw!r} is not steerable (neither a front folder nor a run of a steerable method); {hint}")


def resolve_steerable(target: str | Path, options: TargetOptions | None = None) -> SteerableTarget:
    """The :class:`SteerableTarget` for ``target`` (a folder): registered kinds first, then a front folder,
    then a DPA run; anything else is one ConfigError saying what to give instead.  Loads no model."""
    raw = str(target).strip()
    if not raw:
        raise ConfigError("serve needs a TARGET: a front folder or a DPA run")
    options = options or TargetOptions()
    path = Path(raw).expanduser()
    kinds = list(_REGISTERED.items())
    kinds += [(k, v) for k, v in _entry_points() if k not in _REGISTERED]
    kinds += list(_BUILTIN.items())
    if path.is_dir():
        for kind, r in kinds:
            t = _load_resolver(kind, r)(path, options)
            if t is not None:
                t.kind = t.kind or kind
                return t
    raise _not_steerable(path, raw)

