# AudioCLIP-Lightning: the user's front door. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
AC      := $(VENV)/bin/audioclip
STAMP   := $(VENV)/.installed

# W&B stays offline unless the user chose a mode; `wandb sync runs/...` uploads later.
export WANDB_MODE ?= offline

FOLD    ?= 1
GPUS    ?= 1
NODES   ?= 1
ARGS    ?=
DATA    ?=
RESUME  ?= 0

.PHONY: help install test test-fast test-faults lint demo demo-data weights bench-data bench-train

help:  ## list every target with its description
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project (editable) with its test extras

test: $(STAMP)  ## run the whole test suite (tiny models, one paper-size parity check)
	$(PY) -m pytest tests -q

test-fast: $(STAMP)  ## run the tests without the paper-size checks
	$(PY) -m pytest tests -q -m "not slow"

lint: $(STAMP)  ## ruff check of src and tests
	$(VENV)/bin/ruff check src tests

weights: $(STAMP)  ## download the official weights into ~/.cache/audioclip ($AUDIOCLIP_CACHE) and verify checksums
	$(AC) weights download

demo: $(STAMP)  ## zero-shot classify a bundled clip with the tiny model
	$(PY) -m audioclip.demo

demo-data: $(STAMP)  ## write tiny synthetic ESC-50 and UrbanSound8K datasets (official layouts) into data/synthetic/
	$(PY) -m audioclip.data.synthetic --esc50 data/synthetic/esc50 --us8k data/synthetic/us8k

bench-data: $(STAMP)  ## benchmark the ESC-50 data pipeline on 2,000 synthetic clips; prints one JSON line
	@$(PY) benchmarks/bench_data.py
