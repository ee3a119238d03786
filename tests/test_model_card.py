"""The model card: a pure function of the run's records, written to final/policy/README.md by the trainers
and refreshed when the run finishes and when it is evaluated."""

import json
import os

import pytest
import yaml

from paretoalign.model_card import card_inputs, model_card, refresh_model_card, training_summary
from paretoalign.trainers.methods import BY_NAME, METHODS

OBJ = ["length(name=chars,scale=10,low=0,high=100)", "length(name=words,unit=words,scale=1,low=0,high=100,direction=minimize)"]


def method_info(name):
    m = BY_NAME[name]
    return {"family": m.family, "summary": m.summary, "paper": m.paper, "arxiv": m.arxiv}


def info(method="pama", base=None, lora=True, summary=None, ev=None, **meta_extra):
    meta = {"base_model": "tiny", "method": method, "step": 12, "lora": lora,
            "objectives": [{"name": "sentiment", "direction": "maximize", "spec": "sentiment"},
                           {"name": "concise", "direction": "minimize", "spec": "length(name=concise)"}],
            "base": base or {"name": "HuggingFaceTB/SmolLM2-360M", "kind": "hub", "adapter_base": "HuggingFaceTB/SmolLM2-360M",
                             "revision": "abc123"},
            "method_info": method_info(method), **meta_extra}
    config = {"method": method, "model": meta["base"]["name"], "max_steps": 12, "learning_rate": 0.001, "batch_size": 8,
              "num_generations": 4, "kl_coef": 0.05, "lora_r": 16, "lora_alpha": 32, "use_lora": lora,
              "prompts": "data/prompts.jsonl", "prompt_column": "prompt", "heldout_fraction": 0.15,
              "objectives": ["sentiment", "length(name=concise)"], "weights": None, "pama_ratio": "old", "beta": 0.1}
    return {"meta": meta, "config": config, "summary": summary, "eval": ev, "name": "my-run"}


def front_matter(card):
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_the_card_names_method_paper_objectives_steps_and_hyperparameters():
    card = model_card(info(summary={"window": 2, "steps": 12, "sentiment": {"first": 0.1, "last": 0.4, "weight": 0.6},
                                    "concise": {"first": -1.2, "last": -0.7, "weight": 0.4}}))
    fm = front_matter(card)
    assert fm["library_name"] == "peft" and fm["base_model"] == "HuggingFaceTB/SmolLM2-360M"
    assert fm["tags"][:3] == ["paretoalign", "pama", "multi-objective-alignment"]
    assert "He & Maghsudi 2025, Pareto Multi-Objective Alignment for Language Models" in card
    assert "https://arxiv.org/abs/2508.07768" in card
    assert "| sentiment | maximize | `sentiment` |" in card and "| concise | minimize |" in card
    assert "**Steps:** 12" in card and "`data/prompts.jsonl`" in card
    assert "| `learning_rate` | 0.001 |" in card and "| `kl_coef` | 0.05 |" in card and "| `pama_ratio` | old |" in card
    assert "`beta`" in card  # an option this config has is listed (the offline beta here), whatever the method
    assert "| sentiment | 0.100 | 0.400 | +0.300 | 0.600 |" in card  # first vs last training rewards
    assert "| concise | -1.200 | -0.700 | +0.500 | 0.400 |" in card
    assert "Not evaluated yet" in card
    assert "AutoPeftModelForCausalLM.from_pretrained(\"path/to/run/final/policy\")" in card  # a Hub base: plain PEFT
    assert "revision `abc123`" in card


def test_every_method_of_the_table_gets_its_paper():
    for m in METHODS:
        card = model_card(info(method=m.name))
        assert m.paper in card and f"arXiv {m.arxiv}" in card and front_matter(card)["tags"][1] == m.name


def test_weights_and_preferences_read_as_the_method_uses_them():
    assert "Fixed weights: sentiment 0.700, concise 0.300." in model_card(info(method="morlhf", weights=[0.7, 0.3]))
    assert "Uniform weights" in model_card(info(method="morlhf"))
    assert "solves its own weights at every step" in model_card(info(method="pama"))
    assert "scales of the method's own weight solve" in model_card(info(method="pama", weights=[0.5, 0.5]))
    dpa = model_card(info(method="dpa", direction_template="Weights: {weights}"))
    assert "Steerable" in dpa and "`Weights: {weights}`" in dpa
    offline = model_card(info(method="dpo", weights=[1.0, 0.0], summary={"window": 1, "loss": {"first": 0.69, "last": 0.41}}))
    assert "Fixed weights" in offline and "Training loss: 0.6900 over the first 1 step(s), 0.4100 over the last 1." in offline


def test_base_kinds_give_honest_loading_instructions():
    builtin = model_card(info(base={"name": "smollm2-135m-instruct", "kind": "builtin", "adapter_base": "smollm2-135m-instruct",
                                    "sha256": "ab" * 32, "source": "a GGUF"}))
    assert "base_model" not in front_matter(builtin)  # not the Hub's weights: no Hub id to claim
    assert "paretoalign.models.smollm2_path()" in builtin and "PeftModel.from_pretrained(base" in builtin
    tiny = model_card(info(base={"name": "tiny", "kind": "tiny", "seed": 0, "adapter_base": "../base"}))
    assert "Test model" in tiny and 'os.chdir("path/to/run/final/policy")' in tiny and "final/base" in tiny
    local = model_card(info(base={"name": "./m", "kind": "local", "path": "/data/m", "adapter_base": "/data/m"}))
    assert "absolute path" in local and "`/data/m`" in local
    full = model_card(info(lora=False))
    assert front_matter(full)["library_name"] == "transformers" and "lora" not in front_matter(full)["tags"]
    assert "AutoModelForCausalLM.from_pretrained(\"path/to/run/final/policy\")" in full and "lora_r" not in full


