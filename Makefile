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
# pytest-xdist workers of make test / test-fast: the cores, at most 4 (each worker is a
# process with its own torch, about 1-2 GB at its peak); TEST_WORKERS=0 runs in-process.
# --dist loadscope keeps a module's tests (and its module-scoped fixtures) on one worker.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
PYTEST_XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadscope)

export PYTHON
export MMSSM_VENV := $(VENV)

.DEFAULT_GOAL := help
.PHONY: help env test test-fast demo clean-env clean-cache check-cuda-build device-wheels \
	device-check

help:
	@echo "make test       set up .venv (pinned torch/mmengine/mmcv/mmdet/mmseg/mmpretrain) and run pytest"
	@echo "                (TEST_WORKERS processes side by side, default: the cores, at most 4)"
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

# --durations: the 20 slowest tests end the report (what a fresh run under CI's limit
# has to watch)
test: env
	$(PY) -m pytest tests $(PYTEST_XDIST) --durations=20 $(PYTEST_ARGS)

test-fast: env
	$(PY) -m pytest tests -m 'not slow' $(PYTEST_XDIST) $(PYTEST_ARGS)

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
