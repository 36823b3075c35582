# The two commands a new user runs: `make demo` and `make test`.
# Each creates .venv if missing, installs this machine's torch build into it (TORCH_PINS, once),
# then vlkit with the extra it needs (again when pyproject.toml changes): `demo` the embedded demo
# data and models (vlkit[demo]), `test` those and the test tools (vlkit[dev]).
# pyproject.toml asks only for a torch range, so vlkit also installs into an environment that
# already has its own torch; the pins below are passed to every install here, so pip never
# swaps this machine's torch for another version.
# `make bench` also installs what benchmarks/ compares against and runs the peer comparisons
# briefly; docs/benchmarks.md gives the full commands behind its figures.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
TORCH_STAMP := $(VENV)/.vlkit-torch-installed
DEMO_STAMP  := $(VENV)/.vlkit-demo-installed
STAMP := $(VENV)/.vlkit-installed
BENCH_STAMP := $(VENV)/.vlkit-bench-installed

.PHONY: demo test install bench clean

demo: $(DEMO_STAMP)
	$(BIN)/vlkit demo

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/eval_throughput.py --rounds 1
	$(BIN)/python benchmarks/pretrain_throughput.py --quick --no-compile
	$(BIN)/python benchmarks/adapt_table.py --quick --overwrite

$(TORCH_STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	@touch $(TORCH_STAMP)

$(DEMO_STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[demo]" $(TORCH_PINS)
	@touch $(DEMO_STAMP)

$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev]" $(TORCH_PINS)
	@touch $(STAMP)

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]" $(TORCH_PINS)
	@touch $(BENCH_STAMP)

clean:
	rm -rf runs .pytest_cache
