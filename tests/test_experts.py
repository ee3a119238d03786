"""HoE-lite's experts, routed layers and preference routing (paretoalign.experts): Eckart-Young exactness of the
task-SVD, recovery of a low-rank fine-tune, constant gates equal to the exact delta merge of the merging module,
routers at the anchors, save/load round trips and one-line refusals.  Tiny random Llama models built in-process."""

import json
from pathlib import Path

import pytest
import torch

from paretoalign import cli, experts
from paretoalign.console import quiet_third_party
from paretoalign.errors import ConfigError, ModelNotFoundError
from paretoalign.experts import (
    RoutedLoraModel,
    anchor_coefficients,
    check_anchors,
    choose_rank,
    default_anchors,
    extract_lora_expert,
    load_experts,
    load_hoe,
    merge_experts,
    routed_layers,
    task_svd,
)
from paretoalign.merging import LoraWeights, base_param_name, merge_tensors, read_lora
from paretoalign.models import build_tiny_model, build_tiny_tokenizer

D = torch.float64


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))


def _enc(tok):
    return tok(["The weather today is", "Tell me a story about"], return_tensors="pt", padding=True)


def _logits(model, tok):
    with torch.no_grad():
        return model(**_enc(tok)).logits


def _low_rank_finetune(tok, rank=2, seed=1, norms=False):
    """The tiny base with a rank-``rank`` delta added to every linear weight of its layers (and, with ``norms``,
    its norm weights moved)."""
    model = build_tiny_model(tok, seed=0)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.dim() == 2 and "embed" not in n:
                p.add_(0.2 * torch.randn(p.shape[0], rank, generator=g) @ torch.randn(rank, p.shape[1], generator=g)
                       / p.shape[1] ** 0.5)
            elif norms and p.dim() == 1:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _adapter(folder: Path, base_dir: Path, tok, seed, r=4, alpha=8, targets=("q_proj", "v_proj")):
    """A LoRA adapter of the tiny base (seed 0) with random A and B, naming ``base_dir`` as its base."""
    from peft import LoraConfig, get_peft_model

    with quiet_third_party():
        model = get_peft_model(build_tiny_model(tok, seed=0), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
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


@pytest.fixture
def world(tmp_path, tok):
    base = tmp_path / "base"
    with quiet_third_party():
        build_tiny_model(tok, seed=0).save_pretrained(base)
    tok.save_pretrained(base)
    a = _adapter(tmp_path / "a", base, tok, seed=1, r=4, alpha=8)
    b = _adapter(tmp_path / "b", base, tok, seed=2, r=2, alpha=4)
    return tmp_path, base, a, b


def _two_experts(world, rank=8):
    _, base, a, b = world
    ea = extract_lora_expert(str(base), str(a), rank, name="a", objective_weights=[1.0, 0.0])
    eb = extract_lora_expert(str(base), str(b), rank, name="b", objective_weights=[0.0, 1.0])
    return ea, eb


def _one_line(exc) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    return msg


# ---------------------------------------------------------------------------------------------
# level 1: task-SVD
# ---------------------------------------------------------------------------------------------


def test_task_svd_is_exact_at_or_above_the_rank_and_meets_eckart_young_below_it():
    g = torch.Generator().manual_seed(0)
    tau = torch.randn(12, 3, generator=g, dtype=D) @ torch.randn(3, 9, generator=g, dtype=D)
    for r in (3, 5, 9, 50):
        A, B, info = task_svd(tau, r)
        assert (B.double() @ A.double() - tau).abs().max() < 1e-5
        assert info["energy"] == pytest.approx(1.0, abs=1e-12) and info["error"] < 1e-6
    full = torch.randn(12, 9, generator=g, dtype=D)
    s = torch.linalg.svdvals(full)
    for r in (1, 2, 4):
        A, B, info = task_svd(full, r)
        assert A.shape == (r, 9) and B.shape == (12, r)
        err = float(torch.linalg.matrix_norm(full - B.double() @ A.double()))
        want = float(s[r:].square().sum().sqrt())
        assert err == pytest.approx(want, rel=1e-5) and info["error"] == pytest.approx(want, rel=1e-9)
        assert info["energy"] == pytest.approx(float(s[:r].square().sum() / s.square().sum()), rel=1e-9)
        # B = U S^1/2, A = S^1/2 V^T: both factors carry the same singular values
        assert torch.allclose(B.double().norm(dim=0), A.double().norm(dim=1), rtol=1e-4)


def test_energy_rank_is_the_smallest_that_keeps_the_fraction():
    s = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=D)
    e = s.square() / s.square().sum()
    for x in (0.1, 0.76, 0.77, 0.95, 0.99, 1.0):
        want = next(r for r in range(1, 5) if float(e[:r].sum()) >= x - 1e-12)
        assert choose_rank(s, f"energy:{x}") == want
    assert choose_rank(s, 2) == 2 and choose_rank(s, 10) == 4
    for bad in ("energy:0", "energy:1.5", "0", "x", -3):
        with pytest.raises(ConfigError, match="expert-rank"):
            choose_rank(s, bad)


