"""RiC's pure parts (paretoalign.ric): the mappings against hand-computed values, the tag string and
the loss mask round trip, the quantile filter against a plain reference, and a tabular conditional
model trained by maximum likelihood: it equals the empirical conditional distribution, and steered
by a preference its achieved objectives follow the preference monotonically."""

import json
import math

import numpy as np
import pytest
import torch

from paretoalign.errors import ConfigError, DataError
from paretoalign.ric import (
    RewardStats,
    clip_targets,
    fit_stats,
    fmt_score,
    map_preference,
    parse_scores,
    quantile_keep,
    reward_prompt,
    round1,
    sample_goals,
    score_tags,
)

# ------------------------------------------------------------------------------------------------
# mappings (spec 3.4.1, against the reference's map_rewards_from_preference)


def test_linf_mapping_hand_computed():
    # the most-preferred objective at high; the other at min(K w, 1) of its range
    assert map_preference([0.7, 0.3], [-4, -4], [4, 4], "linf").tolist() == [4.0, 0.8]
    assert map_preference([0.3, 0.7], [-4, -2], [4, 2], "linf").tolist() == [0.8, 2.0]
    # K w >= 1 saturates at high; ties go to the first objective (numpy's argmax)
    assert map_preference([0.5, 0.5], [-1, -2], [3, 2], "linf").tolist() == [3.0, 2.0]
    assert map_preference([1 / 3, 1 / 3, 1 / 3], [0, 0, 0], [1, 1, 1], "linf").tolist() == [1.0, 1.0, 1.0]
    assert map_preference([0.8, 0.1, 0.1], [0, 0, -3], [1, 2, 3], "linf").tolist() == [1.0, 0.6, -1.2]


def test_l2_and_linear_mappings_hand_computed():
    assert map_preference([1, 0], [-4, -3], [4, 3], "l2").tolist() == [4.0, -3.0]  # (high, low)
    # w / |w|: (0.6, 0.8) for w = (0.6, 0.8)/1.4
    assert map_preference([3 / 7, 4 / 7], [0, -1], [10, 1], "l2").tolist() == [6.0, 0.6]
    assert map_preference([0.25, 0.75], [-4, 0], [4, 2], "linear").tolist() == [-2.0, 1.5]


def test_mapping_rounds_to_one_decimal_and_refuses_bad_input():
    t = map_preference([0.123, 0.877], [-1.234, -2.0], [2.345, 2.0], "linear")
    assert t.tolist() == [round(0.123 * 3.579 - 1.234, 1), round(0.877 * 4 - 2, 1)]
    with pytest.raises(ConfigError, match="unknown RiC mapping 'l3'"):
        map_preference([1, 0], [0, 0], [1, 1], "l3")
    with pytest.raises(ConfigError, match="non-negative"):
        map_preference([-0.1, 1.1], [0, 0], [1, 1])
    with pytest.raises(ConfigError, match="one entry per objective"):
        map_preference([1, 0, 0], [0, 0], [1, 1])


def test_rounding_never_prints_negative_zero():
    assert round1([-0.04, 0.05, -0.05, 0.15, -1.25, 2.449999]).tolist() == [0.0, 0.1, -0.1, 0.2, -1.3, 2.4]
    assert fmt_score(-0.04) == "0.0" and fmt_score(-0.0) == "0.0" and fmt_score(1) == "1.0"
    assert score_tags([1.26, -0.01, -3]) == "<rm1_score> 1.3 <rm2_score> 0.0 <rm3_score> -3.0"


# ------------------------------------------------------------------------------------------------
# the conditioned prompt and the loss mask (spec 3.4.2)


def test_prompt_round_trip_on_random_scores():
    g = np.random.default_rng(0)
    for _ in range(200):
        k = int(g.integers(2, 5))
        s = g.normal(0, 3, k)
        p = reward_prompt("What is a good name for a cat?\n", s)
        assert p.startswith("What is a good name for a cat? <rm1_score>")
        assert parse_scores(p, k) == round1(s).tolist()