def test_held_out_results_fill_their_section():
    ev = {"kind": "run", "names": ["sentiment", "concise"], "signs": [1.0, -1.0],
          "summary": {"sentiment": {"mean": 0.556, "stderr": 0.04, "n": 53}, "concise": {"mean": 0.667, "stderr": 0.02}},
          "baseline": {"target": "smollm2-135m-instruct", "summary": {"sentiment": {"mean": 0.385}, "concise": {"mean": 1.196}}},
          "win_rate": {"sentiment": {"win_rate": 0.64, "ci95": [0.55, 0.72]}, "concise": {"win_rate": 0.9, "ci95": [0.84, 0.94]}},
          "prompts": {"prompts": "builtin", "split": "heldout", "n": 53}, "decoding": {"temperature": 0.7, "max_new_tokens": 40,
                                                                                      "seed": 1234}}
    card = model_card(info(ev=ev))
    assert "53 prompts (heldout split of `builtin`)" in card and "Steered" not in card
    steered = model_card(info(ev={**ev, "direction": [0.8, 0.6], "decoding": {"system_prompt": "w = 0.8, 0.6"}}))
    assert "Steered with the direction 0.800, 0.600 (system message: `w = 0.8, 0.6`)" in steered
    assert "| sentiment | higher | 0.556 ± 0.040 | 0.385 | 0.64 [0.55, 0.72] |" in card
    assert "| concise | lower | 0.667 ± 0.020 | 1.196 | 0.90 [0.84, 0.94] |" in card
    assert "Not evaluated yet" not in card


def test_missing_or_odd_records_still_give_a_card():
    card = model_card({"meta": {}, "config": {}, "summary": None, "eval": None})
    assert front_matter(card)["library_name"] == "peft" and "unknown" in card
    card = model_card(info(summary={"window": 1, "sentiment": {"first": float("nan"), "last": None}}))
    assert "| sentiment | n/a | n/a | n/a | n/a |" in card


def test_training_summary_from_metrics_rows():
    rows = [{"step": i, "reward/a": float(i), "weight/a": 0.5, "loss": 1.0} for i in range(1, 11)]
    s = training_summary(rows, ["a"])
    assert s["window"] == 5 and s["a"] == {"first": 3.0, "last": 8.0, "weight": 0.5}
    assert training_summary([], ["a"]) is None
    assert training_summary([{"step": 1, "loss": 0.7}], ["x"])["loss"] == {"first": 0.7, "last": 0.7}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from paretoalign.trainers.online_config import OnlineConfig
    from paretoalign.trainers.online_trainer import OnlineTrainer

    out = tmp_path_factory.mktemp("card") / "run"
    OnlineTrainer(OnlineConfig(model="tiny", objectives=OBJ, batch_size=2, num_generations=2, max_new_tokens=8,
                               progress=False, max_steps=2, method="morlhf", weights=[0.7, 0.3],
                               output_dir=str(out))).train()
    return out


def test_a_trained_run_carries_its_card_not_peft_s_template(run):
    card = (run / "final" / "policy" / "README.md").read_text()
    assert "Model Card for Model ID" not in card and "More Information Needed" not in card
    assert "**`morlhf`** (online)" in card and BY_NAME["morlhf"].paper in card
    assert "| chars | maximize |" in card and "| words | minimize |" in card and "**Steps:** 2" in card
    assert "Fixed weights: chars 0.700, words 0.300." in card
    summary = json.loads((run / "summary.json").read_text())
    assert f"| chars | {summary['chars']['first']:.3f} | {summary['chars']['last']:.3f} |" in card
    meta = json.loads((run / "final" / "paretoalign.json").read_text())
    assert meta["method_info"] == method_info("morlhf") and meta["paretoalign"]
    assert str(run) not in card  # no machine-specific path


def test_refresh_adds_the_held_out_section_and_ignores_an_older_eval(run, tmp_path):
    ev = {"kind": "run", "names": ["chars"], "signs": [1.0], "summary": {"chars": {"mean": 4.2, "stderr": 0.1}},
          "prompts": {"prompts": "builtin", "split": "heldout", "n": 3}, "decoding": {"temperature": 0.7}}
    final_meta = run / "final" / "paretoalign.json"
    (run / "eval.json").write_text(json.dumps(ev))
    old = final_meta.stat().st_mtime - 100
    os.utime(run / "eval.json", (old, old))  # evaluated an earlier final model
    refresh_model_card(run)
    assert "Not evaluated yet" in (run / "final" / "policy" / "README.md").read_text()
    new = final_meta.stat().st_mtime + 1
    os.utime(run / "eval.json", (new, new))
    assert refresh_model_card(run) == run / "final" / "policy" / "README.md"
    assert "| chars | higher | 4.200 ± 0.100 |" in (run / "final" / "policy" / "README.md").read_text()
    refresh_model_card(run, eval_result={**ev, "summary": {"chars": {"mean": 5.0, "stderr": 0.2}}})  # what evaluate passes
    assert "| chars | higher | 5.000 ± 0.200 |" in (run / "final" / "policy" / "README.md").read_text()
    assert card_inputs(run)["eval"]["summary"]["chars"]["mean"] == 4.2
    (run / "eval.json").unlink()
    assert refresh_model_card(tmp_path) is None  # no run, no final model: nothing to do
