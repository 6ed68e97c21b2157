# interest-stream — `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
INTEREST := $(VENV)/bin/interest
# torch: the CPU build, pinned, installed alone (--no-deps) before the project, whose
# `torch>=2.2` it then satisfies; its dependencies come with the project, pinned by
# deploy/constraints.txt. From PyPI, torch==2.13.0 on Linux is the CUDA 13 build (several
# GB of NVIDIA packages), so the PyTorch CPU index is used when it answers; otherwise torch
# comes from pip's configured sources (a local file, a mirror) and a note says so.
# GPU machine: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu130 (see README).
# Newer dependency versions: make clean constraints CONSTRAINTS=/dev/null, run the tests, commit.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
CONSTRAINTS ?= deploy/constraints.txt
EXTRAS ?= dev,plot,bench
PYTEST_ARGS ?=

.PHONY: help setup constraints test test-unit test-integration lint format demo bench eval clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --constraint $(CONSTRAINTS) --upgrade pip setuptools wheel
	@if [ -n "$(TORCH_INDEX)" ] && $(PY) -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1].rstrip('/') + '/torch/', timeout=10)" "$(TORCH_INDEX)" 2>/dev/null; then \
	  echo "torch: $(TORCH_SPEC) from $(TORCH_INDEX)"; \
	  $(PIP) install -q --no-deps --index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)"; \
	else \
	  echo "torch: $(TORCH_INDEX) does not answer; $(TORCH_SPEC) from pip's configured sources (from PyPI on Linux: the CUDA build)"; \
	  $(PIP) install -q --no-deps "$(TORCH_SPEC)"; \
	fi
	@$(PY) -c "from importlib.metadata import version; print('torch', version('torch'), 'installed')"
	$(PIP) install -q --constraint $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	@touch $@

setup: $(VENV)/.installed ## create .venv with everything (CPU torch pinned)

constraints: setup ## rewrite deploy/constraints.txt from .venv (what the images install, as tested)
	$(PY) deploy/freeze_constraints.py --write

test: setup ## run every test: unit, pipeline harness, integration on the embedded broker
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: setup ## only the fast tests (no broker, no model)
	$(PY) -m pytest -m "not integration and not model" $(PYTEST_ARGS)

test-integration: setup ## only the integration tests on the embedded broker
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

lint: setup ## ruff (lint + format check) and mypy on interest_core
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy interest_core

format: setup ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: setup ## the whole system on this machine: broker, data, fleet of two, live recommendations
	$(INTEREST) demo

bench: setup ## measure throughput and latency (prints JSON)
	$(INTEREST) bench

eval: setup ## prequential evaluation on MovieLens small (../shared/data)
	$(INTEREST) convert movielens ../shared/data/movielens-small --out out/movielens
	$(INTEREST) eval --events out/movielens/events.jsonl --catalog out/movielens/catalog.jsonl --out out/movielens/report.json --plot out/movielens/report.png

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis out
