# Two commands on a fresh machine (Python 3.11, pip, apt):
#   make run    set up .venv and run the whole workflow on the embedded default
#   make test   set up .venv and run the test suite
# Everything installs from pinned versions (requirements.txt).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CORES ?= all

.PHONY: setup run test lint dry-run report clean profiles

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -e .
	@command -v bwrap >/dev/null && command -v g++ >/dev/null || ./tools/install-system-packages.sh
	touch $@

export PATH := $(abspath $(BIN)):$(PATH)

run: setup
	$(BIN)/snakemake --cores $(CORES)

test: setup
	$(BIN)/ruff check src tests perf workflow_scripts
	$(BIN)/ruff format --check src tests perf workflow_scripts
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint
	$(BIN)/pytest -ra --durations=15 -n auto --dist loadscope

lint: setup
	$(BIN)/ruff check src tests perf workflow_scripts
	$(BIN)/ruff format --check src tests perf workflow_scripts
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

report: setup
	$(BIN)/snakemake --report report.html

dry-run: setup
	$(BIN)/snakemake -n

clean:
	rm -rf results logs .snakemake

# Named profiles, so that `snakemake --profile slurm` works as written: Snakemake finds a profile
# name in its user config directory (~/.config/snakemake, or $XDG_CONFIG_HOME/snakemake), so this
# links every profiles/<name> but default there (default is the workflow profile, which Snakemake
# loads from the checkout by itself). A link from another checkout is replaced, a real folder kept.
profiles: setup
	@dir="$$($(BIN)/python -c 'from snakemake.common import get_appdirs; print(get_appdirs().user_config_dir)')"; \
	mkdir -p "$$dir"; \
	for name in $$(ls profiles); do \
		[ "$$name" = default ] && continue; \
		if [ -e "$$dir/$$name" ] && [ ! -L "$$dir/$$name" ]; then \
			echo "$$dir/$$name exists and is not a link; remove it first" >&2; exit 1; \
		fi; \
		ln -sfn "$(CURDIR)/profiles/$$name" "$$dir/$$name"; \
		echo "$$dir/$$name -> $(CURDIR)/profiles/$$name"; \
	done
