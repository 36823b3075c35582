# The two commands a new user runs: `make demo` and `make test`.
# Each creates .venv if missing and installs vlkit into it (once; again when pyproject.toml changes).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.vlkit-installed

.PHONY: demo test install clean

demo: $(STAMP)
	$(BIN)/vlkit demo

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

clean:
	rm -rf runs .pytest_cache
