"""How a sweep should share the cores: two single-thread runs side by side, or one two-thread run at a time.

Each repeat trains the same pair of sweep-style runs (train only, tracking
off, 500 images held out) both ways, in alternating order:

- **side by side:** two processes at once, one torch thread each;
- **one at a time:** the same two runs in turn, two torch threads each.

It prints the wall time of each way for the pair (process start-up included,
as a sweep pays it) and their ratio; the median over repeats decides the
local launcher's default (``minima/sweeps/launch.py``). The runs' weights are
checked equal between the two ways only for the same thread count, since a
different thread count changes the order of floating-point sums.

    python benchmarks/bench_parallel.py [--epochs 20] [--repeats 3] [--optimizer sgd] [--dataset fashion-mnist]

``--dataset fashion-mnist`` asks the same at full size (60,000 training images, nothing held out), where
larger batches of work per step might favour two threads per run.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(optimizer, seed, epochs, dataset="mnist") -> None:
    """One run in this process: load, train, print the training seconds (the parent sets the thread count)."""
    sys.path.insert(0, str(ROOT))
    import helpers
    from minima import training

    source, held_out = ("embedded", 500) if dataset == "mnist" else ("auto", 0)
    config = helpers.make_config(optimizer, seed, epochs=epochs, data_source=source, tracking=False,
                                 final_analysis=False, validation_size=held_out, dataset=dataset)
    data = helpers.load_mnist(source, ROOT / "data", validation_size=held_out, dataset=dataset, verbose=False)
    model = training.build_model(seed)
    out = training.train(model, config, data, callback=[], progress=False)
    print(f"{sum(r['epoch_time_s'] for r in out['history']):.3f} {training.state_checksum(model)}")


def launch(threads, optimizer, seed, epochs, dataset) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen([sys.executable, __file__, "--worker", optimizer, str(seed), str(epochs), dataset],
                            env=env, stdout=subprocess.PIPE, text=True)


def pair(way, optimizer, epochs, dataset) -> float:
    """Wall seconds for seeds 0 and 1: ``side`` (two 1-thread processes at once) or ``turn`` (2 threads, in turn)."""
    t0 = time.perf_counter()
    if way == "side":
        procs = [launch(1, optimizer, seed, epochs, dataset) for seed in (0, 1)]
        outs = [p.communicate()[0] for p in procs]
    else:
        outs = [launch(2, optimizer, seed, epochs, dataset).communicate()[0] for seed in (0, 1)]
    wall = time.perf_counter() - t0
    epochs_s = [float(o.split()[0]) for o in outs]
    print(f"  {'two 1-thread runs side by side' if way == 'side' else 'two 2-thread runs in turn    '}: "
          f"{wall:6.1f} s for the pair (each run's epochs: {epochs_s[0]:.1f} s, {epochs_s[1]:.1f} s)", flush=True)
    return wall


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"),
                    help="mnist: the embedded digits; fashion-mnist: the full-size 60,000 images")
    args = ap.parse_args()
    images = "the embedded 3,500 training images (500 held out)" if args.dataset == "mnist" else \
        "Fashion-MNIST's 60,000 training images"
    print(f"{os.cpu_count()} cores; {args.optimizer}, {args.epochs} epochs of {images}, train only; two runs per "
          f"way, {args.repeats} repeats in alternating order")
    ratios = []
    for repeat in range(args.repeats):
        order = ("side", "turn") if repeat % 2 == 0 else ("turn", "side")
        wall = {way: pair(way, args.optimizer, args.epochs, args.dataset) for way in order}
        ratios.append(wall["side"] / wall["turn"])
        print(f"  repeat {repeat + 1}: side by side / in turn = {ratios[-1]:.2f}")
    median = statistics.median(ratios)
    print(f"median over {len(ratios)} repeats: side by side takes {median:.2f}x the wall time of one run at a time "
          f"with 2 threads -> {'side by side' if median < 1 else 'one at a time'} is faster")


if __name__ == "__main__":
    main()
