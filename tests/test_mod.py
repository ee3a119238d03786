"""MOD (multi-objective decoding): the combination rule's closed forms, soups vs MOD on the exact
testbed (bench/exact_front.py), and the K-adapter decoder against slow references."""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from paretoalign.decoding import MultiObjectiveDecoder, combine_logprobs, mod_scores, parse_divergence
from paretoalign.errors import ConfigError
from paretoalign.models import build_tiny_model, build_tiny_tokenizer

spec = importlib.util.spec_from_file_location("exact_front", Path(__file__).resolve().parents[1] / "bench" / "exact_front.py")
ef = importlib.util.module_from_spec(spec)
sys.modules["exact_front"] = ef  # dataclasses look their module up
spec.loader.exec_module(ef)

RULES = [("reverse_kl", None), ("forward_kl", None), ("alpha", 0.5)]
PROMPTS = ["hello there friend", "hi", "a much longer prompt about the weather today"]


def _simplex(g, k=2):
    w = torch.rand(k, generator=g, dtype=torch.float64)
    return w / w.sum()


# ---------------------------------------------------------------------------------------------
# combine_logprobs: properties
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule,alpha", RULES)
def test_combined_log_probabilities_are_normalised_and_k1_and_one_hot_pick_the_model(rule, alpha):
    g = torch.Generator().manual_seed(0)
    lp = torch.log_softmax(3 * torch.randn(3, 5, 7, 11, generator=g, dtype=torch.float64), -1)  # [K, ..., V]
    out = combine_logprobs(lp, [0.2, 0.5, 0.3], rule, alpha)
    assert out.shape == (5, 7, 11)
    torch.testing.assert_close(out.logsumexp(-1), torch.zeros(5, 7, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(combine_logprobs(lp[:1], [1.0], rule, alpha), lp[0], rtol=0, atol=1e-12)
    for k in range(3):
        w = torch.zeros(3)
        w[k] = 1
        other = lp.clone()
        other[[i for i in range(3) if i != k], ..., 0] = -float("inf")  # a zero weight's -inf never leaks (NaN)
        torch.testing.assert_close(combine_logprobs(other, w, rule, alpha), lp[k], rtol=0, atol=1e-12)


def test_reverse_kl_is_the_softmax_of_the_weighted_logits_and_the_other_rules_their_closed_forms():
    g = torch.Generator().manual_seed(1)
    logits = 2 * torch.randn(2, 4, 9, generator=g, dtype=torch.float64)  # raw, unnormalised
    w = torch.tensor([0.35, 0.65], dtype=torch.float64)
    torch.testing.assert_close(combine_logprobs(logits, w), torch.log_softmax((w[:, None, None] * logits).sum(0), -1))
    lp = logits.log_softmax(-1)
    p = lp.exp()
    harmonic = 1 / (w[:, None, None] / p).sum(0)  # weighted harmonic mean
    torch.testing.assert_close(combine_logprobs(lp, w, "forward_kl").exp(), harmonic / harmonic.sum(-1, keepdim=True))
    a = 0.3
    power = (w[:, None, None] * p ** -a).sum(0) ** (-1 / a)  # the 1/alpha the reference code drops is kept
    torch.testing.assert_close(combine_logprobs(lp, w, "alpha", a).exp(), power / power.sum(-1, keepdim=True))
    # alpha -> 0 is reverse KL; the forward-KL score is the alpha = 1 member
    torch.testing.assert_close(combine_logprobs(lp, w, "alpha", 1e-6), combine_logprobs(lp, w), rtol=0, atol=1e-5)
    torch.testing.assert_close(mod_scores(lp, w, "forward_kl"), -torch.logsumexp(-lp + w.log()[:, None, None], 0))


def test_the_reference_term_appears_only_when_the_weights_do_not_sum_to_one():
    g = torch.Generator().manual_seed(2)
    lp = torch.log_softmax(torch.randn(2, 6, generator=g, dtype=torch.float64), -1)
    ref = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), -1)
    w = torch.tensor([0.4, 0.6], dtype=torch.float64)
    torch.testing.assert_close(combine_logprobs(lp, w, reference=ref), combine_logprobs(lp, w))  # Σw = 1: unchanged
    half = torch.tensor([0.2, 0.3], dtype=torch.float64)
    want = torch.log_softmax(0.2 * lp[0] + 0.3 * lp[1] + 0.5 * ref, -1)  # (1 − Σw) log π_ref
    torch.testing.assert_close(combine_logprobs(lp, half, reference=ref), want)
    with pytest.raises(ConfigError, match="sum to 0.5, not 1"):
        combine_logprobs(lp, half)


