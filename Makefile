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
# --compile-bytecode: the installed packages get their .pyc now, once. Without them every Python
# process (each CLI command, each role process a test starts) compiles its imports from source
# again: seconds of CPU per process start where the environment sets PYTHONDONTWRITEBYTECODE.
SYNC := $(UV) sync --frozen --compile-bytecode --python $(PYTHON_EXE)
# For the same reason this project's own modules may cache their bytecode (__pycache__/ is
# ignored by git), whatever the calling environment says.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: run sims interop test test-sqlite test-postgres lint typecheck docs docs-build bench \
	bench-dispatch bench-wakeup bench-opcua bench-tool-path bench-scale-out bench-fleet-kill bench-quality bench-sim bench-console fuzz crash soak clean venv

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
	$(SYNC) --extra dev --extra otel
	touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-dev

## run: migrate the embedded SQLite database, load the example fab if empty, start its 30 tools
## as simulated OPC UA servers (ports 4841-4870, SPEED=60, random faults at FAULT_RATE per tool,
## kind and simulated hour) and serve on :8000 (PORT) with the adapters connected to them, the
## dispatcher running both fabs every 5 s and the releaser starting lots by the example's start
## plans; prints the console URL and the demo logins when ready. Ctrl-C stops all of it
run: $(VENV)/.installed-run
	$(BIN)/mes db upgrade
	$(BIN)/mes seed example --if-empty
	@# The tools run in their own session (where setsid exists), so that Ctrl-C stops the service
	@# first (its adapters log off the tools) and the trap then stops the tools.
	@echo "starting 30 simulated tools (log: var/sims.log)..."; \
	$$(command -v setsid) $(BIN)/mes-sims --fab mes/seed/example_fab.json --speed $${SPEED:-60} \
		--fault-rate $${FAULT_RATE:-0.02} --fault-kinds $${FAULT_KINDS:-alarm,breakdown,chamber_down} \
		> var/sims.log 2>&1 & sims=$$!; api=; \
	trap 'kill -TERM $$api 2>/dev/null; wait $$api 2>/dev/null; \
		kill -TERM $$sims 2>/dev/null; wait $$sims 2>/dev/null; echo "stopped"' EXIT; \
	trap 'exit 130' INT TERM; \
	until grep -qs "Ctrl-C stops" var/sims.log; do \
		kill -0 $$sims 2>/dev/null || { cat var/sims.log; exit 1; }; sleep 0.5; done; \
	MES_ADAPTERS_ENABLED=$${MES_ADAPTERS_ENABLED:-true} MES_RELEASE_ENABLED=$${MES_RELEASE_ENABLED:-true} \
	MES_DISPATCH_INTERVAL_S=$${MES_DISPATCH_INTERVAL_S:-5} MES_DISPATCH_FABS=$${MES_DISPATCH_FABS-F1,F2} \
	MES_LOG_LEVEL=$${MES_LOG_LEVEL:-warning} \
		$(BIN)/mes serve --host 127.0.0.1 --port $${PORT:-8000} & api=$$!; \
	$(BIN)/mes seed welcome --url http://127.0.0.1:$${PORT:-8000} || exit 1; \
	wait $$api

## sims: serve the seeded fab's tools as simulated OPC UA servers (ports 4841-4870), speed 60
sims: $(VENV)/.installed-run
	$(BIN)/mes-sims --fab mes/seed/example_fab.json --speed $${SPEED:-60}

## interop: install node-opcua (npm, pinned by the lockfile) and run the interoperability test
interop: $(VENV)/.installed-dev
	npm ci --prefix tests/interop/node --no-audit --no-fund --loglevel=error
	$(BIN)/pytest tests/interop $(PYTEST_ARGS)

## test: the lockfile check, ruff, mypy, the manual (a broken link fails), then the suite on
## SQLite and, if MES_TEST_DATABASE_URL is set, at the same time on PostgreSQL (each run's output
## is printed whole when it ends; much of either run waits on sockets, so two at once take about
## half the time of one after the other)
test: $(VENV)/.installed-dev
	$(UV) lock --check
	$(BIN)/ruff check .
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/mypy mes equipment_sims
	$(MAKE) --no-print-directory docs-build
	@if [ -n "$$MES_TEST_DATABASE_URL" ]; then \
		$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres; \
	else \
		$(MAKE) --no-print-directory test-sqlite; \
		echo "MES_TEST_DATABASE_URL is not set: PostgreSQL run skipped"; \
	fi

test-sqlite: $(VENV)/.installed-dev
	@echo "=== test suite on SQLite ==="
	env -u MES_TEST_DATABASE_URL $(BIN)/pytest $(PYTEST_ARGS)

# The tests that never open a database (pure rules, the simulated tools on their own, the import
# layering) run in the SQLite run only: on PostgreSQL they would test the same thing twice.
PURE_TESTS := --ignore=tests/unit --ignore=tests/equipment_sims --ignore=tests/test_architecture.py

