# HeartBEiT Bench — set-up and entry points. `make help` lists targets.
# Everything installs into .venv; re-running `make setup` is a no-op unless requirements changed.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
PROFILE ?= demo
PYTEST_ARGS ?=
# The torch wheel. The default (torch 2.14.1 from the package index) is built for CUDA 13.0 and needs an NVIDIA
# driver R580 or newer; on a cluster with an older driver pick the wheel of the driver's CUDA from PyTorch's
# index, e.g. `make setup TORCH_INDEX=https://download.pytorch.org/whl/cu126` (CUDA 12.6: driver R525+).
# docs/cluster.md "The torch wheel" says how to check; `heartbeit` names the driver when CUDA is unavailable.
TORCH_INDEX ?=
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
PIP_TORCH := $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --extra-index-url https://pypi.org/simple,)

.PHONY: help setup sysdeps run ci-run test test-fast bench clean

help:
	@echo "make setup     create .venv: torch 2.14.1 + torchvision 0.29.1 first, then the pinned rest"
	@echo "               (TORCH_INDEX=<PyTorch wheel index> picks the CUDA build for the cluster's driver)"
	@echo "make run       set up, then run the whole study: heartbeit run --profile \$$PROFILE (default demo)"
	@echo "make test      set up, then run the full test suite (what CI runs)"
	@echo "make test-fast tests/unit: the everyday check (about a minute)"
	@echo "make bench     heartbeit bench --quick"

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(MAKE) --no-print-directory sysdeps
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, from the machine's wheel store; everything after it sees torch already present.
	$(BIN)/python -m pip install -q $(PIP_TORCH) $(TORCH_PINS)
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -r requirements.txt $(TORCH_PINS)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# System packages the tests need (MPI for mpirun, numactl for DeepSpeed core binding, Slurm + munge for
# the local test cluster). Only as root on
# Debian/Ubuntu, and only when missing; otherwise the dependent tests skip with a reason.
sysdeps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  command -v mpirun >/dev/null || missing="$$missing openmpi-bin libopenmpi-dev"; \
	  command -v numactl >/dev/null || missing="$$missing numactl"; \
	  command -v slurmctld >/dev/null || missing="$$missing slurmctld slurmd slurm-client munge libpmix-dev"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing system packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "warning: could not install$$missing; tests that need them will skip"; \
	  fi; \
	fi

run: setup
	$(BIN)/heartbeit run --profile $(PROFILE)

ci-run: setup
	$(BIN)/heartbeit run --profile ci

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# the everyday command: tests/unit (one module at a time, no stage runs, no extra processes)
test-fast: setup
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

bench: setup
	$(BIN)/heartbeit bench --quick

clean:
	rm -rf runs .pytest_cache