@pytest.mark.parametrize("bad,match", [("jsd", "reference code decodes it with the reverse-KL rule"),
                                       ("alpha", "alpha needs its value"), ("alpha:1.5", "must be in"),
                                       ("hellinger", "unknown divergence"), ("reverse_kl:2", "only alpha")])
def test_bad_divergences_are_one_line(bad, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse_divergence(bad)
    assert "\n" not in str(e.value)


def test_bad_weights_are_one_line():
    lp = torch.zeros(2, 3)
    for w in ([0.5], [0.5, -0.1], [float("nan"), 1.0], [0.0, 0.0]):
        with pytest.raises(ConfigError) as e:
            combine_logprobs(lp, w)
        assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# exactness on the tabular testbed (bench/exact_front.py)
# ---------------------------------------------------------------------------------------------


def test_one_step_reverse_kl_combination_is_the_closed_form_optimum():
    prob = ef.make_problem(x=4, m=16, k=3, beta=0.1, seed=0)
    K = prob.rewards.shape[-1]
    endpoints = torch.stack([torch.log_softmax(ef.optimal_logits(prob, torch.eye(K, dtype=torch.float64)[k]), -1)
                             for k in range(K)])  # π_k ∝ π_ref exp(r_k/β)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        w = _simplex(g, K)
        star = torch.softmax(ef.optimal_logits(prob, w), -1)
        assert (combine_logprobs(endpoints, w).exp() - star).abs().max() < 1e-6


@pytest.mark.parametrize("rule,alpha", [("forward_kl", None), ("alpha", 0.5), ("alpha", 0.2)])
def test_forward_kl_and_alpha_rules_equal_their_closed_forms(rule, alpha):
    prob = ef.make_problem(x=3, m=8, k=2, beta=0.1, seed=2)
    a = 1.0 if rule == "forward_kl" else alpha
    eye = torch.eye(2, dtype=torch.float64)
    endpoints = torch.stack([ef.f_optimum(prob, eye[k], a) for k in range(2)])
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        w = _simplex(g)
        star = ef.f_optimum(prob, w, a)
        # the closed form really is the optimum of the f-regularised objective
        best = ef.f_objective(prob, star, w, a)
        for _ in range(10):
            noise = 0.2 * torch.randn(star.shape, generator=g, dtype=torch.float64)
            assert ef.f_objective(prob, star + noise, w, a) <= best + 1e-12
        # MOD's combination with the normaliser term (needs π_ref) is π* exactly
        exact = combine_logprobs(endpoints, w, rule, alpha, reference=prob.ref_logp)
        assert (exact.exp() - star.exp()).abs().max() < 1e-6
    # the paper's normaliser-free rule orders tokens like π* when π_ref is uniform, not otherwise
    approx = combine_logprobs(endpoints, w, rule, alpha)
    tv = 0.5 * (approx.exp() - star.exp()).abs().sum(-1).max()
    assert tv > 0.05  # measured: 0.28 (forward KL), 0.18 (α 0.5), 0.08 (α 0.2) at the last w... a real gap
    flat = ef.Problem(prob.rewards, torch.zeros_like(prob.ref_logits), prob.beta)
    flat_eps = torch.stack([ef.f_optimum(flat, eye[k], a) for k in range(2)])
    assert torch.equal(combine_logprobs(flat_eps, w, rule, alpha).argsort(-1), ef.f_optimum(flat, w, a).argsort(-1))


def test_two_step_sequences_reverse_kl_score_is_log_optimum_plus_a_constant_and_tokenwise_sampling_is_not():
    sp = ef.make_sequence_problem(v=4, k=2, beta=0.1, seed=0)
    rows = ef.two_step_report(sp, [(0.2, 0.8), (0.5, 0.5), (0.8, 0.2)])
    for r in rows:
        assert r["identity_error"] < 1e-10  # Σ_k w_k log π_k(y) − log π*(y) is the same for all 16 sequences
        assert r["argmax_equal"]
    # token-by-token sampling from the combined step distribution is not π* (per-prefix normalisers)
    assert [round(r["tv_tokenwise_sampling"], 4) for r in rows] == [0.0327, 0.0768, 0.0568]


def test_a_soup_of_optimal_tables_is_the_optimum_and_a_soup_of_mlps_falls_short_where_mod_does_not():
    prob = ef.make_problem()  # the benchmark's problem: 4 prompts x 16 responses, K = 2, beta = 0.1
    table = ef.steering_gap(prob, [0.5, 0.5], ef.TABLE)
    assert max(table["endpoint_gaps"]) < 1e-12  # natural policy gradient reaches the endpoints' optima
    assert table["max_abs_soup"] < 1e-6 and table["max_abs_mod"] < 1e-6  # Σ w θ_k is π*_w: logits are linear
    mlp = ef.steering_gap(prob, [0.5, 0.5], ef.MLP)
    assert max(mlp["endpoint_gaps"]) < 1e-9
    assert mlp["max_abs_mod"] < 1e-6 and abs(mlp["gap_mod"]) < 1e-9  # MOD reads only the endpoints' outputs
    # averaging the MLP's parameters misses the optimum of w·J by 3.3e-3 (0.6% of its value 0.506), with
    # response probabilities off by up to 0.16: the sub-optimality of merging that MOD's paper proves
    assert mlp["gap_soup"] == pytest.approx(3.26e-3, rel=0.02)
    assert mlp["max_abs_soup"] == pytest.approx(0.1625, abs=0.005)
    assert mlp["optimum"] == pytest.approx(0.5064, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# the decoder on a tiny Llama with two LoRA adapters
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def two_adapters(tok):
    """One tiny base with two non-zero LoRA adapters of different ranks and target sets."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    m = get_peft_model(build_tiny_model(tok), LoraConfig(r=4, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]), adapter_name="first")
    m.add_adapter("second", LoraConfig(r=2, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    for mod in m.modules():
        if hasattr(mod, "lora_B"):
            for lin in mod.lora_B.values():
                torch.nn.init.normal_(lin.weight, std=0.5)
    return m.eval()


def _enc(tok, prompts):
    return tok(prompts, return_tensors="pt", padding=True, padding_side="left")


def _teacher_forced(model, adapters, out, attention_mask):
    """Per-adapter log-probabilities [K, N, T, V] of the completion positions (K forwards, no cache)."""
    P = attention_mask.shape[1]
    am = torch.cat([attention_mask, torch.ones_like(out[:, P:])], 1)
    pos = (am.cumsum(-1) - 1).clamp(min=0)
    res = []
    for a in adapters:
        model.set_adapter(a)
        with torch.no_grad():
            res.append(model(input_ids=out, attention_mask=am, position_ids=pos).logits[:, P - 1:-1].float().log_softmax(-1))
    model.set_adapter(adapters[0])
    return torch.stack(res)


def _split(div):
    rule, _, a = div.partition(":")
    return rule, (float(a) if a else None)


@pytest.mark.parametrize("div", ["reverse_kl", "forward_kl", "alpha:0.5"])
def test_batched_k_adapter_log_probs_equal_k_separate_teacher_forced_forwards(tok, two_adapters, div):
    w = [0.3, 0.7]
    dec = MultiObjectiveDecoder(two_adapters, tok, w, div, adapters=["first", "second"])
    enc = _enc(tok, PROMPTS)
    torch.manual_seed(0)
    out, logps = dec.generate_ids(enc["input_ids"], enc["attention_mask"], 10, do_sample=True, temperature=1.0,
                                  return_logprobs=True)
    P = enc["input_ids"].shape[1]
    lp = _teacher_forced(two_adapters, ["first", "second"], out, enc["attention_mask"])  # [K, N, T, V]
    tgt = out[:, P:]
    chosen = lp.gather(-1, tgt[None, ..., None].expand(2, -1, -1, 1)).squeeze(-1)
    prefix = torch.cat([torch.zeros_like(chosen[..., :1]), chosen.cumsum(-1)[..., :-1]], -1)  # log π_k(y_<t)
    want = combine_logprobs(prefix[..., None] + lp, w, *_split(div)).gather(-1, tgt[..., None]).squeeze(-1)
    live = torch.ones_like(tgt, dtype=torch.bool)
    for n in range(tgt.shape[0]):  # up to each row's EOS
        hits = (tgt[n] == tok.eos_token_id).nonzero()
        if len(hits):
            live[n, hits[0, 0] + 1:] = False
    torch.testing.assert_close(logps[live], want[live], rtol=1e-4, atol=1e-4)


def _slow_greedy(model, adapters, tok, enc, w, div, steps, min_new=0):
    """The reference loop: K full forwards per token (no cache), the rule on sequence log-probs, argmax."""
    ids, am = enc["input_ids"], enc["attention_mask"]
    cum = torch.zeros(len(adapters), ids.shape[0], dtype=torch.float64)
    done = torch.zeros(ids.shape[0], dtype=torch.bool)
    for t in range(steps):
        pos = (am.cumsum(-1) - 1).clamp(min=0)
        lps = []
        for a in adapters:
            model.set_adapter(a)
            with torch.no_grad():
                lps.append(model(input_ids=ids, attention_mask=am, position_ids=pos).logits[:, -1].double().log_softmax(-1))
        lp = torch.stack(lps)
        scores = mod_scores(cum[..., None] + lp, w, *_split(div))
        if t < min_new:
            scores[:, tok.eos_token_id] = -float("inf")
        nxt = scores.argmax(-1)
        cum += lp[:, torch.arange(ids.shape[0]), nxt]
        nxt = torch.where(done, torch.full_like(nxt, tok.pad_token_id), nxt)
        done |= nxt == tok.eos_token_id
        ids = torch.cat([ids, nxt[:, None]], 1)
        am = torch.cat([am, torch.ones_like(nxt[:, None])], 1)
        if done.all():
            break
    model.set_adapter(adapters[0])
    return ids


@pytest.mark.parametrize("div", ["reverse_kl", "forward_kl", "alpha:0.5"])
def test_greedy_output_equals_the_slow_reference_loop_token_for_token(tok, two_adapters, div):
    w = [0.6, 0.4]
    enc = _enc(tok, PROMPTS)
    dec = MultiObjectiveDecoder(two_adapters, tok, w, div, adapters=["first", "second"])
    got = dec.generate_ids(enc["input_ids"], enc["attention_mask"], 12, min_new_tokens=2)
    want = _slow_greedy(two_adapters, ["first", "second"], tok, enc, w, div, 12, min_new=2)
    assert torch.equal(got, want[:, : got.shape[1]])


def test_k_separate_models_decode_as_the_stacked_adapters(tok, two_adapters):
    """Full fine-tuned endpoints (K models, K forwards per token) give what the stacked adapters give."""
    import copy

    models = []
    for a in ("first", "second"):
        m = copy.deepcopy(two_adapters)
        m.set_adapter(a)
        models.append(m.merge_and_unload().eval())
    enc = _enc(tok, PROMPTS)
    stacked = MultiObjectiveDecoder(two_adapters, tok, [0.5, 0.5], "forward_kl", adapters=["first", "second"])
    separate = MultiObjectiveDecoder(models, tok, [0.5, 0.5], "forward_kl")
    a = stacked.generate_ids(enc["input_ids"], enc["attention_mask"], 10, return_logprobs=True)
    b = separate.generate_ids(enc["input_ids"], enc["attention_mask"], 10, return_logprobs=True)
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], rtol=1e-4, atol=1e-4)


def test_sampling_frequencies_match_the_combined_distribution_after_temperature_and_top_p(tok, two_adapters):
    w, T, top_p, n = [0.7, 0.3], 0.1, 0.9, 4000  # the tiny random model is flat: sharpen it
    dec = MultiObjectiveDecoder(two_adapters, tok, w, "forward_kl", adapters=["first", "second"])
    enc = _enc(tok, ["hello there friend"] * n)
    torch.manual_seed(1)
    out = dec.generate_ids(enc["input_ids"], enc["attention_mask"], 1, do_sample=True, temperature=T, top_p=top_p)
    P = enc["input_ids"].shape[1]
    lp = _teacher_forced(two_adapters, ["first", "second"], out[:1], enc["attention_mask"][:1])[:, 0, 0]  # [K, V]
    from paretoalign.decoding import _top_p

    p = torch.softmax(_top_p(combine_logprobs(lp, w, "forward_kl")[None] / T, top_p), -1)[0]
    freq = torch.bincount(out[:, P], minlength=p.numel()).double() / n
    assert freq[p == 0].sum() == 0  # nothing outside the nucleus of the *combined* distribution
    se = (p * (1 - p) / n).sqrt()
    big = p > 0.01
    assert big.sum() >= 3
    assert ((freq[big] - p[big]).abs() <= 4.5 * se[big] + 1e-9).all()


class _TabularForward:
    """The decoder's forward interface over fixed tables: the first token's log-probs [K, V], the
    second's [K, V, V] given the first (the two-step testbed's endpoints)."""

    def __init__(self, first, second):
        self.first, self.second, self.K = first, second, first.shape[0]

    def refresh(self):
        pass

    def new_caches(self, M, S, device):
        return [torch.zeros(M, 0, dtype=torch.long)]

    def forward(self, ids, positions, key_mask, caches, start):
        if start == 0:
            return self.first[:, None, :].expand(-1, ids.shape[0], -1)
        caches[0] = torch.cat([caches[0], ids], 1)
        return self.second[:, caches[0][:, 0]]

    def select(self, caches, index, M):
        return [caches[0][index]]


def _tabular_decoder(first, second, w, div):
    dec = object.__new__(MultiObjectiveDecoder)
    dec.rule, dec.alpha = parse_divergence(div)
    dec._fw, dec.K, dec.names = _TabularForward(first, second), first.shape[0], ["a", "b"]
    dec.set_weights(w)
    return dec


def _two_step_endpoints():
    sp = ef.make_sequence_problem(v=4, k=2, beta=0.1, seed=0)
    eps = [ef.factorise(ef.sequence_optimum(sp, torch.eye(2, dtype=torch.float64)[k])) for k in range(2)]
    return sp, torch.stack([e[0] for e in eps]), torch.stack([e[1] for e in eps])


@pytest.mark.parametrize("div", ["reverse_kl", "forward_kl"])
def test_two_step_sampling_draws_the_tokenwise_combination_with_prefix_terms(div):
    sp, first, second = _two_step_endpoints()
    w, n = [0.5, 0.5], 40000
    dec = _tabular_decoder(first, second, w, div)
    torch.manual_seed(0)
    out = dec.generate_ids(torch.zeros(n, 1, dtype=torch.long), torch.ones(n, 1, dtype=torch.long), 2,
                           eos_token_id=99, pad_token_id=98, do_sample=True)
    freq = torch.bincount(out[:, 1] * 4 + out[:, 2], minlength=16).double() / n
    q = ef.tokenwise_mod_joint(first, second, w, *_split(div)).exp().flatten()
    assert ((freq - q).abs() <= 4.5 * (q * (1 - q) / n).sqrt() + 1e-9).all()
    if div == "reverse_kl":  # and that is not π* (the two-step testbed's TV 0.077 at w = 0.5)
        star = ef.sequence_optimum(sp, torch.tensor(w, dtype=torch.float64)).exp().flatten()
        assert 0.5 * (q - star).abs().sum() == pytest.approx(0.0768, abs=1e-4)


@pytest.mark.parametrize("div", ["reverse_kl", "forward_kl", "alpha:0.5"])
def test_exhaustive_beam_search_returns_the_best_sequence(div):
    sp, first, second = _two_step_endpoints()
    for w in ([0.2, 0.8], [0.5, 0.5], [0.9, 0.1]):
        dec = _tabular_decoder(first, second, w, div)
        out = dec.generate_ids(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), 2,
                               eos_token_id=99, pad_token_id=98, num_beams=4, length_penalty=0.0)
        seq = mod_scores(first[:, :, None] + second, w, *_split(div))  # [4, 4] sequence scores, enumerated
        best = divmod(int(seq.flatten().argmax()), 4)
        assert tuple(out[0, 1:].tolist()) == best
        if div == "reverse_kl":  # ... which is argmax π*
            assert int(ef.sequence_optimum(sp, torch.tensor(w, dtype=torch.float64)).flatten().argmax()) == best[0] * 4 + best[1]
        greedy = dec.generate_ids(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long), 2,
                                  eos_token_id=99, pad_token_id=98, do_sample=False)
        assert float(seq[tuple(out[0, 1:].tolist())]) >= float(seq[tuple(greedy[0, 1:].tolist())])


def test_exhaustive_beam_search_on_the_tiny_model_with_eos_finds_the_enumerated_best(tok, two_adapters):
    w, div = [0.4, 0.6], "forward_kl"
    dec = MultiObjectiveDecoder(two_adapters, tok, w, div, adapters=["first", "second"])
    enc = _enc(tok, ["hi"])
    V = len(tok)
    out = dec.generate_ids(enc["input_ids"], enc["attention_mask"], 2, num_beams=V, length_penalty=0.0)
    # enumerate: every first token (EOS ends the sequence), then every second token
    P = enc["input_ids"].shape[1]
    first = _teacher_forced(two_adapters, ["first", "second"], torch.cat([enc["input_ids"], torch.zeros(1, 1, dtype=torch.long)], 1),
                            enc["attention_mask"])[:, 0, 0]  # [K, V]
    ids = torch.cat([enc["input_ids"].repeat(V, 1), torch.arange(V)[:, None], torch.zeros(V, 1, dtype=torch.long)], 1)
    second = _teacher_forced(two_adapters, ["first", "second"], ids, enc["attention_mask"].repeat(V, 1))[:, :, 1]  # [K, V, V]
    seq = mod_scores((first[:, :, None] + second).double(), w, *_split(div))
    eos = tok.eos_token_id
    seq[eos] = -float("inf")
    ended = mod_scores(first[:, eos:eos + 1].double(), w, *_split(div))[0]
    best = max(float(seq.max()), float(ended))
    got = out[0, P:].tolist()
    score = float(ended) if got[0] == eos else float(seq[got[0], got[1]])
    assert score == pytest.approx(best, abs=1e-4)


def test_beam_search_with_one_beam_is_greedy_and_refuses_sampling(tok, two_adapters):
    dec = MultiObjectiveDecoder(two_adapters, tok, [0.5, 0.5], "alpha:0.5", adapters=["first", "second"])
    enc = _enc(tok, PROMPTS)
    greedy = dec.generate_ids(enc["input_ids"], enc["attention_mask"], 8)
    beam2 = dec.generate_ids(enc["input_ids"], enc["attention_mask"], 8, num_beams=2)
    assert beam2.shape[0] == 3 and greedy.shape[0] == 3
    with pytest.raises(ConfigError, match="beam search is greedy"):
        dec.generate_ids(enc["input_ids"], enc["attention_mask"], 8, num_beams=2, do_sample=True)


def test_generate_renders_prompts_and_returns_a_rollout(tok, two_adapters):
    dec = MultiObjectiveDecoder(two_adapters, tok, [0.6, 0.4], adapters=["first", "second"])
    torch.manual_seed(0)
    r = dec.generate(PROMPTS, max_new_tokens=6, temperature=0.7)
    assert len(r.completions) == 3 and r.prompt_texts == PROMPTS
    assert r.completion_mask.shape == (3, r.input_ids.shape[1] - r.prompt_length)
    dec.set_weights([1.0, 0.0])  # a one-hot weight decodes the first adapter alone
    two_adapters.set_adapter("first")
    from paretoalign.rollout import generate

    torch.manual_seed(0)
    alone = generate(two_adapters, tok, PROMPTS, max_new_tokens=6, do_sample=False)
    assert dec.generate(PROMPTS, max_new_tokens=6, do_sample=False).completions == alone.completions


def test_bad_decoder_input_is_one_line(tok, two_adapters):
    for kwargs, match in [(dict(weights=[0.5, 0.6]), "sum to 1.1"), (dict(weights=[1.0]), "expected 2 weights"),
                          (dict(weights=[0.5, 0.5], adapters=["first"]), "at least two endpoints"),
                          (dict(weights=[0.5, 0.5], adapters=["first", "nope"]), "not loaded"),
                          (dict(weights=[0.5, 0.5], divergence="jsd"), "jsd")]:
        kwargs.setdefault("adapters", ["first", "second"])
        with pytest.raises(ConfigError, match=match) as e:
            MultiObjectiveDecoder(two_adapters, tok, **kwargs)
        assert "\n" not in str(e.value)