def test_a_rank_r_finetune_is_recovered_and_its_logits_match(tok):
    tuned = _low_rank_finetune(tok, rank=2)
    base = build_tiny_model(tok, seed=0)
    e = extract_lora_expert(base, tuned, rank=2, name="t", objective_weights=[1.0])
    params = dict(tuned.named_parameters())
    for m in e.modules:
        assert e.rank(m) == 2
        want = params[m + ".weight"].detach() - dict(base.named_parameters())[m + ".weight"].detach()
        assert (e.delta(m) - want).abs().max() < 1e-5
        assert e.report["per_module"][m]["energy"] == pytest.approx(1.0, abs=1e-9)
    assert e.report["shared_params"] == [] and e.report["dropped_params"] == []
    hoe = RoutedLoraModel(build_tiny_model(tok, seed=0), [e])
    hoe.set_gates([1.0])
    torch.testing.assert_close(_logits(hoe.model, tok), _logits(tuned, tok), rtol=0, atol=1e-4)
    # below the rank: the report's error is the Eckart-Young error of every module
    e1 = extract_lora_expert(base, tuned, rank=1)
    for m in e1.modules:
        tau = params[m + ".weight"].detach().double() - dict(base.named_parameters())[m + ".weight"].detach().double()
        s = torch.linalg.svdvals(tau)
        assert e1.report["per_module"][m]["error"] == pytest.approx(float(s[1:].square().sum().sqrt()), rel=1e-6)


def test_shared_deltas_are_kept_or_dropped_and_recorded(tok):
    tuned = _low_rank_finetune(tok, rank=2, norms=True)
    base = build_tiny_model(tok, seed=0)
    keep = extract_lora_expert(base, tuned, rank=2, shared="keep", objective_weights=[1.0])
    norms = sorted(n for n, p in base.named_parameters() if p.dim() == 1)
    assert sorted(keep.shared) == norms == keep.report["shared_params"]
    hoe = RoutedLoraModel(build_tiny_model(tok, seed=0), [keep])
    hoe.set_gates([1.0])
    torch.testing.assert_close(_logits(hoe.model, tok), _logits(tuned, tok), rtol=0, atol=1e-4)
    hoe.set_gates([0.0])  # zero gates: the base, shared parameters included
    assert torch.equal(_logits(hoe.model, tok), _logits(base, tok))
    drop = extract_lora_expert(base, tuned, rank=2, shared="drop")
    assert drop.shared == {} and drop.report["dropped_params"] == norms


def test_an_adapter_endpoint_gives_its_exact_delta(world):
    _, base, a, _ = world
    e = extract_lora_expert(str(base), str(a), rank=4, name="a")
    ad = read_lora(a)  # the merging module's reader: s B A of each module
    assert sorted(e.modules) == sorted(base_param_name(m)[: -len(".weight")] for m in ad.modules)
    for m in ad.modules:
        got = e.delta(base_param_name(m)[: -len(".weight")])
        assert (got - ad.delta(m)).abs().max() < 1e-5
    assert e.report["energy"] == pytest.approx(1.0, abs=1e-9) and e.source["kind"] == "lora"


def test_merge_experts_is_task_arithmetic_then_svd(world):
    ea, eb = _two_experts(world)
    mid = merge_experts([ea, eb], [0.3, 0.7], rank=6)  # ranks 4 + 2: exact at 6
    assert mid.objective_weights == pytest.approx([0.3, 0.7])
    for m in ea.modules:
        want = 0.3 * ea.delta(m) + 0.7 * eb.delta(m)
        assert (mid.delta(m) - want).abs().max() < 1e-5
    low = merge_experts([ea, eb], [0.3, 0.7], rank=1)
    m = ea.modules[0]
    s = torch.linalg.svdvals((0.3 * ea.delta(m) + 0.7 * eb.delta(m)).double())
    assert low.report["per_module"][m]["error"] == pytest.approx(float(s[1:].square().sum().sqrt()), rel=1e-6)


# ---------------------------------------------------------------------------------------------
# level 2: routed layers
# ---------------------------------------------------------------------------------------------


def _merged_model(tok, ea_eb, weights):
    """The merging module's exact delta merge (Rewarded Soups, delta mode) of the experts as adapters."""
    base = build_tiny_model(tok, seed=0)
    adapters = [LoraWeights({f"base_model.model.{m}": f for m, f in e.factors.items()}, 1.0) for e in ea_eb]
    tm = merge_tensors(base.state_dict(), adapters, weights, "delta", rank=None)
    base.load_state_dict(tm.state_dict)
    return base


def test_one_hot_constant_gates_are_base_plus_that_expert(world, tok):
    ea, eb = _two_experts(world)
    hoe = RoutedLoraModel(build_tiny_model(tok, seed=0), [ea, eb])
    for gates in ([1.0, 0.0], [0.0, 1.0]):
        hoe.set_gates(gates)
        want = _merged_model(tok, [ea, eb], gates)
        torch.testing.assert_close(_logits(hoe.model, tok), _logits(want, tok), rtol=0, atol=1e-5)
    hoe.set_gates([0.0, 0.0])
    assert torch.equal(_logits(hoe.model, tok), _logits(build_tiny_model(tok, seed=0), tok))


@pytest.mark.parametrize("gates", [[0.3, 0.7], [0.5, 0.5], [0.8, 0.6], [-0.2, 1.0]])
def test_constant_gates_equal_the_exact_delta_merge(world, tok, gates):
    ea, eb = _two_experts(world)
    hoe = RoutedLoraModel(build_tiny_model(tok, seed=0), [ea, eb])
    hoe.set_gates(gates)
    torch.testing.assert_close(_logits(hoe.model, tok), _logits(_merged_model(tok, [ea, eb], gates), tok),
                               rtol=0, atol=1e-5)


def _randomise_routers(hoe, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in hoe.router_parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def test_only_routers_train_and_uninstall_restores_the_base(world, tok):
    ea, eb = _two_experts(world)
    model = build_tiny_model(tok, seed=0)
    before = _logits(model, tok)
    hoe = RoutedLoraModel(model, [ea, eb], anchors=default_anchors(2))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".routers." in n for n in trainable)
    assert not any("expert_" in k for k in model.state_dict())  # experts are not saved with the model
    assert len(routed_layers(model)) == len(ea.modules)
    hoe.uninstall()
    assert not routed_layers(model) and torch.equal(_logits(model, tok), before)


def test_router_init_anchor_starts_at_the_anchor_soup(world, tok):
    ea, eb = _two_experts(world)
    hoe = RoutedLoraModel(build_tiny_model(tok, seed=0), [ea, eb], anchors=[[1, 0], [0.5, 0.5], [0, 1]])
    hoe.use_router(1)  # gates softmax(log [0.5, 0.5]) = [0.5, 0.5] whatever the input
    torch.testing.assert_close(_logits(hoe.model, tok), _logits(_merged_model(tok, [ea, eb], [0.5, 0.5]), tok),
                               rtol=0, atol=1e-5)
    assert hoe.gate_entropy() == pytest.approx(float(torch.log(torch.tensor(2.0))), abs=1e-6)


