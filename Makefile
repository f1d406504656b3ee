# One command each: `make reproduce` runs the study, `make test` the tests.
# Both build .venv from nothing the first time (torch is about 5.5 GB, ~2 min).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
OPTIMIZERS ?= sgd adam adagrad adahessian
SEEDS ?= 0
SMOKE_DIR ?= .smoke

.PHONY: install test reproduce smoke sweep-smoke report facts status notebooks benchmarks clean-smoke

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e .
	touch $@

test: install
	$(PY) -m pytest -q

reproduce: install
	$(PY) runner.py run --optimizers $(OPTIMIZERS) --seeds $(SEEDS)
	$(MAKE) report

smoke: install
	$(PY) runner.py run --smoke --force --optimizers $(OPTIMIZERS) --seeds 0 --results-dir $(SMOKE_DIR)

sweep-smoke: install
	$(PY) sweeps.py launch --name smoke --optimizers $(OPTIMIZERS) --seeds 0 1 --lr-grid none --smoke --results-dir $(SMOKE_DIR)

report: install
	MPLBACKEND=Agg $(PY) runner.py report

facts: install  # the numbers report/report.md and the README quote in prose, recomputed from results/
	$(PY) report_facts.py

status: install
	$(PY) runner.py status

notebooks: install
	$(PY) notebooks/build_notebooks.py
	$(PY) notebooks/build_plotting_notebook.py

benchmarks: install
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_eigensolver.py
	$(PY) benchmarks/bench_landscape.py

clean-smoke:
	rm -rf $(SMOKE_DIR)
