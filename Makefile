# interest-stream — `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
INTEREST := $(VENV)/bin/interest
# torch: the CPU build. An unpinned `torch` pulls several GB of CUDA packages, so it is
# installed first, pinned; the project's `torch>=2.2` is then already satisfied.
# For a GPU machine: make setup TORCH_SPEC=torch==2.13.0 TORCH_INDEX=<your CUDA wheel index>
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,plot,bench
PYTEST_ARGS ?=

.PHONY: help setup test test-unit test-integration lint format demo bench eval clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	@touch $@

setup: $(VENV)/.installed ## create .venv with everything (CPU torch pinned)

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
