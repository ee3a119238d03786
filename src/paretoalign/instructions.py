"""Verifiable instructions and MAPL's prompt-side preference pairs.

MAPL (Sun et al. 2025, arXiv 2505.12845) teaches multi-instruction compliance with prompts that
differ only in their instructions: for one response y, a prompt x_w whose instructions y
satisfies is preferred to a prompt x_l that y violates (the intra-sample level; losses in
:mod:`paretoalign.losses.mapl`).

An instruction generator ``g(response, satisfied, rng)`` writes an instruction that ``response``
satisfies (``satisfied=True``) or violates, or returns ``None`` where it cannot (a one-word
response cannot violate a word cap of at least one word).  Each :class:`Instruction` carries the
spec of the judge (:mod:`paretoalign.judges`) that verifies it, and labels always come from
that verifier, never from the generator's intent: an instruction whose verdict disagrees is
dropped and counted.

Generators (:data:`GENERATORS`): ``max_words``, ``min_words``, ``include_keyword``,
``exclude_keyword``, ``start_with``, ``end_with``.

Pair rules for one response [P: the paper's two constructions, via a secondary summary]:

- ``all_vs_some``: x_w = x + instructions **all** satisfied; x_l = x + the same instruction types
  with **at least one** violated;
- ``some_vs_none``: x_w has **at least one** satisfied; x_l has **none** satisfied.

:func:`build_inter_pairs` [R] builds the inter-sample level as this library reconstructs it:
from (x, y_c, y_r), instructions that y_c satisfies and y_r violates give the ordinary pair
(x+I, y_c) ≻ (x+I, y_r); when only the reverse exists the pair is flagged ``conflict`` (the
compliance label opposes the semantic one; :func:`paretoalign.losses.mapl.mapl_inter_loss`
takes the rule).

Everything is deterministic given ``seed``: each row draws from its own generator seeded by
(seed, prompt, response), so a row's pairs do not change when other rows are added or removed.
"""

from __future__ import annotations

import functools
import random
import re
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Sequence

from paretoalign.errors import ConfigError
from paretoalign.judges import Judge, build_judge

__all__ = [
    "GENERATORS",
    "PAIR_RULES",
    "Instruction",
    "build_inter_pairs",
    "build_intra_pairs",
    "compose_prompt",
    "generate_instruction",
    "parse_instruction_kinds",
    "verify",
]

PAIR_RULES = ("all_vs_some", "some_vs_none")


@dataclass(frozen=True)
class Instruction:
    """One verifiable instruction: its ``kind``, the ``text`` added to the prompt and the ``judge``
    spec that checks a response against it."""

    kind: str
    text: str
    judge: str


Generator = Callable[[str, bool, random.Random], "Instruction | None"]

# Words no ordinary response is likely to contain, for "include"/"exclude" instructions it violates/satisfies.
_RARE_WORDS = ("aardvark", "kaleidoscope", "zeppelin", "marmalade", "quasar", "obsidian", "tambourine", "gondola",
               "platypus", "saffron", "labyrinth", "walrus", "accordion", "nebula", "porcupine", "vermilion")
_OPENERS = ("Certainly", "In short", "Dear reader", "To begin with", "Well", "First of all", "Hello there")
_CLOSERS = ("Hope this helps.", "That is all.", "Best regards.", "The end.", "Thank you for reading.")


def _quoted(phrase: str) -> str | None:
    """``phrase`` quoted for a judge spec argument; None if it holds both quote characters."""
    if "'" not in phrase:
        return f"'{phrase}'"
    if '"' not in phrase:
        return f'"{phrase}"'
    return None


