# The README's two commands (`make demo`, `make test`) and the developer's others.
# Everything installs itself on first use: uv (from PyPI), then the locked dependencies.
SHELL := /bin/bash
UV := $(or $(shell command -v uv 2>/dev/null),$(HOME)/.local/bin/uv)
RUN := $(UV) run --frozen

.PHONY: demo test test-quick fault lint setup services

demo: services
	$(RUN) jobmanager demo

test: services
	$(RUN) pytest

# Everything but the fault suite (which stops and starts the broker and the database).
test-quick: services
	$(RUN) pytest -m "not fault"

# The fault suite alone, with each scenario's figures printed (see docs/RELIABILITY.md).
fault: services
	$(RUN) pytest -m fault -s

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) python tools/check_sql.py

setup: $(UV)
	@$(UV) sync --frozen --quiet

# One clear line per service that does not answer, with how to start it.
services: setup
	@$(RUN) jobmanager check

$(UV):
	python3 -m pip install --user --quiet uv || \
	  python3 -m pip install --user --quiet --break-system-packages uv

# The benchmark (bench/, not part of the tests; see docs/PERFORMANCE.md): the baselines and
# ours side by side, a table, then one `RESULT key=value ...` line. bench-quick: <= 3 minutes.
# They sync the `bench` group themselves (Celery is its baseline), never a plain `uv sync`.
.PHONY: bench bench-quick
BENCH := $(UV) run --frozen --group bench

bench: $(UV)
	@$(UV) sync --frozen --quiet --group bench
	$(BENCH) python -m bench.run $(BENCH_ARGS)

bench-quick: $(UV)
	@$(UV) sync --frozen --quiet --group bench
	$(BENCH) python -m bench.run --quick $(BENCH_ARGS)
