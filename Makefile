# Two entry points a new user needs: `make run` and `make test` (see README).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt-installed
DEB_PACKAGES := nmap ndiff masscan nftables xsltproc iproute2 util-linux gcc libpcap-dev

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,fast]'
	touch $@

# Debian packages the tests compare against or need (nmap, nftables, ...). Needs root.
$(APT_STAMP): | $(BIN)/python
	@if command -v nmap >/dev/null && command -v nft >/dev/null && command -v xsltproc >/dev/null \
	    && command -v masscan >/dev/null && command -v ndiff >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEB_PACKAGES); \
	else echo "note: not root, skipping apt-get install of $(DEB_PACKAGES)"; fi
	touch $@

run: $(STAMP)
	$(BIN)/portscout demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy

unit: $(STAMP) $(APT_STAMP)
	$(BIN)/python -m pytest

test: lint unit

bench: $(STAMP) $(APT_STAMP)
	$(BIN)/python benchmarks/loopback.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .mypy_cache .pytest_cache .ruff_cache