# ---------------------------------------------------------------------------------------------
# level 3: preference routing
# ---------------------------------------------------------------------------------------------


def test_preference_routing_is_exact_at_the_anchors_and_mixes_gates_between(world, tok):
    ea, eb = _two_experts(world)
    anchors = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    hoe = RoutedLoraModel(build_tiny_model(tok, seed=0), [ea, eb], anchors=anchors, temperature=0.7)
    _randomise_routers(hoe)
    for m, a in enumerate(anchors):
        hoe.use_router(m)
        want = _logits(hoe.model, tok)
        assert hoe.set_preference(a) == [1.0 if i == m else 0.0 for i in range(3)]
        assert torch.equal(_logits(hoe.model, tok), want)
    assert hoe.set_preference([0.75, 0.25]) == pytest.approx([0.5, 0.5, 0.0])
    layer = next(iter(routed_layers(hoe.model).values()))
    h = torch.randn(3, layer.in_features)
    g = layer.gate_values(h)
    g0 = torch.softmax(layer.routers[0](h) / 0.7, -1)
    g1 = torch.softmax(layer.routers[1](h) / 0.7, -1)
    torch.testing.assert_close(g, 0.5 * g0 + 0.5 * g1)
    torch.testing.assert_close(g.sum(-1), torch.ones(3))


def test_barycentric_coefficients_reconstruct_the_preference():
    anchors = default_anchors(3)
    assert anchors == [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1 / 3, 1 / 3, 1 / 3]]
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        x = torch.rand(3, generator=g, dtype=D)
        lam = (x / x.sum()).tolist()
        c = anchor_coefficients(lam, anchors)
        assert min(c) >= 0 and sum(c) == pytest.approx(1.0)
        rec = [sum(cj * a[k] for cj, a in zip(c, anchors)) for k in range(3)]
        assert rec == pytest.approx(lam, abs=1e-9)
        assert sum(1 for x in c if x > 1e-12) <= 3  # one cell of the triangulation
    for j, a in enumerate(anchors):
        assert anchor_coefficients(a, anchors) == [1.0 if i == j else 0.0 for i in range(4)]
    assert anchor_coefficients([0.5, 0.5, 0.0], anchors) == pytest.approx([0.5, 0.5, 0, 0])  # on an edge
    # K = 2, anchors in any order
    assert anchor_coefficients([0.2, 0.8], [[0, 1], [1, 0], [0.5, 0.5]]) == pytest.approx([0.6, 0.0, 0.4])


def test_bad_anchors_and_preferences_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="has 3 entries; expected 2"):
        check_anchors([[1, 0], [0.2, 0.3, 0.5]], 2)
    with pytest.raises(ConfigError, match="not a point of the simplex"):
        check_anchors("1,0;0.7,0.7", 2)
    with pytest.raises(ConfigError, match="same point"):
        check_anchors([[1, 0], [1, 0]], 2)
    with pytest.raises(ConfigError, match="outside the convex hull") as exc:
        anchor_coefficients([0.9, 0.1], [[0.5, 0.5], [0, 1]])
    _one_line(exc)
    with pytest.raises(ConfigError, match="expected 2"):
        anchor_coefficients([0.2, 0.3, 0.5], default_anchors(2))
    with pytest.raises(ConfigError, match="not on the simplex"):
        anchor_coefficients([0.7, 0.7], default_anchors(2))


# ---------------------------------------------------------------------------------------------
# HoE folders
# ---------------------------------------------------------------------------------------------


