# The two commands a new user runs: `make demo` and `make test`.
# Each creates .venv if missing and installs vlkit into it (once; again when pyproject.toml changes).
# `make bench` also installs what benchmarks/ compares against and runs the peer comparisons
# briefly; docs/benchmarks.md gives the full commands behind its figures.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vlkit-installed
BENCH_STAMP := $(VENV)/.vlkit-bench-installed

.PHONY: demo test install bench clean

demo: $(STAMP)
	$(BIN)/vlkit demo

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python benchmarks/eval_throughput.py --rounds 1
	$(BIN)/python benchmarks/pretrain_throughput.py --quick --no-compile
	$(BIN)/python benchmarks/adapt_table.py --quick --overwrite

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[dev,bench]"
	@touch $(BENCH_STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

clean:
	rm -rf runs .pytest_cache
