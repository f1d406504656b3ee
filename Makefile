# One command each: `make test` runs the tests, `make reproduce` reruns the study and compares it with results/.
# Both build .venv from nothing the first time (torch is about 5.5 GB, ~2 min).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# OPTIMIZERS: empty means every optimizer in the registry (minima/optimizers.py)
OPTIMIZERS ?=
SEEDS ?= 0
# RUNS: where new runs go (git-ignored). RESULTS: the study `make report` reads (RESULTS=runs for your own).
RUNS ?= runs
RESULTS ?= results
REPORT ?= $(if $(filter results,$(RESULTS)),report,$(RESULTS)/report)
SMOKE_DIR ?= .smoke
# DATASET=fashion-mnist: make reproduce reruns the full-size study's runs and compares them with results/fashion-mnist
DATASET ?= mnist
DATASET_DIR = $(if $(filter mnist,$(DATASET)),,/$(DATASET))
OPT_ARGS = $(if $(strip $(OPTIMIZERS)),--optimizers $(OPTIMIZERS))

.PHONY: install test lint reproduce compare smoke sweep study tuned fair projected flatness measures measures-rho full-size sweep-smoke report facts \
        status notebooks benchmarks gpu-check \
        edge-of-stability clean-smoke

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e .
	# notebooks never carry outputs into git: nbstripout as this clone's git filter
	if [ -d .git ]; then $(VENV)/bin/nbstripout --install; fi
	touch $@

lint: install
	$(VENV)/bin/ruff check .

# TEST_WORKERS: pytest-xdist processes, one torch thread each (2 = CI's two cores; auto = every core; 0 = one
# process). Whole test files go to one worker, so a module's shared fixture is built once.
TEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

reproduce: install
	$(PY) -m minima run $(OPT_ARGS) --seeds $(SEEDS) --dataset $(DATASET) --results-dir $(RUNS)
	$(PY) -m minima compare $(RUNS)$(DATASET_DIR) results$(DATASET_DIR) $(OPT_ARGS) --seeds $(SEEDS)

compare: install
	$(PY) -m minima compare $(RUNS) results

smoke: install
	$(PY) -m minima run --smoke --force $(OPT_ARGS) --seeds 0 --results-dir $(SMOKE_DIR)

# The fair comparison, in three steps (hours on 2 cores; resumable: each step skips complete runs). Into runs/ by
# default; STUDY=results rebuilds the committed study. `make fair` runs all three.
STUDY ?= $(RUNS)
STUDY_SEEDS ?= 0 1 2 3 4
sweep: install  # every optimizer's lr grid, 3 seeds, train only; extended where the selection sits at an edge
	$(PY) -m minima sweep launch --name tuning --results-dir $(STUDY) --extend
	$(PY) -m minima sweep collect --name tuning --results-dir $(STUDY)

study: install  # the original settings, 5 seeds, every instrument on
	$(PY) -m minima run --seeds $(STUDY_SEEDS) --results-dir $(STUDY)

tuned: install  # the sweep's selected learning rates, 5 seeds, every instrument on
	$(PY) -m minima run --tuned tuning --sweeps-dir $(STUDY) --seeds $(STUDY_SEEDS) --results-dir $(STUDY)/tuned

fair: sweep study tuned

projected: install  # the projected-update experiment: every lam, both regimes, 3 seeds (python -m minima projected)
	$(PY) -m minima projected --results-dir $(STUDY)

flatness: install  # the flatness study's 90 train-only runs, each with its equal-loss stopping point (python -m minima flatness)
	$(PY) -m minima flatness --results-dir $(STUDY)

measures: install  # every committed minimum's generalization measures, one row each (resumable; hours on 2 cores)
	$(PY) -m minima measures --results $(RESULTS)

measures-rho: install  # the check that chose the adaptive radii: several radii on the study's seed-0 models (minutes)
	$(PY) -m minima measures --rho-check --results $(RESULTS)

full-size: install  # the study at 60,000 images (Fashion-MNIST), seeds 0-2, every instrument on; hours on 2 cores
	$(PY) -m minima run --dataset fashion-mnist --seeds 0 1 2 --results-dir $(STUDY)

sweep-smoke: install
	$(PY) -m minima sweep launch --name smoke $(OPT_ARGS) --seeds 0 1 --lr-grid none --smoke \
	    --results-dir $(SMOKE_DIR)

report: install
	MPLBACKEND=Agg $(PY) -m minima report --results $(RESULTS) --report-dir $(REPORT)

facts: install  # the numbers report/report.md and the README quote in prose, recomputed from results/
	$(PY) -m minima facts --results $(RESULTS)

status: install
	$(PY) -m minima status --results-dir $(RUNS)

notebooks: install  # stamp the optimizer notebooks from notebooks/templates/optimizer.py; pair the rest
	$(PY) -m minima notebooks
	$(VENV)/bin/jupytext --sync notebooks/plotting_results.ipynb
	$(PY) -m nbstripout notebooks/plotting_results.ipynb  # cell ids as the git filter writes them

benchmarks: install
	$(PY) benchmarks/bench_training.py
	$(PY) benchmarks/bench_eigensolver.py
	$(PY) benchmarks/bench_landscape.py
	$(PY) benchmarks/bench_tracking.py
	$(PY) benchmarks/bench_parallel.py
	$(PY) benchmarks/bench_projected.py
	$(PY) benchmarks/bench_final_analysis.py
	$(PY) benchmarks/bench_measures.py

edge-of-stability: install  # the instruments' validation: writes results/edge_of_stability/ and its figure (~15 min)
	$(PY) benchmarks/edge_of_stability.py --threads 1

gpu-check: install  # the study tested and timed on a CUDA device in under 5 minutes; without one, a CPU dry run
	$(PY) benchmarks/gpu_check.py --out $${OUT:-gpu-check}

clean-smoke:
	rm -rf $(SMOKE_DIR)
