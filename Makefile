# Two entry points for a fresh machine: `make demo` (the main job) and
# `make test` (the whole test suite, doctests included). Both create or reuse
# a local virtual environment in $(VENV) and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install clean-venv

install: $(STAMP)

# constraints.txt pins the tested set; setup.py itself takes ranges.
$(STAMP): setup.py pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m speechbrain_s4m.demo

# Lint and format check (ruff, configured in pyproject.toml), then the whole suite.
# `make format` applies ruff's fixes and formatting.
test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest

.PHONY: format
format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Efficiency benchmark (paper Table 4 + scaling); options via BENCH_ARGS, e.g.
# make bench BENCH_ARGS="--sections params,macs,cpu --lengths 1,4"
.PHONY: bench
bench: $(STAMP)
	$(VENV)/bin/s4m-bench $(BENCH_ARGS)

# The GPU checks (training in fp32 / fp16 / bf16, CPU-CUDA parity, streaming, the
# recipe in mixed precision, two DDP processes, GPU-RTF); without CUDA, the CPU half.
.PHONY: gpu-check
gpu-check: $(STAMP)
	$(PY) -m speechbrain_s4m.benchmark.gpu_check $(GPU_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)
