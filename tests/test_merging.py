"""Rewarded Soups' arithmetic and `paretoalign merge`: exactness of the delta mode (LoRA and full models), the
SVD re-factorisation and its reported error, the reference code's factor averaging (and how far it is from the
paper's formula), refusals in one line, folders that `from_pretrained` loads, and the LMC check.

Everything is built in-process from the tiny random Llama (no hub)."""

import json
import math
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from paretoalign import cli, merging, run_dir
from paretoalign.console import quiet_third_party
from paretoalign.errors import ConfigError
from paretoalign.merging import LoraWeights, read_lora
from paretoalign.models import build_tiny_model, build_tiny_tokenizer

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))


def with_merge_command(monkeypatch):
    """``paretoalign merge`` on the command line (a no-op once cli.py registers it itself)."""
    real = cli.build_parser

    def build():
        parser = real()
        sub = next(a for a in parser._actions if a.dest == "command")
        if "merge" not in sub.choices:
            merging.add_merge_parser(sub)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)


@pytest.fixture(autouse=True)
def merge_command(monkeypatch):
    with_merge_command(monkeypatch)


def main(argv):
    return cli.main(argv)


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


def _save_base(folder, tok, seed=0):
    model = build_tiny_model(tok, seed=seed)
    with quiet_third_party():
        model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _adapter(folder, base_dir, tok, seed, r=4, alpha=8, targets=("q_proj", "v_proj"), base_seed=0, rslora=False):
    """A LoRA adapter of the tiny base with random A and B (B is zero at PEFT's init: nothing to merge)."""
    from peft import LoraConfig, get_peft_model

    with quiet_third_party():
        model = get_peft_model(build_tiny_model(tok, seed=base_seed),
                               LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), use_rslora=rslora,
                                          task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    with quiet_third_party():
        model.save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base_dir)
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def _full(folder, tok, seed, base_seed=0):
    """A 'full fine-tune' of the tiny base: every floating tensor moved by noise."""
    model = build_tiny_model(tok, seed=base_seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    with quiet_third_party():
        model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture
def world(tmp_path, tok):
    base = _save_base(tmp_path / "base", tok)
    a = _adapter(tmp_path / "a", base, tok, seed=1, r=4, alpha=8)
    b = _adapter(tmp_path / "b", base, tok, seed=2, r=8, alpha=4)  # other rank and alpha: delta mode is exact anyway
    return tmp_path, base, a, b


def _ids(tok):
    return tok(["The weather today is", "Tell me a story"], return_tensors="pt", padding=True)


def _logits(model, tok):
    enc = _ids(tok)
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits


def _expected_delta(folders, weights, module):
    """Σ_i λ_i s_i B_i A_i, written out by hand from the adapter files and configs."""
    out = 0
    for f, lam in zip(folders, weights):
        sd = load_file(str(f / "adapter_model.safetensors"))
        cfg = json.loads((f / "adapter_config.json").read_text())
        A, B = sd[f"{module}.lora_A.weight"].double(), sd[f"{module}.lora_B.weight"].double()
        out = out + lam * (cfg["lora_alpha"] / cfg["r"]) * (B @ A)
    return out


# --- delta mode: exact ---------------------------------------------------------------------------


def test_delta_mode_merges_lora_adapters_into_base_plus_the_weighted_deltas(world, tok):
    tmp, base, a, b = world
    w = [0.3, 0.7]
    m = merging.merge(None, [("a", str(a)), ("b", str(b))], w)
    assert m.kind == "model" and m.record["mode"] == "delta" and m.record["output"] == "model"
    merged = m.model.state_dict()
    w0 = load_file(str(base / "model.safetensors"))
    reference = build_tiny_model(tok, seed=0)
    ref_sd = reference.state_dict()
    modules = read_lora(a).modules
    assert len(modules) == 4  # q_proj and v_proj of 2 layers
    with torch.no_grad():
        for mod in modules:
            name = merging.base_param_name(mod)
            want = w0[name].double() + _expected_delta([a, b], w, mod)
            assert (merged[name].double() - want).abs().max() < 1e-6, mod
            ref_sd[name].copy_(want.float())
    for name in w0:  # untouched tensors are the base's, bit for bit
        if not any(name == merging.base_param_name(x) for x in modules):
            assert torch.equal(merged[name], w0[name]), name
    # and on logits: the merged model computes what base + sum_i w_i s_i B_i A_i computes
    assert (_logits(m.load(), tok) - _logits(reference.eval(), tok)).abs().max() < 1e-5


def test_a_full_model_merge_of_full_fine_tunes_is_the_weighted_sum(tmp_path, tok):
    fa, fb = _full(tmp_path / "fa", tok, seed=1), _full(tmp_path / "fb", tok, seed=2)
    w = [0.25, 0.75]
    m = merging.merge(None, f"x={fa},y={fb}", w)
    sa, sb = load_file(str(fa / "model.safetensors")), load_file(str(fb / "model.safetensors"))
    merged = m.model.state_dict()
    for k in sa:
        assert (merged[k].double() - (0.25 * sa[k].double() + 0.75 * sb[k].double())).abs().max() < 1e-6, k
    assert merged["lm_head.weight"].data_ptr() == merged["model.embed_tokens.weight"].data_ptr()  # still tied
    # the pure function agrees, and its vertices are the endpoints bit for bit
    pure = merging.merge_tensors(None, [sa, sb], w).state_dict
    assert all(torch.equal(pure[k], merged[k]) for k in sa)
    vertex = merging.merge_tensors(None, [sa, sb], [1.0, 0.0]).state_dict
    assert all(torch.equal(vertex[k], sa[k]) for k in sa)
    # off the simplex it is theta_0 + sum_i w_i (theta_i - theta_0), which needs the base
    with pytest.raises(ConfigError, match="needs the base"):
        merging.merge_tensors(None, [sa, sb], [0.5, 0.7])
    w0 = build_tiny_model(tok, seed=0).state_dict()
    ext = merging.merge_tensors(w0, [sa, sb], [0.5, 0.7]).state_dict
    k = "model.layers.0.mlp.up_proj.weight"
    want = w0[k].double() + 0.5 * (sa[k].double() - w0[k].double()) + 0.7 * (sb[k].double() - w0[k].double())
    assert (ext[k].double() - want).abs().max() < 1e-6


def test_a_vertex_reproduces_the_endpoint_and_the_sources_are_never_modified(world, tok):
    tmp, base, a, b = world
    before = {f: merging.weights_digest(f) for f in (base, a, b)}
    m = merging.merge(None, [("a", str(a)), ("b", str(b))], [1.0, 0.0])
    from peft import PeftModel

    with quiet_third_party():
        peft_merged = PeftModel.from_pretrained(build_tiny_model(tok, seed=0), str(a)).merge_and_unload().state_dict()
    mine = m.model.state_dict()
    assert all(torch.equal(mine[k], peft_merged[k]) for k in peft_merged)  # PEFT's own merge, bit for bit
    assert {f: merging.weights_digest(f) for f in (base, a, b)} == before


# --- re-factorised adapters: exact at full rank, the reported error at lower rank ---------------


def test_svd_refactorisation_is_exact_at_full_rank_and_reports_the_norm_it_loses(world):
    tmp, base, a, b = world
    A, B = read_lora(a), read_lora(b)
    w = [0.4, 0.6]
    mod = A.modules[0]
    exact = _expected_delta([a, b], w, mod)
    # rank concatenation ('exact'): B A is the weighted sum of the deltas
    A_cat, B_cat = merging.concat_lora([A, B], w, mod)
    assert A_cat.shape[0] == 4 + 8 and (B_cat.double() @ A_cat.double() - exact).abs().max() < 1e-6
    # truncated SVD at the full rank loses nothing ...
    Af, Bf, lost, norm = merging.lora_svd(A_cat, B_cat, 12)
    assert (Bf.double() @ Af.double() - exact).abs().max() < 1e-5 and lost < 1e-5 * norm
    assert norm == pytest.approx(float(exact.norm()), rel=1e-6)
    # ... and at a lower rank reports exactly the Frobenius norm it loses
    for r in (1, 3, 6):
        Ar, Br, lost, _ = merging.lora_svd(A_cat, B_cat, r)
        actual = float((exact - Br.double() @ Ar.double()).norm())
        assert Ar.shape == (r, A_cat.shape[1]) and lost == pytest.approx(actual, rel=1e-5), r
    # the dense path (any delta) agrees with the low-rank one
    Ad, Bd, lost_d = merging.delta_to_lora(exact, 3)
    assert lost_d == pytest.approx(float((exact - Bd.double() @ Ad.double()).norm()), rel=1e-6)
    assert lost_d == pytest.approx(merging.lora_svd(A_cat, B_cat, 3)[2], rel=1e-6)
    # through merge(): the adapter output and the total error over all modules
    m = merging.merge(None, [("a", str(a)), ("b", str(b))], w, rank=3)
    tr = m.record["truncation"]
    total_lost2 = total2 = 0.0
    for mm in A.modules:
        d = _expected_delta([a, b], w, mm)
        fa, fb = m.lora.factors[mm]
        total_lost2 += float((d - fb.double() @ fa.double()).norm()) ** 2
        total2 += float(d.norm()) ** 2
    assert tr["rank"] == 3 and not tr["exact"]
    assert tr["lost"] == pytest.approx(math.sqrt(total_lost2), rel=1e-5)
    assert tr["relative"] == pytest.approx(math.sqrt(total_lost2 / total2), rel=1e-5)
    assert m.adapter_config["r"] == 3 and m.adapter_config["lora_alpha"] == 3  # scale 1
    ex = merging.merge(None, [("a", str(a)), ("b", str(b))], w, rank="exact")
    assert ex.record["truncation"]["rank"] == 12 and ex.record["truncation"]["lost"] == 0.0
    full = merging.merge(None, [("a", str(a)), ("b", str(b))], w)
    assert (_logits(ex.load(), full.tokenizer) - _logits(full.load(), full.tokenizer)).abs().max() < 1e-5


def test_rslora_scale_is_alpha_over_sqrt_r(tmp_path, tok):
    base = _save_base(tmp_path / "base", tok)
    a = _adapter(tmp_path / "a", base, tok, seed=1, r=4, alpha=8, rslora=True)
    assert read_lora(a).scale == pytest.approx(8 / 2)


# --- factors mode: the reference code, and how far it is from the paper ----------------------------


def test_factors_mode_is_the_reference_codes_factor_averaging_and_differs_from_the_delta_mode(tmp_path, tok):
    base = _save_base(tmp_path / "base", tok)
    a = _adapter(tmp_path / "a", base, tok, seed=1, r=4, alpha=8)
    b = _adapter(tmp_path / "b", base, tok, seed=2, r=4, alpha=8)
    w = [0.3, 0.7]
    m = merging.merge(None, [("a", str(a)), ("b", str(b))], w, mode="factors")
    assert m.kind == "adapter" and "NOT the paper's" in m.record["mode_note"]
    # WeightAverager.average_weights: sum of coefficient * adapter state dict, key by key
    reference = {}
    for f, c in zip((a, b), w):
        for k, v in load_file(str(f / "adapter_model.safetensors")).items():
            reference[k] = c * v if k not in reference else reference[k] + c * v
    mine = m.lora.tensors()
    assert set(mine) == set(reference) and all(torch.allclose(mine[k], reference[k], atol=0, rtol=1e-6) for k in mine)
    assert m.adapter_config["r"] == 4 and m.adapter_config["lora_alpha"] == 8  # the endpoints' own config
    # how far it is from the paper's sum of deltas: exactly -s w1 w2 (B1 - B2)(A1 - A2), for K = 2
    s = 8 / 4
    rel = []
    for mod in read_lora(a).modules:
        fa, fb = m.lora.factors[mod]
        factors_delta = s * fb.double() @ fa.double()
        delta = _expected_delta([a, b], w, mod)
        A1, B1 = read_lora(a).factors[mod]
        A2, B2 = read_lora(b).factors[mod]
        cross = -s * w[0] * w[1] * (B1.double() - B2.double()) @ (A1.double() - A2.double())
        assert (factors_delta - delta - cross).abs().max() < 1e-6
        rel.append(float((factors_delta - delta).norm() / delta.norm()))
    print(f"factors vs delta mode, relative Frobenius difference per module: {[round(x, 3) for x in rel]}")
    assert min(rel) > 0.1  # on independent random adapters the cross terms are not small
    # at a vertex both modes give the endpoint itself
    v = merging.merge(None, [("a", str(a)), ("b", str(b))], [1.0, 0.0], mode="factors").lora.tensors()
    own = load_file(str(a / "adapter_model.safetensors"))
    assert all(torch.equal(v[k], own[k]) for k in own)


def test_pure_merge_tensors_on_adapters(tmp_path, tok):
    g = torch.Generator().manual_seed(0)
    ad = [LoraWeights({"m": (torch.randn(2, 5, generator=g), torch.randn(3, 2, generator=g))}, s) for s in (0.5, 2.0)]
    base = {"m.weight": torch.randn(3, 5, generator=g)}
    out = merging.merge_tensors(base, ad, [0.5, 0.5]).state_dict["m.weight"]
    want = base["m.weight"] + 0.5 * 0.5 * ad[0].factors["m"][1] @ ad[0].factors["m"][0] \
        + 0.5 * 2.0 * ad[1].factors["m"][1] @ ad[1].factors["m"][0]
    assert torch.allclose(out, want, atol=1e-6)
    with pytest.raises(ConfigError, match="equal ranks and scales"):
        merging.merge_tensors(None, ad, [0.5, 0.5], mode="factors")


# --- refusals: one line each --------------------------------------------------------------------


def _run(argv, capsys):
    capsys.readouterr()  # what the set-up printed
    rc = main(argv)
    err = capsys.readouterr().err
    return rc, err


def _refused(argv, capsys, says):
    rc, err = _run(argv, capsys)
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and says in err, err
    return err


def test_refusals_are_one_line_each(tmp_path, tok, capsys):
    base = _save_base(tmp_path / "base", tok)
    a = _adapter(tmp_path / "a", base, tok, seed=1, r=4)
    out = str(tmp_path / "out")
    merge = ["merge", "--weights", "0.5,0.5", "--output-dir", out, "--endpoints"]
    # a different base model (same architecture, other weights)
    base1 = _save_base(tmp_path / "base1", tok, seed=1)
    other = _adapter(tmp_path / "other-base", base1, tok, seed=2, base_seed=1)
    _refused(merge + [f"a={a},b={other}"], capsys, "have different base models")
    # different LoRA targets
    kq = _adapter(tmp_path / "kq", base, tok, seed=3, targets=("q_proj", "k_proj"))
    _refused(merge + [f"a={a},b={kq}"], capsys, "adapt different modules (v_proj only in the first; k_proj only in the second)")
    # different ranks: only the factor averaging cares
    r8 = _adapter(tmp_path / "r8", base, tok, seed=4, r=8)
    _refused(merge + [f"a={a},b={r8}", "--mode", "factors"], capsys, "needs equal ranks and scales")
    # a different tokenizer
    import shutil

    shutil.copytree(a, tmp_path / "tok")
    t2 = build_tiny_tokenizer()
    t2.add_tokens(["<extra_token>"])
    t2.save_pretrained(tmp_path / "tok")
    _refused(merge + [f"a={a},b={tmp_path / 'tok'}"], capsys, "have different tokenizers (vocabularies of")
    # quantised weights: a full model that says so, and deltas into a quantised base
    fa = _full(tmp_path / "fa", tok, seed=1)
    fq = _full(tmp_path / "fq", tok, seed=2)
    cfg = json.loads((fq / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    (fq / "config.json").write_text(json.dumps(cfg))
    _refused(merge + [f"a={fa},b={fq}"], capsys, "has quantised weights (config.json has a quantization_config (bitsandbytes))")
    qbase = tmp_path / "qbase"
    shutil.copytree(base, qbase)
    (qbase / "config.json").write_text(json.dumps({**json.loads((base / "config.json").read_text()),
                                                   "quantization_config": {"quant_method": "bitsandbytes"}}))
    qa = _adapter(tmp_path / "qa", qbase, tok, seed=1)
    qb = _adapter(tmp_path / "qb", qbase, tok, seed=2)
    _refused(merge + [f"a={qa},b={qb}"], capsys, "is quantised (config.json has a quantization_config")
    ok = ["merge", "--weights", "0.5,0.5", "--output-dir", str(tmp_path / "q-out"), "--rank", "exact", "--endpoints"]
    rc, err = _run(ok + [f"a={qa},b={qb}"], capsys)  # adapters on a quantised base, written as an adapter: fine
    assert rc == 0, err
    assert not (tmp_path / "out").exists()  # nothing refused above wrote anything
    # a mix of kinds, a pickle, weights off the simplex, a folder that is not ours
    _refused(merge + [f"a={a},b={fa}"], capsys, "is a LoRA adapter and 'b' a full model")
    pk = tmp_path / "pickled"
    shutil.copytree(a, pk)
    (pk / "adapter_model.safetensors").rename(pk / "adapter_model.bin")
    _refused(merge + [f"a={a},b={pk}"], capsys, "adapter_model.bin (a pickle, which paretoalign never loads)")
    _refused(["merge", "--weights", "0.6,0.6", "--output-dir", str(tmp_path / "o2"), "--endpoints", f"{a},{fa}"],
             capsys, "sum to 1.2, not 1")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    _refused(["merge", "--weights", "0.5,0.5", "--output-dir", str(mine), "--endpoints", f"a={a},b={kq}"], capsys,
             "not a paretoalign folder")
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


# --- the command: folders that load with from_pretrained, identical to the in-memory merge ---------


def test_merge_cli_writes_folders_that_from_pretrained_loads_with_the_in_memory_logits(world, tok, capsys):
    tmp, base, a, b = world
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import paretoalign

    ends = f"a={a},b={b}"
    out = tmp / "merged"
    rc, err = _run(["merge", "--endpoints", ends, "--weights", "0.3,0.7", "--output-dir", str(out)], capsys)
    assert rc == 0, err
    assert run_dir.read_marker(out)["kind"] == "merge"
    rec = json.loads((out / "merge.json").read_text())
    assert rec["weights"] == [0.3, 0.7] and rec["output"] == "model" and rec["arxiv"] == "2306.04488"
    assert [e["sha256"] for e in rec["endpoints"]] != [None, None] and rec["base"]["sha256"]
    memory = merging.merge(None, ends, [0.3, 0.7]).load()
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert torch.equal(_logits(loaded, tok), _logits(memory, tok))
    # an adapter output: PeftModel on the base, and paretoalign.load_policy
    ad = tmp / "merged-adapter"
    rc, err = _run(["merge", "--endpoints", ends, "--weights", "0.3,0.7", "--rank", "5", "--output-dir", str(ad)], capsys)
    assert rc == 0, err
    assert "truncation error" in err
    memory = merging.merge(None, ends, [0.3, 0.7], rank=5).load()
    with quiet_third_party():
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(ad)).eval()
    assert torch.equal(_logits(peft, tok), _logits(memory, tok))
    model, _ = paretoalign.load_policy(ad)
    assert torch.equal(_logits(model, tok), _logits(memory, tok))
    # our own merge is replaced only with --overwrite, and the user's own files in it stay
    _refused(["merge", "--endpoints", ends, "--weights", "0.5,0.5", "--output-dir", str(out)], capsys,
             "already holds a paretoalign merge folder; pass --overwrite")
    (out / "my-notes.md").write_text("keep")
    rc, err = _run(["merge", "--endpoints", ends, "--weights", "0.5,0.5", "--output-dir", str(out), "--overwrite"], capsys)
    assert rc == 0, err
    assert json.loads((out / "merge.json").read_text())["weights"] == [0.5, 0.5]
    assert (out / "my-notes.md").read_text() == "keep"


def test_lmc_writes_the_path_the_chord_and_a_plot(world, capsys):
    tmp, base, a, b = world
    out = tmp / "lmc"
    rc = main(["merge", "--lmc", "--endpoints", f"a={a},b={b}", "--points", "3", "--output-dir", str(out),
               "--objectives", ",".join(OBJ), "--num-prompts", "4", "--max-new-tokens", "8", "--eval-batch-size", "4"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    res = json.loads((out / "lmc.json").read_text())
    assert res["lambdas"] == [0.0, 0.5, 1.0] and len(res["points"]) == 3 and res["names"] == ["chars", "words"]
    for n in res["names"]:
        assert len(res["mean"][n]) == 3 and res["gap_to_chord"][n][0] == 0.0 and res["gap_to_chord"][n][-1] == 0.0
    assert (out / "lmc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_dir.read_marker(out)["kind"] == "lmc" and "lambda = weight of 'b'" in cap.out
    # each point is an exact adapter merge, evaluated through the evaluate machinery (and cached: a re-run
    # generates nothing)
    p = out / res["points"][1]["folder"]
    assert json.loads((p / "merge.json").read_text())["weights"] == [0.5, 0.5]
    assert (p / "adapter_config.json").is_file() and (p / "eval.json").is_file()
    rc = main(["merge", "--lmc", "--endpoints", f"a={a},b={b}", "--points", "3", "--output-dir", str(out),
               "--objectives", ",".join(OBJ), "--num-prompts", "4", "--max-new-tokens", "8", "--eval-batch-size", "4",
               "--overwrite"])
    assert rc == 0
    again = json.loads((out / "lmc.json").read_text())
    assert again["mean"] == res["mean"]
    assert all(json.loads((out / q["folder"] / "eval.json").read_text())["cached"]["completions"] for q in again["points"])


def test_integer_tensors_are_copied_from_the_first_endpoint_not_averaged():
    a = {"w": torch.ones(2), "pos": torch.tensor([0, 1, 2])}
    b = {"w": torch.zeros(2), "pos": torch.tensor([5, 6, 7])}
    out = merging.merge_tensors(None, [a, b], [0.5, 0.5]).state_dict
    assert torch.equal(out["pos"], a["pos"]) and torch.allclose(out["w"], torch.full((2,), 0.5))


def test_lmc_flags_points_below_the_chord_by_more_than_two_standard_errors(tmp_path):
    """Oriented by the objective's direction: for a minimised objective, *above* the chord is worse."""

    def ev(lam, up, down, se=0.01):
        return {"names": ["up", "down"], "signs": [1.0, -1.0], "target": str(tmp_path / f"p{lam}"),
                "model": {"fingerprint": "x"}, "output": None,
                "summary": {"up": {"mean": up, "stderr": se}, "down": {"mean": down, "stderr": se}}}

    ends = [merging.Endpoint("a", "a", "lora", tmp_path), merging.Endpoint("b", "b", "lora", tmp_path)]
    # 'up' (maximised): chord 0 -> 1; at 0.5 the merge is 0.4 (worse by 10 s.e.); 'down' (minimised): chord 1 -> 0,
    # at 0.5 the merge is 0.505 (worse by 0.5 s.e.: within noise)
    rows = [(0.0, ev(0.0, 0.0, 1.0)), (0.5, ev(0.5, 0.4, 0.505)), (1.0, ev(1.0, 1.0, 0.0))]
    res = merging._lmc_result(ends, rows, "delta", "exact", tmp_path)
    assert res["gap_to_chord"]["up"] == pytest.approx([0.0, -0.1, 0.0])
    assert res["below_chord"] == {"up": [0.5], "down": []}
    assert len(res["warnings"]) == 1 and res["warnings"][0].startswith("up: below the chord at lambda 0.5")
    rows[1] = (0.5, ev(0.5, 0.6, 0.6))  # 'down' now worse by 10 s.e. (higher), 'up' better than the chord
    res = merging._lmc_result(ends, rows, "delta", "exact", tmp_path)
    assert res["below_chord"] == {"up": [], "down": [0.5]}


def test_merge_help_imports_no_torch():
    code = ("import sys, argparse; from paretoalign.merging import add_merge_parser; "
            "p = argparse.ArgumentParser(); add_merge_parser(p.add_subparsers()); "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
