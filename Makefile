# mailarchive.cluster: see README.md.  Every target runs on a fresh Debian 12
# machine as root and installs what it needs first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PY_DEBIAN := /usr/bin/python3
VENV := $(CURDIR)/.venv
STORE_DEBS := python3-zstandard python3-cryptography python3-prometheus-client python3-aiosmtpd python3-pytest python3-hypothesis shellcheck
# Attachment text (what the worker role installs), and the libraries the tests write real documents with.
EXTRACT_DEBS := python3-pebble python3-defusedxml poppler-utils unrtf catdoc
DOCUMENT_DEBS := python3-reportlab python3-docx python3-openpyxl python3-odf
# What the ui role installs on a UI host (besides nginx), so the interface's tests run on the same code.
WEB_DEBS := python3-flask python3-gunicorn python3-argon2 python3-bleach python3-ldap3
# The importer's sources (readpst for PST files) and the tests' IMAP server; tqdm for the CLI on Debian's python3.
IMPORT_DEBS := pst-utils python3-tqdm
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR := 0
LAB := -i inventories/lab
LAB_DR := -i inventories/lab-dr

.PHONY: test-faults collection test test-store test-web test-unit lint sanity molecule lab lab-down venv images deps-store deps-daemons deps-browser bench

## make test: every test CI runs
test: lint sanity test-store test-web test-unit collection molecule

## The archive store's tests run on Debian's python3 and packages, as on a worker.
deps-store:
	@missing=""; for p in $(STORE_DEBS) $(EXTRACT_DEBS) $(DOCUMENT_DEBS) $(WEB_DEBS) $(IMPORT_DEBS) python3-venv; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi

test-store: deps-store deps-daemons
	$(PY_DEBIAN) -m pytest -q tests/store

## LDAP logins are tested against Debian's slapd, imports from IMAP against Debian's dovecot, each started
## by the tests on a port of their own: the packages' own daemons must not start (policy-rc.d says no
## while they install, unless one exists).
DAEMON_DEBS := slapd dovecot-imapd
deps-daemons:
	@missing=""; for p in $(DAEMON_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  own=""; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own=1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  [ -z "$$own" ] || rm -f /usr/sbin/policy-rc.d; fi

## The web interface over two real stores, on Debian's python3 and packages, as on a UI host.
test-web: deps-store deps-daemons
	$(PY_DEBIAN) -m pytest -q tests/web

## The controller's pinned tools.
venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt | deps-store
	$(PY_DEBIAN) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

## Docker engine and the lab image (debootstrap, no registry).
images:
	scripts/build-images.sh

## Module tests against real DNS servers started by the tests.
test-unit: venv
	python -m pytest -q tests/unit

## Build the tarball, install it, use it by FQCN.
collection: venv
	scripts/collection-check.sh

## ansible-test sanity from an ansible_collections/mailarchive/cluster path.
sanity: venv
	scripts/sanity.sh

lint: venv
	yamllint -s .
	ansible-lint --profile production

## The browser tests drive Debian's chromium (Playwright from PyPI launches it; no browser download).
deps-browser:
	@dpkg -s chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

## scripts/molecule-test.sh keeps the whole output in .molecule.log and prints the failed tests' lines last.
molecule: venv images deps-browser
	scripts/molecule-test.sh --all

## The fault, hostile-input and security tests: the cluster scenario, then the dr scenario (the DR
## site down under load), each with the tests of tests/integration/faults added (about 45 minutes together).
test-faults: venv images
	MAILARCHIVE_FAULTS=faults scripts/molecule-test.sh -s cluster
	MAILARCHIVE_FAULTS=faults scripts/molecule-test.sh -s dr

## make lab: both sites in local containers (the DR site first: the primary's
## gateways copy every message to it), then proof that mail flows and that
## the two sites hold the same messages.
lab: venv images
	ansible-playbook $(LAB) lab/up.yml
	ansible-playbook $(LAB_DR) lab/up.yml
	ansible-playbook $(LAB_DR) site.yml
	ansible-playbook $(LAB) site.yml
	ansible-playbook $(LAB) playbooks/verify.yml -e peer_inventory=inventories/lab-dr
	ansible-playbook $(LAB_DR) playbooks/verify.yml
	ansible-playbook $(LAB) lab/reconcile.yml -e peer_inventory=inventories/lab-dr -e reconcile_since=-3600 -e reconcile_until=0
	ansible-playbook $(LAB) playbooks/import.yml -e import_site_file=$(CURDIR)/inventories/.secrets/lab/import-site.json
	@cat lab/USAGE.txt
	@python lab/alerts.py http://198.18.10.40:9090
	@printf '\nFirst auditor login: user auditor, password %s (primary) and %s (DR).\n' \
	  "$$(cat inventories/.secrets/lab/ui-auditor-password)" "$$(cat inventories/.secrets/lab-dr/ui-auditor-password)"

## make bench: the cluster benchmarks on the running lab (make lab first); figures in docs/BENCHMARKS.md.
## The search benchmark's stores (one index; five shards) are built once by bench/search.py (15-50 minutes each), the
## five workers' share once by cluster_search.py load (about 30 minutes); later runs top up.
bench: export PYTHONPATH := $(CURDIR)/src
bench: venv deps-store
	python bench/cluster.py
	python bench/cpu.py
	$(PY_DEBIAN) bench/search.py -n 1000000 --queries 30
	$(PY_DEBIAN) bench/search.py -n 1000000 --shard-messages 200000 --dir /var/tmp/archive-search-bench-shards --queries 30
	$(PY_DEBIAN) bench/api_tls.py --queries 300
	$(PY_DEBIAN) bench/receiver.py
	python bench/cluster_search.py load
	python bench/cluster_search.py run
	python bench/ui.py --export-query botanelo
	python bench/cluster_search.py load --mix realistic -n 10000
	python bench/ui.py --export-only --export-query realmix
	python bench/import.py
	$(PY_DEBIAN) bench/attachments.py
	$(PY_DEBIAN) bench/index_size.py
	$(PY_DEBIAN) bench/blobs.py

lab-down: venv
	ansible-playbook $(LAB_DR) lab/down.yml -e lab_remove_network=false
	ansible-playbook $(LAB) lab/down.yml
