"""How far the Hutchinson estimate of tr(Diag(H)^1/2) moves with the number of probes, on committed minima.

Run from the repository root:  python benchmarks/check_hutchinson_bias.py [--runs sgd/seed0 adam/seed0]

tr(H) is an unbiased mean over probes, so more probes only narrow it. tr(Diag(H)^1/2) = sum_i sqrt(d_i) is taken
from the estimated diagonal d = mean(z * Hz), and the square root of a noisy estimate is biased upward where d_i
is small against its noise; the jackknife standard error of `measures.hutchinson` does not see that bias. This
prints both estimates at each probe count on the flatness study's fixed 1,000-sample subset
(``params.MEASURES_SUBSET``, ``params.MEASURES_SEED``), the same probes extended (seed 0), so a drift many
standard errors wide is the bias.
"""

import argparse

import torch
import torch.nn.functional as F

import minima  # noqa: F401 - puts the repository root on sys.path
import params
from minima import measures, runs, training
from minima.data import load_mnist
from minima.measures_study import _subset


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results")
    parser.add_argument("--runs", nargs="+", default=["sgd/seed0", "adam/seed0"])
    parser.add_argument("--probes", nargs="+", type=int, default=[params.MEASURES_PROBES, 4 * params.MEASURES_PROBES])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_mnist("embedded", None, verbose=False)
    x, y = _subset(data.x_train, data.y_train, params.MEASURES_SUBSET, params.MEASURES_SEED)
    for run in args.runs:
        run_dir = f"{args.results}/{run}"
        config = runs.load_json(f"{run_dir}/{runs.CONFIG}")
        model = training.build_model(config["seed"], "cpu", config["model"]["activation"])
        model.load_state_dict(runs.load_torch(f"{run_dir}/{runs.MODEL}"))
        for n in args.probes:
            h = measures.hutchinson(model, F.cross_entropy, x, y, n_probes=n, seed=params.MEASURES_SEED)
            print(f"{run}: {n:4d} probes  tr(H) {h['trace']:.4g} ± {h['trace_se']:.2g}   "
                  f"tr(Diag(H)^1/2) {h['sqrt_diag_trace']:.4g} ± {h['sqrt_diag_trace_se']:.2g}", flush=True)


if __name__ == "__main__":
    main()
