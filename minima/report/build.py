"""The whole report: collect the runs, write the tables, execute the plotting notebook for the figures.

``build`` is what ``python -m minima report`` and ``make report`` call: the
tables go to ``<report>/tables/`` (Markdown and LaTeX), then
``notebooks/plotting_results.ipynb``, executed headless, draws
``<report>/figures/`` with the figure functions of ``minima.report.figures``.
"""

import contextlib
import os
import time

from minima.report.collection import _fail, collect, optimizers_in, seed_count
from minima.report.tables import write_tables
from minima.notebooks import KERNEL_OPTIONS
from minima.runs import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "plotting_results.ipynb"
FIGURES = ("grad_norms", "spectral_ratio_gap", "sharpness", "landscape_1d", "landscape_2d", "landscape_3d",
           "confusion", "spectral_density", "hessian_batch_sensitivity")
# drawn only when some run carries the instruments' files (runs made before them do not)
OPTIONAL_FIGURES = ("preconditioned_sharpness", "subspace_overlap", "equal_loss", "full_data_outliers")


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
