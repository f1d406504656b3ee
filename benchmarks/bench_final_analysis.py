"""An embedded run's final analysis, the path before and the path now, side by side on one committed minimum.

Run from the repository root:  python benchmarks/bench_final_analysis.py [--run results/sgd/seed0] [--threads 1]

Loads a committed run's final weights (the embedded 4,000 digits) and runs the
notebook's final analysis (``analysis.final_curvature`` and ``final_landscapes``)
twice on them, in fresh temporary run folders:

- *plain*: every large-batch solve (the full training set's top 20, the
  1,000-sample sensitivity) in float64 throughout, in chunks of 1,000 images,
  each chunk's graph rebuilt for every Hessian-vector product;
- *now*: ``params.FULL_DATA_PRECISION`` (float32 Lanczos, certified and refined
  in float64) in chunks of ``params.FULL_DATA_CHUNK``, every chunk's graph kept
  while they fit in ``engine.GRAPH_MEMORY_MIB``.

It prints each one's wall time and product counts, the ratio now / plain
(target: now <= 4 minutes at one thread, or <= 1/3 of plain), and whether the
two paths' certified eigenvalues agree within their certificates (each is within
``EIG_TOL`` of the Hessian's, so two of them within 2 ``EIG_TOL``). Before that,
the median time of one full-data HVP over chunk sizes, both precisions, graphs
kept and rebuilt: the measurement the chunk size is chosen by.
"""

import argparse
import platform
import statistics
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import torch

import minima  # noqa: F401 - puts the repository root (params) on sys.path
import params
from minima import analysis, runs, training
from minima.config import cpu_model
from minima.curvature import engine
from minima.data import hessian_batch, load_mnist

CHUNKS = (100, 250, 500, 1000)
REPEATS = 3


def hvp_timings(model, x, y):
    """Median seconds of one full-data HVP for every chunk size, precision and graph policy."""
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0))
    rows = []
    for float64 in (False, True):
        for chunk in CHUNKS:
            for mib in (0, engine.GRAPH_MEMORY_MIB):
                with engine._untouched(model) as copies:
                    t0 = time.perf_counter()
                    _, hvp, dtype = engine._engine(model, analysis.CRITERION, x, y, chunk, copies,
                                                      float64=float64, graph_memory_mib=mib)
                    build = time.perf_counter() - t0
                    times = []
                    for _ in range(REPEATS):
                        t0 = time.perf_counter()
                        hvp(v)
                        times.append(time.perf_counter() - t0)
                rows.append((dtype, chunk, "kept" if mib else "rebuilt", build, statistics.median(times)))
                print(f"  {dtype:<8} chunks of {chunk:>4}, graphs {rows[-1][2]:<7}: build {build:5.2f} s, "
                      f"HVP {rows[-1][4]:5.2f} s (median of {REPEATS})", flush=True)
    return rows


def analyse(model, data, config, label):
    """The notebook's final analysis in a temporary run folder; (seconds, curvature summary)."""
    with tempfile.TemporaryDirectory() as folder:
        t0 = time.perf_counter()
        curv = analysis.final_curvature(model, data, config, folder, progress=lambda line: None)
        analysis.final_landscapes(model, data, config, curv["eigenvectors"], folder)
        seconds = time.perf_counter() - t0
    top = curv["full_data_top"]
    print(f"{label}: {seconds:.0f} s; full-data top {len(top['eigenvalues'])}: {top['n_hvps']} HVPs "
          f"({top['n_hvps_float64']} float64) in {top['time_s']:.0f} s, certified in {top['certified_in']}: "
          f"{top['converged']}", flush=True)
    return seconds, curv


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="results/sgd/seed0", help="a committed embedded run folder")
    parser.add_argument("--threads", type=int, default=params.TORCH_THREADS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run)
    config = runs.load_json(run_dir / runs.CONFIG)
    print(f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {args.threads} thread(s), "
          f"torch {version('torch')}, python {platform.python_version()}; run {run_dir}")
    d = config["data"]
    data = load_mnist(d["source"], "data", train_size=d["train_size"], test_size=d["test_size"])
    model = training.build_model(config["seed"], "cpu", config["model"]["activation"])
    model.load_state_dict(runs.load_torch(run_dir / runs.MODEL))
    x, y = hessian_batch(data, "full", config["seed"])
    print(f"one HVP over the {len(y)} training images:")
    hvp_timings(model, x, y)

    plain_cfg = {**config, "hessian": {**config["hessian"], "full_data_precision": "float64",
                                       "full_data_chunk": runs.LEGACY_SOLVER["full_data_chunk"]}}
    now_cfg = {**config, "hessian": {**config["hessian"], "full_data_precision": params.FULL_DATA_PRECISION,
                                     "full_data_chunk": params.FULL_DATA_CHUNK}}
    kept = engine.GRAPH_MEMORY_MIB
    engine.GRAPH_MEMORY_MIB = 0
    plain_s, plain = analyse(model, data, plain_cfg, "plain (float64, chunks of 1000, graphs rebuilt)")
    engine.GRAPH_MEMORY_MIB = kept
    now_s, now = analyse(model, data, now_cfg, f"now ({params.FULL_DATA_PRECISION}, chunks of "
                                               f"{params.FULL_DATA_CHUNK}, graphs kept up to {kept} MiB)")

    tol = config["hessian"]["tol"]
    worst = 0.0
    for a_top, b_top in ((plain["full_data_top"]["eigenvalues"], now["full_data_top"]["eigenvalues"]),
                         ([s["lambda1"] for s in plain["batch_sensitivity"]],
                          [s["lambda1"] for s in now["batch_sensitivity"]])):
        worst = max([worst] + [abs(a - b) / (2 * tol * abs(a)) for a, b in zip(a_top, b_top)])
    print(f"eigenvalues of the two paths: largest difference {worst:.2g} of their joint certificate "
          f"(2 x tol = {2 * tol:g} relative): {'agree' if worst <= 1 else 'DISAGREE'}")
    print(f"final analysis now / plain: {now_s / plain_s:.2f} ({now_s:.0f} s against {plain_s:.0f} s); "
          f"target <= 240 s or <= 0.33: {'met' if now_s <= 240 or now_s / plain_s <= 1 / 3 else 'MISSED'}")


if __name__ == "__main__":
    main()