def test_save_and_load_round_trip(world, tok):
    tmp, base, _, _ = world
    ea, eb = _two_experts(world)
    from paretoalign.experts import load_base

    model, ref = load_base(str(base), tok)
    hoe = RoutedLoraModel(model, [ea, eb], anchors=default_anchors(2), objectives=["a", "b"], tokenizer=tok,
                          base_ref=ref)
    _randomise_routers(hoe, seed=3)
    hoe.set_preference([0.3, 0.7])
    want = _logits(hoe.model, tok)
    hoe.save(tmp / "hoe")
    loaded = load_hoe(tmp / "hoe")
    assert loaded.anchors == hoe.anchors and loaded.objectives == ["a", "b"] and loaded.meta["arxiv"] == "2505.20925"
    loaded.set_preference([0.3, 0.7])
    assert torch.equal(_logits(loaded.model, tok), want)
    files = sorted(p.name for p in (tmp / "hoe").iterdir())
    assert "hoe.json" in files and "experts.safetensors" in files and "routers.safetensors" in files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)


def test_experts_extract_command_writes_a_folder_load_hoe_steers(world, tok):
    tmp, base, a, b = world
    with_experts_command()
    out = tmp / "experts"
    assert cli.main(["experts", "extract", "--endpoints", f"a={a},b={b}", "--rank", "energy:0.999",
                     "--output-dir", str(out)]) == 0
    exps, rec, _ = load_experts(out)
    assert [e.name for e in exps] == ["a", "b"] and rec["routers"] == 0 and rec["objectives"] == ["a", "b"]
    assert exps[0].report["max_rank"] <= 4 and exps[1].report["max_rank"] <= 2
    hoe = load_hoe(out)  # no routers: a preference is served by constant gates on the experts (a soup)
    assert hoe.set_preference([0.3, 0.7]) == [0.3, 0.7]
    ea, eb = _two_experts(world)
    torch.testing.assert_close(_logits(hoe.model, tok), _logits(_merged_model(tok, [ea, eb], [0.3, 0.7]), tok),
                               rtol=0, atol=1e-4)
    # a second extract into the folder needs --overwrite
    assert cli.main(["experts", "extract", "--endpoints", f"a={a},b={b}", "--output-dir", str(out)]) == 2


def with_experts_command():
    """``paretoalign experts`` on the command line (a no-op once cli.py registers it itself)."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    if "experts" not in sub.choices:
        pytest.skip("cli.py does not register `experts` yet")


def test_missing_and_damaged_folders_and_another_base_are_one_line_errors(world, tok):
    tmp, base, a, b = world
    with pytest.raises(ModelNotFoundError, match="no such HoE folder") as exc:
        load_hoe(tmp / "nowhere")
    _one_line(exc)
    with pytest.raises(ModelNotFoundError, match="hoe.json is missing") as exc:
        load_hoe(a)
    _one_line(exc)
    ea, eb = _two_experts(world)
    from paretoalign.experts import load_base, save_hoe

    model, ref = load_base(str(base), tok)
    save_hoe(tmp / "e", [ea, eb], ref, tok, objectives=["a", "b"])
    other = build_tiny_model(tok, seed=1)  # the same architecture, other weights
    with pytest.raises(ConfigError, match="their weights differ") as exc:
        load_hoe(tmp / "e", base=other)
    _one_line(exc)
    with pytest.raises(ConfigError, match="not fine-tuned from the base model") as exc:
        extract_lora_expert(other, str(a))
    _one_line(exc)
    wide = build_tiny_model(tok, seed=0, hidden=32)
    with pytest.raises(ConfigError, match="another base model") as exc:
        RoutedLoraModel(wide, [ea, eb])
    _one_line(exc)
    (tmp / "e" / "experts.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ModelNotFoundError, match="experts.safetensors") as exc:
        load_hoe(tmp / "e")
    _one_line(exc)
    (tmp / "e" / "experts.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="experts.safetensors is missing") as exc:
        load_hoe(tmp / "e")
    _one_line(exc)
    (tmp / "e" / "hoe.json").write_text("{not json")
    with pytest.raises(ModelNotFoundError, match="hoe.json") as exc:
        load_hoe(tmp / "e")
    _one_line(exc)


def test_importing_the_module_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, paretoalign.experts as e; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"
    assert experts.RoutedLinear.__name__ == "RoutedLinear"
