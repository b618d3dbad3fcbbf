# rlvr: `make test` sets up .venv and runs the tests; `make demo` sets up and runs the quickstart.
VENV ?= .venv
PY := $(VENV)/bin/python
RLVR := $(VENV)/bin/rlvr

.PHONY: setup test demo lint bench clean

setup: $(VENV)/.installed

# torch is pinned to the CPU build that lies on this machine's disk; a bare `torch` would pull a CUDA build
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

test: setup
	$(PY) -m pytest tests

demo: setup
	$(RLVR) sft recipes/quickstart.yaml
	$(RLVR) train recipes/quickstart.yaml --overwrite

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/rollout.py
	$(PY) benchmarks/grpo_step.py

clean:
	rm -rf $(VENV) runs
