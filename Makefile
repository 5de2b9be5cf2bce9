# Support Access — the two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum requirements.txt | cut -c1-12)
# Not taken from the environment (some shells export HOST as the machine's name, which
# would expose the server beyond loopback); `make run HOST=...` still sets it.
HOST := 127.0.0.1
PORT ?= 5000
SECRET_FILE := instance/dev-secret

.PHONY: run test test-postgres lint format serve secret demo clean policy-test bench bench-servers bench-cache bench-lookups bench-profile bench-changes bench-policy-load

$(STAMP): requirements.txt
	@python=$(PYTHON); [ -x $(BIN)/python ] && python=$(BIN)/python; \
	$$python -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "Support Access needs Python 3.11 or newer: $$python is not; set PYTHON=..." >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

$(SECRET_FILE):
	mkdir -p instance
	$(BIN)/python -c "import secrets; print(secrets.token_urlsafe(32))" > $(SECRET_FILE)

secret: $(STAMP) $(SECRET_FILE)

# The development secret, unless the environment has a secret of its own.
DEV_SECRET = $${SUPPORT_ACCESS_JWT_SECRET:-$$(cat $(SECRET_FILE))}

# Import the demo directory (tenants, admins, engineers); idempotent.
demo: secret
	SUPPORT_ACCESS_JWT_SECRET="$(DEV_SECRET)" $(BIN)/flask --app service directory import demo/directory.yaml

run: demo
	@echo ""
	@database=instance/support_access.db; \
	if [ -n "$$SUPPORT_ACCESS_DATABASE_URL" ]; then database="the one SUPPORT_ACCESS_DATABASE_URL names"; fi; \
	echo "Support Access on http://$(HOST):$(PORT)  (database: $$database)"
	@if [ -z "$$SUPPORT_ACCESS_JWT_SECRET" ]; then \
		echo "Get a token:   export SUPPORT_ACCESS_JWT_SECRET=\$$(cat $(SECRET_FILE))"; \
	else echo "Get a token:   (tokens are signed with the SUPPORT_ACCESS_JWT_SECRET set here)"; fi
	@echo "               TOKEN=\$$($(BIN)/flask --app service token --sub eve --tenant provider)"
	@echo "Try:           curl -s -H \"Authorization: Bearer \$$TOKEN\" http://$(HOST):$(PORT)/v1/support-requests"
	@echo ""
	export SUPPORT_ACCESS_JWT_SECRET="$(DEV_SECRET)"; \
	exec $(BIN)/flask --app service run --host $(HOST) --port $(PORT)  # exec: a signal to make's child stops it

# Production serving: granian, one worker per core (see service/serve.py). Out of the box
# (none of SUPPORT_ACCESS_DATABASE_URL, _JWT_SECRET, _JWKS, _PROVIDER_TENANT set) it serves
# the demo directory with the development secret, as `make run` does. Given any of them it
# is a deployment: no demo principals (the demo operator would be an operator for anyone
# whose token says sub=ops) and no development secret, so without a secret or a JWKS it
# refuses to start (API.md), rather than take tokens signed with instance/dev-secret.
DEPLOYMENT_SETTINGS = $$SUPPORT_ACCESS_DATABASE_URL$$SUPPORT_ACCESS_JWT_SECRET$$SUPPORT_ACCESS_JWKS$$SUPPORT_ACCESS_PROVIDER_TENANT
serve: $(STAMP) $(SECRET_FILE)
	@if [ -z "$(DEPLOYMENT_SETTINGS)" ]; then $(MAKE) --no-print-directory demo; fi
	if [ -z "$(DEPLOYMENT_SETTINGS)" ]; then \
		export SUPPORT_ACCESS_JWT_SECRET=$$(cat $(SECRET_FILE)); fi; \
	exec $(BIN)/python -m service.serve --host $(HOST) --port $(PORT)

# The whole suite on SQLite, again on a throwaway PostgreSQL server, then the policy suites.
test: $(STAMP)
	$(BIN)/python -m pytest
	$(MAKE) --no-print-directory test-postgres policy-test

# The whole suite against PostgreSQL (tests/postgres.sh starts and removes the server).
test-postgres: $(STAMP)
	bash tests/postgres.sh $(BIN)/python

# Check the shipped policies (lint, strict) and run their suites with 100% rule coverage.
# They need no token keys and open no database.
policy-test: $(STAMP)
	$(BIN)/flask --app service policy check --strict
	$(BIN)/flask --app service policy test --coverage --threshold 100

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmark (issue 4): ours in-process and over HTTP vs pycasbin, cedarpy, Cerbos -> bench/RESULTS.md.
# BENCH_ARGS=--quick for a smoke run. Peers that cannot be installed are skipped with the reason.
bench: $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q -r bench/requirements.txt \
		|| echo "bench: could not install bench/requirements.txt (cedarpy); that peer will be skipped"
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Which WSGI server `make serve` runs, by measurement: granian, gunicorn and uWSGI serving our
# app on the large set, the same loads each -> bench/SERVERS.md (~2 minutes; not part of `make bench`).
bench-servers: $(STAMP)
	@grep -v '^#' bench/server-requirements.txt | while read -r pin; do \
		$(BIN)/pip install --disable-pip-version-check -q "$$pin" \
			|| echo "bench-servers: could not install $$pin; that server will be skipped"; \
	done
	$(BIN)/python -m bench.server_choice $(BENCH_ARGS)

# Why large-set decisions take longer: instructions and cache misses per decision, small vs
# large, counted by valgrind's cachegrind (~4 minutes; not part of `make bench`).
bench-cache: $(STAMP)
	$(BIN)/python -m bench.cache_profile

# How much of a large-set decision's extra time is the index's dictionary reads (~1 minute).
bench-lookups: $(STAMP)
	$(BIN)/python -m bench.lookup_cost

# Where a large-set decision spends its extra time, line by line, as py-spy samples it
# (~1 minute; not part of `make bench`).
bench-profile: $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q -r bench/requirements.txt
	$(BIN)/python -m bench.line_profile

# How long a new grant and a revocation take to be in force, large set, 15 changes (~2 minutes).
bench-changes: $(STAMP)
	$(BIN)/python -m bench.change_cost

# How long a policy takes to load as roles.yaml grows: 250 to 4,000 roles (~30 s).
bench-policy-load: $(STAMP)
	$(BIN)/python -m bench.policy_load $(BENCH_ARGS)

clean:
	rm -rf $(VENV) instance .pytest_cache