test-postgres: $(VENV)/.installed-dev
	@echo "=== test suite on PostgreSQL ($$MES_TEST_DATABASE_URL) ==="
	$(BIN)/pytest $(PURE_TESTS) $(PYTEST_ARGS)

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

## bench-sim: the fab simulator on an SMT2020 testbed (SMT2020=<folder>, DAYS=30, RULES=fifo,cr,
## SEEDS=1, WARMUP=0, JOBS=1, BASELINE=<git ref>: the same plan on that commit too): KPIs of the
## rule sets side by side, speed, memory
bench-sim: $(VENV)/.installed-dev
	$(BIN)/python bench/smt2020.py --data $${SMT2020:?set SMT2020 to an SMT2020-format folder} --days $${DAYS:-30} --rules $${RULES:-fifo,cr} --seeds $${SEEDS:-1} --warmup $${WARMUP:-0} --jobs $${JOBS:-1} --policy-share $${BASELINE:+--baseline $$BASELINE}

## bench-opcua: one adapter process holding TOOLS (200) simulated tools, 20 changing values each
## at 1 Hz, on SQLite (MES_BENCH_DATABASE_URL=postgresql+asyncpg://... for PostgreSQL)
bench-opcua: $(VENV)/.installed-dev
	$(BIN)/python bench/opcua_ingest.py --tools $${TOOLS:-200} --seconds 30 $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

## bench-tool-path: CPU per job of the adapter and the dispatcher processes (simulated tools
## driving the job path as deployed; PostgreSQL: MES_BENCH_DATABASE_URL)
bench-tool-path: $(VENV)/.installed-dev
	$(BIN)/python bench/tool_path.py $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

## bench-scale-out: SIGKILL an adapter process holding TOOLS (100) tools and the dispatcher
## leader; print the take-over times (PostgreSQL: MES_BENCH_DATABASE_URL)
bench-scale-out: $(VENV)/.installed-dev
	$(BIN)/python bench/scale_out.py --tools $${TOOLS:-100} $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

## bench-fleet-kill: every role as its own process (2 APIs under load, 2 adapter replicas with
## simulated tools, 2 dispatchers); SIGKILL an API, the busiest adapter and the dispatcher leader
## at once; print take-over times, failed requests, lost/doubled (PostgreSQL: MES_BENCH_DATABASE_URL)
bench-fleet-kill: $(VENV)/.installed-dev
	$(BIN)/python bench/fleet_kill.py $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

## fuzz: schemathesis against `mes serve` on a throw-away database (PostgreSQL beside
## MES_TEST_DATABASE_URL if set, else SQLite), every phase, FUZZ_SECONDS (600) long; prints the
## operations covered, requests sent, links followed and failures (CI runs 100 s of it)
fuzz: $(VENV)/.installed-dev
	$(BIN)/python -m tests.fuzz.harness --max-time $${FUZZ_SECONDS:-600} --seed $${FUZZ_SEED:-19}

## crash: SIGKILL the service KILLS (50) times under API load and restart it; prints kills survived
## and acknowledged requests lost (PostgreSQL: MES_BENCH_DATABASE_URL, as bench)
crash: $(VENV)/.installed-dev
	$(BIN)/python bench/crash.py --tools --kills $${KILLS:-50} --database-url $${MES_BENCH_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}

## soak: the simulated fab, dispatcher and API load for SOAK_SECONDS (600); samples RSS, connections,
## p99 latency, tool-event lag, table growth and invariants; a slope-based bounded verdict
soak: $(VENV)/.installed-dev
	$(BIN)/python bench/soak.py --seconds $${SOAK_SECONDS:-600} --database-url $${MES_BENCH_DATABASE_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}

## bench-quality: track-out latency with and without data collection and SPC (225 values and
## 25 chart points per lot), on SQLite (MES_BENCH_DATABASE_URL=postgresql+asyncpg://... for PostgreSQL)
bench-quality: $(VENV)/.installed-dev
	@mkdir -p var
	$(BIN)/python bench/edc_track_out.py --database-url $${MES_BENCH_DATABASE_URL:-sqlite+aiosqlite:///var/bench-edc.db}

## bench-console: console page server times and live-update delay on an SMT2020 fab
## (SMT2020=<folder>; SQLite, or PostgreSQL with MES_BENCH_DATABASE_URL)
bench-console: $(VENV)/.installed-dev
	$(BIN)/python bench/console.py --data $${SMT2020:?set SMT2020 to an SMT2020-format folder} $${MES_BENCH_DATABASE_URL:+--database-url $$MES_BENCH_DATABASE_URL}

clean:
	rm -rf $(VENV) $(TOOLS_VENV) var .pytest_cache .ruff_cache .mypy_cache
