# The two commands (see README):  make dev   |   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install browser dev test lint bench clean

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
browser:
	@if [ -x /usr/bin/chromium ] && dpkg-query -W -f='$${Status}' fonts-noto-cjk 2>/dev/null | grep -q 'ok installed'; then \
	  :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk; \
	else \
	  echo "The browser tests need Debian's chromium (/usr/bin/chromium) and fonts-noto-cjk." >&2; \
	  echo "Install them as root: apt-get install --no-install-recommends chromium fonts-noto-cjk" >&2; \
	  exit 1; \
	fi

# Every test, against real stores (embedded ones unless DATABASE_URL / REDIS_URL are set).
test: install browser
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# The benchmark suite (bench/README.md); e.g. make bench ARGS=--quick
bench: install
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) .portal .pytest_cache