def test_conversation_prompts_carry_the_tags_in_the_last_user_message():
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Name a cat"}]
    out = reward_prompt(conv, [1.0, -2.0])
    assert out[-1]["content"] == "Name a cat <rm1_score> 1.0 <rm2_score> -2.0"
    assert out[1]["content"] == "Hi" and conv[-1]["content"] == "Name a cat"  # the input is not changed
    with pytest.raises(DataError, match="without a user message"):
        reward_prompt([{"role": "system", "content": "x"}], [1, 2])
    with pytest.raises(ValueError, match="rm2_score"):
        parse_scores("x <rm1_score> 1.0", 2)


def test_loss_mask_covers_exactly_the_response_and_eos():
    """Prompt and response are tokenised apart, so a template token that would merge with the text
    before it (the trl collator's pitfall) cannot shift the mask: the masked tokens are exactly the
    response's tokens and EOS, the unmasked ones end with the rendered tags."""
    from paretoalign.models import build_tiny_tokenizer
    from paretoalign.rollout import render_prompt
    from paretoalign.sequences import encode_responses

    tiny_tokenizer = build_tiny_tokenizer()

    prompts = [reward_prompt(f"Tell me about {w}.", s) for w, s in (("cats", [1.2, -0.3]), ("rain", [-4.0, 2.5]))]
    responses = ["Cats purr.", "Rain is wet and falls"]
    b = encode_responses(tiny_tokenizer, prompts, responses, max_prompt_length=256, max_response_length=64)
    for i, r in enumerate(responses):
        ids = b.input_ids[i, b.prompt_length:][b.response_mask[i].bool()].tolist()
        assert ids == tiny_tokenizer(r, add_special_tokens=False)["input_ids"] + [tiny_tokenizer.eos_token_id]
        prompt_ids = b.input_ids[i, : b.prompt_length][b.attention_mask[i, : b.prompt_length].bool()].tolist()
        assert tiny_tokenizer.decode(prompt_ids) == render_prompt(prompts[i], tiny_tokenizer)
        assert score_tags(parse_scores(prompts[i], 2)) in tiny_tokenizer.decode(prompt_ids)


# ------------------------------------------------------------------------------------------------
# statistics, goals, the quantile filter


def test_stats_normalise_save_and_load(tmp_path):
    raw = np.array([[1.0, 10.0], [2.0, 30.0], [3.0, 20.0], [6.0, 20.0]])
    st = fit_stats(raw, ["a", "b"])
    assert st.mean == pytest.approx([3.0, 20.0]) and st.std == pytest.approx([raw[:, 0].std(), raw[:, 1].std()])
    z = st.normalise(raw)
    assert z.tolist() == round1((raw - raw.mean(0)) / raw.std(0)).tolist()
    assert st.low == z.min(0).tolist() and st.high == z.max(0).tolist()
    st.save(tmp_path)
    assert RewardStats.load(tmp_path) == st
    normal = fit_stats(raw, ["a", "b"], bounds="normal", seed=3)
    assert all(3.5 < h < 5 for h in normal.high) and all(-5 < lo < -3.5 for lo in normal.low)


@pytest.mark.parametrize("content, match", [
    (None, "missing"), ("{", "not RiC score statistics"),
    (json.dumps({"names": ["a"], "mean": [0], "std": [0], "low": [0], "high": [1]}), "std > 0"),
    (json.dumps({"names": ["a", "b"], "mean": [0], "std": [1], "low": [0], "high": [1]}), "one entry per objective"),
])
def test_bad_stats_file_is_one_clear_error(tmp_path, content, match):
    if content is not None:
        (tmp_path / "reward_stats.json").write_text(content)
    with pytest.raises(DataError, match=match):
        RewardStats.load(tmp_path)


