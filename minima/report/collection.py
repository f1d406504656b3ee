"""The report's input: every complete run of a study folder, as tidy DataFrames.

Reads only what run folders hold (JSON, CSV and .npz, through
``minima.runs``) and never imports the training loop. Optimizer names,
order and labels come from the registry (``minima.optimizers``); a run of an
optimizer the registry does not know is kept, under its own name, after
the known ones.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from minima import optimizers, schema
from minima.runs import StudyError, load_run, study_runs

ORDER = tuple(optimizers.names(everything=True))   # table rows and panels in this order; unknown names follow
LABELS = optimizers.labels()

# The original study's numbers (its README and notebooks): full MNIST, 60k train / 10k test, one seed.
ORIGINAL_ACCURACY = {"sgd": (0.9989, 0.9893), "adam": (0.9996, 0.9895), "adagrad": (0.9999, 0.9837),
                     "adahessian": (0.9999, 0.9910)}  # (train, test), their Table I
ORIGINAL_RATIO_MEDIAN = {"sgd": 2.94, "adam": 1.55, "adagrad": 1.49, "adahessian": 1.20}  # last 100 steps
ORIGINAL_FINAL_EIGENVALUES = {"sgd": (0.6189, 0.2001), "adahessian": (0.0523, 0.0451)}  # PyHessian, 100 samples


def _fail(message):
    raise StudyError(message)


def optimizer_sort_key(name):
    return (ORDER.index(name), "") if name in ORDER else (len(ORDER), name)


def optimizers_in(frame) -> list[str]:
    return sorted(frame["optimizer"].unique(), key=optimizer_sort_key) if len(frame) else []


def seed_count(frame, opt) -> int:
    return frame[frame.optimizer == opt].seed.nunique()


# ---------------------------------------------------------------------------- collecting runs

def _all_true(value) -> bool:
    return bool(np.all(value)) if value is not None else False


def _run_row(run_dir, run) -> dict:
    """One run's scalars: config, final accuracy, curvature at the final weights, spectrum summary."""
    cfg, final, nan = run["config"], run["final"], float("nan")
    data = cfg.get("data", {})
    row = {"optimizer": cfg["optimizer"], "seed": int(cfg["seed"]), "status": final["status"],
           "run_dir": str(run_dir), "epochs": cfg.get("epochs"), "epochs_completed": final.get("epochs_completed"),
           "lr": cfg.get("hyperparameters", {}).get("lr"), "batch_size": cfg.get("batch_size"),
           "smoke": bool(cfg.get("smoke", False)), "data_source": data.get("source"),
           "dataset": data.get("dataset", "mnist"),
           "n_train": data.get("n_train"), "n_test": data.get("n_test")}
    for key in schema.FINAL.keys("train_accuracy", "test_accuracy", "train_loss", "test_loss"):
        row[key] = final.get(key, nan)
    curv, c = run.get("curvature"), schema.CURVATURE.key  # keys read through the schema: a rename fails here
    if curv:
        ev, res = list(curv[c("top_eigenvalues")]) + [nan], list(curv[c("residuals")]) + [nan]
        ph = curv.get(c("pyhessian"), {})
        ph_ev, ph_res = list(ph.get("eigenvalues", [])) + [nan, nan], list(ph.get("residuals", [])) + [nan, nan]
        row.update(lambda1=ev[0], lambda2=ev[1], residual1=res[0], residual2=res[1],
                   converged=_all_true(curv.get(c("converged"))), gap=curv.get(c("gap"), nan),
                   ratio=curv.get(c("ratio"), nan), trace=curv[c("trace")]["mean"],
                   trace_stderr=curv["trace"]["stderr"],
                   trace_samples=curv["trace"]["n_samples"], hessian_batch_size=curv.get(c("hessian_batch_size")),
                   pyhessian_lambda1=ph_ev[0], pyhessian_lambda2=ph_ev[1], pyhessian_residual1=ph_res[0],
                   pyhessian_residual2=ph_res[1], pyhessian_converged=_all_true(ph.get("converged")),
                   analysis_s=curv.get(c("time_s"), nan))  # the final analysis's wall time
    hist = run.get("history")
    if hist is not None and "epoch_time_s" in hist:
        row["epochs_s"] = float(hist["epoch_time_s"].sum())  # training and per-epoch evaluation, trackers included
    spec = run.get("spectrum")
    if spec is not None and len(spec):
        row.update(spectrum_steps=len(spec), median_ratio=spec["ratio"].median(), median_gap=spec["gap"].median(),
                   steps_ratio_below_1=int((spec["ratio"] < 1).sum()),
                   steps_unconverged=int((~spec["converged"].astype(bool)).sum()),
                   spectrum_max_residual=float(np.nanmax(spec[["residual1", "residual2"]].to_numpy())))
    top, t = (curv or {}).get(c("full_data_top")), schema.FULL_DATA_TOP.key
    if top:
        row.update(n_outliers=top[t("n_outliers")], full_lambda1=top[t("eigenvalues")][0],
                   full_data_converged=bool(top["converged"]), full_data_k=len(top["eigenvalues"]),
                   full_data_n_samples=top.get("n_samples"), full_data_n_hvps=top.get("n_hvps"),
                   full_data_n_hvps_float64=top.get("n_hvps_float64"), full_data_time_s=top.get("time_s"))
    if curv:
        row["peak_rss_mib"] = curv.get("peak_rss_mib")
    land = run.get("landscape")
    if land is not None:  # the loss rise one unit from the minimum along the filter-normalised random direction
        a, line = land["alphas"], land["random_1d"]
        row["random_rise_at_one"] = float(np.mean([np.interp(-1.0, a, line), np.interp(1.0, a, line)])
                                          - np.interp(0.0, a, line))
    certified = [(curv or {}).get("certified_in")] + (list(spec["certified_in"].unique())
                                                      if spec is not None and "certified_in" in spec else [])
    row["certified_in"] = ", ".join(sorted({str(c) for c in certified if isinstance(c, str)})) or "float32 (old)"
    return row


