"""Projected SGD (minima/projected.py) on the embedded digits: λ against the training loss, and what it costs.

The step uses g̃ = λ V Vᵀ g + (1 − λ)(I − V Vᵀ) g, V the top-k Hessian eigenvectors (k and the refresh
interval R from params.PROJECTED). Song, Ahn and Yun (ICLR 2025) report that λ = 1 (only the dominant
span) stops decreasing the training loss and λ = 0 (the dominant span removed) trains as well as SGD;
λ = 0.5 is SGD at half the step. The original study's settings: SGD at lr 0.1, batch 100; the embedded
4,000 training digits give 40 steps per epoch.

Regimes (the projection is switched on after ``start_step`` and kept to the end):
  early  21 epochs, switched on after epoch 1 (step 40): 20 epochs projected;
  final  150 epochs, switched on after epoch 135 (step 5,400): the last 10 % projected.
Per regime, λ in --lams, each seed in --seeds, plus plain SGD at lr 0.1 (the same epochs) and at lr 0.05.
λ = 0.5 with a start step > 0 is SGD whose lr drops from 0.1 to 0.05 at the start step, not SGD at 0.05
throughout (the tests check λ = 0.5 against SGD at half the lr with the projection on from step 0).

Every run is an ordinary run folder, executed by its notebook (``minima.runner.execute_run``), so it
holds config.json (hyperparameters lam, k, refresh_every, start_step; provenance), the tracking, the
final analysis, projection.csv (one row per refresh: HVPs, certificate, wall and CPU seconds, λ1..λk) and ``done``:

    <results-root>/<regime>/lam<λ>/projected/seed<k>/
    <results-root>/<regime>/sgd-lr0.1/sgd/seed<k>/      <results-root>/<regime>/sgd-lr0.05/sgd/seed<k>/

--refresh-sweep answers the cost question instead: R in --refresh-every at one λ (--sweep-lam), 1 epoch
plain then 2 projected, against plain SGD over the same 3 epochs, one seed, trained by
``minima.training.train`` with no instruments so that the time per step is the training's alone
(folders <results-root>/refresh/R<R>/projected/seed0/ and .../refresh/sgd/sgd/seed0/: config,
history, final, projection.csv, done; no final analysis). It prints HVPs and seconds per step.

--train-only runs the experiment's runs the sweep's way (training alone, no instruments, no final
analysis), into the same folders: the question, training loss against λ, needs only history.csv,
and the final analysis (above all the full training set's top-20 eigenvalues, ~4 s per float64 HVP
over 4,000 digits) costs more than the training itself. A folder finished either way counts as done.

--smoke shrinks everything to seconds (400 training digits, 4 steps per epoch): early 1 + 1 epochs,
final 3 + 1, the sweep 1 + 2. Finished runs are skipped unless --force; --plan lists the runs and
stops; a summary of whatever has finished is printed at the end (--summary alone prints only that).

    python benchmarks/projected_experiment.py [--regimes early final] [--lams 0 0.25 0.5 0.75 1]
        [--seeds 0 1 2] [--smoke] [--results-root results/projected] [--refresh-sweep [--sweep-lam 0]
        [--refresh-every 1 10 50]] [--train-only] [--force] [--plan] [--summary]
"""

import argparse
import math
import sys
import time
from pathlib import Path

import pandas as pd

import minima  # noqa: F401 - puts the repository root (params, helpers) on sys.path
from helpers import load_mnist, mark_done, open_run, pick_device
from minima import projected, runner, runs, training
from minima.cli import seed_arg
from params import SMOKE

LR, BATCH = 0.1, 100                                   # the original study's SGD
REGIMES = {"early": (1, 21), "final": (135, 150)}      # (epochs before the switch, epochs in all)
SMOKE_REGIMES = {"early": (1, 2), "final": (3, 4)}
SWEEP_EPOCHS = (1, 3)                                  # the refresh sweep: 1 plain epoch, then 2 projected


def steps_per_epoch(smoke) -> int:
    """Steps per epoch at batch 100 on the embedded training digits (the smoke subset with --smoke)."""
    sizes = dict(train_size=SMOKE["train_size"], test_size=SMOKE["test_size"]) if smoke else {}
    data = load_mnist("embedded", verbose=False, **sizes)
    return math.ceil(len(data.y_train) / BATCH)


def _config(optimizer, seed, results_dir, smoke, epochs, **overrides):
    return runner.run_config(optimizer, seed, smoke=smoke, epochs=epochs, batch_size=BATCH, data_source="embedded",
                             overrides=overrides, results_dir=results_dir)


