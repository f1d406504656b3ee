import os

os.environ.setdefault("MPLBACKEND", "Agg")  # headless figures in tests and in the kernels they start
