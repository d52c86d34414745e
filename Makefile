# Two commands on a fresh machine: `make run` (set up + default study) and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
CORES ?= all
STUDY ?= default
export WANDB_MODE ?= offline
# torch's OpenMP threads sleep instead of spinning while they wait: on a loaded machine spinning made runs 4×
# (the test suite's epidemic tests up to 4×) slower (BENCHMARKS.md)
export OMP_WAIT_POLICY ?= PASSIVE
PIP := $(PY) -m pip --disable-pip-version-check --quiet

.PHONY: install run test test-workflow test-slurm test-all lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e '.[dev]'
	touch $@

# The study's results, then its report (results/<study>/report.html: one self-contained file).
run: install
	$(VENV)/bin/snakemake --cores $(CORES) --config study=$(STUDY)
	$(VENV)/bin/snakemake --report results/$(STUDY)/report.html --config study=$(STUDY)

# The report of a finished run (`make run` builds it too): every figure and table with its caption, the resolved
# config, the jobs' benchmark records.
report: install
	$(VENV)/bin/snakemake --report results/$(STUDY)/report.html --config study=$(STUDY)

# Two pytest workers (pytest-xdist): 3:07 on 2 cores where one worker took 6:00 the same day (17:49 on a slow one).
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -n $(TEST_WORKERS)

# A real single-node SLURM cluster (installs slurm-wlm and munge with apt-get as root; skips, saying why, where it
# cannot), the toy study through profiles/slurm, compared with a local run: tests/test_slurm.py.
# The whole DAG under Snakemake on the `ci` study and the Brock & Hommes study: every rule runs (10-15 minutes).
test-workflow: install
	$(PY) -m pytest -m workflow

test-slurm: install
	$(PY) -m pytest -m slurm

lint: install
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/snakemake --lint

test-all: install
	$(PY) -m pytest -m ""

bench: install
	$(PY) benchmarks/bench_simulator.py
	$(PY) benchmarks/bench_synthesis.py

clean:
	rm -rf results .snakemake
