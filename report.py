"""The study's report: collect every complete run, write the tables, build the whole report.

Reads only what run folders hold (JSON, CSV and .npz, through ``plots.load_run``)
and imports no training code. ``build`` is what ``python runner.py report`` and
``make report`` call: the tables go to ``report/tables/`` (Markdown and LaTeX),
then ``notebooks/plotting_results.ipynb``, executed headless, draws
``report/figures/`` with the figure functions of ``report_figures.py``.
"""

import contextlib
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

import plots

REPO_ROOT = Path(__file__).resolve().parent
NOTEBOOK = REPO_ROOT / "notebooks" / "plotting_results.ipynb"
ORDER = ("sgd", "adam", "adagrad", "adahessian")  # table rows and panels in this order; unknown names follow
LABELS = {"sgd": "SGD", "adam": "Adam", "adagrad": "AdaGrad", "adahessian": "AdaHessian"}
FIGURES = ("grad_norms", "spectral_ratio_gap", "sharpness", "landscape_1d", "landscape_2d", "landscape_3d",
           "confusion", "spectral_density", "hessian_batch_sensitivity")

# The original study's numbers (REFERENCE.md): full MNIST, 60k train / 10k test, one seed.
ORIGINAL_ACCURACY = {"sgd": (0.9989, 0.9893), "adam": (0.9996, 0.9895), "adagrad": (0.9999, 0.9837),
                     "adahessian": (0.9999, 0.9910)}  # (train, test), their Table I
ORIGINAL_RATIO_MEDIAN = {"sgd": 2.94, "adam": 1.55, "adagrad": 1.49, "adahessian": 1.20}  # last 100 steps
ORIGINAL_FINAL_EIGENVALUES = {"sgd": (0.6189, 0.2001), "adahessian": (0.0523, 0.0451)}  # PyHessian, 100 samples


def _fail(message):
    import helpers  # only on this path: helpers pulls in torch, which the report otherwise never needs
    raise helpers.StudyError(message)


def optimizer_sort_key(name):
    return (ORDER.index(name), "") if name in ORDER else (len(ORDER), name)


def optimizers_in(frame) -> list[str]:
    return sorted(frame["optimizer"].unique(), key=optimizer_sort_key) if len(frame) else []


def seed_count(frame, opt) -> int:
    return frame[frame.optimizer == opt].seed.nunique()


# ---------------------------------------------------------------------------- collecting runs

def find_run_dirs(results_dir) -> tuple[list[Path], list[Path]]:
    """(complete, incomplete) folders ``<results_dir>/<optimizer>/seed<k>/``; ``sweeps/`` is not looked at."""
    complete, incomplete = [], []
    for opt_dir in sorted(Path(results_dir).iterdir()):
        if not opt_dir.is_dir() or opt_dir.name == "sweeps" or opt_dir.name.startswith("."):
            continue
        for run_dir in sorted(p for p in opt_dir.glob("seed*") if p.is_dir()):
            (complete if (run_dir / "done").exists() else incomplete).append(run_dir)
    return complete, incomplete


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
           "n_train": data.get("n_train"), "n_test": data.get("n_test")}
    for key in ("train_accuracy", "test_accuracy", "train_loss", "test_loss"):
        row[key] = final.get(key, nan)
    curv = run.get("curvature")
    if curv:
        ev, res = list(curv["top_eigenvalues"]) + [nan], list(curv["residuals"]) + [nan]
        ph = curv.get("pyhessian", {})
        ph_ev, ph_res = list(ph.get("eigenvalues", [])) + [nan, nan], list(ph.get("residuals", [])) + [nan, nan]
        row.update(lambda1=ev[0], lambda2=ev[1], residual1=res[0], residual2=res[1],
                   converged=_all_true(curv.get("converged")), gap=curv.get("gap", nan), ratio=curv.get("ratio", nan),
                   trace=curv["trace"]["mean"], trace_stderr=curv["trace"]["stderr"],
                   trace_samples=curv["trace"]["n_samples"], hessian_batch_size=curv.get("hessian_batch_size"),
                   pyhessian_lambda1=ph_ev[0], pyhessian_lambda2=ph_ev[1], pyhessian_residual1=ph_res[0],
                   pyhessian_residual2=ph_res[1], pyhessian_converged=_all_true(ph.get("converged")))
    spec = run.get("spectrum")
    if spec is not None and len(spec):
        row.update(spectrum_steps=len(spec), median_ratio=spec["ratio"].median(), median_gap=spec["gap"].median(),
                   steps_ratio_below_1=int((spec["ratio"] < 1).sum()),
                   steps_unconverged=int((~spec["converged"].astype(bool)).sum()),
                   spectrum_max_residual=float(np.nanmax(spec[["residual1", "residual2"]].to_numpy())))
    return row


