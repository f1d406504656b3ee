"""Seconds per model of each generalization measure (minima/measures.py), on a committed minimum.

Run from the repository root:  python benchmarks/bench_measures.py [--run results/sgd/seed0] [--threads 1]

Loads a committed embedded run's final weights and times each measure on fixed training subsets of the sizes the
flatness study uses (1,000 samples for the certified lambda1 and the Hutchinson estimates, 1,024 for the adaptive
sharpness) and its settings in params.py, median of --repeats. lambda1's plain float64 path is timed beside the
mixed-precision one the pass uses. Prints the total per model against the study's budget (about 60 s of CPU a
model: the whole population within 3 hours on 2 cores).
"""

import argparse
import platform
import statistics
import time
from importlib.metadata import version

import torch
import torch.nn.functional as F

import minima  # noqa: F401 - puts the repository root on sys.path
import params
from minima import landscape, measures, runs, training
from minima.config import cpu_model
from minima.data import load_mnist

BUDGET_S = 60


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="results/sgd/seed0")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = runs.load_json(f"{args.run}/{runs.CONFIG}")
    model = training.build_model(config["seed"], "cpu", config["model"]["activation"])
    model.load_state_dict(runs.load_torch(f"{args.run}/{runs.MODEL}"))
    data = load_mnist("embedded", "data", verbose=False)
    g = torch.Generator().manual_seed(0)
    pick = lambda n: torch.randperm(len(data.y_train), generator=g)[:n]  # noqa: E731
    i1000, i1024 = pick(1000), pick(1024)
    x1, y1, x2, y2 = data.x_train[i1000], data.y_train[i1000], data.x_train[i1024], data.y_train[i1024]
    directions = [landscape.filter_normalized_direction(model, seed=s) for s in range(5)]
    cases = {
        "lambda1, float64 Lanczos (the plain path, 1,000)": lambda: measures.lambda_max(
            model, F.cross_entropy, x1, y1, precision="float64"),
        "lambda1, mixed precision, float64 certificate (1,000)": lambda: measures.lambda_max(
            model, F.cross_entropy, x1, y1, precision="mixed"),
        "Hutchinson trace and diagonal (50 probes, 1,000)": lambda: measures.hutchinson(model, F.cross_entropy, x1,
                                                                                          y1, n_probes=50),
        "adaptive worst case (20 steps, 1,024)": lambda: measures.adaptive_worst_case(
            model, F.cross_entropy, x2, y2, rho=params.MEASURES_RHO_WORST),
        f"adaptive average case ({params.MEASURES_AVERAGE_SAMPLES} draws, 1,024)": lambda: (
            measures.adaptive_average_case(model, F.cross_entropy, x2, y2, rho=params.MEASURES_RHO_AVERAGE,
                                           n_samples=params.MEASURES_AVERAGE_SAMPLES)),
        "PAC-Bayes flatness (20 draws x 10 log bisections, 1,024)": lambda: measures.pac_bayes_flatness(
            model, F.cross_entropy, x2, y2, sigma_max=params.MEASURES_PAC_BAYES_SIGMA_MAX),
        "filter-normalised random directions (5, 1,024)": lambda: measures.random_direction_sharpness(
            model, F.cross_entropy, x2, y2, directions),
        "norms and margin (training set)": lambda: (measures.weight_norm(model),
                                                    measures.output_margin(model, data.x_train, data.y_train)),
    }
    print(f"{cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {args.threads} thread(s), torch "
          f"{version('torch')}, python {platform.python_version()}; model {args.run}")
    total, medians = 0.0, {}
    for name, fn in cases.items():
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        medians[name] = statistics.median(times)
        total += 0 if "plain path" in name else medians[name]
        print(f"  {name:<55} {statistics.median(times):6.2f} s (median of {args.repeats})", flush=True)
    plain, fast = (v for k, v in medians.items() if k.startswith("lambda1"))
    print(f"lambda1: mixed / float64 = {fast / plain:.2f}")
    print(f"per model (mixed lambda1): {total:.1f} s against a budget of {BUDGET_S} s: {total / BUDGET_S:.2f} of it")


if __name__ == "__main__":
    main()
