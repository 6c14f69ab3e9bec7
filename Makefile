# The README's two commands (`make demo`, `make test`) and the developer's others.
# Everything installs itself on first use: uv (from PyPI), then the locked dependencies.
SHELL := /bin/bash
UV := $(or $(shell command -v uv 2>/dev/null),$(HOME)/.local/bin/uv)
RUN := $(UV) run --frozen

.PHONY: demo test lint setup services

demo: services
	$(RUN) jobmanager demo

test: services
	$(RUN) pytest

lint: setup
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy

setup: $(UV)
	@$(UV) sync --frozen --quiet

# One clear line per service that does not answer, with how to start it.
services: setup
	@$(RUN) jobmanager check

$(UV):
	python3 -m pip install --user --quiet uv || \
	  python3 -m pip install --user --quiet --break-system-packages uv
