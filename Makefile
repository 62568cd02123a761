# mmssm developer entry points. Two commands matter:
#   make test   set up (or reuse) .venv with the pinned stack, then run the test suite
#   make demo   set up (or reuse) .venv, then run the end-to-end demo
# Setup lives in tools/setup_env.sh; a warm run skips pip entirely (stamp keyed on the
# hash of requirements/*.txt).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# extra pytest arguments, e.g. make test PYTEST_ARGS='-k stack -x'
PYTEST_ARGS ?=

export PYTHON
export MMSSM_VENV := $(VENV)

.DEFAULT_GOAL := help
.PHONY: help env test test-fast demo clean-env clean-cache check-cuda-build device-wheels \
	device-check

help:
	@echo "make test       set up .venv (pinned torch/mmengine/mmcv/mmdet/mmseg/mmpretrain) and run pytest"
	@echo "make test-fast  same, skipping tests marked slow"
	@echo "make demo       set up .venv and run tools/demo.py"
	@echo "make env        set up .venv only"
	@echo "make clean-env  delete .venv (the built mmcv wheel in .cache/wheels is kept)"
	@echo "make clean-cache  delete .cache/wheels (the next setup rebuilds mmcv, 15-30 min)"
	@echo "make check-cuda-build  build + import mmssm._C_cuda against CUDA torch (no GPU needed;"
	@echo "                 cached venv in ~/.cache/mmssm/cuda-venv)"
	@echo "make device-wheels  gather what tools/device_check.sh needs on a GPU machine (.device/)"
	@echo "make device-check   on a GPU machine: build, cuda tests, benchmarks -> one report"

env:
	@tools/setup_env.sh

test: env
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest tests -m 'not slow' $(PYTEST_ARGS)

demo: env
	$(PY) tools/demo.py

clean-env:
	rm -rf $(VENV)

clean-cache:
	rm -rf .cache/wheels

check-cuda-build:
	tools/check_cuda_build.sh

device-wheels:
	tools/device_check.sh --prepare $(DEVICE_ARGS)

device-check:
	tools/device_check.sh $(DEVICE_ARGS)
