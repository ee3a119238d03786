"""The package's layers run in data-flow order: a module imports only from its own layer or below.

    errors, console
    config_utils, run_dir, model_card   model_card: a run's records in, markdown out
    preferences, data/, ric             what a run reads (ric: RiC's scores, tags and targets)
    combiners, losses/                  pure maths: tensors in, tensors out (no model code)
    models, decoding, mod,              models and sampling (mod: multi-objective decoding)
    vllm_backend, rollout, sequences,   experts: HoE's task-SVD LoRA experts and routed layers
    experts
    reward_model/                       ArmoRM pieces (no objectives/)
    objectives/, judges, instructions   the reward tensor; pass/fail judges (CGPO) built on it;
                                        MAPL's verifiable instructions (judged by judges)
    trainers/ | evaluation/, pairs      side by side: trainers and evaluation never import each other
    fronts/, demo, inference, merging   sweeps drive training and evaluation; inference uses a result;
                                        merging (Rewarded Soups) resolves runs as inference does
    steering, serve                     a steerable target (a front, a DPA run) and its web page
    cli                                 the commands

Every import counts, also those inside functions (a lazy import is still a dependency).
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "paretoalign"

LAYERS = [
    {"errors", "console", "lazy"},
    {"config_utils", "run_dir", "model_card"},
    {"preferences", "data", "ric"},
    {"combiners", "losses"},
    {"models", "decoding", "mod", "vllm_backend", "rollout", "sequences", "experts"},
    {"reward_model"},
    {"objectives", "judges", "instructions"},
    {"trainers", "evaluation", "pairs", "pairs_config"},
    {"fronts", "demo", "inference", "merging"},
    {"steering", "serve"},
    {"cli"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
# same layer, still forbidden: training and evaluation stand side by side
FORBIDDEN = {("trainers", "evaluation"), ("evaluation", "trainers"), ("pairs", "trainers"), ("evaluation", "pairs")}
PURE = {"combiners", "losses"}  # may import nothing of ours but errors and each other


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _edges():
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).with_suffix("")
        src = ".".join(p for p in rel.parts if p != "__init__")
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + (
                    [f"{node.module}.{a.name}" for a in node.names] if node.module == "paretoalign" else [])
            else:
                continue
            for t in targets:
                if t.startswith("paretoalign.") and _unit(t) not in ("", "__version__") and _unit(t) != _unit(src):
                    yield src, t, node.lineno


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - {"resources"} <= set(RANK), f"give these a layer: {sorted(units - set(RANK) - {'resources'})}"


def test_no_import_runs_against_the_data_flow():
    back = []
    for src, dst, line in _edges():
        a, b = _unit(src), _unit(dst)
        if not a:  # the package root re-exports errors only
            continue
        if RANK[b] > RANK[a] or (a, b) in FORBIDDEN or (a in PURE and b not in PURE | {"errors"}):
            back.append(f"{src}:{line} imports {dst}")
    assert not back, "imports against the layers:\n" + "\n".join(back)


@pytest.mark.parametrize("pure", sorted(PURE))
def test_pure_maths_imports_no_model_code(pure):
    heavy = {"transformers", "peft", "accelerate", "datasets", "trl"}
    files = [PKG / f"{pure}.py"] if (PKG / f"{pure}.py").exists() else sorted((PKG / pure).glob("*.py"))
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            assert not any(n.split(".")[0] in heavy for n in names), f"{f.name} imports {names}"
