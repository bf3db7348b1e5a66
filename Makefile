# mailarchive.cluster: see README.md.  Targets run on a fresh Debian 12
# machine as root and install what they need.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PY_DEBIAN := /usr/bin/python3
STORE_DEBS := python3-zstandard python3-cryptography python3-pytest python3-hypothesis

.PHONY: test test-store deps-store

## make test: every test CI runs
test: test-store

## The archive store's tests run on Debian's python3 and packages, as on a worker.
deps-store:
	@missing=""; for p in $(STORE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

test-store: deps-store
	$(PY_DEBIAN) -m pytest -q -p no:cacheprovider tests/store
