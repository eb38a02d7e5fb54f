# make run: everything set up, then all five components in the foreground (Ctrl-C stops them).
# make test: the same set-up, then the whole test suite against real Postgres and RabbitMQ.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
ENV := scripts/with-env

.PHONY: run demo test screenshots bench lint setup env infra db admin backup restore clean

$(VENV)/.installed: pyproject.toml
	@PYTHON=$(PYTHON) scripts/ensure-venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed

# .env with every secret the components need; what an older .env lacks is added.
env:
	@scripts/dev-env

infra: env
	@$(ENV) scripts/ensure-infra

db: setup infra
	$(ENV) python -m services.bootstrap

run: db
	$(ENV) scripts/run-components Procfile

# make demo: the system of `make run`, seeded through its API (demo/) with a sample catalogue, a
# demo admin and a demo shopper whose order is on its way; their credentials are printed at
# start. Running it again adds nothing.
demo: db
	$(ENV) python -m demo

# After the whole suite, the integration tests once more with every service behind a PgBouncer
# in transaction pooling mode (tests/pgbouncer.py); the cluster tests start RabbitMQ nodes and
# Postgres clusters of their own (tests/cluster_tests).
test: setup infra
	@$(ENV) scripts/ensure-compose-parser
	@scripts/ensure-cluster-tools
	@scripts/ensure-bench-tools
	@scripts/ensure-browser
	@scripts/ensure-promtool
	@PYTHON=$(PYTHON) scripts/ensure-checkov
	$(ENV) ruff check .
	$(ENV) python -m pytest $(PYTEST_ARGS)
	SHOP_TEST_PGBOUNCER=1 $(ENV) python -m pytest -q tests/integration

# The front end's screenshots in docs/screenshots (README), taken again by its browser tests.
screenshots: setup infra
	@scripts/ensure-browser
	SHOP_SCREENSHOTS=docs/screenshots $(ENV) python -m pytest -q tests/browser

# make bench: the system as `make run` starts it, in a database and a RabbitMQ vhost of its own
# (bench/isolation.py), measured against nginx auth_request and bare ceilings; results in
# docs/benchmarks.md (BENCH_ARGS='--runs 5 --seconds 10' for longer runs).
bench: setup infra
	@scripts/ensure-bench-tools
	$(ENV) python -m bench $(BENCH_ARGS)

# ADMIN_PASSWORD=... make admin EMAIL=you@example.com : an admin account for `make run`'s system.
admin: db
	@test -n "$(EMAIL)" || { echo "usage: ADMIN_PASSWORD=... make admin EMAIL=you@example.com"; exit 2; }
	$(ENV) sh -c 'DATABASE_URL="$$AUTH_DATABASE_URL" IDENTITY_SECRET="$$AUTH_IDENTITY_SECRET" RABBITMQ_URL="$$AUTH_RABBITMQ_URL" exec python -m services.auth create-admin "$$0"' "$(EMAIL)"

# make backup: one consistent backup of the shop `make run` serves (every service's schema from
# one snapshot, and RabbitMQ's definitions) into backups/<database>-<UTC time>.tar (BACKUP_DIR
# to change). make restore FILE=...: that shop back into an empty database and vhost; FORCE=1
# replaces one that holds data. What happens to events in flight: README, "Backups".
backup: setup infra
	$(ENV) python -m services.backup create

restore: setup infra
	@test -n "$$FILE" || { echo "usage: make restore FILE=backups/<database>-<time>.tar [FORCE=1]"; exit 2; }
	$(ENV) python -m services.backup restore $(if $(filter 1 yes true,$(FORCE)),--force )-- "$$FILE"

lint: setup
	$(ENV) ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
