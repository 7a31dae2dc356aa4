# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format install migrate run clean bench-load soak chaos
.PHONY: bench bench-submit bench-push bench-execute bench-history bench-audit bench-memory bench-api bench-gateway

$(STAMP): requirements.txt requirements-dev.txt requirements-httpbin.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	# httpbin, the gateway tests' echo target, in a venv of its own: it pins greenlet<3, which Playwright cannot share.
	test -x .venv-httpbin/bin/python || $(PYTHON) -m venv .venv-httpbin
	.venv-httpbin/bin/pip install --quiet -r requirements-httpbin.txt
	touch $(STAMP)

install: $(STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

# Embedded by default (SQLite and a redis-server of its own in var/); set DATABASE_URL and REDIS_URL for PostgreSQL
# and Redis. config/supervise.py runs the Procfile (and the embedded Redis), restarting a process that dies.
demo: migrate
	$(PY) manage.py seed_demo --base-url http://127.0.0.1:$(PORT)
	LOG_LEVEL=$${LOG_LEVEL:-WARNING} PORT=$(PORT) $(PY) -m config.supervise

run: migrate
	PORT=$(PORT) $(PY) -m config.supervise

# Not in CI: the embedded demo under steady traffic for SOAK_SECONDS (default 1800) in a var/ of its own; ends with
# restarts, executions and the audit chain checked (docs/RELIABILITY.md).
soak: install
	$(PY) bench/soak.py

# Not in CI: the production shape on this machine (its own PostgreSQL cluster and redis-server, two webs, two
# workers, beat) under load, through worker SIGKILLs mid-execution, a web SIGKILL, Redis stopped for 30 s and a
# PostgreSQL restart; prints each invariant and recovery time, exits 1 if one failed (docs/RELIABILITY.md, "Chaos
# run"; CHAOS_* knobs there). About 3 minutes.
chaos: install
	$(PY) bench/chaos.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Two lanes at once. The fault tests (tests/reliability, the SIGKILL and heartbeat ones) spend most of their time
# waiting out timeouts and heartbeats, and the gateway and sign-in tests mostly wait on processes of their own (MCP
# servers, the OpenID provider), so they run beside the rest, on a database, a Redis database and a var/ of their
# own (SLOW_LANE_DATABASE_URL, SLOW_LANE_REDIS_URL); their output is shown when they end.
SLOW_LANE := tests/reliability tests/execution/test_heartbeats.py tests/execution/test_at_most_once.py tests/gateway tests/sso
SLOW_LANE_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/slowlane
SLOW_LANE_REDIS_URL ?= redis://127.0.0.1:6379/8

test: lint
	@mkdir -p test-artifacts
	@DATABASE_URL=$(SLOW_LANE_DATABASE_URL) REDIS_URL=$(SLOW_LANE_REDIS_URL) \
	  COUNTERSIGN_VAR_DIR=$(CURDIR)/test-artifacts/slow-lane-var \
	  $(VENV)/bin/pytest $(SLOW_LANE) > test-artifacts/slow-lane.log 2>&1 & slow=$$!; \
	$(VENV)/bin/pytest $(addprefix --ignore=,$(SLOW_LANE)); main=$$?; \
	wait $$slow; slow_rc=$$?; \
	echo "--- the slow lane ($(SLOW_LANE)), test-artifacts/slow-lane.log:"; \
	if [ $$slow_rc -eq 0 ]; then tail -n 3 test-artifacts/slow-lane.log; else cat test-artifacts/slow-lane.log; fi; \
	[ $$main -eq 0 ] && [ $$slow_rc -eq 0 ]

# The fast lane: tests/unit, the pure modules, in seconds. No PostgreSQL and no Redis: both URLs point at closed
# ports, so a test that reached for either would fail here rather than quietly use a server.
test-fast: install
	DATABASE_URL=postgres://nobody@127.0.0.1:1/none REDIS_URL=redis://127.0.0.1:1/0 $(VENV)/bin/pytest tests/unit -q

# 50 agents x 60 s on a fresh database, its own Redis, uvicorn --workers 2, a worker and beat (docs/RELIABILITY.md).
# BENCH_AGENTS=10 BENCH_SECONDS=10 for a short run.
bench-load: install
	$(PY) bench/load.py

# Performance against the targets of docs/BENCHMARKS.md; each prints its figures and saves them in var/bench/.
# Own databases (countersign_perf*) and Redis database 5; knobs (BENCH_*) are listed in docs/BENCHMARKS.md.
# bench-gateway: an auto-approved GET through /gateway/ against the same GET straight to the target (bench/gateway.py).
bench-submit bench-push bench-execute bench-history bench-audit bench-memory bench-gateway: install
	$(PY) -m bench.$(@:bench-%=%)

# bench-api: server CPU per request of the hot API endpoints against issue 21's targets (bench/api_cost.py;
# about 6 minutes, BENCH_QUICK=1 for a 1-minute smoke run).
bench-api: install
	$(PY) -m bench.api_cost

bench: bench-submit bench-push bench-execute bench-history bench-audit bench-memory bench-api

clean:
	rm -rf var test-artifacts .pytest_cache
