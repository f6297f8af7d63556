# Two entry points for a fresh machine: `make demo` (the main job) and
# `make test` (the whole test suite, doctests included). Both create or reuse
# a local virtual environment in $(VENV) and install what they need into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install clean-venv

install: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m speechbrain_s4m.demo

test: $(STAMP)
	$(PY) -m pytest

# Efficiency benchmark (paper Table 4 + scaling); options via BENCH_ARGS, e.g.
# make bench BENCH_ARGS="--sections params,macs,cpu --lengths 1,4"
.PHONY: bench
bench: $(STAMP)
	$(VENV)/bin/s4m-bench $(BENCH_ARGS)

clean-venv:
	rm -rf $(VENV)
