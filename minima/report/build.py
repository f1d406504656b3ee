"""The whole report: collect the runs, write the tables, execute the plotting notebook for the figures.

``build`` is what ``python -m minima report`` and ``make report`` call: the
tables go to ``<report>/tables/`` (Markdown and LaTeX), then
``notebooks/plotting_results.ipynb``, executed headless, draws
``<report>/figures/`` with the figure functions of ``minima.report.figures``.
"""

import contextlib
import os
import time

from minima.notebooks import KERNEL_OPTIONS
from minima.report.collection import _fail, collect, optimizers_in, seed_count
from minima.report.fair import tuned_study_beside
from minima.report.tables import write_table, write_tables
from minima.runs import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "plotting_results.ipynb"
FIGURES = ("training_loss", "grad_norms", "spectral_ratio_gap", "sharpness", "landscape_1d", "landscape_2d",
           "landscape_3d", "confusion", "spectral_density", "hessian_batch_sensitivity")
# drawn only when some run carries the instruments' files (runs made before them do not)
OPTIONAL_FIGURES = ("preconditioned_sharpness", "subspace_overlap", "equal_loss", "full_data_outliers",
                    "lr_sensitivity", "studies_side_by_side", "time_to_target", "projected",
                    *(f"full_size_{name}" for name in ("accuracy", "training_loss", "sharpness",
                                                        "preconditioned_sharpness", "spectral_ratio_gap", "equal_loss",
                                                        "full_data_outliers")),
                    "flatness_scatter", "flatness_tau", "flatness_rho")
TUNED = "tuned"                 # <results>/tuned: the study at the sweep's selected learning rates
SWEEP = "sweeps/tuning"         # <results>/sweeps/tuning: the learning-rate sweep behind it


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


def write_fair_tables(studies: dict, tables_dir) -> list:
    """The fair comparison's tables for each study: ``fair_<study>_<table>.md`` and ``.tex``."""
    import params
    from minima.report.fair import fair_tables

    written = []
    for study, frames in studies.items():
        for name, (table, caption) in fair_tables(frames, params.EQUAL_LOSS_THRESHOLDS).items():
            title = f"{name.replace('_', ' ').capitalize()}, {study.replace('_', ' ')}"
            written += write_table(tables_dir, f"fair_{study}_{name}", title, table, caption)
    return written


def write_projected_tables(results_dir, tables_dir) -> list:
    """The projected-update experiment's tables, ``projected_<table>.md`` and ``.tex`` (none without its runs)."""
    from minima.report import projected

    if not projected.has_experiment(results_dir):
        return []
    written = []
    for stem, (table, caption) in projected.tables(projected.collect(results_dir)).items():
        written += write_table(tables_dir, stem, stem.replace("_", " ").capitalize(), table, caption)
    return written


def write_flatness_tables(results_dir, tables_dir) -> list:
    """The flatness study's tables (``flatness_<table>``) from ``<results>/measures/``; none before ``make
    measures``."""
    from minima.report import flatness

    written = []
    for stem, (table, caption) in flatness.tables(results_dir).items():
        written += write_table(tables_dir, stem, stem.replace("_", " ").capitalize(), table, caption)
    return written


def write_full_size_tables(results_dir, embedded: dict, tables_dir) -> list:
    """The full-size study's tables (``<results>/fashion-mnist``): every summary table and the fair comparison's,
    prefixed ``full_size_``, and the embedded study's findings beside it (``full_size_comparison``); none without
    its runs."""
    from minima.report import full_size
    from minima.report.tables import summary_tables

    if not full_size.has_study(results_dir):
        return []
    frames = full_size.collect_full_size(results_dir)
    named = {f"full_size_{name}": made for name, made in summary_tables(frames).items()}
    named["full_size_comparison"] = full_size.comparison_table(embedded, frames)
    written = write_fair_tables({"full_size": frames}, tables_dir)  # fair_full_size_<table>
    for stem, (table, caption) in named.items():
        written += write_table(tables_dir, stem, stem.replace("_", " ").capitalize(), table, caption)
    return written


def build(results_dir="results", report_dir="report", parameters=None, log_output=False, tuned_dir=None,
          sweep_dir=None) -> dict:
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
    tuned_dir = (REPO_ROOT / tuned_dir).resolve() if tuned_dir else results_dir / TUNED
    sweep_dir = (REPO_ROOT / sweep_dir).resolve() if sweep_dir else results_dir / SWEEP
    studies = {"original": frames}
    tuned = tuned_study_beside(frames, tuned_dir, sweep_dir)
    if tuned is not None:
        studies["tuned"] = tuned
    else:
        print(f"note: no complete run in {tuned_dir}; the fair comparison reports the original settings only")
    tables += write_fair_tables(studies, report_dir / "tables")
    tables += write_projected_tables(results_dir, report_dir / "tables")
    tables += write_full_size_tables(results_dir, frames, report_dir / "tables")
    tables += write_flatness_tables(results_dir, report_dir / "tables")
    executed = report_dir / ".executed" / "plotting_results.ipynb"
    executed.parent.mkdir(parents=True, exist_ok=True)
    knobs = {"RESULTS_DIR": str(results_dir), "REPORT_DIR": str(report_dir), "CLOSE_FIGURES": True,
             "TUNED_DIR": str(tuned_dir), "SWEEP_DIR": str(sweep_dir),
             **(parameters or {})}
    started = time.time()
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
    with _environment(MPLBACKEND="Agg", PYTHONPATH=path):  # headless kernel that finds the report modules
        try:
            papermill.execute_notebook(str(NOTEBOOK), str(executed), parameters=knobs, cwd=str(NOTEBOOK.parent),
                                       kernel_name="python3", progress_bar=False, log_output=log_output,
                                       **KERNEL_OPTIONS)
        except papermill.PapermillExecutionError as e:
            _fail(f"the plotting notebook failed: {e.ename}: {e.evalue} (see {executed})")
    formats = knobs.get("FIG_FORMATS", ("png", "pdf"))
    figures = [report_dir / "figures" / f"{name}.{fmt}" for name in FIGURES for fmt in formats]
    missing = [str(p) for p in figures if not p.exists() or p.stat().st_mtime < started - 1]
    if missing:
        _fail(f"the plotting notebook did not write {', '.join(missing)} (see {executed})")
    optional = [report_dir / "figures" / f"{name}.{fmt}" for name in OPTIONAL_FIGURES for fmt in formats]
    figures += [p for p in optional if p.exists() and p.stat().st_mtime >= started - 1]
    for p in tables + figures + [executed]:
        print("wrote", p)
    return {"frames": frames, "tables": tables, "figures": figures, "notebook": executed}
