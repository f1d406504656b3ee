"""Figures of one run, drawn from what the run folder holds (or the same data in memory).

Used by the optimizer notebooks; imports no training code (runs are read with ``minima.runs.load_run``). Each function
returns the matplotlib Figure so that callers can save it.
"""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

CLASSES = [str(i) for i in range(10)]


def sample_digits(x, y, n=16):
    """The first ``n`` training images as the model sees them (32x32, [0, 1])."""
    cols = min(n, 8)
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(1.2 * cols, 1.4 * ((n + cols - 1) // cols)))
    for ax, img, label in zip(np.ravel(axes), x[:n], y[:n]):
        ax.imshow(np.asarray(img.cpu()).squeeze(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(int(label), fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def learning_curves(history: pd.DataFrame, title=""):
    """Loss and accuracy per epoch, train and test."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    for split in ("train", "test", "val"):
        if f"{split}_loss" in history:
            a.plot(history.epoch, history[f"{split}_loss"], label=split)
            b.plot(history.epoch, history[f"{split}_accuracy"], label=split)
    a.set(xlabel="epoch", ylabel="cross-entropy", yscale="log", title=f"{title} loss".strip())
    b.set(xlabel="epoch", ylabel="accuracy", title=f"{title} accuracy".strip())
    a.legend(), b.legend()
    fig.tight_layout()
    return fig


def gradient_norms(history: pd.DataFrame, title=""):
    """Full-batch gradient norm per epoch beside the original's last-mini-batch norm."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(history.epoch, history.grad_norm_full, label="full training set")
    ax.plot(history.epoch, history.grad_norm_last_batch, label="last mini-batch (original)", alpha=0.6)
    ax.set(xlabel="epoch", ylabel="gradient norm", yscale="log", title=f"{title} gradient norm".strip())
    ax.legend()
    fig.tight_layout()
    return fig


def confusion_heatmap(matrix, title="", ax=None, classes=None):
    """Confusion matrix normalised per true class (rows sum to 1).

    ``classes`` labels the axes (``minima.data.CLASS_NAMES[dataset]``); MNIST's digits when None.
    """
    classes = CLASSES if classes is None else [str(c) for c in classes]
    m = np.asarray(matrix, dtype=float)
    m = m / np.clip(m.sum(1, keepdims=True), 1, None)
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if m[i, j] >= 0.005:
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if m[i, j] > 0.5 else "black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=title)
    if max(map(len, classes)) > 2:  # names, not digits: slanted so that they do not overlap
        ax.tick_params(axis="x", labelrotation=60)
        ax.tick_params(axis="both", labelsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


def spectral_tracking(spectrum: pd.DataFrame, title=""):
    """lambda1, lambda2, their gap and their ratio over the tracked last steps."""
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.5))
    a.plot(spectrum.step, spectrum.lambda1, label=r"$\lambda_1$")
    a.plot(spectrum.step, spectrum.lambda2, label=r"$\lambda_2$")
    a.set(xlabel="step", ylabel="eigenvalue", title=f"{title} top eigenvalues".strip())
    a.legend()
    b.plot(spectrum.step, spectrum.gap, color="C2")
    b.set(xlabel="step", ylabel=r"$\lambda_1-\lambda_2$", title="spectral gap")
    c.plot(spectrum.step, spectrum.ratio, color="C3")
    c.axhline(1, color="grey", lw=0.8, ls=":")
    c.set(xlabel="step", ylabel=r"$\lambda_1/\lambda_2$", title="eigenvalue ratio")
    fig.tight_layout()
    return fig


def sharpness_curve(sharpness: pd.DataFrame, lr=None, title="", ax=None):
    """lambda1 over training; with ``lr`` (plain SGD) the 2/lr stability threshold too."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    ax.plot(sharpness.step, sharpness.lambda1, marker=".", label=r"$\lambda_1$")
    if lr:
        ax.axhline(2 / lr, color="C3", ls="--", label=f"2/lr = {2 / lr:g}")
    ax.set(xlabel="step", ylabel=r"sharpness $\lambda_1$", yscale="log", title=f"{title} sharpness".strip())
    ax.legend()
    return fig


def spectral_density(grid, density, eigenvalues=None, title="", ax=None):
    """Smoothed eigenvalue density (SLQ) on a log scale, with the top eigenvalues marked."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    ax.semilogy(grid, np.clip(density, 1e-12, None))
    for lam in eigenvalues or []:
        ax.axvline(lam, color="C3", lw=0.6, alpha=0.6)
    ax.set(xlabel="eigenvalue", ylabel="density", ylim=(1e-8, None), title=f"{title} spectral density".strip())
    return fig


def landscape_1d(alphas, eig_1d, random_1d=None, title="", ax=None):
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    ax.plot(alphas, eig_1d, label="top eigenvector")
    if random_1d is not None:
        ax.plot(alphas, random_1d, label="filter-normalised random")
    ax.set(xlabel=r"$\alpha$", ylabel="loss", title=f"{title} 1D landscape".strip())
    ax.legend()
    return fig


def landscape_2d(alphas, surface, title="", zlabel="loss"):
    """Contour and 3D surface of a 2D loss slice side by side."""
    fig = plt.figure(figsize=(11, 4.5))
    a = fig.add_subplot(1, 2, 1)
    A, B = np.meshgrid(alphas, alphas, indexing="ij")
    cs = a.contourf(A, B, surface, levels=30, cmap="viridis")
    fig.colorbar(cs, ax=a)
    a.set(xlabel=r"$\alpha$", ylabel=r"$\beta$", title=f"{title} contour".strip())
    b = fig.add_subplot(1, 2, 2, projection="3d")
    b.plot_surface(A, B, surface, cmap="viridis", linewidth=0)
    b.set(xlabel=r"$\alpha$", ylabel=r"$\beta$", zlabel=zlabel, title=f"{title} surface".strip())
    fig.tight_layout()
    return fig


def instruments(tracking: pd.DataFrame, title=""):
    """Preconditioned sharpness over its stability threshold (1 = the edge), and the gradient's top-k share."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(tracking.step, tracking.precond_ratio, marker=".", label=r"$\lambda_1(P^{-1}H)$ / threshold")
    a.plot(tracking.step, tracking.lambda1 / tracking.threshold, marker=".", alpha=0.6,
           label=r"raw $\lambda_1$ / threshold")
    a.axhline(1.0, color="C3", ls="--", lw=1, label="stability threshold")
    a.set(xlabel="step", yscale="log", title=f"{title} preconditioned sharpness".strip())
    a.legend(fontsize=8)
    k = int(tracking.k.iloc[0]) if "k" in tracking else "k"
    b.plot(tracking.step, tracking.overlap_hessian_batch, marker=".", label="Hessian batch's gradient")
    b.plot(tracking.step, tracking.overlap_last_batch, marker=".", label="last mini-batch's gradient")
    b.set(xlabel="step", ylabel=f"share in the top-{k} eigenspace", ylim=(0, 1.02),
          title=f"{title} gradient in the top eigenspace".strip())
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def equal_loss(rows: pd.DataFrame, title="", ax=None):
    """lambda1 (raw and preconditioned) and the trace at the first epoch end below each training-loss threshold."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    ax.plot(rows.train_loss, rows.lambda1, marker="o", label=r"$\lambda_1$")
    ax.plot(rows.train_loss, rows.precond_lambda1, marker="s", label=r"$\lambda_1(P^{-1}H)$")
    ax.plot(rows.train_loss, rows.trace, marker="^", label="trace")
    ax.set(xlabel="training loss (first epoch end below each threshold)", xscale="log", yscale="log",
           title=f"{title} curvature at equal training loss".strip())
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    return fig


def outlier_spectrum(eigenvalues, n_outliers=None, title="", ax=None):
    """The top eigenvalues of the full training set's Hessian on a log scale, the outliers marked."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.5))
    values = np.asarray(eigenvalues, dtype=float)
    idx = np.arange(1, len(values) + 1)
    ax.semilogy(idx[values > 0], values[values > 0], "o-", ms=4)
    if n_outliers:
        ax.axvline(n_outliers + 0.5, color="C3", ls="--", lw=1, label=f"{n_outliers} outliers (largest ratio)")
        ax.legend(fontsize=8)
    ax.set(xlabel="i", ylabel=r"$\lambda_i$ (full training set)", title=f"{title} top of the spectrum".strip())
    return fig
