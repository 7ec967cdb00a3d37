# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint cover tracker bench bench-query bench-dashboard dbip dist release clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/picolytics serve

# The whole suite (~6 minutes on 2 cores): browser, slow and external tests included.
test: $(STAMP)
	$(BIN)/python -m pytest

# The quick subset (about a minute): without the browser, slow and external tests.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not browser and not slow and not external"

lint: $(STAMP)
	$(BIN)/ruff check src tests $(wildcard scripts)
	$(BIN)/ruff format --check src tests $(wildcard scripts)
	$(BIN)/mypy

cover: $(STAMP)
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report --include='src/*'

# The load benchmark (README, Performance); ARGS="--find-max --server uvicorn" etc.
bench: $(STAMP)
	$(BIN)/python scripts/bench $(ARGS)

# The query layer and read model at 3, 10 and 30 M events (README, Performance, Read
# model); ARGS="--events 3M --data-dir /var/tmp/pq" etc. 30 M needs ~15 GB and an hour.
bench-query: $(STAMP)
	$(BIN)/python scripts/bench_query.py $(ARGS)

# picolytics on a local Citus cluster (coordinator + 2 workers) beside one PostgreSQL,
# side by side; needs PICOLYTICS_CITUS_BIN (.ci/run's build). ARGS="--events 1M".
.PHONY: bench-citus
bench-citus: $(STAMP)
	$(BIN)/python scripts/bench_citus.py $(ARGS)

# The dashboard in Chromium on a bench_query database (README, Performance); ARGS="--data-dir DIR".
bench-dashboard: $(STAMP)
	$(BIN)/python scripts/bench_dashboard.py $(ARGS)

# `picolytics import goatcounter` on a generated 1 M-row export, read and stored (README,
# Performance); ARGS="--rows 200k --no-store" etc.
.PHONY: bench-import
bench-import: $(STAMP)
	$(BIN)/python scripts/bench_import.py $(ARGS)

# Rebuilds assets/pico.js (under 1000 bytes) from tracker/pico.src.js, and
# assets/pico.ext.js (under 2000) from it plus tracker/pico.ext.src.js.
tracker: $(STAMP)
	$(BIN)/python scripts/build_tracker.py

# Downloads this month's free DB-IP city lite database (needs internet access).
dbip:
	curl -fL "https://download.db-ip.com/free/dbip-city-lite-$$(date -u +%Y-%m).mmdb.gz" | gunzip -c > geoip.mmdb.tmp
	mv geoip.mmdb.tmp geoip.mmdb

# One self-contained executable, dist/picolytics (Linux x86-64), from a clean build.
dist: $(STAMP)
	$(BIN)/pyinstaller --clean --noconfirm --log-level WARN build.spec

# dist/picolytics-VERSION-linux-x86_64.tar.gz: the binary, README, LICENSE, a sample
# config.yaml and the systemd unit, with SHA256SUMS inside and a .sha256 beside it.
VERSION = $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/picolytics/__init__.py)
RELEASE = picolytics-$(VERSION)-linux-x86_64
release: dist
	rm -rf dist/$(RELEASE) dist/$(RELEASE).tar.gz dist/$(RELEASE).tar.gz.sha256
	mkdir -p dist/$(RELEASE)
	cp dist/picolytics README.md LICENSE deploy/picolytics.service dist/$(RELEASE)/
	cd dist/$(RELEASE) && ./picolytics --write-default-config config.yaml >/dev/null
	cd dist/$(RELEASE) && sha256sum picolytics README.md LICENSE config.yaml picolytics.service > SHA256SUMS
	tar -C dist --owner=0 --group=0 --numeric-owner --sort=name -czf dist/$(RELEASE).tar.gz $(RELEASE)
	cd dist && sha256sum $(RELEASE).tar.gz > $(RELEASE).tar.gz.sha256
	@echo "dist/$(RELEASE).tar.gz"

clean:
	rm -rf $(VENV) dist build .mypy_cache .ruff_cache .pytest_cache
