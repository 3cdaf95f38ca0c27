# deqcert developer commands.  Two commands set everything up on a fresh machine:
#   make demo   -- virtualenv + install + certify on the bundled checkpoint
#   make test   -- install what is missing + lint + type-check + tests + docs
#
# torch choice (deliberate): torch 2.14.1 + torchvision 0.29.1.  These are the
# only pair for which a working torchvision exists on this platform's local
# wheel store (torch 2.13.0 CPU has no matching torchvision); the CUDA build
# runs fine on the CPU.  Install takes ~80 s, well inside CI's budget.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-slow lint docs bench bench-quick bench-gpu gpu-check install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml plugins/deqcert-example/pyproject.toml
	$(BIN)/pip install -q $(TORCH_PINS)
	$(BIN)/pip install -q -e ".[dev,docs,plot,ray,torchdeq]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/deqcert certify

lint: $(STAMP)
	$(BIN)/ruff check deqcert tests benchmarks plugins scripts
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir site

test: $(STAMP)
	$(MAKE) lint
	$(BIN)/python -m pytest -q -m "not slow"
	$(MAKE) docs

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/pip install -q "torchdeq==0.1.0"
	$(BIN)/python benchmarks/solvers.py
	$(BIN)/python benchmarks/srs_vs_vanilla.py
	$(BIN)/python benchmarks/verified.py

bench-quick: $(STAMP)
	$(BIN)/pip install -q "torchdeq==0.1.0"
	$(BIN)/python benchmarks/solvers.py --quick
	$(BIN)/python benchmarks/srs_vs_vanilla.py --quick
	$(BIN)/python benchmarks/verified.py --quick

# per-image seconds and NFE on the GPU (benchmarks/gpu.py; --device cpu --quick runs anywhere)
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py --device cuda

# the prepared check for a machine with a GPU: CUDA tests + a short benchmark (scripts/gpu_check.sh)
gpu-check:
	scripts/gpu_check.sh

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache
