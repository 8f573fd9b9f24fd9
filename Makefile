# flowscope: two commands on a fresh machine — `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit integration bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

## run: start flowscope: collector (UDP 2055/4739, TCP 4739) + engine + store, in one process
run: $(STAMP)
	$(VENV)/bin/flowscope run $(ARGS)

## test: lint, type-check and run the whole test suite
test: $(STAMP) lint typecheck
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

integration: $(STAMP)
	$(PY) -m pytest -q tests/integration

## bench: the benchmarks of docs/benchmarks.md (minutes; not part of the tests)
bench: $(STAMP)
	$(PY) bench/decode_bench.py
	$(PY) bench/json_stream_bench.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
