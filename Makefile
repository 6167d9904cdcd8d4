# tripwire: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONSTRAINTS := constraints.txt

.PHONY: install demo test test-fast bench lint typecheck clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tripwire demo

# The Spark parity tests run in their own (single-process) pytest so that only one local
# Spark JVM starts; everything else runs on two xdist workers.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m "not spark"
	$(BIN)/python -m pytest -q -m spark

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q -m "not slow and not spark and not browser"

bench: $(STAMP)
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) tripwire-demo .pytest_cache
