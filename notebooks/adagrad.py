# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # AdaGrad on MNIST: training, Hessian spectrum and landscapes
#
# AdaGrad: per-coordinate step sizes that shrink with the accumulated squared gradients. Its hyperparameters are the `ADAGRAD` block of `params.py`.
#
# This notebook trains LeNet5, tracks the top of the loss Hessian's spectrum over the last training steps, and
# analyses the final minimum. Everything it computes goes to `runs/<optimizer>/seed<k>/` (a git-ignored working
# folder; the committed study is `results/`, written only when `RESULTS_DIR` says so), and a `done` file, written
# last, marks the run complete. If that run is complete already, the notebook draws its figures from the saved
# files instead of training again (`FORCE = True` reruns it). Run it cell by cell from `notebooks/`, or headless
# through `python -m minima run`.
#
# Generated from `notebooks/templates/optimizer.py` by `make notebooks`: edit the template, not this file.

# %% tags=["parameters"]
# Parameters: papermill overrides these; None means the value in params.py.
OPTIMIZER = "adagrad"
SEED = 0
EPOCHS = None
DATASET = None         # mnist | fashion-mnist
DATA_SOURCE = None     # auto | torchvision | embedded (MNIST only)
OVERRIDES = {}         # optimizer hyperparameters, any keyword its constructor takes, e.g. {"lr": 0.05}
SMOKE = False          # seconds-long run on a subset
RESULTS_DIR = "../runs"
FORCE = False          # redo a complete run
THREADS = None         # torch threads (None: params.TORCH_THREADS, as the runner uses; see the next cell)
PROGRESS = True
CONFIG = None          # a whole validated run config (python -m minima run passes one); then the knobs above are unused

# %%
# %matplotlib inline
import sys

sys.path.insert(0, "..")  # the repository root: params.py, helpers.py, cnn_architectures.py and the minima package

import matplotlib.pyplot as plt
import pandas as pd

import helpers
from minima import analysis, plots, training

# The thread count changes the order of floating-point sums, so a run is bit for bit repeatable only at the count
# it records (config.json); the runner uses the same constant. Raise THREADS above for speed at the cost of that.
print(helpers.set_threads(THREADS))
config = CONFIG or helpers.make_config(OPTIMIZER, SEED, epochs=EPOCHS, dataset=DATASET, data_source=DATA_SOURCE,
                                       overrides=OVERRIDES, smoke=SMOKE, results_dir=RESULTS_DIR)
OPTIMIZER, SEED = config["optimizer"], config["seed"]  # a passed CONFIG decides
device = helpers.pick_device()
print(f"{config['optimizer']}, seed {config['seed']}, {config['epochs']} epochs, batch {config['batch_size']}, "
      f"hyperparameters {config['hyperparameters']}, device {device}")

# %% [markdown]
# ## Data
#
# MNIST (or Fashion-MNIST, `DATASET = "fashion-mnist"`), resized 28→32 bilinearly, pixels in [0, 1], preloaded as
# tensors on the device. The source (full MNIST, the embedded 5,000-digit subset, or Fashion-MNIST's files) is
# printed and recorded in the run's `config.json`.

# %%
data = helpers.load_run_data(config, device)
run_dir, complete = helpers.open_run(config, data, device, force=FORCE)
print("run folder:", run_dir, "(complete: figures from its files)" if complete else "")
plots.sample_digits(data.x_train, data.y_train)
plt.show()

# %% [markdown]
# ## Training
#
# One loop serves every optimizer. After every step two callbacks track the Hessian on the fixed Hessian batch:
# λ1 and λ2 over the last steps (certified Lanczos, warm-started step to step) and, every few hundred steps, the
# sharpness λ1, the preconditioned sharpness λ1(P⁻¹H) against the optimizer's stability threshold, and the share of
# the gradient in the top-10 eigenspace; at the first epoch end below each training-loss threshold, λ1, λ1(P⁻¹H)
# and a cheap trace. The callbacks restore everything they touch, so training is bitwise the same with or without
# them. Each epoch is checkpointed: a killed run resumes where it stopped.

# %%
model = training.build_model(SEED, device, config["model"]["activation"])
if complete:
    saved = helpers.load_run(run_dir)
    history, final = saved["history"], saved["final"]
else:
    trackers = analysis.trackers(data, config)
    outcome = training.train(model, config, data, run_dir, callback=trackers, progress=PROGRESS)
    analysis.save_tracking(trackers, run_dir)
    final = training.finish_training(model, data, outcome, run_dir)
    saved = helpers.load_run(run_dir)
    history = pd.DataFrame(outcome["history"])
print({k: final[k] for k in ("status", "train_accuracy", "test_accuracy") if k in final})

# %%
if len(history):
    plots.learning_curves(history, OPTIMIZER)
    plots.gradient_norms(history, OPTIMIZER)
