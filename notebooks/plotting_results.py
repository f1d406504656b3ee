# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags
#     notebook_metadata_filter: kernelspec
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How the optimizer shapes the minimum: the report
#
# This notebook draws the comparison figures of the study from `<RESULTS_DIR>/<optimizer>/seed<k>/` alone (the
# committed study in `results/` by default; your own runs with `RESULTS_DIR = "../runs"`); it trains nothing. Only
# complete runs (with a `done` file) count; incomplete folders are named and left out, and runs that diverged are
# counted in the tables but left out of the figures. Every figure shows all seeds present: a line for the mean and a
# band for the spread, or a thin line per seed.
#
# `python -m minima report` (or `make report`) runs it headless after writing the tables to `report/tables/`; it
# also runs cell by cell from `notebooks/`. The functions it calls live in `minima/report/` (`collection` and
# `tables` for runs and tables, `figures` for figures); optimizer names and labels come from the registry.

# %% tags=["parameters"]
# Parameters: papermill overrides these (minima.report.build passes absolute paths and CLOSE_FIGURES = True).
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
BAND = "minmax"                   # spread over seeds: "minmax" or "sd"
LOG_LANDSCAPE = True              # landscapes in log10(loss), so the floor and the walls show together
CLOSE_FIGURES = False             # headless runs close each figure once saved; in Jupyter they stay to be shown
TUNED_DIR = "../results/tuned"    # the study rerun at the sweep's selected learning rates (skipped if absent)
SWEEP_DIR = "../results/sweeps/tuning"  # the learning-rate sweep (collected: summary.csv, runs.csv)

# %%
import sys

sys.path.insert(0, "..")  # the repository root and its minima package

from IPython.display import Markdown, display

from minima.report import collection, figures, tables

LABELS = collection.LABELS  # from the optimizer registry
figures.set_style(FONT_SIZE, LABEL_SIZE, TITLE_SIZE, LEGEND_SIZE)
frames = collection.collect(RESULTS_DIR)
written = []
frames["runs"].filter(["optimizer", "seed", "status", "epochs_completed", "data_source",
                       "train_accuracy", "test_accuracy", "lambda1", "lambda2", "trace"])

# %% [markdown]
# ## Tables
#
# The same tables `minima.report.build` writes to `report/tables/` as Markdown and LaTeX, mean ± sd over seeds. The original study's numbers stand beside ours where it reported any; they come from full MNIST and one seed, so they orient rather than compare.

# %%
for name, (table, caption) in tables.summary_tables(frames).items():
    display(Markdown(tables.to_markdown(table, name.replace("_", " ").capitalize(), caption)))

# %% [markdown]
# ## Training loss
#
# Each seed's training loss at the end of every epoch, one line per seed, so that a jump in one seed stays visible.

