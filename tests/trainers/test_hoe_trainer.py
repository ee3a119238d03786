"""HoE's router training through the online trainer (`train --method hoe`): only router parameters move, a killed
run resumes to the uninterrupted one, the final folder loads as a steerable model, bad inputs are one line.
Tiny random Llama models and LoRA endpoints built in-process (no hub)."""

import json

import pytest
import torch

from paretoalign import cli, run_dir
from paretoalign.console import quiet_third_party
from paretoalign.errors import ConfigError, ModelNotFoundError
from paretoalign.evaluation import scoring
from paretoalign.evaluation.evaluate import EvalConfig, evaluate_target
from paretoalign.experts import load_hoe, routed_layers
from paretoalign.models import build_tiny_model, build_tiny_tokenizer
from paretoalign.trainers.hoe_config import HoEConfig
from paretoalign.trainers.hoe_trainer import HoETrainer
from paretoalign.trainers.online_config import OnlineConfig

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]
FAST = dict(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8, progress=False,
            expert_rank=4, kl_coef=0.1)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARETOALIGN_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    """Two LoRA endpoints of the tiny base (seed 0), with random factors."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("endpoints")
    tok = build_tiny_tokenizer()
    base = root / "base"
    with quiet_third_party():
        build_tiny_model(tok, seed=0).save_pretrained(base)
    tok.save_pretrained(base)
    out = []
    for name, seed in (("chars", 1), ("words", 2)):
        with quiet_third_party():
            m = get_peft_model(build_tiny_model(tok, seed=0), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                                        task_type="CAUSAL_LM"))
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "lora_" in n:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        folder = root / name
        with quiet_third_party():
            m.save_pretrained(folder)
        tok.save_pretrained(folder)
        cfg = json.loads((folder / "adapter_config.json").read_text())
        cfg["base_model_name_or_path"] = str(base)
        (folder / "adapter_config.json").write_text(json.dumps(cfg))
        out.append(f"{name}={folder}")
    return ",".join(out)


def make(tmp_path, endpoints, name="run", **kw):
    return HoETrainer(HoEConfig(**{**FAST, "endpoints": endpoints, "output_dir": str(tmp_path / name), **kw}))


def snapshot(trainer):
    """Every parameter and buffer of the policy (routers, frozen base, experts)."""
    p = trainer.unwrapped.policy
    return {**{n: t.detach().clone() for n, t in p.named_parameters()},
            **{n: t.detach().clone() for n, t in p.named_buffers()}}


def test_config_is_an_online_config_of_the_experts_family(tmp_path):
    cfg = HoEConfig(output_dir=str(tmp_path / "c"))
    assert cfg.method == "hoe" and cfg.advantage == "group" and not cfg.use_lora and cfg.linear
    assert cfg.anchors == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    with pytest.raises(ConfigError, match="'pama' is a online method"):
        HoEConfig(method="pama")
    with pytest.raises(ConfigError, match="'hoe' is a experts method"):
        OnlineConfig(method="hoe")
    with pytest.raises(ConfigError, match="has 3 entries; expected 2"):
        HoEConfig(anchors="1,0;0.2,0.3,0.5")
    with pytest.raises(ConfigError, match="not --weights"):
        HoEConfig(weights=[0.5, 0.5])
    with pytest.raises(ConfigError, match="1 endpoints for 2 objectives"):
        HoEConfig(objectives=OBJ, endpoints="a=x")
    with pytest.raises(ConfigError, match="expected 2 finite numbers"):
        HoEConfig(objectives=OBJ, tchebycheff_reference="1,2,3")


def test_only_router_parameters_change(tmp_path, endpoints):
    tr = make(tmp_path, endpoints, max_steps=2)
    before = snapshot(tr)
    trainable = {n for n, p in tr.unwrapped.named_parameters() if p.requires_grad}
    assert trainable and all(".routers." in n for n in trainable)  # group advantages: no value heads
    tr.train()
    after = snapshot(tr)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".routers." in n for n in changed), sorted(changed)[:3]
    # steps 1 and 2 trained the routers of anchors 0 and 1; anchor 2's is untouched
    assert any(".routers.0." in n for n in changed) and any(".routers.1." in n for n in changed)
    assert not any(".routers.2." in n for n in changed)
    rows = run_dir.read_metrics(tr.out)
    assert [r["anchor"] for r in rows] == [0, 1]
    assert rows[0]["weight/chars"] == pytest.approx(1.0) and rows[1]["weight/chars"] == pytest.approx(0.5)
    for r in rows:
        assert r["dual/chars"] + r["dual/words"] == pytest.approx(1.0) and r["gate_entropy"] >= 0


class _Boom(Exception):
    pass


def test_killed_and_resumed_training_equals_an_uninterrupted_one(tmp_path, endpoints, killed_at):
    full = make(tmp_path, endpoints, name="full", max_steps=4, save_steps=2)
    full.train()
    want = snapshot(full)
    want_rows = run_dir.read_metrics(full.out)

    crashed = make(tmp_path, endpoints, name="crash", max_steps=4, save_steps=2)
    killed_at(HoETrainer, "step", 4, crashed.train, _Boom)
    assert [s for s, _ in run_dir.list_checkpoints(crashed.out)] == [2]
    ckpt = crashed.out / "checkpoints" / "step-000002"
    assert (ckpt / "routers.safetensors").is_file() and not (ckpt / "policy").exists()

    resumed = make(tmp_path, endpoints, name="crash", max_steps=4, save_steps=2, resume=True)
    assert resumed.start_step == 2
    assert torch.equal(resumed.reference, full.reference)
    resumed.train()
    got = snapshot(resumed)
    for n in want:
        torch.testing.assert_close(got[n], want[n], rtol=0, atol=1e-6, msg=f"{n} differs after resume")
    torch.testing.assert_close(resumed.dual, full.dual, rtol=0, atol=1e-9)
    rows = run_dir.read_metrics(resumed.out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(rows, want_rows):
        assert a["reward/chars"] == pytest.approx(b["reward/chars"])
        assert a["dual/chars"] == pytest.approx(b["dual/chars"], abs=1e-9)
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-6)


def test_the_final_folder_loads_as_a_steerable_model(tmp_path, endpoints):
    tr = make(tmp_path, endpoints, max_steps=3)
    tr.train()
    final = tr.out / "final"
    meta = json.loads((final / "paretoalign.json").read_text())
    assert meta["method"] == "hoe" and meta["step"] == 3 and run_dir.final_step(tr.out) == 3
    hoe = load_hoe(tr.out)
    assert hoe.objectives == ["chars", "words"] and hoe.anchors == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert len(routed_layers(hoe.model)) == 4  # q_proj, v_proj of 2 layers
    # the trained routers came back: the loaded model routes as the trainer's did, at every anchor
    enc = hoe.tokenizer(["Tell me a story"], return_tensors="pt")
    for m, a in enumerate(hoe.anchors):
        tr.hoe.use_router(m)
        hoe.set_preference(a)
        with torch.no_grad():
            want = tr.unwrapped.policy(**enc).logits
            got = hoe.model(**enc).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert hoe.set_preference([0.25, 0.75]) == pytest.approx([0.0, 0.5, 0.5])


def test_experts_folder_then_cli_train(tmp_path, endpoints):
    out = tmp_path / "experts"
    assert cli.main(["experts", "extract", "--endpoints", endpoints, "--rank", "4", "--output-dir", str(out)]) == 0
    run = tmp_path / "run"
    assert cli.main(["train", "--method", "hoe", "--model", "tiny", "--objectives", ",".join(OBJ), "--experts", str(out),
                     "--max-steps", "1", "--batch-size", "2", "--max-new-tokens", "6", "--output-dir", str(run),
                     "--tchebycheff-reference", "0,-5"]) == 0
    assert load_hoe(run).meta["reference_point"] == [0.0, -5.0]


def test_bad_inputs_are_one_line_errors(tmp_path, endpoints, capsys):
    def one_line(exc):
        assert "\n" not in str(exc.value)

    with pytest.raises(ConfigError, match="needs its experts") as exc:
        HoETrainer(HoEConfig(**{**FAST, "output_dir": str(tmp_path / "a")}))
    one_line(exc)
    with pytest.raises(ModelNotFoundError, match="no such HoE folder") as exc:
        HoETrainer(HoEConfig(**{**FAST, "experts": str(tmp_path / "nowhere"), "output_dir": str(tmp_path / "b")}))
    one_line(exc)
    # experts of the tiny base of seed 0, a policy of seed 1: another base
    with pytest.raises(ConfigError, match="not fine-tuned from the base model") as exc:
        make(tmp_path, endpoints, name="c", seed=1)
    one_line(exc)
    out = tmp_path / "experts"
    assert cli.main(["experts", "extract", "--endpoints", endpoints, "--output-dir", str(out)]) == 0
    with pytest.raises(ConfigError, match="their weights differ") as exc:
        HoETrainer(HoEConfig(**{**FAST, "experts": str(out), "seed": 1, "output_dir": str(tmp_path / "d")}))
    one_line(exc)
    three = OBJ + ["length(name=more,scale=10,low=0,high=100)"]
    with pytest.raises(ConfigError, match="stands for 2 objectives, --objectives has 3") as exc:
        HoETrainer(HoEConfig(**{**FAST, "objectives": three, "experts": str(out), "output_dir": str(tmp_path / "e")}))
    one_line(exc)
    assert cli.main(["train", "--method", "hoe", "--model", "tiny", "--objectives", ",".join(OBJ),
                     "--anchors", "1,0;0.5", "--output-dir", str(tmp_path / "f")]) == 2
    assert "anchor [0.5] has 1 entries; expected 2" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# steered like the other one-model methods: `evaluate --preference` mixes the anchors' routers (equal to
# load_hoe + set_preference), `front --method hoe` trains once and evaluates per preference, `serve` answers
# with the routers mixed for the sliders


@pytest.fixture
def hoe_run(tmp_path, endpoints):
    run = tmp_path / "hoe"
    HoETrainer(HoEConfig(**{**FAST, "endpoints": endpoints, "output_dir": str(run), "max_steps": 3})).train()
    return run


def test_evaluate_preference_mixes_the_routers(hoe_run, monkeypatch):
    seen = []
    real = scoring.generate_completions

    def spy(model, tok, prompts, **kw):
        seen.append(model)
        return real(model, tok, prompts, **kw)

    monkeypatch.setattr(scoring, "generate_completions", spy)
    kw = dict(target=str(hoe_run), num_prompts=3, max_new_tokens=4, baseline="none", do_sample=False)
    a = evaluate_target(EvalConfig(preference=[0.25, 0.75], **kw), write=False, quiet=True)
    assert a["steering"] == {"method": "hoe", "preference": [0.25, 0.75]}
    # the model evaluate generated with is the run's routed model mixed for w: same logits as load_hoe + set_preference
    ref = load_hoe(hoe_run)
    ref.set_preference([0.25, 0.75])
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        assert torch.allclose(seen[0](ids).logits, ref.model(ids).logits, atol=1e-6)
    b = evaluate_target(EvalConfig(preference=[1, 0], **kw), write=False, quiet=True)
    assert b["cache_key"] != a["cache_key"]  # another preference, other completions
    with pytest.raises(ConfigError, match="--targets are RiC target scores"):
        evaluate_target(EvalConfig(targets=[1.0, 2.0], **kw), write=False, quiet=True)


def test_front_trains_once_and_serve_steers(tmp_path, endpoints):
    from paretoalign.fronts.sweep import build_front_config, run_front
    from paretoalign.steering import Decoding, HoETarget, resolve_steerable

    front, train = build_front_config(None, dict(
        method="hoe", preferences="grid:3", output_dir=str(tmp_path / "front"), report=False, eval_num_prompts=2,
        eval_max_new_tokens=3, endpoints=endpoints, **{**FAST, "max_steps": 3}))
    assert train["endpoints"] == endpoints.split(",") and front.endpoints is None  # HoE's experts come from the endpoints
    result = run_front(front, train, progress=lambda s: None)
    pts = result["points"]
    assert [p["preference"] for p in pts] == [[0.0, 1.0], [0.5, 0.5], [1.0, 0.0]]
    assert {p["run_dir"] for p in pts} == {"model"}  # one routed model for every point
    t = resolve_steerable(tmp_path / "front")
    assert isinstance(t, HoETarget) and t.front is not None
    t.prepare([0.5, 0.5])
    d = Decoding(max_new_tokens=5, do_sample=False)
    answer = list(t.generate_stream("Tell me a story.", [1, 0], d))[-1]
    ref = load_hoe(tmp_path / "front" / "model")
    ref.set_preference([1.0, 0.0])
    from paretoalign.inference import generate_rows

    rows = list(generate_rows(ref.model, ref.tokenizer, ["Tell me a story."], t.objective_set, max_new_tokens=5,
                              do_sample=False, generation_backend="hf-generate"))
    assert answer == rows[0]["completion"]
    assert "mixes the routers" in t.steer([0.3, 0.7]).note
    json.dumps(result["points"])  # the front is JSON
