# The two commands (see README):  make dev   |   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser dev test test-cluster lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Installs (or brings up to date) the portal with the embedded stores and test tools.
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Everything locally: embedded PostgreSQL and Redis (unless DATABASE_URL / REDIS_URL
# are set), migrations, fake WeChat, the demo pool and the phone simulator.
dev: install
	$(BIN)/portal dev $(ARGS)

# Debian's Chromium and CJK fonts (for Chinese text in screenshots), which the browser
# tests (tests/browser, Playwright) drive; `playwright install` cannot download browsers here.
# As root, when they are missing, this installs them with apt-get: it changes the system,
# so it says so first. SKIP_BROWSER_INSTALL=1 installs nothing (the browser tests are then
# skipped, each saying why, unless /usr/bin/chromium is already there).
BROWSER_PACKAGES := chromium fonts-noto-cjk
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ] && dpkg-query -W -f='$${Status}' fonts-noto-cjk 2>/dev/null | grep -q 'ok installed'; then \
	  :; \
	elif [ -n "$(SKIP_BROWSER_INSTALL)" ] && [ "$(SKIP_BROWSER_INSTALL)" != 0 ]; then \
	  echo "make browser: SKIP_BROWSER_INSTALL is set: not installing $(BROWSER_PACKAGES);" \
	       "the browser tests (tests/browser) are skipped unless $(CHROMIUM) is there." >&2; \
	elif [ "$$(id -u)" = 0 ]; then \
	  echo "make browser: the browser tests (tests/browser) need Debian's $(BROWSER_PACKAGES)." >&2; \
	  echo "make browser: installing them as root: apt-get update; apt-get install --no-install-recommends $(BROWSER_PACKAGES)" >&2; \
	  echo "make browser: (SKIP_BROWSER_INSTALL=1 installs nothing and skips those tests)" >&2; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); \
	else \
	  echo "The browser tests need Debian's chromium ($(CHROMIUM)) and fonts-noto-cjk." >&2; \
	  echo "Install them as root: apt-get install --no-install-recommends $(BROWSER_PACKAGES)" >&2; \
	  echo "or skip those tests: make test SKIP_BROWSER_INSTALL=1" >&2; \
	  exit 1; \
	fi

# Every test, against real stores (embedded ones unless DATABASE_URL / REDIS_URL are set).
test: install browser
	$(BIN)/python -m pytest -rs $(ARGS)

# The tests of the Redis-touching features again on a Redis Cluster of their own (three
# masters with a replica each, from the machine's redis-server; tests/rediscluster.py).
CLUSTER_TESTS ?= tests/test_scan_flow.py tests/test_oidc.py tests/test_ratelimit.py \
	tests/test_ticket_limits.py tests/test_redis_cluster.py tests/browser/test_multinode.py
test-cluster: install
	PORTAL_TEST_REDIS=cluster $(BIN)/python -m pytest -rs $(or $(ARGS),$(CLUSTER_TESTS))

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The benchmark suite (bench/README.md); e.g. make bench ARGS=--quick
bench: install
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .portal .pytest_cache