def test_stats_refuse_constant_objectives_and_too_little_data():
    with pytest.raises(DataError, match=r"\['b'\] score every offline response the same"):
        fit_stats([[1, 2], [3, 2]], ["a", "b"])
    with pytest.raises(DataError, match="at least 2"):
        fit_stats([[1, 2]], ["a", "b"])


def test_clip_targets_warns_and_clips():
    st = RewardStats(["a", "b"], [0, 0], [1, 1], [-2.0, -1.0], [2.0, 1.5])
    with pytest.warns(RuntimeWarning, match="a 3.0 -> 2.0"):
        assert clip_targets([3.0, 0.5], st).tolist() == [2.0, 0.5]


def test_goals_lie_on_the_outer_boundary():
    low, high = [-4.2, -3.0, -1.0], [4.4, 3.0, 2.0]
    g = sample_goals(500, low, high, np.random.default_rng(0))
    assert g.shape == (500, 3)
    at_high = np.isclose(g, high)
    assert (at_high.sum(1) >= 2).all()  # all but (at most) one objective at its maximum
    relaxed = g[~at_high]
    assert relaxed.size > 400 and (relaxed >= np.repeat([low], 500, 0)[~at_high] - 1e-9).all()
    assert (g == round1(g)).all()


def _reference_quantile_keep(s, q):
    """The reference's select_data_with_quantile, with the quantile written out (linear interpolation)."""
    keep = []
    thr = []
    for k in range(s.shape[1]):
        col = sorted(s[:, k])
        pos = q * (len(col) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(col) - 1)
        thr.append(col[lo] + (col[hi] - col[lo]) * (pos - lo))
    for row in s:
        keep.append(any(row[k] >= thr[k] for k in range(s.shape[1])))
    return np.array(keep)


def test_quantile_filter_keeps_rows_above_the_quantile_on_any_objective():
    g = np.random.default_rng(1)
    for _ in range(50):
        s = round1(g.normal(0, 1, (int(g.integers(3, 40)), int(g.integers(2, 4)))))
        assert quantile_keep(s, 0.7).tolist() == _reference_quantile_keep(s, 0.7).tolist()


# ------------------------------------------------------------------------------------------------
# a tabular conditional model (spec 3.4.3)

# 8 responses with known rewards on a concave front r = (cos t, sin t), some duplicated tuples
THETA = np.array([0.0, 0.2, 0.45, 0.7, 0.85, 1.1, 1.35, 1.5708])
REWARDS = np.stack([np.cos(THETA), np.sin(THETA)], 1)
DATA_Y = np.array([0, 1, 1, 2, 3, 3, 3, 4, 5, 6, 7, 7])  # the offline samples (response index)


def _fit_tabular(contexts: np.ndarray, ys: np.ndarray, m: int, steps: int = 3000) -> dict:
    """pi(y | c): one free logit row per distinct context tuple, trained by full-batch MLE (Adam)."""
    keys = sorted({tuple(c) for c in contexts.tolist()})
    row = {k: i for i, k in enumerate(keys)}
    logits = torch.zeros(len(keys), m, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.1)
    ci = torch.tensor([row[tuple(c)] for c in contexts.tolist()])
    y = torch.tensor(ys)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits[ci], y)  # the NLL RiC's fine-tuning minimises
        loss.backward()
        opt.step()
    probs = torch.softmax(logits.detach(), 1).numpy()
    return {k: probs[row[k]] for k in keys}


def test_tabular_conditional_model_equals_the_empirical_conditional():
    st = fit_stats(REWARDS[DATA_Y], ["a", "b"])
    ctx = st.normalise(REWARDS[DATA_Y])
    table = _fit_tabular(ctx, DATA_Y, len(THETA))
    for c, p in table.items():
        rows = [i for i, cc in enumerate(ctx.tolist()) if tuple(cc) == c]
        emp = np.bincount(DATA_Y[rows], minlength=len(THETA)) / len(rows)
        np.testing.assert_allclose(p, emp, atol=2e-3)
        # conditioning on a tuple present in the data puts all mass on the responses with that tuple
        assert p[np.flatnonzero(emp == 0)].sum() < 2e-3


