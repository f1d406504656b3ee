"""Writes ``plotting_results.ipynb``: narrative and calls into report.py and report_figures.py, nothing else.

Run ``python notebooks/build_plotting_notebook.py`` after editing the cells
below; the notebook is committed without outputs (tests/test_report.py checks
that it matches this file).
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
NAME = "plotting_results"

PARAMETERS = '''# Parameters: papermill overrides these (report.build passes absolute paths and CLOSE_FIGURES = True).
RESULTS_DIR = "../results"
REPORT_DIR = "../report"          # figures go to REPORT_DIR/figures/<name>.<format>
FIG_FORMATS = ("png", "pdf")
FIGSIZE = (9, 6.5)                # 2x2 panels, one per optimizer
FIGSIZE_WIDE = (11, 3.8)          # two panels side by side
FIGSIZE_GRID = (13, 6)            # ratio/gap and landscapes: two rows, one column per optimizer
DPI = 150
FONT_SIZE = 9
LABEL_SIZE = 9
TITLE_SIZE = 10
LEGEND_SIZE = 8
LABELS = {"sgd": "SGD", "adam": "Adam", "adagrad": "AdaGrad", "adahessian": "AdaHessian"}
BAND = "minmax"                   # spread over seeds: "minmax" or "sd"
LOG_LANDSCAPE = True              # landscapes in log10(loss), so the floor and the walls show together
CLOSE_FIGURES = False             # headless runs close each figure once saved; in Jupyter they stay to be shown'''


def figure(name, call):
    """A code cell that draws one figure with ``call`` and saves it as ``name``."""
    return new_code_cell(f"fig = report_figures.{call}\n"
                         f'written += report_figures.save_figure(fig, "{name}", REPORT_DIR, FIG_FORMATS, DPI, '
                         f'close=CLOSE_FIGURES)')


def cells():
    return [
        new_markdown_cell(
            "# How the optimizer shapes the minimum: the report\n\n"
            "This notebook draws the comparison figures of the study from `results/<optimizer>/seed<k>/` alone; it "
            "trains nothing. Only complete runs (with a `done` file) count; incomplete folders are named and left "
            "out, and runs that diverged are counted in the tables but left out of the figures. Every figure shows "
            "all seeds present: a line for the mean and a band for the spread, or a thin line per seed.\n\n"
            "`python runner.py report` (or `make report`) runs it headless after writing the tables to "
            "`report/tables/`; it also runs cell by cell from `notebooks/`. The functions it calls live in "
            "`report.py` (runs and tables) and `report_figures.py` (figures)."),
        new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
        new_code_cell("import matplotlib.pyplot as plt\n"
                      "from IPython.display import Markdown, display\n\n"
                      "import report\n"
                      "import report_figures\n\n"
                      "report_figures.set_style(FONT_SIZE, LABEL_SIZE, TITLE_SIZE, LEGEND_SIZE)\n"
                      "frames = report.collect(RESULTS_DIR)\n"
                      "written = []\n"
                      "frames[\"runs\"].filter([\"optimizer\", \"seed\", \"status\", \"epochs_completed\", \"data_source\",\n"
                      "                       \"train_accuracy\", \"test_accuracy\", \"lambda1\", \"lambda2\", \"trace\"])"),
        new_markdown_cell(
            "## Tables\n\n"
            "The same tables `report.build` writes to `report/tables/` as Markdown and LaTeX, mean ± sd over seeds. "
            "The original study's numbers stand beside ours where it reported any; they come from full MNIST and "
            "one seed, so they orient rather than compare."),
        new_code_cell("for name, (table, caption) in report.summary_tables(frames).items():\n"
                      "    display(Markdown(report.to_markdown(table, name.replace(\"_\", \" \").capitalize(), caption)))"),
        new_markdown_cell(
            "## Gradient norms\n\n"
            "The original recorded the norm of the *last mini-batch's* gradient once per epoch, a noisy stand-in for "
            "the gradient of the training loss. Each run here records both that and the full-batch gradient norm "
            "over the training split."),
        figure("grad_norms", "plot_grad_norms(frames, figsize=FIGSIZE, band=BAND, labels=LABELS)"),
        new_markdown_cell(
            "## Ratio and gap over the last steps\n\n"
            "λ1/λ2 (top row, the original's \"spectral gap\") and the actual gap λ1−λ2 (bottom row) at every one "
            "of the last tracked steps, from certified eigenvalues on the seeded Hessian batch. The dashed line is "
            "the original's median (PyHessian, one seed, full MNIST). A ratio below 1 needs λ2 ≤ 0 when the eigenvalues are "
            "sorted and converged; PyHessian's unsorted largest-magnitude answers gave such values."),
        figure("spectral_ratio_gap", "plot_spectral_ratio_gap(frames, figsize=FIGSIZE_GRID, band=BAND, labels=LABELS)"),
        new_markdown_cell(
            "## Sharpness during training\n\n"
            "λ1 over the whole run. For SGD the dashed line is 2/lr, the stability threshold of gradient descent "
            "on a quadratic (edge of stability, Cohen et al. 2021); with cross-entropy and mini-batches it is a "
            "reference, not a prediction. For the adaptive methods the relevant quantity would be the "
            "preconditioned sharpness, which is not plotted here."),
        figure("sharpness", "plot_sharpness(frames, figsize=FIGSIZE, band=BAND, labels=LABELS)"),
        new_markdown_cell(
            "## Loss landscapes in one dimension\n\n"
            "Along the top Hessian eigenvector (unit norm, as in the original) and along a filter-normalised random "
            "direction (Li et al. 2018). Curvature along raw directions is not comparable between networks whose "
            "weights differ in scale; the filter-normalised direction is. One thin line per seed."),
        figure("landscape_1d", "plot_landscape_1d(frames, figsize=FIGSIZE_WIDE, labels=LABELS, log=LOG_LANDSCAPE)"),
        new_markdown_cell(
            "## Loss landscapes in two dimensions\n\n"
            "The plane of the top two eigenvectors (top row) and of two filter-normalised random directions "
            "(bottom row), for the first seed of each optimizer: contours, then the 3D surfaces the original "
            "drew."),
        figure("landscape_2d", "plot_landscape_2d(frames, figsize=FIGSIZE_GRID, labels=LABELS, log=LOG_LANDSCAPE)"),
        figure("landscape_3d", "plot_landscape_3d(frames, figsize=FIGSIZE_GRID, labels=LABELS, log=LOG_LANDSCAPE)"),
        new_markdown_cell(
            "## Confusion matrices\n\n"
            "Test confusion normalised per true digit (rows sum to 1), averaged over seeds. The original built its "
            "\"test\" tensors from the training set; these come from the held-out test split."),
        figure("confusion", "plot_confusion(frames, figsize=FIGSIZE, labels=LABELS)"),
        new_markdown_cell(
            "## Spectral density\n\n"
            "The smoothed eigenvalue density of the Hessian at the final weights (stochastic Lanczos quadrature), a "
            "line per seed, with each seed's λ1 dotted. It shows whether the top eigenvalues stand apart from the "
            "bulk, which is what the ratio alone cannot say."),
        figure("spectral_density", "plot_spectral_density(frames, figsize=FIGSIZE, labels=LABELS)"),
        new_markdown_cell(
            "## Does the Hessian batch matter?\n\n"
            "The original's own caveat: 100 samples may be too few. λ1 and the trace at the final weights on 100 "
            "samples, 1,000 samples and the full training split, with ±sd error bars over seeds."),
        figure("hessian_batch_sensitivity",
               "plot_hessian_batch_sensitivity(frames, figsize=FIGSIZE_WIDE, labels=LABELS)"),
        new_code_cell("print(f\"{len(written)} files written:\")\n"
                      "print(\"\\n\".join(map(str, written)))"),
    ]


def build() -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells())
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    for i, cell in enumerate(nb.cells):  # stable ids keep diffs quiet
        cell.id = f"{NAME}-{i}"
    return nb


if __name__ == "__main__":
    nbformat.write(build(), HERE / f"{NAME}.ipynb")
    print("wrote", HERE / f"{NAME}.ipynb")