def experiment_configs(args, per_epoch) -> list[dict]:
    configs = []
    for regime in args.regimes:
        before, epochs = (SMOKE_REGIMES if args.smoke else REGIMES)[regime]
        root = Path(args.results_root) / regime
        for seed in args.seeds:
            for lam in args.lams:
                configs.append(_config("projected", seed, root / f"lam{lam:g}", args.smoke, epochs, lr=LR, lam=lam,
                                       start_step=before * per_epoch))
            for lr in (LR, LR / 2):
                configs.append(_config("sgd", seed, root / f"sgd-lr{lr:g}", args.smoke, epochs, lr=lr))
    return configs


def sweep_configs(args, per_epoch) -> list[dict]:
    before, epochs = SWEEP_EPOCHS
    root = Path(args.results_root) / "refresh"
    configs = [_config("projected", args.seeds[0], root / f"R{r}", args.smoke, epochs, lr=LR, lam=args.sweep_lam,
                       refresh_every=r, start_step=before * per_epoch) for r in args.refresh_every]
    return configs + [_config("sgd", args.seeds[0], root / "sgd", args.smoke, epochs, lr=LR)]


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


def summarize(configs, per_epoch) -> None:
    """Per setting: seeds done, training loss at the switch and at the end, test accuracy, refresh cost."""
    rows = {}
    for config in configs:
        run = _run(config)
        if run is None:
            continue
        folder = Path(config["results_dir"])
        setting, regime = f"{folder.parent.name}/{folder.name}", folder.parent.name
        start_epoch = (SMOKE_REGIMES if config["smoke"] else REGIMES)[regime][0]
        hist, refreshes = run["history"], run["refreshes"]
        at_switch = hist.loc[hist.epoch == start_epoch, "train_loss"]
        rows.setdefault(setting, []).append(dict(
            loss_at_switch=float(at_switch.iloc[0]) if len(at_switch) else math.nan,
            final_train_loss=float(hist.train_loss.iloc[-1]), final_test_accuracy=float(hist.test_accuracy.iloc[-1]),
            status=run["final"]["status"], refreshes=len(refreshes),
            hvps_per_refresh=float(refreshes.n_hvps.mean()) if len(refreshes) else math.nan,
            all_certified=bool(refreshes.converged.all()) if len(refreshes) else True))
    if not rows:
        print("no finished runs to summarise")
        return
    table = pd.DataFrame([dict(setting=s, seeds=len(r), **{
        k: (pd.Series([x[k] for x in r]).mean() if k not in ("status", "all_certified")
            else ",".join(sorted({str(x[k]) for x in r}))) for k in r[0]}) for s, r in rows.items()])
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


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
    p.add_argument("--regimes", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    p.add_argument("--lams", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--seeds", nargs="+", type=seed_arg, default=[0, 1, 2])
    p.add_argument("--smoke", action="store_true", help="seconds-long runs on 400 digits")
    p.add_argument("--results-root", default=str(runs.REPO_ROOT / "results" / "projected"))
    p.add_argument("--refresh-sweep", action="store_true", help="the cost of a refresh at R in --refresh-every")
    p.add_argument("--refresh-every", nargs="+", type=int, default=[1, 10, 50], help="R values of the sweep")
    p.add_argument("--sweep-lam", type=float, default=0.0, help="the sweep's lambda")
    p.add_argument("--train-only", action="store_true", help="training alone: no instruments, no final analysis")
    p.add_argument("--force", action="store_true", help="redo finished runs")
    p.add_argument("--plan", action="store_true", help="list the runs, run nothing")
    p.add_argument("--summary", action="store_true", help="only summarise the finished runs")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        per_epoch = steps_per_epoch(args.smoke)
        configs = (sweep_configs if args.refresh_sweep else experiment_configs)(args, per_epoch)
    except runs.StudyError as e:   # a λ out of [0, 1], an R < 1: one line, before anything runs
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.plan:
        for config in configs:
            print(f"{_label(config)} -> {runs.run_dir_for(config)}")
        return 0
    failures = 0
    if not args.summary:
        if args.refresh_sweep or args.train_only:
            failures = execute(configs, args.force, train_only)
        else:
            failures = execute(configs, args.force,
                               lambda config, force: runner.execute_run(config, force=force, progress=False))
    (summarize_sweep if args.refresh_sweep else summarize)(configs, per_epoch)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
