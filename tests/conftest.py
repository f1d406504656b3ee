import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless figures in tests and in the kernels they start
if os.environ.get("PYTEST_XDIST_WORKER"):  # one of `make test`'s parallel workers: one core each, not all of them
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # for this process and the runs and kernels it starts

import minima  # noqa: E402, F401 - puts the repository root (params, helpers, cnn_architectures) on sys.path
