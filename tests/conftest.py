import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless figures in tests and in the kernels they start

import minima  # noqa: E402, F401 - puts the repository root (params, helpers, cnn_architectures) on sys.path