def _max_words(response: str, satisfied: bool, rng: random.Random) -> Instruction | None:
    n = len(response.split())  # the judge's own count
    if satisfied:
        cap = n + rng.randint(0, max(2, n // 2))
        cap = max(cap, 1)
    elif n >= 2:
        cap = rng.randint(max(1, n // 2), n - 1)
    else:
        return None
    return Instruction("max_words", f"Answer in at most {cap} words.", f"max_words(n={cap})")


def _min_words(response: str, satisfied: bool, rng: random.Random) -> Instruction | None:
    n = len(response.split())
    if satisfied:
        if n < 1:
            return None
        floor = rng.randint(max(1, n // 2), n)
    else:
        floor = n + 1 + rng.randint(0, max(1, n // 2))
    return Instruction("min_words", f"Answer in at least {floor} words.", f"min_words(n={floor})")


def _words_in(response: str) -> set[str]:
    """The lower-cased maximal word runs, as the keyword judge matches them (whole words, any case)."""
    return set(re.findall(r"\w+", response.lower()))


def _pick_keyword(response: str, present: bool, rng: random.Random) -> str | None:
    words = _words_in(response)
    if present:
        pool = sorted(w for w in words if w.isalpha() and len(w) >= 3)
    else:
        pool = [w for w in _RARE_WORDS if w not in words]
    return rng.choice(pool) if pool else None


def _include_keyword(response: str, satisfied: bool, rng: random.Random) -> Instruction | None:
    w = _pick_keyword(response, present=satisfied, rng=rng)
    if w is None:
        return None
    return Instruction("include_keyword", f'Include the word "{w}".', f"include(words='{w}')")


def _exclude_keyword(response: str, satisfied: bool, rng: random.Random) -> Instruction | None:
    w = _pick_keyword(response, present=not satisfied, rng=rng)
    if w is None:
        return None
    return Instruction("exclude_keyword", f'Do not use the word "{w}".', f"exclude(words='{w}')")


def _edge_phrase(response: str, at_start: bool, rng: random.Random) -> str | None:
    """The first (last) 1-3 words of the response as they are written, on one line."""
    s = response.strip()
    spans = [m.span() for m in re.finditer(r"\S+", s)]
    if not spans:
        return None
    k = rng.randint(1, min(3, len(spans)))
    phrase = s[: spans[k - 1][1]] if at_start else s[spans[-k][0] :]
    if "\n" in phrase or "\r" in phrase:
        phrase = s[: spans[0][1]] if at_start else s[spans[-1][0] :]
    return phrase


def _affix_instruction(kind: str, judge: str, response: str, satisfied: bool, rng: random.Random,
                       choices: Sequence[str]) -> Instruction | None:
    at_start = kind == "start_with"
    s = response.strip()
    if satisfied:
        phrase = _edge_phrase(response, at_start, rng)
    else:
        pool = [c for c in choices if not (s.startswith(c) if at_start else s.endswith(c))]
        phrase = rng.choice(pool) if pool else None
    arg = _quoted(phrase) if phrase else None
    if arg is None:
        return None
    text = (f'Start your answer with "{phrase}".' if at_start else f'End your answer with "{phrase}".')
    return Instruction(kind, text, f"{judge}:{arg}")


def _start_with(response: str, satisfied: bool, rng: random.Random) -> Instruction | None:
    return _affix_instruction("start_with", "starts_with", response, satisfied, rng, _OPENERS)


def _end_with(response: str, satisfied: bool, rng: random.Random) -> Instruction | None:
    return _affix_instruction("end_with", "ends_with", response, satisfied, rng, _CLOSERS)


GENERATORS: dict[str, Generator] = {
    "max_words": _max_words,
    "min_words": _min_words,
    "include_keyword": _include_keyword,
    "exclude_keyword": _exclude_keyword,
    "start_with": _start_with,
    "end_with": _end_with,
}


def parse_instruction_kinds(kinds: str | Iterable[str]) -> list[str]:
    """``"max_words,include_keyword"`` (or a list) -> the kinds, checked against :data:`GENERATORS`."""
    items = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if str(k).strip()]
    if not items:
        raise ConfigError(f"no instruction kinds given; available: {', '.join(GENERATORS)}")
    for k in items:
        if k not in GENERATORS:
            raise ConfigError(f"unknown instruction kind {k!r}; available: {', '.join(GENERATORS)}")
    if len(set(items)) != len(items):
        raise ConfigError(f"instruction kinds repeat in {items}")
    return items


def generate_instruction(kind: str, response: str, satisfied: bool, rng: random.Random) -> Instruction | None:
    """An instruction of ``kind`` that ``response`` satisfies (or violates), or None if there is none."""
    if kind not in GENERATORS:
        raise ConfigError(f"unknown instruction kind {kind!r}; available: {', '.join(GENERATORS)}")
    return GENERATORS[kind](response, satisfied, rng)


@functools.lru_cache(maxsize=4096)
def _judge(spec: str) -> Judge:
    return build_judge(spec)


def verify(instruction: Instruction, response: str, prompt: str = "") -> bool | None:
    """Whether ``response`` satisfies ``instruction``, by its judge (None: the judge could not tell)."""
    v = _judge(instruction.judge)([prompt], [response])[0]
    return None if v == -1 else bool(v)


def compose_prompt(prompt: str, instructions: Sequence[Instruction]) -> str:
    """The request followed by its instructions, one per line."""
    if not instructions:
        return prompt
    return prompt.rstrip() + "\n\n" + "\n".join(i.text for i in instructions)


def _row_rng(seed: int, *parts: str) -> random.Random:
    # str seeds are hashed with SHA-512 by random.seed: stable across runs and PYTHONHASHSEED
    return random.Random("\x00".join([str(seed), *parts]))


def _verified(kind: str, response: str, satisfied: bool, rng: random.Random, stats: dict) -> Instruction | None:
    ins = generate_instruction(kind, response, satisfied, rng)
    if ins is None:
        return None
    if verify(ins, response) is not satisfied:  # labels come from the verifier, never from intent
        stats["rejected_by_verifier"] += 1
        return None
    return ins


def _pair_row(prompt, response, sat, viol, ok_w, ok_l, rule) -> dict:
    inst_w = [s if ok else v for s, v, ok in zip(sat, viol, ok_w)]
    inst_l = [s if ok else v for s, v, ok in zip(sat, viol, ok_l)]
    return {
        "prompt": prompt,
        "response": response,
        "prompt_w": compose_prompt(prompt, inst_w),
        "prompt_l": compose_prompt(prompt, inst_l),
        "instructions_w": [asdict(i) for i in inst_w],
        "instructions_l": [asdict(i) for i in inst_l],
        "verified_w": [bool(verify(i, response)) for i in inst_w],
        "verified_l": [bool(verify(i, response)) for i in inst_l],
        "rule": rule,
    }


def _nonempty_subset(m: int, rng: random.Random) -> list[bool]:
    """A uniformly drawn non-empty subset of m positions, as a mask."""
    size = rng.randint(1, m)
    chosen = set(rng.sample(range(m), size))
    return [i in chosen for i in range(m)]


def build_intra_pairs(
    rows: Iterable[tuple[str, str]],
    kinds: str | Sequence[str] = ("max_words", "include_keyword", "start_with"),
    n_instructions: int = 2,
    rules: Sequence[str] = PAIR_RULES,
    seed: int = 0,
) -> tuple[list[dict], dict[str, int]]:
    """Prompt-side pairs (x_w, x_l, y) from ``(prompt, response)`` rows.

    Per row: ``n_instructions`` distinct kinds are drawn (fewer where a generator has no
    instruction for that response), each with a satisfied and a violated variant, both verified;
    then one pair per rule in ``rules`` (see the module docstring), the two prompts carrying the
    same instruction types in the same order.  With one instruction both rules give the same
    pair, which is kept once.

    Returns (pairs, stats).  A pair is a dict with ``prompt``, ``response``, ``prompt_w``,
    ``prompt_l``, ``instructions_w``/``_l`` (kind, text, judge), ``verified_w``/``_l`` (each
    instruction's verdict on the response) and ``rule``.  ``stats`` counts ``rows``, ``pairs``,
    ``skipped_rows`` (no instruction applied) and ``rejected_by_verifier``.
    """
    kinds = parse_instruction_kinds(kinds)
    for r in rules:
        if r not in PAIR_RULES:
            raise ConfigError(f"unknown pair rule {r!r}; available: {', '.join(PAIR_RULES)}")
    if not (isinstance(n_instructions, int) and n_instructions >= 1):
        raise ConfigError(f"n_instructions must be a positive integer; got {n_instructions!r}")
    stats = {"rows": 0, "pairs": 0, "skipped_rows": 0, "rejected_by_verifier": 0}
    pairs: list[dict] = []
    for prompt, response in rows:
        stats["rows"] += 1
        rng = _row_rng(seed, prompt, response)
        sat, viol = [], []
        for kind in rng.sample(kinds, len(kinds)):
            if len(sat) == n_instructions:
                break
            s = _verified(kind, response, True, rng, stats)
            v = _verified(kind, response, False, rng, stats) if s is not None else None
            if s is not None and v is not None:
                sat.append(s)
                viol.append(v)
        if not sat:
            stats["skipped_rows"] += 1
            continue
        m = len(sat)
        seen = set()
        for rule in rules:
            if rule == "all_vs_some":
                ok_w, ok_l = [True] * m, [not x for x in _nonempty_subset(m, rng)]
            else:
                ok_w, ok_l = _nonempty_subset(m, rng), [False] * m
            key = (tuple(ok_w), tuple(ok_l))
            if key in seen:
                continue
            seen.add(key)
            pairs.append(_pair_row(prompt, response, sat, viol, ok_w, ok_l, rule))
    stats["pairs"] = len(pairs)
    return pairs, stats


def _separating(keep: str, drop: str, kinds: Sequence[str], n: int, tries: int, rng: random.Random,
                stats: dict) -> list[Instruction]:
    """Up to n instructions of distinct kinds that ``keep`` satisfies and ``drop`` violates, both verified."""
    found = []
    for kind in kinds:
        for _ in range(tries):
            ins = _verified(kind, keep, True, rng, stats)
            if ins is not None and verify(ins, drop) is False:
                found.append(ins)
                break
        if len(found) == n:
            break
    return found


def build_inter_pairs(
    rows: Iterable[tuple[str, str, str]],
    kinds: str | Sequence[str] = ("max_words", "include_keyword", "start_with"),
    n_instructions: int = 2,
    tries: int = 3,
    seed: int = 0,
) -> tuple[list[dict], dict[str, int]]:
    """Inter-sample pairs [R] from ``(prompt, chosen, rejected)`` rows (see the module docstring).

    Instructions (distinct kinds, up to ``n_instructions``, ``tries`` draws per kind) are
    generated from the chosen response and kept when verified satisfied by it and violated by the
    rejected one.  When none exists, the reverse is tried, giving a pair flagged ``conflict``.
    A pair is a dict with ``prompt`` (x+I), ``original_prompt``, ``chosen``, ``rejected``,
    ``instructions`` and ``conflict``; ``stats`` counts ``rows``, ``pairs``, ``conflicts`` and
    ``skipped_rows`` (no separating instruction either way).
    """
    kinds = parse_instruction_kinds(kinds)
    if not (isinstance(n_instructions, int) and n_instructions >= 1):
        raise ConfigError(f"n_instructions must be a positive integer; got {n_instructions!r}")
    stats = {"rows": 0, "pairs": 0, "conflicts": 0, "skipped_rows": 0, "rejected_by_verifier": 0}
    pairs: list[dict] = []
    for prompt, chosen, rejected in rows:
        stats["rows"] += 1
        rng = _row_rng(seed, prompt, chosen, rejected)
        order = rng.sample(kinds, len(kinds))
        found = _separating(chosen, rejected, order, n_instructions, tries, rng, stats)
        conflict = not found
        if conflict:
            found = _separating(rejected, chosen, order, n_instructions, tries, rng, stats)
        if not found:
            stats["skipped_rows"] += 1
            continue
        stats["conflicts"] += conflict
        pairs.append({"prompt": compose_prompt(prompt, found), "original_prompt": prompt, "chosen": chosen,
                      "rejected": rejected, "instructions": [asdict(i) for i in found], "conflict": conflict})
    stats["pairs"] = len(pairs)
    return pairs, stats
