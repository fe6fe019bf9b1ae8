# Every target bootstraps .venv by itself on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-fast bench lint redis postgres clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/rerank-gateway serve $(ARGS)

test: lint redis postgres
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The unit tests alone, in seconds (marker `unit`, given by directory in tests/conftest.py).
test-fast: $(STAMP) redis postgres
	$(BIN)/python -m pytest -m unit -q $(PYTEST_ARGS)

# Style, types and the import contracts of pyproject.toml ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/ruff check gateway providers policies tests bench
	$(BIN)/mypy gateway providers policies
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

# Start a throwaway Redis on 127.0.0.1:6379 when none answers and redis-server exists.
redis:
	@bash .ci/ensure-redis

# Start the installed PostgreSQL when nothing answers on 127.0.0.1:5432 (the ledger tests).
postgres:
	@bash .ci/ensure-postgres

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache
