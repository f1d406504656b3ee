"""Writes the four optimizer notebooks from one template, so they cannot drift apart.

Run ``python notebooks/build_notebooks.py`` after editing the template; the
notebooks are committed without outputs (tests check both).
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

ABOUT = {
    "sgd": ("SGD", "Plain stochastic gradient descent, lr 0.1: the baseline whose sharpness can be read against "
                   "the 2/lr stability threshold."),
    "adam": ("Adam", "Adam, lr 0.001: per-coordinate step sizes from running moments of the gradient."),
    "adagrad": ("AdaGrad", "AdaGrad, lr 0.01: per-coordinate step sizes that shrink with the accumulated squared "
                           "gradients."),
    "adahessian": ("AdaHessian", "AdaHessian (`torch_optimizer.Adahessian`), lr 0.1: Adam-like, with the Hessian "
                                 "diagonal (Hutchinson estimate) in place of the squared gradient. Its step needs "
                                 "the gradient's graph, `backward(create_graph=True)`, which `training.training_step` "
                                 "hides."),
}


def cells(optimizer):
    title, about = ABOUT[optimizer]
    return [
        new_markdown_cell(f"# {title} on MNIST: training, Hessian spectrum and landscapes\n\n{about}\n\n"
                          "This notebook trains LeNet5, tracks the top of the loss Hessian's spectrum over the last "
                          "training steps, and analyses the final minimum. Everything it computes is written to "
                          "`results/<optimizer>/seed<k>/`; a `done` file, written last, marks the run complete. "
                          "Run it cell by cell from `notebooks/`, or headless through `python runner.py run`."),
        new_code_cell("# Parameters: papermill overrides these; None means the value in params.py.\n"
                      f'OPTIMIZER = "{optimizer}"\n'
                      "SEED = 0\n"
                      "EPOCHS = None\n"
                      "BATCH_SIZE = None\n"
                      "DATA_SOURCE = None     # auto | torchvision | embedded\n"
                      "SMOKE = False          # seconds-long run on a subset (tests, make smoke)\n"
                      "OVERRIDES = {}         # optimizer hyperparameters, e.g. {\"lr\": 0.05}\n"
                      "SWEEP = None           # sweep name: results go to results/sweeps/<SWEEP>/...\n"
                      "VALIDATION_SIZE = 0    # samples held out of the training split (sweeps)\n"
                      'RESULTS_DIR = "../results"\n'
                      'DATA_DIR = "../data"\n'
                      "FORCE = False          # redo a complete run\n"
                      "PROGRESS = True", metadata={"tags": ["parameters"]}),
        new_code_cell("%matplotlib inline\n"
                      "import matplotlib.pyplot as plt\n"
                      "import pandas as pd\n\n"
                      "import analysis\nimport helpers\nimport plots\nimport training\n\n"
                      "config = helpers.make_config(OPTIMIZER, SEED, epochs=EPOCHS, batch_size=BATCH_SIZE, data_source=DATA_SOURCE, smoke=SMOKE,\n"
                      "                             overrides=OVERRIDES, validation_size=VALIDATION_SIZE,\n"
                      "                             results_dir=RESULTS_DIR, data_dir=DATA_DIR, sweep=SWEEP)\n"
                      "device = helpers.pick_device()\n"
                      "print(f\"{OPTIMIZER}, seed {SEED}, {config['epochs']} epochs, batch {config['batch_size']}, \"\n"
                      "      f\"hyperparameters {config['hyperparameters']}, device {device}\")"),
        new_markdown_cell("## Data\n\nMNIST, resized 28→32 bilinearly, pixels in [0, 1], preloaded as tensors on the "
                          "device. The source (full MNIST or the embedded 5,000-digit subset) is printed and recorded "
                          "in the run's `config.json`."),
        new_code_cell("d = config[\"data\"]\n"
                      "data = helpers.load_mnist(d[\"source_requested\"], d[\"data_dir\"], train_size=d[\"train_size\"],\n"
                      "                          test_size=d[\"test_size\"], validation_size=d[\"validation_size\"], device=device)\n"
                      "run_dir = helpers.prepare_run_dir(config, data, device, force=FORCE)\n"
                      "print(\"run folder:\", run_dir)\n"
                      "plots.sample_digits(data.x_train, data.y_train)\n"
                      "plt.show()"),
        new_markdown_cell("## Training\n\nOne loop serves all optimizers. After every step a callback tracks the "
                          "Hessian: λ1 and λ2 over the last steps (certified Lanczos, warm-started step to step) and "
                          "the sharpness λ1 every few hundred steps. The callback restores everything it touches, so "
                          "training is bitwise the same with or without it. Each epoch is checkpointed: a killed run "
                          "resumes where it stopped."),
        new_code_cell("model = training.build_model(SEED, device)\n"
                      "tracker = analysis.spectrum_tracker(data, config)\n"
                      "outcome = training.train(model, config, data, run_dir, callback=tracker, progress=PROGRESS)\n"
                      "analysis.save_tracking(tracker, run_dir)\n"
                      "final = training.finish_training(model, data, outcome, run_dir)\n"
                      "history = pd.DataFrame(outcome[\"history\"])\n"
                      "print({k: final[k] for k in (\"status\", \"train_accuracy\", \"test_accuracy\") if k in final})"),
        new_code_cell("if len(history):\n"
                      "    plots.learning_curves(history, OPTIMIZER)\n"
                      "    plots.gradient_norms(history, OPTIMIZER)\n"
                      "if final[\"status\"] == \"ok\":\n"
                      "    plots.confusion_heatmap(final[\"test_confusion_matrix\"], f\"{OPTIMIZER}: test confusion (per true class)\")\n"
                      "plt.show()"),
        new_markdown_cell("## Spectrum over the last steps\n\nThe original study's central measurement. We report "
                          "both the spectral **gap** λ1−λ2 and the **ratio** λ1/λ2 (the original called the ratio the "
                          "gap). Eigenvalues here are the largest *algebraic* ones, sorted, each with its residual "
                          "‖Hv−λv‖/|λ|."),
        new_code_cell("spectrum, sharpness = pd.DataFrame(tracker.spectrum), pd.DataFrame(tracker.sharpness)\n"
                      "if len(spectrum):\n"
                      "    plots.spectral_tracking(spectrum, OPTIMIZER)\n"
                      "    print(spectrum[[\"lambda1\", \"lambda2\", \"gap\", \"ratio\", \"residual1\", \"residual2\", \"n_hvps\"]]\n"
                      "          .describe().loc[[\"mean\", \"50%\", \"min\", \"max\"]])\n"
                      "if len(sharpness):\n"
                      "    plots.sharpness_curve(sharpness, lr=config[\"hyperparameters\"][\"lr\"] if OPTIMIZER == \"sgd\" else None,\n"
                      "                          title=OPTIMIZER)\n"
                      "plt.show()"),
        new_markdown_cell("## The final minimum\n\nTop eigenpairs with residuals (and PyHessian's own answer beside "
                          "them, as the original computed it), the trace by Hutchinson with its standard error, the "
                          "spectral density by stochastic Lanczos quadrature, and how λ1, λ2 and the trace depend on "
                          "the size of the Hessian batch."),
        new_code_cell("if final[\"status\"] == \"ok\":\n"
                      "    curv = analysis.final_curvature(model, data, config, run_dir)\n"
                      "    print(pd.DataFrame({\"eigenvalue\": curv[\"top_eigenvalues\"], \"residual\": curv[\"residuals\"]}))\n"
                      "    print(\"PyHessian (original method):\", curv[\"pyhessian\"])\n"
                      "    print(f\"trace {curv['trace']['mean']:.4g} ± {curv['trace']['stderr']:.2g}\")\n"
                      "    print(pd.DataFrame(curv[\"batch_sensitivity\"]))\n"
                      "    dens = plots.load_run(run_dir)[\"density\"]\n"
                      "    plots.spectral_density(dens[\"grid\"], dens[\"density\"], curv[\"top_eigenvalues\"], OPTIMIZER)\n"
                      "    plt.show()"),
        new_markdown_cell("## Loss landscapes\n\nAlong the top eigenvector (41 points in [-1, 1]) and the top two "
                          "(41×41 grid), as the original; and along filter-normalised random directions (Li et al. "
                          "2018), which are comparable across networks whose weights differ in scale."),
        new_code_cell("if final[\"status\"] == \"ok\":\n"
                      "    land = analysis.final_landscapes(model, data, config, curv[\"eigenvectors\"], run_dir)\n"
                      "    plots.landscape_1d(land[\"alphas\"], land[\"eig_1d\"], land[\"random_1d\"], OPTIMIZER)\n"
                      "    plots.landscape_2d(land[\"alphas\"], land[\"eig_2d\"], f\"{OPTIMIZER}: top-2 eigenvectors\")\n"
                      "    plots.landscape_2d(land[\"alphas\"], land[\"random_2d\"], f\"{OPTIMIZER}: filter-normalised random\")\n"
                      "    plt.show()"),
        new_code_cell("helpers.mark_done(run_dir)  # last: the folder is complete\n"
                      "print(\"complete:\", run_dir)"),
    ]


def build(optimizer) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells(optimizer))
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}}
    return nb


if __name__ == "__main__":
    for name in ABOUT:
        nb = build(name)
        for c in nb.cells:  # stable ids keep diffs quiet
            c.id = f"{name}-{nb.cells.index(c)}"
        nbformat.write(nb, HERE / f"{name}.ipynb")
        print("wrote", HERE / f"{name}.ipynb")
