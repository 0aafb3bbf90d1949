# The two commands (see README):  make dev   |   make test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install dev test lint bench clean

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

# Every test, against real stores (embedded ones unless DATABASE_URL / REDIS_URL are set).
test: install
	$(BIN)/python -m pytest $(ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .portal .pytest_cache