KEY = ["optimizer", "seed"]
EMPTY = {  # the columns of each frame when no run contributes a row, so that filters and plots still work
    "history": KEY + ["epoch", "step", "grad_norm_full", "grad_norm_last_batch"],
    "spectrum": KEY + ["epoch", "step", "lambda1", "lambda2", "gap", "ratio", "residual1", "residual2", "converged"],
    "sharpness": KEY + ["epoch", "step", "lambda1", "residual1", "converged"],
    "per_class": KEY + ["digit", "accuracy"],
    "confusion": KEY + ["true", "predicted", "count"],
    "sensitivity": KEY + ["batch", "n_samples", "lambda1", "lambda2", "residual1", "residual2", "trace",
                          "trace_samples"],
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
        _fail(f"results folder {root} does not exist; run the study first (python runner.py run)")
    complete, incomplete = find_run_dirs(root)
    skipped = [(str(d), "no done file: incomplete or still running") for d in incomplete]
    rows, per_class, confusion, sensitivity = [], [], [], []
    stacked = {"history": [], "spectrum": [], "sharpness": []}
    for run_dir in complete:
        run = plots.load_run(run_dir)
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
        for name, parts in stacked.items():
            if name in run:
                parts.append(run[name].assign(**key))
    for path, reason in skipped:
        print(f"note: skipping {path} ({reason})")
    if not rows:
        _fail(f"no complete runs under {root} (a run is complete once its folder holds 'done'); "
              f"run the study first: python runner.py run")
    runs = pd.DataFrame(rows)
    runs = runs.iloc[sorted(range(len(runs)), key=lambda i: (optimizer_sort_key(runs.optimizer[i]), runs.seed[i]))]
    frames = {"runs": runs.reset_index(drop=True),
              "per_class": pd.DataFrame(per_class, columns=EMPTY["per_class"] if not per_class else None),
              "confusion": pd.DataFrame(confusion, columns=EMPTY["confusion"] if not confusion else None),
              "sensitivity": pd.DataFrame(sensitivity, columns=EMPTY["sensitivity"] if not sensitivity else None),
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


# ---------------------------------------------------------------------------- tables

def _decimals(value, significant) -> int:
    """Decimal places that give ``value`` about ``significant`` significant digits (0 to 8)."""
    if not np.isfinite(value) or value == 0:
        return significant - 1
    return int(min(8, max(0, significant - 1 - math.floor(math.log10(abs(value))))))


def mean_sd(values, decimals=4, significant=None) -> str:
    """``mean ± sd`` over seeds (sample sd), both to the same decimal place; the mean alone for one seed.

    ``significant`` picks the decimal place from the mean's magnitude instead of ``decimals``.
    An em dash when there are no values.
    """
    v = pd.Series(values, dtype=float).dropna()
    if len(v) == 0:
        return "—"
    mean = v.mean()
    d = decimals if significant is None else _decimals(mean, significant)
    if len(v) == 1:
        return f"{mean:.{d}f}"
    return f"{mean:.{d}f} ± {v.std(ddof=1):.{d}f}"


def _max(values, spec=".1e") -> str:
    v = pd.Series(values, dtype=float).dropna()
    return format(v.max(), spec) if len(v) else "—"


def _data_line(runs) -> str:
    parts = []
    for (source, n_train, n_test, epochs), _ in runs.groupby(["data_source", "n_train", "n_test", "epochs"],
                                                            dropna=False):
        parts.append(f"{source} data, {n_train} train / {n_test} test, {epochs} epochs")
    line = "; ".join(parts)
    return line + (" — smoke runs, for testing only" if runs.smoke.any() else "")


def _diverged_note(runs) -> str:
    div = runs[runs.status == "diverged"].groupby("optimizer").size()
    if not len(div):
        return ""
    return " Diverged runs, counted but not averaged: " + ", ".join(
        f"{LABELS.get(o, o)} {div[o]}" for o in sorted(div.index, key=optimizer_sort_key)) + "."


def accuracy_table(frames) -> tuple[pd.DataFrame, str]:
    runs = frames["runs"]
    rows = []
    for opt in optimizers_in(runs):
        r = runs[runs.optimizer == opt]
        ok = r[r.status == "ok"]
        orig = ORIGINAL_ACCURACY.get(opt, (None, None))
        rows.append({"optimizer": LABELS.get(opt, opt), "n": len(ok), "diverged": int((r.status == "diverged").sum()),
                     "train acc": mean_sd(ok.train_accuracy), "test acc": mean_sd(ok.test_accuracy),
                     "original train acc": "—" if orig[0] is None else f"{orig[0]:.4f}",
                     "original test acc": "—" if orig[1] is None else f"{orig[1]:.4f}"})
    caption = (f"Train and test accuracy, mean ± sd over n seeds ({_data_line(runs)}). The two 'original' columns "
               "are the original study's Table I: full MNIST (60,000 train / 10,000 test), one seed — different "
               "data, for orientation only, not a like-for-like comparison." + _diverged_note(runs))
    return pd.DataFrame(rows), caption


def spectrum_table(frames) -> tuple[pd.DataFrame, str]:
    runs = ok_runs(frames)
    rows = []
    for opt in optimizers_in(runs):
        r = runs[runs.optimizer == opt]
        tracked = r.get("spectrum_steps", pd.Series(dtype=float)).fillna(0).sum()
        below = r.get("steps_ratio_below_1", pd.Series(dtype=float)).fillna(0).sum()
        orig = ORIGINAL_RATIO_MEDIAN.get(opt)
        rows.append({"optimizer": LABELS.get(opt, opt), "n": len(r),
                     "λ1": mean_sd(r.get("lambda1"), significant=4), "max residual λ1": _max(r.get("residual1")),
                     "λ2": mean_sd(r.get("lambda2"), significant=4), "max residual λ2": _max(r.get("residual2")),
                     "trace": mean_sd(r.get("trace"), significant=4),
                     "gap λ1−λ2": mean_sd(r.get("gap"), significant=4), "ratio λ1/λ2": mean_sd(r.get("ratio"), 3),
                     "median ratio, tracked steps": mean_sd(r.get("median_ratio"), 3),
                     "median gap, tracked steps": mean_sd(r.get("median_gap"), significant=4),
                     "ratio < 1": f"{below / tracked:.3f} ({int(below)}/{int(tracked)})" if tracked else "—",
                     "original median ratio": "—" if orig is None else f"{orig:.2f}"})
    steps = sorted({int(s) for s in runs.get("spectrum_steps", pd.Series(dtype=float)).dropna()})
    caption = ("Top of the Hessian spectrum on the seeded Hessian batch, mean ± sd over n seeds "
               f"({_data_line(frames['runs'])}). λ1, λ2 (largest algebraic, sorted), their residuals "
               "‖Hv−λv‖/|λ| (worst seed), the Hutchinson trace, gap and ratio are at the final weights; the two "
               f"medians are per-seed medians over the tracked last {', '.join(map(str, steps)) or 'few'} steps, then "
               "averaged. 'ratio < 1' is the fraction of all tracked steps (pooled over seeds) with λ1/λ2 < 1, which "
               "sorted, converged eigenvalues can only give when λ2 ≤ 0. The last column is the original's median "
               "ratio (PyHessian, full MNIST, one seed), labelled 'spectral gap' there." + _diverged_note(frames["runs"]))
    return pd.DataFrame(rows), caption


def per_class_table(frames) -> tuple[pd.DataFrame, str]:
    pc = frames["per_class"]
    table = pd.DataFrame({"digit": range(10)})
    for opt in optimizers_in(pc):
        p = pc[pc.optimizer == opt]
        n = p.seed.nunique()
        table[f"{LABELS.get(opt, opt)} (n={n})"] = [mean_sd(p[p.digit == d].accuracy) for d in range(10)]
    caption = (f"Test accuracy per true digit, mean ± sd over n seeds ({_data_line(frames['runs'])})."
               + _diverged_note(frames["runs"]))
    return table, caption


def batch_sort_key(batch):
    return (1, 0) if batch == "full" else (0, int(batch))


def sensitivity_table(frames) -> tuple[pd.DataFrame, str]:
    sens = only_ok(frames["sensitivity"], frames)
    rows = []
    for opt in optimizers_in(sens):
        s = sens[sens.optimizer == opt]
        for batch in sorted(s.batch.unique(), key=batch_sort_key):
            b = s[s.batch == batch]
            rows.append({"optimizer": LABELS.get(opt, opt), "Hessian batch": batch,
                         "samples": int(b.n_samples.max()), "n": len(b),
                         "λ1": mean_sd(b.lambda1, significant=4), "λ2": mean_sd(b.lambda2, significant=4),
                         "max residual λ1": _max(b.residual1), "trace": mean_sd(b.trace, significant=4)})
    probes = sorted({int(t) for t in sens.get("trace_samples", pd.Series(dtype=float)).dropna()})
    caption = ("How the curvature at the final weights depends on the size of the Hessian batch (the original used "
               "100 samples drawn with replacement), mean ± sd over n seeds."
               + (f" Traces here use {', '.join(map(str, probes))} Hutchinson probes." if probes else "")
               + _diverged_note(frames["runs"]))
    return pd.DataFrame(rows), caption


def pyhessian_table(frames) -> tuple[pd.DataFrame, str]:
    runs = ok_runs(frames)
    rows = []
    for opt in optimizers_in(runs):
        r = runs[runs.optimizer == opt]
        if "pyhessian_lambda1" not in r:
            continue
        orig = ORIGINAL_FINAL_EIGENVALUES.get(opt)
        rows.append({"optimizer": LABELS.get(opt, opt), "n": len(r),
                     "ours λ1": mean_sd(r.lambda1, significant=4), "ours λ2": mean_sd(r.lambda2, significant=4),
                     "ours max residual": _max(pd.concat([r.residual1, r.residual2])),
                     "PyHessian λ1": mean_sd(r.pyhessian_lambda1, significant=4),
                     "PyHessian λ2": mean_sd(r.pyhessian_lambda2, significant=4),
                     "PyHessian max residual": _max(pd.concat([r.pyhessian_residual1, r.pyhessian_residual2])),
                     "PyHessian λ2 < 0": f"{int((r.pyhessian_lambda2 < 0).sum())}/{len(r)}",
                     "original λ1, λ2": "—" if orig is None else f"{orig[0]:.4f}, {orig[1]:.4f}"})
    caption = ("Top-2 eigenvalues at the final weights on the same Hessian batch: ours (largest algebraic, sorted, "
               "with residuals) against PyHessian's power iteration with deflation (the original's method, which "
               "finds the largest-magnitude eigenvalues, unsorted, with no convergence test), mean ± sd over n "
               "seeds. The last column is the original study's PyHessian answer (full MNIST, one seed; only SGD and "
               "AdaHessian were reported)." + _diverged_note(frames["runs"]))
    return pd.DataFrame(rows), caption


TABLES = {"accuracy": accuracy_table, "spectrum": spectrum_table, "per_class": per_class_table,
          "sensitivity": sensitivity_table, "pyhessian": pyhessian_table}

TEX = {"±": r"$\pm$", "λ1": r"$\lambda_1$", "λ2": r"$\lambda_2$", "—": "--", "−": "$-$", "‖": r"$\|$",
       "≤": r"$\le$", "<": r"$<$", "’": "'"}


def _tex(text) -> str:
    text = str(text)
    for ch, esc in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                    ("_", r"\_"), ("{", r"\{"), ("}", r"\}")):
        text = text.replace(ch, esc)
    for token, esc in TEX.items():
        text = text.replace(token, esc)
    return text


NO_ROWS = "No run that finished without diverging has these numbers."


def to_markdown(table, title, caption) -> str:
    if table.empty:
        return f"### {title}\n\n{caption}\n\n{NO_ROWS}\n"
    lines = [f"### {title}", "", caption, "",
             "| " + " | ".join(map(str, table.columns)) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(table.columns))) + "|"]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(table, name, caption) -> str:
    if table.empty:
        return f"% {name}: {_tex(caption)}\n% {NO_ROWS}\n"
    lines = [r"% written by report.py from results/; needs \usepackage{booktabs}", r"\begin{table}[ht]",
             r"\centering", r"\small", rf"\caption{{{_tex(caption)}}}", rf"\label{{tab:{name}}}",
             r"\begin{tabular}{l" + "r" * (len(table.columns) - 1) + "}", r"\toprule",
             " & ".join(_tex(c) for c in table.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def atomic_write(path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def summary_tables(frames) -> dict:
    """name -> (table of formatted strings, caption), for every table the report has."""
    return {name: make(frames) for name, make in TABLES.items()}


def write_tables(frames, tables_dir) -> list[Path]:
    """Each table as ``<name>.md`` and ``<name>.tex``, plus ``runs.csv`` (the per-run numbers behind them)."""
    tables_dir, written = Path(tables_dir), []
    for name, (table, caption) in summary_tables(frames).items():
        title = name.replace("_", " ").capitalize()
        for path, text in ((tables_dir / f"{name}.md", to_markdown(table, title, caption)),
                           (tables_dir / f"{name}.tex", to_latex(table, name, caption))):
            atomic_write(path, lambda f, t=text: f.write(t.encode()))
            written.append(path)
    path = tables_dir / "runs.csv"
    atomic_write(path, lambda f: f.write(frames["runs"].to_csv(index=False).encode()))
    return written + [path]


# ---------------------------------------------------------------------------- the whole report

@contextlib.contextmanager
def _environment(**values):
    """Set environment variables for the kernel that papermill starts, and restore them after."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build(results_dir="results", report_dir="report", parameters=None, log_output=False) -> dict:
    """Collect the runs, write the tables, execute the plotting notebook; returns what was written.

    Relative paths are taken from the repository root, as in params.py.
    ``parameters`` overrides the notebook's knobs (figure sizes, DPI, formats).
    The executed notebook is kept at ``<report_dir>/.executed/plotting_results.ipynb``.
    """
    import papermill

    results_dir, report_dir = (REPO_ROOT / results_dir).resolve(), (REPO_ROOT / report_dir).resolve()
    frames = collect(results_dir)
    runs = frames["runs"]
    print(f"{len(runs)} complete runs ({int((runs.status == 'diverged').sum())} diverged) "
          f"from {results_dir}: " + ", ".join(f"{o} {seed_count(runs, o)}" for o in optimizers_in(runs)))
    tables = write_tables(frames, report_dir / "tables")
    executed = report_dir / ".executed" / "plotting_results.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    knobs = {"RESULTS_DIR": str(results_dir), "REPORT_DIR": str(report_dir), "CLOSE_FIGURES": True,
             **(parameters or {})}
    started = time.time()
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    with _environment(MPLBACKEND="Agg", PYTHONPATH=path):  # headless kernel that finds the report modules
        try:
            papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters=knobs, cwd=str(NOTEBOOK.parent),
                                       kernel_name="python3", progress_bar=False, log_output=log_output)
        except papermill.PapermillExecutionError as e:
            _fail(f"the plotting notebook failed: {e.ename}: {e.evalue} (see {executed})")
    formats = knobs.get("FIG_FORMATS", ("png", "pdf"))
    figures = [report_dir / "figures" / f"{name}.{fmt}" for name in FIGURES for fmt in formats]
    missing = [str(p) for p in figures if not p.exists() or p.stat().st_mtime < started - 1]
    if missing:
        _fail(f"the plotting notebook did not write {', '.join(missing)} (see {executed})")
    for p in tables + figures + [executed]:
        print("wrote", p)
    return {"frames": frames, "tables": tables, "figures": figures, "notebook": executed}
