"""The flatness study's population: which train-only runs it needs, where they go, and the ``flatness`` verb.

Jiang et al. 2020 ask whether a measure predicts generalization over many networks trained on a grid of
hyperparameters, each compared at equal training loss. Here the grid is every study optimizer x three learning
rates (the sweep's selection and its two neighbours on the sweep's grid) x ``params.FLATNESS_BATCH_SIZES`` x
``params.FLATNESS_SEEDS``, at the study's epoch budget, trained only (no trackers, no final analysis: the measures
come later, on the saved weights). Each run also keeps its weights at the first epoch end whose full training
cross-entropy is below ``params.STOP_LOSS`` (``model_at_stop.pt``, ``stop.json``); a run that never gets
there says so in its ``stop.json``.

A run goes to ``<results>/flatness/bs<batch>/<optimizer>-lr<lr>/seed<k>/`` (``runs.run_dir_for``), so that
``python -m minima flatness`` resumes and skips complete runs like ``run`` does.
"""

from pathlib import Path

import params
from minima import optimizers
from minima.cli import add_run_options, seed_arg
from minima.config import make_config
from minima.runner import run_configs
from minima.runs import StudyError

EXPERIMENT = "flatness"


def learning_rates(summary_csv) -> dict[str, list[float]]:
    """{optimizer: [the grid neighbour below, the selected lr, the one above]} from a collected sweep's summary
    (fewer where the selection sits at an edge of the grid)."""
    import pandas as pd

    path = Path(summary_csv)
    if not path.exists():
        raise StudyError(f"no collected sweep at {path}; run make sweep first (or pass --sweep-summary)")
    table = pd.read_csv(path)
    out = {}
    for opt, rows in table.groupby("optimizer", sort=False):
        grid = sorted(rows.lr)
        best = rows[rows.best.astype(bool)].lr
        if len(best) != 1:
            raise StudyError(f"the sweep at {path} selected {len(best)} learning rates for {opt}, not one")
        i = grid.index(float(best.iloc[0]))
        out[opt] = grid[max(0, i - 1):i + 2]
    return out


def plan(lrs: dict, *, batch_sizes=None, seeds=None, smoke=False, results_dir=None, data_source=None,
         data_dir=None, stop_loss=None) -> list[dict]:
    """The validated configs of the population, seed by seed (a stopped study has whole seeds)."""
    names = [n for n in optimizers.names() if n in lrs]
    missing = [n for n in optimizers.names() if n not in lrs]
    if missing:
        raise StudyError(f"no learning rates for {', '.join(missing)}; the study needs every optimizer of "
                         f"{', '.join(optimizers.names())}")
    batch_sizes = list(params.FLATNESS_BATCH_SIZES if batch_sizes is None else batch_sizes)
    seeds = list(params.FLATNESS_SEEDS if seeds is None else seeds)
    stop_loss = params.STOP_LOSS if stop_loss is None else stop_loss
    return [make_config(opt, seed, smoke=smoke, batch_size=batch, overrides={"lr": lr}, results_dir=results_dir,
                        data_source=data_source, data_dir=data_dir, tracking=False, final_analysis=False,
                        experiment=f"{EXPERIMENT}/bs{batch}", stop_loss=stop_loss)
            for seed in seeds for batch in batch_sizes for opt in names for lr in lrs[opt]]


def cmd_flatness(args) -> int:
    summary = args.sweep_summary or Path(args.sweeps_dir) / "sweeps" / "tuning" / "summary.csv"
    lrs = learning_rates(summary)
    configs = plan(lrs, batch_sizes=args.batch_sizes, seeds=args.seeds, smoke=args.smoke,
                   results_dir=args.results_dir, data_source=args.data_source, data_dir=args.data_dir)
    print(f"the flatness study's population: {len(configs)} train-only runs; learning rates "
          + "; ".join(f"{o} {', '.join(f'{v:g}' for v in vs)}" for o, vs in lrs.items()))
    return run_configs(configs, jobs=args.jobs, threads=args.threads, force=args.force, quiet=args.quiet)


def add_parser(sub, default_results, default_sweeps) -> None:
    p = sub.add_parser("flatness", help="the flatness study's train-only population (minima/flatness_study.py)")
    p.add_argument("--batch-sizes", nargs="+", type=int, help="default: params.FLATNESS_BATCH_SIZES")
    p.add_argument("--seeds", nargs="+", type=seed_arg, help="default: params.FLATNESS_SEEDS")
    p.add_argument("--sweeps-dir", default=default_sweeps, help="the folder holding sweeps/tuning (default: results/)")
    p.add_argument("--sweep-summary", help="a collected sweep's summary.csv (default: <sweeps-dir>/sweeps/tuning)")
    add_run_options(p, default_results)
    p.set_defaults(func=cmd_flatness)
