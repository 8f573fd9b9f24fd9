# flowscope: two commands on a fresh machine — `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run demo test lint typecheck unit integration bench clean

$(STAMP): pyproject.toml setup.py $(wildcard src/flowscope/decode/_*.c)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench,spark]'
	touch $(STAMP)

## run: start flowscope: collector (UDP 2055/4739, TCP 4739) + engine + store, in one process
run: $(STAMP)
	$(VENV)/bin/flowscope run $(ARGS)

## demo: `make run` plus generated traffic (DEMO_RATE flows/s with bursts) so the charts move at once; Ctrl-C stops both
DEMO_RATE ?= 3000
DEMO_BURST ?= 5x:3s:every30s
DEMO_UDP ?= 2055
demo: $(STAMP)
	@trap 'kill $$replay 2>/dev/null; wait $$replay 2>/dev/null' INT TERM EXIT; \
	( sleep 2; echo "flowscope demo: sending generated flows to udp $(DEMO_UDP): $(DEMO_RATE) flows/s, bursts $(DEMO_BURST); Ctrl-C stops"; \
	  exec $(VENV)/bin/flowscope replay --to 127.0.0.1:$(DEMO_UDP) --generate --rate $(DEMO_RATE) \
	    --burst $(DEMO_BURST) --sources 2 --local-network 10.0.0.0/16 --local-hosts 400 >/dev/null ) & replay=$$!; \
	$(VENV)/bin/flowscope run --set stats.local_networks=10.0.0.0/16,fd00:10::/64 $(ARGS)

## test: lint, type-check and run the whole test suite (browser tests in their own run: Playwright
## keeps an event loop in the main thread that other tests' asyncio clients must not meet)
test: $(STAMP) lint typecheck
	$(PY) -m pytest -q -m "not browser"
	$(PY) -m pytest -q -m browser tests/browser

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
	find src -name '*.so' -delete
