# `make test` on a fresh clone: make the virtual environment, install the project with its
# test extras, lint, and run every test (`make test-long`: the long profiles of the fuzz, fault-matrix
# and durability suites). `make bench` prints every measured figure with how it was measured.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-long lint bench clean tools demo compiled

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Two pytest workers per core (pytest-xdist), each test on its own simulated bench: a third of the suite's time is
# spent waiting on real time (the touchscreen's paced tests, subprocesses starting, lrzsz), which the second
# worker fills; worksteal moves queued tests to whichever worker is free.
WORKERS ?= $(shell $(PYTHON) -c 'import os; print(2 * len(os.sched_getaffinity(0)))')
PYTEST  := $(BIN)/python -m pytest -n $(WORKERS) --dist worksteal

# The virtual environment and Particle's node peers are installed at once (pip and npm each wait on a registry).
test:
	@$(MAKE) --no-print-directory -j2 $(STAMP) tools
	@$(MAKE) --no-print-directory lint compiled
	$(PYTEST)

# Where PYTHONDONTWRITEBYTECODE is set (CI images set it), nothing compiled is kept: every `kiosk` subprocess the
# tests start would compile the sources again, and every pytest worker would rewrite and compile every test module
# for itself (6 s each on a 2-core VM). So the sources are compiled once, and pytest's cache of rewritten test
# modules is filled once, by collecting the tests in two halves side by side (pytest reads that cache either way).
HALF = $$(ls tests/test_*.py | awk 'NR % 2 == $(1)')
COLLECT := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest --collect-only -q -p no:cacheprovider -p no:xdist
compiled: $(STAMP)
	@$(BIN)/python -m compileall -q -j 0 kiosk hw firmware tests >/dev/null
	@$(COLLECT) $(call HALF,0) tests/fuzz >/dev/null & $(COLLECT) $(call HALF,1) tests/tui tests/interop >/dev/null; wait

# The same suite with the long profiles: Hypothesis draws new examples (20x as many in tests/fuzz), and the fault
# matrix, durability and invariant suites run every case (KIOSK_LONG=1).
test-long: $(STAMP) lint tools compiled
	KIOSK_FUZZ_PROFILE=long KIOSK_LONG=1 $(PYTEST)

# The YModem tests talk to lrzsz (Debian's package; `rb`/`sb`) over a pseudo-terminal.
# The interoperability tests (tests/interop) run Particle's own node libraries, binary-version-reader and
# particle-usb, pinned in tests/peers/package-lock.json: node and npm (Debian's nodejs and npm), then `npm ci`
# whenever tests/peers/node_modules is missing or older than the lockfile.
# The deploy tests verify the kiosk's systemd unit (systemd-analyze checks that cage and foot exist), foot's config
# and install.sh (shellcheck); without them those tests are skipped.
tools:
	@command -v rb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lrzsz >/dev/null; \
	  else echo "lrzsz is missing: install Debian's lrzsz package (sudo apt-get install lrzsz)"; exit 1; fi; }
	@{ command -v node && command -v npm; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; \
	  else echo "node or npm is missing: install Debian's nodejs and npm packages (sudo apt-get install nodejs npm)"; exit 1; fi; }
	@if [ ! -d tests/peers/node_modules ] || [ tests/peers/package-lock.json -nt tests/peers/node_modules ]; then \
	  npm ci --prefix tests/peers --no-audit --no-fund && touch tests/peers/node_modules; fi
	@{ command -v cage && command -v foot && command -v shellcheck && command -v systemd-analyze; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cage foot shellcheck systemd >/dev/null; \
	  else echo "note: cage, foot, shellcheck or systemd-analyze missing: some deploy tests will be skipped"; fi; }

# The demo: the touchscreen kiosk on a simulated bench of faulty devices, at 3x real time.
demo: $(STAMP)
	$(BIN)/kiosk tui --simulate app-crash@boron,corrupt-system@photon,missing-bootloader@boron,frozen@p2 --speed 3

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP) tools
	$(BIN)/python -m tests.benchmarks.firmware_bench
	$(BIN)/python -m tests.benchmarks.led_accuracy
	$(BIN)/python -m tests.benchmarks.dfu_bench
	$(BIN)/python -m tests.benchmarks.ymodem_bench
	$(BIN)/python -m tests.benchmarks.recovery_bench
	$(BIN)/python -m tests.benchmarks.sim_bench
	$(BIN)/python -m tests.benchmarks.tui_bench --ledger
	$(BIN)/python -m tests.benchmarks.service_bench

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
	find kiosk hw firmware tests -name __pycache__ -prune -exec rm -rf {} +
