# Two commands on a fresh machine (Python 3.11, pip, apt):
#   make run    set up .venv and run the whole workflow on the embedded default
#   make test   set up .venv and run the test suite
# Everything installs from pinned versions (requirements.txt).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: setup run test lint dry-run report clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@command -v bwrap >/dev/null || ./scripts/install-system-packages.sh
	touch $@

export PATH := $(abspath $(BIN)):$(PATH)

run: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/ruff check src tests benchmarks workflow_scripts
	$(BIN)/ruff format --check src tests benchmarks workflow_scripts
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint
	$(BIN)/pytest -ra

lint: setup
	$(BIN)/ruff check src tests benchmarks workflow_scripts
	$(BIN)/ruff format --check src tests benchmarks workflow_scripts
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

report: setup
	$(BIN)/snakemake --report report.html

dry-run: setup
	$(BIN)/snakemake -n

clean:
	rm -rf results logs .snakemake
