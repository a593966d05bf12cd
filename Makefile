# `make test` on a fresh clone: make the virtual environment, install the project with its
# test extras, lint, and run every test. `make bench` prints the measured figures (firmware toolkit,
# LED classifier accuracy).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP) lint
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks.firmware_bench
	$(BIN)/python -m tests.benchmarks.led_accuracy

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache
