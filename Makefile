# Coherence — one entry point per task. See README.md.
#
# Without DATABASE_URL, targets use a throwaway local PostgreSQL 15 cluster (scripts/pg.sh:
# port $(COHERENCE_PGPORT), data in /tmp/coherence-pg-<port>, pg_cron preloaded) that keeps
# running until `make stop`. With DATABASE_URL set, the same targets use that server.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

export COHERENCE_PGPORT ?= 55432
PG_CONFIG ?= /usr/lib/postgresql/15/bin/pg_config
CARGO ?= cargo
SUDO_FLAG := $(if $(filter 0,$(shell id -u)),,--sudo)
INGEST := target/release/coherence-ingest
BINDIR ?= /usr/local/bin
SUDO := $(if $(SUDO_FLAG),sudo)
URL = $$(scripts/pg.sh url)

.PHONY: help setup build install start stop destroy db demo report psql test test-unit test-pgrx \
        test-regress test-ingest fmt lint clean eval bench serve

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

setup: ## Install system packages, cargo-pgrx and pgrx config (idempotent)
	@scripts/setup.sh

build: ## Build the ingestor (release)
	$(CARGO) build --release --locked -p coherence-ingest

install: setup build ## Build and install the extension into PostgreSQL 15 and coherence-ingest into $(BINDIR)
	@mkdir -p target
	@echo "install: building and installing the coherence extension (log: target/pgrx-install.log)"
	@cd extension && $(CARGO) pgrx install --release --pg-config $(PG_CONFIG) $(SUDO_FLAG) > ../target/pgrx-install.log 2>&1 \
	  || { cat ../target/pgrx-install.log >&2; echo "install: failed" >&2; exit 1; }
	@test -f "$$($(PG_CONFIG) --sharedir)/extension/coherence.control" || { echo "install failed" >&2; exit 1; }
	@# Earlier releases' install scripts, so CREATE EXTENSION coherence VERSION '0.1.0' works
	@# (the upgrade test installs 0.1.0 with data and updates it).
	@$(if $(SUDO_FLAG),sudo) install -m 0644 extension/sql/archive/coherence--*.sql "$$($(PG_CONFIG) --sharedir)/extension/"
	@# The ingestor, where the docs and packaging/systemd/*.service call it; replaced only when it changed.
	@cmp -s $(INGEST) "$(BINDIR)/coherence-ingest" || { $(SUDO) install -d -m 0755 "$(BINDIR)" && $(SUDO) install -m 0755 $(INGEST) "$(BINDIR)/coherence-ingest" && echo "install: $(BINDIR)/coherence-ingest"; }

.PHONY: deb
deb: setup ## Build the extension's Debian package (target/postgresql-15-coherence_<version>_<arch>.deb)
	@scripts/deb.sh

start: ## Start the local cluster (no-op with DATABASE_URL)
	@scripts/pg.sh start

stop: ## Stop the live view started by make demo, and the local cluster
	@scripts/serve.sh stop
	@scripts/pg.sh stop

destroy: ## Stop and delete the local cluster
	@scripts/pg.sh destroy

db: install start ## Create the database and extensions if missing
	@if [ -z "$${DATABASE_URL:-}" ]; then \
	  psql -X -q "$$(scripts/pg.sh url postgres)" -tAc "SELECT 1 FROM pg_database WHERE datname = 'coherence'" | grep -q 1 \
	    || psql -X -q "$$(scripts/pg.sh url postgres)" -c "CREATE DATABASE coherence"; \
	  psql -X -q "$(URL)" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS pg_cron"; \
	fi
	@psql -X -q "$(URL)" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; CREATE EXTENSION IF NOT EXISTS coherence"

demo: db build ## Set up everything, load the flight simulator's scenario, print the report
	@if [ -z "$${DATABASE_URL:-}" ]; then \
	  echo "demo: recreating the coherence extension in the local demo database"; \
	  psql -X -q "$(URL)" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; DROP EXTENSION IF EXISTS coherence CASCADE; CREATE EXTENSION coherence"; \
	fi
	@# The scenario ends when it is loaded (sql/demo_start.sql: the last 4-hour boundary; a
	@# database that already holds it keeps its dates, so a re-run inserts nothing).
	@DATABASE_URL="$(URL)" $(INGEST) simulate --start "$$(psql -X -q "$(URL)" -v ON_ERROR_STOP=1 -tAf sql/demo_start.sql)"
	@psql -X -q "$(URL)" -v ON_ERROR_STOP=1 -tAc "SELECT 'run_detection: ' || coherence.run_detection()::text"
	@$(MAKE) --no-print-directory report
	@scripts/serve.sh start
	@echo "The cluster keeps running: 'make psql' opens psql on it, 'make stop' stops it."

eval: start ## Score detection on labelled real data: single series (eval/), then multi-metric SMD (eval/smd/)
	@scripts/eval.sh
	@scripts/eval_smd.sh

.PHONY: eval-smd
eval-smd: start ## Score run_detection's incidents on SMD's labelled multi-metric segments (eval/smd/)
	@scripts/eval_smd.sh

bench: db build ## Benchmark vs PostgreSQL's aggregates and the client-side approach (BENCH_ROWS=..., see bench/bench.py)
	@$(CARGO) build --release --locked -p coherence-ingest --example fake_datadog
	@python3 -c 'import numpy' 2>/dev/null || python3 -m pip install --quiet numpy
	@python3 bench/bench.py

report: ## Print the detection report over all data in the database
	@psql -X -q "$(URL)" -v ON_ERROR_STOP=1 -f sql/report.sql

serve: build start ## Serve the live incident view in the foreground (docs/live-view.md; COHERENCE_SERVE_BIND=127.0.0.1:8080)
	@scripts/serve.sh run

psql: start ## Open psql on the demo database; pass arguments with ARGS='...'
	psql -X "$(URL)" $(ARGS)

test: setup ## Run every test tier (unit, pgrx, pg_regress, ingestor integration)
	@scripts/test.sh

fmt: ## Format the code
	$(CARGO) fmt --all

lint: ## rustfmt check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked -p coherence-core -p coherence-ingest --all-targets --features coherence-ingest/integration -- -D warnings
	cd extension && $(CARGO) clippy --locked --all-targets -- -D warnings

clean: ## Remove build output (not the cluster: see make destroy)
	$(CARGO) clean