# per-run numbers that only `make facts` quotes (the analysis's cost, the random-direction rise), left out of runs.csv
FACTS_ONLY = ("full_data_k", "full_data_n_samples", "full_data_n_hvps", "full_data_n_hvps_float64", "full_data_time_s",
              "peak_rss_mib", "random_rise_at_one")

KEY = ["optimizer", "seed"]
EMPTY = {  # the columns of each frame when no run contributes a row, so that filters and plots still work
    "history": KEY + ["epoch", "step", "grad_norm_full", "grad_norm_last_batch"],
    "spectrum": KEY + ["epoch", "step", "lambda1", "lambda2", "gap", "ratio", "residual1", "residual2", "converged"],
    "sharpness": KEY + ["epoch", "step", "lambda1", "residual1", "converged"],
    "per_class": KEY + ["digit", "accuracy"],
    "confusion": KEY + ["true", "predicted", "count"],
    "sensitivity": KEY + ["batch", "n_samples", "lambda1", "lambda2", "residual1", "residual2", "trace",
                          "trace_samples"],
    "tracking": KEY + ["epoch", "step", "lambda1", "precond_lambda1", "threshold", "precond_ratio",
                       "overlap_hessian_batch", "overlap_last_batch", "k"],
    "equal_loss": KEY + ["loss_threshold", "epoch", "step", "train_loss", "lambda1", "precond_lambda1", "threshold",
                         "trace", "trace_stderr"],
    "outliers": KEY + ["i", "eigenvalue", "n_samples"],
}


def collect(results_dir) -> dict:
    """Every complete run under ``results_dir`` as tidy DataFrames.

    Keys: ``runs`` (one row per complete run, diverged ones included with
    ``status="diverged"``), ``per_class``, ``confusion``, ``sensitivity`` (one
    row per run and Hessian batch), ``history``, ``spectrum`` and ``sharpness``
    (the per-epoch / per-step CSVs stacked, with optimizer and seed), and
    ``skipped`` (folders left out, with the reason). Folders without ``done``
    are skipped with a printed note. Raises StudyError if nothing is complete.
    """
    root = Path(results_dir)
    if not root.is_dir():
        _fail(f"results folder {root} does not exist; run the study first (python -m minima run)")
    complete, incomplete = study_runs(root)
    skipped = [(str(d), "no done file: incomplete or still running") for d in incomplete]
    rows, per_class, confusion, sensitivity = [], [], [], []
    stacked = {"history": [], "spectrum": [], "sharpness": [], "tracking": [], "equal_loss": []}
    outliers = []
    for run_dir in complete:
        run = load_run(run_dir)
        if "config" not in run or "final" not in run:
            skipped.append((str(run_dir), "done but config.json or final.json is missing"))
            continue
        row = _run_row(run_dir, run)
        key = {"optimizer": row["optimizer"], "seed": row["seed"]}
        rows.append(row)
        final = run["final"]
        if row["status"] == "ok":
            per_class += [dict(key, digit=c, accuracy=a) for c, a in enumerate(final["test_per_class_accuracy"])]
            confusion += [dict(key, true=t, predicted=p, count=n)
                          for t, line in enumerate(final["test_confusion_matrix"]) for p, n in enumerate(line)]
        for item in run.get("curvature", {}).get("batch_sensitivity", []):
            sensitivity.append(dict(key, **{**item, "batch": str(item["batch"])}))
        top = (run.get("curvature") or {}).get("full_data_top")
        if top:
            outliers += [dict(key, i=i + 1, eigenvalue=v, n_samples=top["n_samples"])
                         for i, v in enumerate(top["eigenvalues"])]
        for name, parts in stacked.items():
            if name in run:
                parts.append(run[name].assign(**key))
    for path, reason in skipped:
        print(f"note: skipping {path} ({reason})")
    if not rows:
        _fail(f"no complete runs under {root} (a run is complete once its folder holds 'done'); "
              f"run the study first: python -m minima run")
    runs = pd.DataFrame(rows)
    runs = runs.iloc[sorted(range(len(runs)), key=lambda i: (optimizer_sort_key(runs.optimizer[i]), runs.seed[i]))]
    frames = {"runs": runs.reset_index(drop=True),
              "per_class": pd.DataFrame(per_class, columns=EMPTY["per_class"] if not per_class else None),
              "confusion": pd.DataFrame(confusion, columns=EMPTY["confusion"] if not confusion else None),
              "sensitivity": pd.DataFrame(sensitivity, columns=EMPTY["sensitivity"] if not sensitivity else None),
              "outliers": pd.DataFrame(outliers, columns=EMPTY["outliers"] if not outliers else None),
              "skipped": pd.DataFrame(skipped, columns=["run_dir", "reason"])}
    for name, parts in stacked.items():
        frames[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=EMPTY[name])
    return frames


def ok_runs(frames) -> pd.DataFrame:
    return frames["runs"][frames["runs"].status == "ok"]


def only_ok(frame, frames) -> pd.DataFrame:
    """The rows of ``frame`` that belong to runs that did not diverge (figures skip diverged runs)."""
    keep = ok_runs(frames)[["optimizer", "seed"]]
    return frame.merge(keep, on=KEY) if len(frame) else frame
