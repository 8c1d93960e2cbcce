# The single entry point. Every target bootstraps .venv itself, so a fresh machine needs only
# Python 3.11 and make. Versions come from uv.lock: pip installs one pinned uv into .tools, and uv
# installs exactly the locked packages (and this project, editable) into .venv.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
TOOLS_VENV := .tools
UV_VERSION := 0.13.9
# uv gets the interpreter's real path (not a pyenv shim, which uv would take for another Python
# and rebuild .venv each time) and never downloads one of its own; anything else uv reads from its
# UV_* variables (UV_INDEX_URL, UV_NATIVE_TLS, UV_CACHE_DIR...), which pass through.
PYTHON_EXE := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
UV := UV_PROJECT_ENVIRONMENT=$(VENV) UV_PYTHON_DOWNLOADS=never $(TOOLS_VENV)/bin/uv
SYNC := $(UV) sync --frozen --python $(PYTHON_EXE)

.PHONY: run sims interop test test-sqlite test-postgres lint typecheck docs docs-build bench \
	bench-dispatch bench-wakeup bench-opcua bench-scale-out bench-console clean venv

# uv itself, from the package index pip is configured with.
$(TOOLS_VENV)/.uv-$(UV_VERSION):
	rm -rf $(TOOLS_VENV)
	$(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip --disable-pip-version-check -q install uv==$(UV_VERSION)
	touch $@

# Re-sync when the dependency list or the lockfile changes. --frozen installs what uv.lock says
# and fails rather than re-resolve; after editing pyproject.toml, run `.tools/bin/uv lock`.
# The run environment has no dev tools: syncing it drops them, so it voids the dev stamp.
$(VENV)/.installed-run: pyproject.toml uv.lock | $(TOOLS_VENV)/.uv-$(UV_VERSION)
	$(SYNC)
	rm -f $(VENV)/.installed-dev
	touch $@

$(VENV)/.installed-dev: pyproject.toml uv.lock | $(TOOLS_VENV)/.uv-$(UV_VERSION)
	$(SYNC) --extra dev
	touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-dev

## run: migrate the embedded SQLite database, load the example fab if empty, start its 30 tools
## as simulated OPC UA servers (ports 4841-4870, SPEED=60) and serve on :8000 with the adapters
## connected to them and the dispatcher running both fabs every 5 s; Ctrl-C stops both
run: $(VENV)/.installed-run
	$(BIN)/mes db upgrade
	$(BIN)/mes seed example --if-empty
	@$(BIN)/mes-sims --fab mes/seed/example_fab.json --speed $${SPEED:-60} & sims=$$!; \
	trap 'kill $$sims 2>/dev/null' EXIT INT TERM; \
	MES_ADAPTERS_ENABLED=$${MES_ADAPTERS_ENABLED:-true} \
	MES_DISPATCH_INTERVAL_S=$${MES_DISPATCH_INTERVAL_S:-5} MES_DISPATCH_FABS=$${MES_DISPATCH_FABS-F1,F2} \
		$(BIN)/mes serve --host 127.0.0.1 --port 8000

## sims: serve the seeded fab's tools as simulated OPC UA servers (ports 4841-4870), speed 60
sims: $(VENV)/.installed-run
	$(BIN)/mes-sims --fab mes/seed/example_fab.json --speed $${SPEED:-60}

## interop: install node-opcua (npm, pinned by the lockfile) and run the interoperability test
interop: $(VENV)/.installed-dev
	npm ci --prefix tests/interop/node --no-audit --no-fund --loglevel=error
	$(BIN)/pytest tests/interop $(PYTEST_ARGS)

## test: the lockfile check, ruff, mypy, the manual (a broken link fails), then the suite on
## SQLite, then again on PostgreSQL if MES_TEST_DATABASE_URL is set
test: $(VENV)/.installed-dev
	$(UV) lock --check
	$(BIN)/ruff check .
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/mypy mes equipment_sims
	$(MAKE) --no-print-directory docs-build
	$(MAKE) --no-print-directory test-sqlite
	@if [ -n "$$MES_TEST_DATABASE_URL" ]; then \
		$(MAKE) --no-print-directory test-postgres; \
	else \
		echo "MES_TEST_DATABASE_URL is not set: PostgreSQL run skipped"; \
	fi

test-sqlite: $(VENV)/.installed-dev
	@echo "=== test suite on SQLite ==="
	env -u MES_TEST_DATABASE_URL $(BIN)/pytest $(PYTEST_ARGS)

test-postgres: $(VENV)/.installed-dev
	@echo "=== test suite on PostgreSQL ($$MES_TEST_DATABASE_URL) ==="
	$(BIN)/pytest $(PYTEST_ARGS)

## lint: uv.lock matches pyproject.toml, ruff check, ruff format check, hadolint on the image
lint: $(VENV)/.installed-dev
	$(UV) lock --check
	$(BIN)/ruff check .
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy mes equipment_sims

## docs: serve the manual (docs/, mkdocs.yml) with live reload on :8001 (DOCS_PORT)
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:$${DOCS_PORT:-8001}

## docs-build: build the manual into var/site, strictly: a broken link or anchor, or a page left
## out of the nav, fails it; then check that README.md's links to files lead somewhere
docs-build: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@$(BIN)/python -c 'import pathlib, re, sys; \
	links = re.findall(r"\]\(([^)#:]+)[)#]", pathlib.Path("README.md").read_text("utf-8")); \
	broken = [link for link in links if not pathlib.Path(link).exists()]; \
	sys.exit(f"README.md links to missing files: {broken}" if broken else 0)'

## bench: lot moves through the whole service on PostgreSQL (MES_BENCH_DATABASE_URL; the
## benchmark creates and drops its own database beside it), after any bench/bench_*.py
bench: $(VENV)/.installed-dev
	@for b in bench/bench_*.py; do [ -e "$$b" ] || continue; echo "=== $$b ==="; $(BIN)/python $$b || exit 1; done
	@echo "=== bench/lot_moves.py ==="
	$(BIN)/python bench/lot_moves.py --database-url $${MES_BENCH_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}

## bench-dispatch: what-next latency and full refresh on an SMT2020 fab (SMT2020=<folder>)
## bench-wakeup: a tool's idle time from being freed to its next job, periodic against
## event-driven dispatch (SQLite; MES_BENCH_DATABASE_URL for PostgreSQL)
bench-wakeup: $(VENV)/.installed-dev
	$(BIN)/python bench/dispatch_wakeup.py $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

bench-dispatch: $(VENV)/.installed-dev
	$(BIN)/python bench/dispatch_latency.py --data $${SMT2020:?set SMT2020 to an SMT2020-format folder} --database-url $${MES_BENCH_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}

## bench-opcua: one adapter process holding TOOLS (200) simulated tools, 20 changing values each
## at 1 Hz, on SQLite (MES_BENCH_DATABASE_URL=postgresql+asyncpg://... for PostgreSQL)
bench-opcua: $(VENV)/.installed-dev
	$(BIN)/python bench/opcua_ingest.py --tools $${TOOLS:-200} --seconds 30 $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

## bench-scale-out: SIGKILL an adapter process holding TOOLS (100) tools and the dispatcher
## leader; print the take-over times (PostgreSQL: MES_BENCH_DATABASE_URL)
bench-scale-out: $(VENV)/.installed-dev
	$(BIN)/python bench/scale_out.py --tools $${TOOLS:-100} $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

## bench-console: console page server times and live-update delay on an SMT2020 fab
## (SMT2020=<folder>; SQLite, or PostgreSQL with MES_BENCH_DATABASE_URL)
bench-console: $(VENV)/.installed-dev
	$(BIN)/python bench/console.py --data $${SMT2020:?set SMT2020 to an SMT2020-format folder} $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

clean:
	rm -rf $(VENV) $(TOOLS_VENV) var .pytest_cache .ruff_cache .mypy_cache
