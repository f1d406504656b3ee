"""What the Hessian tracking adds to a first-order run's training time, measured side by side.

One SGD run of the study (embedded data, batch 100, the study's epochs) is trained
twice per repeat, in alternating order: with every tracker on (the spectrum over
the last steps, sharpness, the instruments: preconditioned sharpness, top-k share,
equal-loss curvature) and with tracking off. Training time is the sum of the
epochs' ``train_time_s`` (the steps and the callbacks, not the per-epoch
evaluation, which is the same in both). Target (issue "new instruments"): all
tracking together adds at most 25 % on 2 cores.

    python benchmarks/bench_tracking.py [--epochs 150] [--repeats 1] [--optimizer sgd]
"""

import argparse
import os
import platform
import statistics
import time

import torch

import minima  # noqa: F401 - puts the repository root (params, helpers) on sys.path

# isort: split
import helpers
from minima import analysis, training


def train_seconds(config, data, tracked: bool) -> tuple[float, str, str]:
    callbacks = analysis.trackers(data, config) if tracked else []
    model = training.build_model(config["seed"])
    out = training.train(model, config, data, callback=callbacks, progress=False)
    hvps = ""
    if tracked:
        spectrum, instruments = callbacks[0], callbacks[1]
        n = sum(r["n_hvps"] for r in spectrum.spectrum + spectrum.sharpness + instruments.rows)
        hvps = f"{n} HVPs in the trackers"
    return sum(row["train_time_s"] for row in out["history"]), training.state_checksum(model), hvps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=None, help="default: the study's (params.EPOCHS)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--optimizer", default="sgd")
    args = ap.parse_args()
    config = helpers.make_config(args.optimizer, 0, epochs=args.epochs, data_source="embedded")
    data = helpers.load_mnist("embedded", verbose=False)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"with {torch.get_num_threads()} threads; {args.optimizer}, {config['epochs']} epochs of "
          f"{len(data.y_train)} images, batch {config['batch_size']}")
    ratios = []
    for repeat in range(args.repeats):
        order = (True, False) if repeat % 2 == 0 else (False, True)
        seconds, sums = {}, {}
        for tracked in order:
            t0 = time.perf_counter()
            seconds[tracked], sums[tracked], hvps = train_seconds(config, data, tracked)
            print(f"  repeat {repeat + 1}, tracking {'on ' if tracked else 'off'}: training {seconds[tracked]:.1f} s "
                  f"(run {time.perf_counter() - t0:.1f} s) {hvps}")
        assert sums[True] == sums[False], "tracking changed the weights"
        ratios.append(seconds[True] / seconds[False])
    ratio = statistics.median(ratios)
    print(f"training time with all tracking / without: {ratio:.2f}x (median of {len(ratios)}), "
          f"+{100 * (ratio - 1):.0f} % (target <= +25 %: {'met' if ratio <= 1.25 else 'MISSED'}); "
          f"the weights are bit for bit the same")


if __name__ == "__main__":
    main()
