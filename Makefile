# Two entry points a new user needs: `make run` and `make test` (see README).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := $(VENV)/.apt-installed
DEB_PACKAGES := nmap ndiff masscan nftables xsltproc iproute2 util-linux gcc libpcap-dev
# Real servers that the -sV tests start themselves, inside the tests' private namespace.
SERVER_PACKAGES := nginx-light openssh-server redis-server memcached postgresql \
	mariadb-server vsftpd exim4-daemon-light openssl
SERVER_BINARIES := nginx sshd ssh-keygen redis-server memcached mariadbd mariadb-install-db \
	vsftpd exim4 openssl

.PHONY: run test lint typecheck unit bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,fast,dask,bench]'
	touch $@

# Debian packages the tests compare against or start (nmap, nftables, servers). Needs root.
# Network safety: Debian's postinst would start each server in the root namespace (and a
# mail server may reach out): packages are downloaded first, then installed inside a network
# namespace of their own with a policy-rc.d that refuses every service start (exit 101); an
# existing policy-rc.d is kept, one made here is removed after.
$(APT_STAMP): Makefile | $(BIN)/python
	@missing=""; for c in nmap nft xsltproc masscan ndiff $(SERVER_BINARIES); do \
	    command -v $$c >/dev/null || missing="$$missing $$c"; done; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing initdb"; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" != 0 ]; then echo "note: not root, not installing:$$missing"; \
	else \
	    echo "installing Debian packages for:$$missing"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq -o DPkg::Lock::Timeout=600 \
	        --download-only $(DEB_PACKAGES) $(SERVER_PACKAGES) || exit 1; \
	    made=""; if [ ! -e /usr/sbin/policy-rc.d ]; then made=1; \
	        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	        chmod 755 /usr/sbin/policy-rc.d; fi; \
	    unshare -n apt-get install -y -qq --no-download -o DPkg::Lock::Timeout=600 \
	        $(DEB_PACKAGES) $(SERVER_PACKAGES); rc=$$?; \
	    if [ -n "$$made" ]; then rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; \
	fi
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