# %%
fig = figures.plot_training_loss(frames, figsize=FIGSIZE, labels=LABELS)
written += figures.save_figure(fig, "training_loss", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Gradient norms
#
# The original recorded the norm of the *last mini-batch's* gradient once per epoch, a noisy stand-in for the gradient of the training loss. Each run here records both that and the full-batch gradient norm over the training split.

# %%
fig = figures.plot_grad_norms(frames, figsize=FIGSIZE, band=BAND, labels=LABELS)
written += figures.save_figure(fig, "grad_norms", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Ratio and gap over the last steps
#
# λ1/λ2 (top row, the original's "spectral gap") and the actual gap λ1−λ2 (bottom row) at every one of the last tracked steps, from certified eigenvalues on the seeded Hessian batch. The dashed line is the original's median (PyHessian, one seed, full MNIST). A ratio below 1 needs λ2 ≤ 0 when the eigenvalues are sorted and converged; PyHessian's unsorted largest-magnitude answers gave such values.

# %%
fig = figures.plot_spectral_ratio_gap(frames, figsize=FIGSIZE_GRID, band=BAND, labels=LABELS)
written += figures.save_figure(fig, "spectral_ratio_gap", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Sharpness during training
#
# λ1 over the whole run. For SGD the dashed line is 2/lr, the stability threshold of gradient descent on a quadratic (edge of stability, Cohen et al. 2021); with cross-entropy and mini-batches it is a reference, not a prediction. For the adaptive methods the step size bounds the preconditioned sharpness instead: see the next figure.

# %%
fig = figures.plot_sharpness(frames, figsize=FIGSIZE, band=BAND, labels=LABELS)
written += figures.save_figure(fig, "sharpness", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Loss landscapes in one dimension
#
# Along the top Hessian eigenvector (unit norm, as in the original) and along a filter-normalised random direction (Li et al. 2018). Curvature along raw directions is not comparable between networks whose weights differ in scale; the filter-normalised direction is. One thin line per seed.

# %%
fig = figures.plot_landscape_1d(frames, figsize=FIGSIZE_WIDE, labels=LABELS, log=LOG_LANDSCAPE)
written += figures.save_figure(fig, "landscape_1d", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Loss landscapes in two dimensions
#
# The plane of the top two eigenvectors (top row) and of two filter-normalised random directions (bottom row), for the first seed of each optimizer: contours, then the 3D surfaces the original drew.

# %%
fig = figures.plot_landscape_2d(frames, figsize=FIGSIZE_GRID, labels=LABELS, log=LOG_LANDSCAPE)
written += figures.save_figure(fig, "landscape_2d", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %%
fig = figures.plot_landscape_3d(frames, figsize=FIGSIZE_GRID, labels=LABELS, log=LOG_LANDSCAPE)
written += figures.save_figure(fig, "landscape_3d", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Confusion matrices
#
# Test confusion normalised per true digit (rows sum to 1), averaged over seeds. The original built its "test" tensors from the training set; these come from the held-out test split.

# %%
fig = figures.plot_confusion(frames, figsize=FIGSIZE, labels=LABELS)
written += figures.save_figure(fig, "confusion", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Spectral density
#
# The smoothed eigenvalue density of the Hessian at the final weights (stochastic Lanczos quadrature), a line per seed, with each seed's λ1 dotted. It shows whether the top eigenvalues stand apart from the bulk, which is what the ratio alone cannot say.

# %%
fig = figures.plot_spectral_density(frames, figsize=FIGSIZE, labels=LABELS)
written += figures.save_figure(fig, "spectral_density", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Does the Hessian batch matter?
#
# The original's own caveat: 100 samples may be too few. λ1 and the trace at the final weights on 100 samples, 1,000 samples and the full training split, with ±sd error bars over seeds.

# %%
fig = figures.plot_hessian_batch_sensitivity(frames, figsize=FIGSIZE_WIDE, labels=LABELS)
written += figures.save_figure(fig, "hessian_batch_sensitivity", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Stability of the adaptive optimizers
#
# The step size bounds the *preconditioned* sharpness λ1(P⁻¹H), P the optimizer's diagonal preconditioner read from
# its state, not the raw λ1 (Cohen et al. 2022). Both are divided by the optimizer's own stability threshold, so 1
# (dashed) is the edge of stability for every optimizer: 2/η for SGD and SAM, (2 + 2β1)/((1 − β1)η) for Adam and
# AdaHessian, 2/η_t for AdaGrad. Runs made before this instrument existed carry no `tracking.csv` and are left out.

# %%
fig = figures.plot_preconditioned_sharpness(frames, figsize=FIGSIZE, band=BAND, labels=LABELS)
written += figures.save_figure(fig, "preconditioned_sharpness", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Where the gradient lives
#
# The share ||VVᵀg||²/||g||² of the gradient in the span V of the top-10 Hessian eigenvectors (Gur-Ari, Roberts and
# Dyer 2018 found it near 1 after a short initial phase), for the Hessian batch's gradient and for the last
# mini-batch's, the one each step used.

# %%
fig = figures.plot_subspace_overlap(frames, figsize=FIGSIZE_WIDE, band=BAND, labels=LABELS)
written += figures.save_figure(fig, "subspace_overlap", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## Curvature at equal training loss
#
# The optimizers end at training losses that differ by orders of magnitude, so their final curvatures compare
# different stages of training. Here λ1, λ1(P⁻¹H) and a 10-probe trace are read at the first epoch end where each
# run's full-batch training loss fell below each threshold.

# %%
fig = figures.plot_equal_loss(frames, figsize=FIGSIZE_WIDE, labels=LABELS)
written += figures.save_figure(fig, "equal_loss", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## The outliers of the full-data Hessian
#
# The top 20 eigenvalues of the Hessian of the whole training set's loss at the final weights. The literature
# expects a bulk near zero and about C = 10 outliers from the Gauss–Newton part (Sagun et al. 2017; Papyan 2020).

# %%
fig = figures.plot_outliers(frames, labels=LABELS)
written += figures.save_figure(fig, "full_data_outliers", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)

# %% [markdown]
# ## The fair comparison
#
# Every optimizer's learning rate was swept over a log-spaced grid (three seeds each, 500 training images held out
# for validation; the test split never chooses), and the setting with the best mean final validation accuracy was
# selected. Below: that sensitivity, with the original learning rate dashed and the selected one starred; then the
# study at the original settings beside the study at the selected ones, with 95 % intervals of the mean, and the
# steps each optimizer needs to reach each training-loss threshold and test-accuracy target (the tuned study when
# there is one). Either study part is skipped, with a note, when its folder is absent.

# %%

import params
from minima.report import fair, fair_figures

if fair_figures.has_sweep(SWEEP_DIR):
    fig = fair_figures.plot_lr_sensitivity(fair_figures.sweep_frames(SWEEP_DIR), figsize=FIGSIZE_GRID, labels=LABELS)
    written += figures.save_figure(fig, "lr_sensitivity", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)
else:
    print(f"note: no collected sweep in {SWEEP_DIR} (python -m minima sweep collect); its figure is skipped")
studies = {"original settings": frames}
tuned = fair.tuned_study_beside(frames, TUNED_DIR, SWEEP_DIR)  # where the selection is the original lr: its runs
if tuned is not None:
    studies["tuned learning rates"] = tuned
else:
    print(f"note: no complete run in {TUNED_DIR}; the tuned study is not drawn")
fig = fair_figures.plot_studies_side_by_side(studies, figsize=FIGSIZE_WIDE, labels=LABELS)
written += figures.save_figure(fig, "studies_side_by_side", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)
fig = fair_figures.plot_time_to_target(studies.get("tuned learning rates", frames), params.EQUAL_LOSS_THRESHOLDS,
                                       figsize=FIGSIZE_WIDE, labels=LABELS)
written += figures.save_figure(fig, "time_to_target", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)
for study, study_frames in studies.items():
    for name, (table, caption) in fair.fair_tables(study_frames, params.EQUAL_LOSS_THRESHOLDS).items():
        display(Markdown(tables.to_markdown(table, f"{name.replace('_', ' ').capitalize()}, {study}", caption)))

# %% [markdown]
# ## The projected update
#
# The original's proposal, ṽ = λ·V v + (1 − λ)·(I − V) v with V the top-10 Hessian eigenspace, run by
# `python -m minima projected` into `<RESULTS_DIR>/projected/`: the training loss against steps for every λ in
# both regimes (switched on after one epoch, and for the last 10 % of training), with the seeds' range shaded, and
# the final regime's λ1 over the last steps. Plain SGD is dashed black. Skipped, with a note, without those runs.

# %%
from minima.report import projected

if projected.has_experiment(RESULTS_DIR):
    found = projected.collect(RESULTS_DIR)
    fig = projected.plot_projected(found, figsize=(13, 4.2))
    written += figures.save_figure(fig, "projected", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)
    for name, (table, caption) in projected.tables(found).items():
        display(Markdown(tables.to_markdown(table, name.replace("_", " ").capitalize(), caption)))
else:
    print(f"note: no projected-update runs in {RESULTS_DIR}/projected (python -m minima projected); skipped")

# %% [markdown]
# ## At full size
#
# The same study on Fashion-MNIST's 60,000 training images (`<RESULTS_DIR>/fashion-mnist/`, the original's
# protocol and hyperparameters), beside the embedded 4,000 MNIST digits: test accuracy and final training loss at
# both scales, then the full-size study's training loss, sharpness, preconditioned sharpness, spectrum over the
# last steps, curvature at equal loss and full-data outliers, drawn as above. Skipped, with a note, without those runs.

# %%
from minima.report import full_size

if full_size.has_study(RESULTS_DIR):
    full = full_size.collect_full_size(RESULTS_DIR)
    fig = full_size.plot_both_scales(frames, full, figsize=FIGSIZE_WIDE, labels=LABELS)
    written += figures.save_figure(fig, "full_size_accuracy", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)
    for name, draw, size in (("training_loss", figures.plot_training_loss, FIGSIZE),
                             ("sharpness", figures.plot_sharpness, FIGSIZE),
                             ("preconditioned_sharpness", figures.plot_preconditioned_sharpness, FIGSIZE),
                             ("spectral_ratio_gap", figures.plot_spectral_ratio_gap, FIGSIZE_GRID),
                             ("equal_loss", figures.plot_equal_loss, FIGSIZE_WIDE)):
        fig = draw(full, figsize=size, labels=LABELS)
        if fig is not None:
            written += figures.save_figure(fig, f"full_size_{name}", REPORT_DIR, FIG_FORMATS, DPI,
                                           close=CLOSE_FIGURES)
    fig = figures.plot_outliers(full, labels=LABELS)
    if fig is not None:
        written += figures.save_figure(fig, "full_size_full_data_outliers", REPORT_DIR, FIG_FORMATS, DPI,
                                       close=CLOSE_FIGURES)
    table, caption = full_size.comparison_table(frames, full)
    display(Markdown(tables.to_markdown(table, "Full size comparison", caption)))
else:
    print(f"note: no complete run in {full_size.study_dir(RESULTS_DIR)} (make full-size); skipped")

# %% [markdown]
# ## Does flatness predict generalization?
#
# Jiang et al. 2020's protocol on every measured minimum (`python -m minima measures` writes
# `<RESULTS_DIR>/measures/`): each measure against the generalization gap (test − train error) on the flatness grid at
# its 0.01 stopping point, colour = optimizer, marker = batch size; Kendall's τ of each measure with both gaps and
# its 95 % bootstrap interval; and the check behind the adaptive radius ρ. Skipped, with a note, before the
# measures exist.

# %%
from minima.report import flatness, flatness_figures

if flatness.has_measures(RESULTS_DIR):
    measured = flatness.load(RESULTS_DIR)
    for name, draw in (("flatness_scatter", flatness_figures.plot_scatter_grid),
                       ("flatness_tau", flatness_figures.plot_tau_bars)):
        fig = draw(measured)
        if fig is not None:
            written += figures.save_figure(fig, name, REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)
    check = flatness.rho_check(RESULTS_DIR)
    if check is not None:
        fig = flatness_figures.plot_rho_check(check)
        written += figures.save_figure(fig, "flatness_rho", REPORT_DIR, FIG_FORMATS, DPI, close=CLOSE_FIGURES)
    for name, (table, caption) in flatness.tables(RESULTS_DIR).items():
        display(Markdown(tables.to_markdown(table, name.replace("_", " ").capitalize(), caption)))
else:
    print(f"note: no measured minima in {flatness.measures_path(RESULTS_DIR)} (python -m minima measures); skipped")

# %%
print(f"{len(written)} files written:")
print("\n".join(map(str, written)))