def test_online_round_with_argmax_generation_keeps_exactly_the_quantile_rows():
    st = fit_stats(REWARDS[DATA_Y], ["a", "b"])
    table = _fit_tabular(st.normalise(REWARDS[DATA_Y]), DATA_Y, len(THETA))
    keys = list(table)
    goals = sample_goals(40, st.low, st.high, np.random.default_rng(2))
    # deterministic "generation": the argmax response of the nearest trained context
    gen = [int(np.argmax(table[min(keys, key=lambda k: np.abs(np.subtract(k, g)).sum())])) for g in goals]
    obtained = st.normalise(REWARDS[gen])
    assert quantile_keep(obtained, 0.7).tolist() == _reference_quantile_keep(obtained, 0.7).tolist()


def _log_linear_fit(ctx: np.ndarray, ys: np.ndarray, m: int, steps: int = 4000):
    """pi(y | c) = softmax(W c + b): a conditional model that generalises across contexts (as a language
    model does between the score strings it saw)."""
    torch.manual_seed(0)
    W = torch.zeros(m, ctx.shape[1], requires_grad=True)
    b = torch.zeros(m, requires_grad=True)
    opt = torch.optim.Adam([W, b], lr=0.05)
    c, y = torch.tensor(ctx, dtype=torch.float32), torch.tensor(ys)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(c @ W.T + b, y).backward()
        opt.step()
    return lambda t: torch.softmax(torch.tensor(t, dtype=torch.float32) @ W.detach().T + b.detach(), 0).numpy()


@pytest.mark.parametrize("mapping", ["linf", "l2"])
def test_steered_objectives_follow_the_preference_monotonically(mapping):
    """(Not 'linear': near the corners it asks (low, low), a context no response carries, and the model's
    extrapolation there need not be monotone; measured, it wobbles by ~6e-4.)"""
    st = fit_stats(REWARDS[DATA_Y], ["a", "b"])
    pi = _log_linear_fit(st.normalise(REWARDS[DATA_Y]), DATA_Y, len(THETA))
    ws = np.linspace(0, 1, 11)
    achieved = np.array([pi(map_preference([w, 1 - w], st.low, st.high, mapping)) @ REWARDS for w in ws])
    assert (np.diff(achieved[:, 0]) >= -1e-6).all() and (np.diff(achieved[:, 1]) <= 1e-6).all()
    assert achieved[-1, 0] - achieved[0, 0] > 0.3  # and it really moves along the front


def test_front_traced_by_the_mapping_is_the_hand_computed_set():
    """With the tabular model and contexts the data holds, the (target -> achieved) points over w are
    the hand-computed ones: w1 >= 0.5 asks (high, min(2 w2, 1) of b's range), w1 < 0.5 the mirror."""
    st = fit_stats(REWARDS[DATA_Y], ["a", "b"])
    ctx = st.normalise(REWARDS[DATA_Y])
    table = _fit_tabular(ctx, DATA_Y, len(THETA))
    lo, hi = np.array(st.low), np.array(st.high)
    for w1 in np.linspace(0, 1, 11):
        w = np.array([w1, 1 - w1])
        t = map_preference(w, lo, hi, "linf")
        k = 0 if w1 >= 0.5 else 1
        hand = np.empty(2)
        hand[k] = hi[k]
        hand[1 - k] = round1(min(2 * w[1 - k], 1) * (hi[1 - k] - lo[1 - k]) + lo[1 - k])
        assert t.tolist() == hand.tolist()
        if tuple(t) in table:  # a context the data holds: the response(s) that carry it
            y = int(np.argmax(table[tuple(t)]))
            np.testing.assert_allclose(st.normalise(REWARDS[y]), t)
