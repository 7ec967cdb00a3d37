# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint cover dbip clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/picolytics serve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard scripts)
	$(BIN)/ruff format --check src tests $(wildcard scripts)
	$(BIN)/mypy

cover: $(STAMP)
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='src/*'

# Downloads this month's free DB-IP city lite database (needs internet access).
dbip:
	curl -fL "https://download.db-ip.com/free/dbip-city-lite-$$(date -u +%Y-%m).mmdb.gz" | gunzip -c > geoip.mmdb.tmp
	mv geoip.mmdb.tmp geoip.mmdb

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache
