"""Redo a complete run's final-weights analysis from its saved model.pt, without retraining.

    python -m minima reanalyse results/fashion-mnist/adagrad/seed0 [more run folders] [--data-dir data]

For when the analysis code changes after a run finished (e.g. the missed-eigenvalue
guard of `curvature.top_eigenpairs`): the run's own config (Hessian batch, seed,
tolerances) and data, the current code. curvature.json, density.npz and
landscape.npz are computed into a staging folder inside the run folder; then,
under the run's lock, the ``done`` marker goes, the three files replace the old
ones, reanalysis.json records what was redone (provenance, and the old and new
top eigenvalues), and ``done`` comes back last. Training's own files (history,
tracking, model.pt, final.json) are untouched. An interrupted reanalysis leaves
the old files in place (or, in the instant between the marker and the renames, a
folder without ``done``, which a second reanalysis completes). Its full-data
solve's products stay journaled in the staging folder (``curvature.HvpJournal``),
so a second reanalysis replays them instead of repeating up to an hour of work.
"""

import os
import shutil
import time
from pathlib import Path

import torch

import params
from minima import analysis, runs, training
from minima.config import device_info
from minima.data import load_mnist
from minima.lock import RunLock
from minima.runs import StudyError

STAGING = ".reanalyse"
RECORD = "reanalysis.json"
REDONE = (runs.CURVATURE, runs.DENSITY, runs.LANDSCAPE)


def _check(run_dir: Path) -> dict:
    """The run's config, or one StudyError saying why this folder cannot be reanalysed."""
    if not run_dir.is_dir():
        raise StudyError(f"{run_dir} is not a folder; give run folders such as results/sgd/seed0")
    missing = [f for f in (runs.CONFIG, runs.FINAL, runs.MODEL) if not (run_dir / f).is_file()]
    interrupted = (run_dir / STAGING).is_dir()  # a reanalysis stopped between the marker and the renames
    if missing or not (runs.is_done(run_dir) or interrupted):
        raise StudyError(f"{run_dir} is not a complete run (missing: {', '.join(missing) or runs.DONE}); "
                         "reanalyse redoes finished runs only: finish it with python -m minima run")
    config = runs.load_json(run_dir / runs.CONFIG)
    if runs.load_json(run_dir / runs.FINAL).get("status") != "ok" or not config.get("final_analysis", True):
        raise StudyError(f"{run_dir} has no final analysis to redo (diverged, or a sweep run without one)")
    return config


def _summary(curv: dict) -> dict:
    """What a reanalysis replaces, kept beside it: the values and what they cost (time, HVPs)."""
    top = curv.get("full_data_top") or {}
    return {"top_eigenvalues": curv.get("top_eigenvalues"), "converged": curv.get("converged"),
            "time_s": curv.get("time_s"), "full_data_top": top.get("eigenvalues"),
            "full_data_n_hvps": top.get("n_hvps"), "full_data_time_s": top.get("time_s")}


def _stage(run_dir: Path) -> Path:
    """The staging folder, emptied but for a stopped reanalysis's HVP journal, which this one replays (a journal
    keys each product by its operator and vector: one that no longer matches is never read back)."""
    staging = run_dir / STAGING
    staging.mkdir(exist_ok=True)
    for entry in staging.iterdir():
        if entry.name != runs.HVP_JOURNAL:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    return staging


def reanalyse(run_dir, data_dir=None, device="cpu", progress=print) -> dict:
    """Recompute one complete run's final analysis in place; returns the reanalysis record."""
    run_dir = Path(run_dir)
    config = _check(run_dir)
    d = config["data"]
    data = load_mnist(d.get("source") or "embedded", data_dir or d.get("data_dir"), dataset=d.get("dataset", "mnist"),
                      train_size=d["train_size"], test_size=d["test_size"], validation_size=d["validation_size"],
                      device=device, verbose=False)
    recorded = {k: d.get(f"n_{k}", n) for k, n in data.sizes().items()}  # sizes are recorded since the first study
    if data.source != d.get("source", data.source) or data.sizes() != recorded:
        raise StudyError(f"{run_dir}: the data found ({data.source}, {data.sizes()}) is not the run's "
                         f"({d.get('source')}, {recorded}); pass --data-dir to the run's data")
    with RunLock(run_dir):
        model = training.build_model(config["seed"], device, config["model"]["activation"])
        model.load_state_dict(runs.load_torch(run_dir / runs.MODEL, map_location=device))
        staging = _stage(run_dir)
        started = time.perf_counter()
        old = runs.load_json(run_dir / runs.CURVATURE) if (run_dir / runs.CURVATURE).exists() else {}
        curv = analysis.final_curvature(model, data, config, staging, progress=progress)
        progress("loss landscapes")
        analysis.final_landscapes(model, data, config, curv["eigenvectors"], staging)
        record = {
            "redone": list(REDONE), "time_s": time.perf_counter() - started,
            "provenance": runs.provenance(device_info(torch.device(device))),
            "before": _summary(old), "after": _summary(curv) | {"guard": curv.get("guard")},
        }
        (run_dir / runs.DONE).unlink(missing_ok=True)
        for name in REDONE:
            os.replace(staging / name, run_dir / name)
        shutil.rmtree(staging / runs.HVP_JOURNAL, ignore_errors=True)
        staging.rmdir()
        runs.save_json(run_dir / RECORD, record)
        runs.mark_done(run_dir)  # last, as for a run
    return record


def cmd_reanalyse(args) -> int:
    # as many threads as `python -m minima run` gave the run, so that unchanged numbers come back bit for bit
    torch.set_num_threads(args.threads or params.TORCH_THREADS)
    for folder in args.runs:
        _check(Path(folder))  # every folder is checked before the first hour of work starts
    for folder in args.runs:
        print(f"[{folder}] reanalysing")
        r = reanalyse(folder, args.data_dir, progress=lambda m, f=folder: print(f"[{f}] {m}", flush=True))
        before, after = r["before"]["top_eigenvalues"], r["after"]["top_eigenvalues"]
        print(f"[{folder}] top eigenvalues {before} -> {after}; guard {r['after']['guard']}; "
              f"{r['time_s'] / 60:.1f} min")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("reanalyse", help="redo complete runs' final analysis from their model.pt (no retraining)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="complete run folders, e.g. results/sgd/seed0")
    p.add_argument("--data-dir", help="where the run's data lives (default: the data_dir its config records)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: params.TORCH_THREADS = 1, "
                                                "as the run had)")
    p.set_defaults(func=cmd_reanalyse)