if final["status"] == "ok":
    plots.confusion_heatmap(final["test_confusion_matrix"], f"{OPTIMIZER}: test confusion (per true class)",
                            classes=data.class_names)
plt.show()

# %% [markdown]
# ## Spectrum over the last steps
#
# The original study's central measurement. We report both the spectral **gap** λ1−λ2 and the **ratio** λ1/λ2
# (the original called the ratio the gap). Eigenvalues here are the largest *algebraic* ones, sorted, each with its
# residual ‖Hv−λv‖/|λ|.

# %%
spectrum, sharpness = saved.get("spectrum", pd.DataFrame()), saved.get("sharpness", pd.DataFrame())
if len(spectrum):
    plots.spectral_tracking(spectrum, OPTIMIZER)
    print(spectrum[["lambda1", "lambda2", "gap", "ratio", "residual1", "residual2", "n_hvps"]]
          .describe().loc[["mean", "50%", "min", "max"]])
if len(sharpness):
    plots.sharpness_curve(sharpness, lr=config["hyperparameters"]["lr"] if OPTIMIZER == "sgd" else None,
                          title=OPTIMIZER)
plt.show()

# %% [markdown]
# ## Why it ends where it does: stability, subspace, equal loss
#
# The step size bounds the *preconditioned* sharpness λ1(P⁻¹H), not the raw one, for the adaptive optimizers
# (Cohen et al. 2022): the left panel divides both by the optimizer's threshold (2/η for SGD and SAM,
# (2 + 2β1)/((1 − β1)η) for Adam and AdaHessian, 2/η_t for AdaGrad), so 1 is the edge of stability. The right panel
# is the share of the gradient in the span of the top-10 Hessian eigenvectors (Gur-Ari et al. 2018). Below: λ1,
# λ1(P⁻¹H) and the trace measured when the training loss first fell below each threshold, which compares
# optimizers at equal loss rather than at their different final losses.

# %%
if "tracking" in saved:
    plots.instruments(saved["tracking"], OPTIMIZER)
if "equal_loss" in saved:
    print(saved["equal_loss"][["loss_threshold", "epoch", "train_loss", "lambda1", "precond_lambda1", "trace"]])
    plots.equal_loss(saved["equal_loss"], OPTIMIZER)
plt.show()

# %% [markdown]
# ## The final minimum
#
# Top eigenpairs with residuals (and PyHessian's own answer beside them, as the original computed it), the trace by
# Hutchinson with its standard error, the spectral density by stochastic Lanczos quadrature, how λ1, λ2 and the
# trace depend on the size of the Hessian batch, and the top 20 eigenvalues of the full training set's Hessian: the
# literature expects about 10 outliers (one per class) above a bulk (Sagun et al. 2017, Papyan 2020).

# %%
# a sweep's runs skip this (FINAL_ANALYSIS = False); a complete run is drawn from whatever it saved
analyse = final["status"] == "ok" and ("curvature" in saved if complete else config["final_analysis"])
if analyse:
    curv = saved["curvature"] if complete else analysis.final_curvature(model, data, config, run_dir)
    print(pd.DataFrame({"eigenvalue": curv["top_eigenvalues"], "residual": curv["residuals"]}))
    print("PyHessian (original method):", curv["pyhessian"])
    print(f"trace {curv['trace']['mean']:.4g} ± {curv['trace']['stderr']:.2g}")
    print(pd.DataFrame(curv["batch_sensitivity"]))
    dens = helpers.load_run(run_dir)["density"]
    plots.spectral_density(dens["grid"], dens["density"], curv["top_eigenvalues"], OPTIMIZER)
    if curv.get("full_data_top"):
        top = curv["full_data_top"]
        print(f"full training set ({top['n_samples']} samples): {top['n_outliers']} outliers by {top['outlier_rule']}")
        plots.outlier_spectrum(top["eigenvalues"], top["n_outliers"], OPTIMIZER)
    plt.show()

# %% [markdown]
# ## Loss landscapes
#
# Along the top eigenvector (41 points in [-1, 1]) and the top two (41×41 grid), as the original; and along
# filter-normalised random directions (Li et al. 2018), which are comparable across networks whose weights differ in
# scale.

# %%
if analyse:
    land = saved["landscape"] if complete else analysis.final_landscapes(model, data, config, curv["eigenvectors"],
                                                                          run_dir)
    plots.landscape_1d(land["alphas"], land["eig_1d"], land["random_1d"], OPTIMIZER)
    plots.landscape_2d(land["alphas"], land["eig_2d"], f"{OPTIMIZER}: top-2 eigenvectors")
    plots.landscape_2d(land["alphas"], land["random_2d"], f"{OPTIMIZER}: filter-normalised random")
    plt.show()

# %%
if not complete:
    helpers.mark_done(run_dir)  # last: the folder is complete
print("complete:", run_dir)
