"""What the projected update costs (minima/projected.py): HVPs and seconds per step at each refresh interval R.

The step uses g̃ = λ V Vᵀ g + (1 − λ)(I − V Vᵀ) g, V the top-k Hessian eigenvectors, recomputed every R
steps by the certified solver, warm-started from the last V. This benchmark trains one seed of the
original's SGD (lr 0.1, batch 100, the embedded 4,000 digits: 40 steps per epoch) for 1 plain epoch and 2
projected ones at each R in --refresh-every, and plain SGD over the same 3 epochs, one after the other in
one process, with no instruments, so that the time per step is the training's alone. It prints per R: the
refreshes, HVPs per refresh and per step, CPU seconds per HVP, and seconds per step against plain SGD's.

The experiment itself (every λ, both regimes, 3 seeds) is ``python -m minima projected``
(minima/projected_study.py); its report tables give the same cost from the experiment's own runs.

    python benchmarks/bench_projected.py [--refresh-every 1 10 50] [--lam 0] [--seed 0] [--smoke]
        [--results-root runs/bench_projected] [--force]
"""

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import minima  # noqa: F401 - puts the repository root (params, helpers) on sys.path
import params
from helpers import load_mnist, mark_done, open_run, pick_device
from minima import projected, runner, runs, training
from minima.cli import seed_arg
from minima.config import make_config
from minima.projected_study import steps_per_epoch

LR, BATCH = 0.1, 100                                   # the original study's SGD
SWEEP_EPOCHS = (1, 3)                                  # 1 plain epoch, then 2 projected
SMOKE_SWEEP_EPOCHS = (1, 2)


def _config(optimizer, seed, results_dir, smoke, epochs, **overrides):
    return make_config(optimizer, seed, smoke=smoke, epochs=epochs, batch_size=BATCH, data_source="embedded",
                             overrides=overrides, results_dir=results_dir)


def sweep_configs(args, per_epoch) -> list[dict]:
    before, epochs = SMOKE_SWEEP_EPOCHS if args.smoke else SWEEP_EPOCHS
    root = Path(args.results_root)
    configs = [_config("projected", args.seed, root / f"R{r}", args.smoke, epochs, lr=LR, lam=args.lam,
                       refresh_every=r, start_step=before * per_epoch) for r in args.refresh_every]
    return configs + [_config("sgd", args.seed, root / "sgd", args.smoke, epochs, lr=LR)]


def _label(config) -> str:
    h = config["hyperparameters"]
    extra = f" lam {h['lam']:g} R {h['refresh_every']} start {h['start_step']}" if "lam" in h else ""
    return f"{config['optimizer']} lr {h['lr']:g}{extra} seed {config['seed']}, {config['epochs']} epochs"


def train_only(config, force) -> str:
    """One run of the refresh sweep: training alone into an ordinary run folder (no notebook, no instruments)."""
    d = config["data"]
    data = load_mnist("embedded", train_size=d["train_size"], test_size=d["test_size"], verbose=False)
    device = pick_device()
    run_dir, complete = open_run(config, data, device, force=force)
    if complete:
        return "skipped"
    try:
        model = training.build_model(config["seed"], device, config["model"]["activation"])
        outcome = training.train(model, config, data, run_dir, progress=False)
        final = training.finish_training(model, data, outcome, run_dir)
        mark_done(run_dir)
    finally:
        runs.RunLock(run_dir).release()
    return "diverged" if final["status"] == "diverged" else "done"


def execute(configs, force, run_one) -> int:
    runner.preflight(configs)
    failures = 0
    for config in configs:
        t0 = time.time()
        outcome = run_one(config, force)
        failures += outcome.startswith("failed")
        print(f"[{_label(config)}] {outcome} ({time.time() - t0:.0f} s) -> {runs.run_dir_for(config)}", flush=True)
    return failures


# ---------------------------------------------------------------------------- summaries

def _run(config) -> dict | None:
    run_dir = runs.run_dir_for(config)
    if not runs.is_done(run_dir):
        return None
    history, final = pd.read_csv(run_dir / runs.HISTORY), runs.load_json(run_dir / runs.FINAL)
    path = run_dir / projected.PROJECTION
    refreshes = pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else pd.DataFrame()
    return dict(history=history, final=final, refreshes=refreshes)


def summarize_sweep(configs, per_epoch) -> None:
    """HVPs and seconds per projected step at each R, against plain SGD over the same epochs.

    Wall seconds on a shared machine count the neighbours too; the CPU seconds per HVP do not (much).
    """
    before, _ = SWEEP_EPOCHS
    out, sgd_step = [], None
    for config in configs:
        run = _run(config)
        if run is None:
            continue
        hist = run["history"]
        after = hist[hist.epoch > before]
        per_step = float(after.train_time_s.sum()) / (len(after) * per_epoch)
        if config["optimizer"] == "sgd":
            sgd_step = per_step
            out.append(dict(setting="plain SGD", hvps_per_step=0.0, refresh_s_per_step=0.0, train_s_per_step=per_step))
            continue
        r, steps = run["refreshes"], len(after) * per_epoch
        out.append(dict(setting=f"R = {config['hyperparameters']['refresh_every']}", refreshes=len(r),
                        hvps_per_refresh=float(r.n_hvps.mean()), s_per_refresh=float(r.wall_s.mean()),
                        cpu_s_per_hvp=float(r.cpu_s.sum() / r.n_hvps.sum()),
                        hvps_per_step=float(r.n_hvps.sum()) / steps, refresh_s_per_step=float(r.wall_s.sum()) / steps,
                        train_s_per_step=per_step, all_certified=bool(r.converged.all())))
    if not out:
        print("no finished sweep runs to summarise")
        return
    table = pd.DataFrame(out)
    if sgd_step:
        table["x_plain_sgd"] = table.train_s_per_step / sgd_step
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


# ---------------------------------------------------------------------------- command line

def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--refresh-every", nargs="+", type=int, default=[1, 10, 50], help="the R values")
    p.add_argument("--lam", type=float, default=0.0, help="the projection's lambda")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--smoke", action="store_true", help="seconds-long runs on 400 digits")
    p.add_argument("--results-root", default=str(runs.REPO_ROOT / params.RUNS_DIR / "bench_projected"))
    p.add_argument("--force", action="store_true", help="redo finished runs")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(params.TORCH_THREADS)   # as the study's runs: one thread
    per_epoch = steps_per_epoch("embedded", smoke=args.smoke, batch_size=BATCH)
    try:
        configs = sweep_configs(args, per_epoch)
    except runs.StudyError as e:   # a λ out of [0, 1], an R < 1: one line, before anything runs
        print(f"error: {e}", file=sys.stderr)
        return 2
    failures = execute(configs, args.force, train_only)
    summarize_sweep(configs, per_epoch)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
