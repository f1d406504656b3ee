"""The report's figures: one function per comparison figure, the shared figure style, and saving.

Each ``plot_<figure>`` takes the frames of ``collection.collect`` and returns a
matplotlib figure; ``save_figure`` writes it to ``report/figures/``. The
plotting notebook (``notebooks/plotting_results.ipynb``) calls them, and
``minima.report.build.FIGURES`` names what it must write. Runs that diverged are left out
of every figure.
"""

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from minima import plots, runs
from minima.report import collection
from minima.report.tables import batch_sort_key


def set_style(font_size=9, label_size=None, title_size=None, legend_size=None, dpi=100) -> None:
    plt.rcParams.update({"font.size": font_size, "axes.labelsize": label_size or font_size,
                         "axes.titlesize": title_size or font_size + 1, "legend.fontsize": legend_size or font_size - 1,
                         "figure.dpi": dpi, "axes.spines.top": False, "axes.spines.right": False})


def _label(opt, labels=None) -> str:
    return (labels or collection.LABELS).get(opt, opt)


def _panels(n, figsize, ncols=2, **kw):
    """A grid of ``n`` axes (two per row), spare axes hidden."""
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, **kw)
    axes = axes.ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def seed_band(ax, wide, color, label, band="minmax") -> None:
    """Mean over seeds (columns of ``wide``, indexed by x) as a line; min–max or ±sd as a band."""
    x, mean = wide.index.to_numpy(), wide.mean(axis=1).to_numpy()
    if band == "sd":
        sd = wide.std(axis=1, ddof=1).fillna(0).to_numpy()
        lo, hi = mean - sd, mean + sd
    else:
        lo, hi = wide.min(axis=1).to_numpy(), wide.max(axis=1).to_numpy()
    ax.plot(x, mean, color=color, lw=1.3, label=f"{label} (n={wide.shape[1]})")
    if wide.shape[1] > 1:
        ax.fill_between(x, lo, hi, color=color, alpha=0.25, lw=0)


def plot_grad_norms(frames, figsize=(9, 6.5), band="minmax", labels=None):
    """Per optimizer: full-batch and last-mini-batch (the original's) gradient norm per epoch."""
    hist = collection.only_ok(frames["history"], frames)
    opts = collection.optimizers_in(hist)
    fig, axes = _panels(len(opts), figsize, sharex=True)
    for ax, opt in zip(axes, opts):
        h = hist[hist.optimizer == opt]
        for col, color, what in (("grad_norm_full", "C0", "full training set"),
                                 ("grad_norm_last_batch", "C1", "last mini-batch (original)")):
            seed_band(ax, h.pivot_table(index="epoch", columns="seed", values=col), color, what, band)
        ax.set(yscale="log", title=_label(opt, labels), xlabel="epoch", ylabel="gradient norm")
        ax.legend()
    fig.tight_layout()
    return fig


def plot_training_loss(frames, figsize=(9, 6.5), labels=None):
    """Per optimizer: each seed's epoch-end training loss, one line per seed (a band over seeds would hide
    the single-seed jumps that this figure is for)."""
    hist = collection.only_ok(frames["history"], frames)
    opts = collection.optimizers_in(hist)
    fig, axes = _panels(len(opts), figsize, sharex=True, sharey=True)
    for ax, opt in zip(axes, opts):
        for i, (seed, h) in enumerate(hist[hist.optimizer == opt].sort_values("epoch").groupby("seed")):
            ax.plot(h.epoch, h.train_loss, color=f"C{i}", lw=1, label=f"seed {seed}")
        ax.set(yscale="log", title=_label(opt, labels), xlabel="epoch", ylabel="training loss")
        # shared axes hide inner tick labels; every panel keeps its own, so each reads alone
        ax.tick_params(labelbottom=True, labelleft=True)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_spectral_ratio_gap(frames, figsize=(13, 6), band="minmax", labels=None):
    """Ratio λ1/λ2 (top row) and gap λ1−λ2 (bottom row) over the tracked last steps, a column per optimizer.

    Rows share their y axis; the dashed line is the original's median ratio (MNIST runs only), the dotted one
    ratio = 1.
    """
    spec = collection.only_ok(frames["spectrum"], frames).copy()
    mnist = set(frames["runs"].get("dataset", ["mnist"])) == {"mnist"}  # the original's medians are MNIST's
    spec["before_end"] = spec.step - spec.groupby(["optimizer", "seed"]).step.transform("max")
    opts = collection.optimizers_in(spec)
    fig, axes = plt.subplots(2, max(1, len(opts)), figsize=figsize, squeeze=False, sharex=True, sharey="row")
    for col, opt in enumerate(opts):
        s, (a, b) = spec[spec.optimizer == opt], axes[:, col]
        seed_band(a, s.pivot_table(index="before_end", columns="seed", values="ratio"), "C0", "ours", band)
        seed_band(b, s.pivot_table(index="before_end", columns="seed", values="gap"), "C2", "ours", band)
        if mnist and opt in collection.ORIGINAL_RATIO_MEDIAN:
            a.axhline(collection.ORIGINAL_RATIO_MEDIAN[opt], color="C3", ls="--", lw=1,
                      label=f"original's median {collection.ORIGINAL_RATIO_MEDIAN[opt]:g}")
        a.axhline(1, color="grey", lw=0.8, ls=":")
        a.set(title=_label(opt, labels))
        b.set(xlabel="steps before the end", yscale="log")
        a.legend()
    axes[0, 0].set_ylabel(r"ratio $\lambda_1/\lambda_2$")
    axes[1, 0].set_ylabel(r"gap $\lambda_1-\lambda_2$")
    fig.tight_layout()
    return fig


def plot_sharpness(frames, figsize=(9, 6.5), band="minmax", labels=None):
    """λ1 over training per optimizer; for SGD the 2/lr stability threshold of gradient descent."""
    sharp, runs = collection.only_ok(frames["sharpness"], frames), collection.ok_runs(frames)
    opts = collection.optimizers_in(sharp)
    fig, axes = _panels(len(opts), figsize)
    for ax, opt in zip(axes, opts):
        seed_band(ax, sharp[sharp.optimizer == opt].pivot_table(index="step", columns="seed", values="lambda1"),
                  "C0", r"$\lambda_1$", band)
        if opt == "sgd":
            for lr in runs[runs.optimizer == opt].lr.dropna().unique():
                ax.axhline(2 / lr, color="C3", ls="--", lw=1, label=f"2/lr = {2 / lr:g}")
        ax.set(yscale="log", xlabel="step", ylabel=r"sharpness $\lambda_1$", title=_label(opt, labels))
        ax.legend()
    fig.tight_layout()
    return fig


def _arrays(frames, name) -> dict:
    """optimizer -> [(seed, arrays)] for the ``name``.npz of every run that did not diverge."""
    out = {}
    for row in collection.ok_runs(frames).itertuples():
        arrays = runs.load_run(row.run_dir).get(name)
        if arrays is not None:
            out.setdefault(row.optimizer, []).append((row.seed, arrays))
    return out


def plot_landscape_1d(frames, figsize=(11, 3.8), labels=None, log=True):
    """Loss along the top eigenvector and along a filter-normalised random direction; a thin line per seed."""
    land = _arrays(frames, "landscape")
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True)
    for i, opt in enumerate(sorted(land, key=collection.optimizer_sort_key)):
        for j, (_seed, arr) in enumerate(land[opt]):
            label = f"{_label(opt, labels)} (n={len(land[opt])})" if j == 0 else None
            axes[0].plot(arr["alphas"], arr["eig_1d"], color=f"C{i}", lw=0.9, alpha=0.8, label=label)
            axes[1].plot(arr["alphas"], arr["random_1d"], color=f"C{i}", lw=0.9, alpha=0.8, label=label)
    axes[0].set(title="along the top Hessian eigenvector", xlabel=r"$\alpha$", ylabel="loss (Hessian batch)",
                yscale="log" if log else "linear")
    axes[1].set(title="along a filter-normalised random direction", xlabel=r"$\alpha$")
    axes[0].legend()
    fig.tight_layout()
    return fig


SURFACES = (("eig_2d", "top-2 eigenvector plane"), ("random_2d", "filter-normalised random plane"))


def _surfaces(frames, log):
    """The first seed's 2D slices per optimizer, in panel order, and one value range per slice kind."""
    land = _arrays(frames, "landscape")
    items = [(opt, *min(land[opt], key=lambda item: item[0]))
             for opt in sorted(land, key=collection.optimizer_sort_key)]
    z = {key: [np.log10(np.clip(arr[key], 1e-12, None)) if log else arr[key] for _, _, arr in items]
         for key, _ in SURFACES}
    limits = {key: (min(v.min() for v in z[key]), max(v.max() for v in z[key])) if z[key] else (0, 1) for key in z}
    return items, z, limits


def plot_landscape_2d(frames, figsize=(13, 6), labels=None, log=True, levels=30):
    """Contours of the 2D loss slices, first seed per optimizer: eigenvector plane (top), random plane (bottom).

    Each row shares one colour scale, so flatness reads across optimizers.
    """
    items, z, limits = _surfaces(frames, log)
    fig, axes = plt.subplots(2, max(1, len(items)), figsize=figsize, squeeze=False, sharex=True, sharey=True,
                             layout="constrained")
    for row, (key, what) in enumerate(SURFACES):
        bounds = np.linspace(*limits[key], levels)
        for col, (opt, seed, arr) in enumerate(items):
            A, B = np.meshgrid(arr["alphas"], arr["alphas"], indexing="ij")
            cs = axes[row, col].contourf(A, B, z[key][col], levels=bounds, cmap="viridis", extend="both")
            axes[row, col].set(aspect="equal", xlabel=r"$\alpha$" if row == 1 else None)
            if row == 0:
                axes[row, col].set_title(f"{_label(opt, labels)} (seed {seed})")
        axes[row, 0].set_ylabel(f"{what}\n" + r"$\beta$")
        if items:
            fig.colorbar(cs, ax=axes[row, :], label="log10 loss" if log else "loss", shrink=0.9,
                         ticks=MaxNLocator(6))
    return fig


def plot_landscape_3d(frames, figsize=(13, 6), labels=None, log=True):
    """The same slices as 3D surfaces, as the original drew them, each row on one vertical scale."""
    items, z, limits = _surfaces(frames, log)
    fig = plt.figure(figsize=figsize, layout="constrained")
    for row, (key, what) in enumerate(SURFACES):
        for col, (opt, seed, arr) in enumerate(items):
            ax = fig.add_subplot(2, len(items), row * len(items) + col + 1, projection="3d")
            A, B = np.meshgrid(arr["alphas"], arr["alphas"], indexing="ij")
            ax.plot_surface(A, B, z[key][col], cmap="viridis", vmin=limits[key][0], vmax=limits[key][1],
                            linewidth=0, antialiased=False)
            ax.set(title=f"{_label(opt, labels)} (seed {seed})\n{what}", zlim=limits[key], xlabel=r"$\alpha$",
                   ylabel=r"$\beta$", zlabel="log10 loss" if log else "loss")
    return fig


def mean_confusion(frames, optimizer) -> np.ndarray:
    """Test confusion matrix normalised per true class, averaged over the optimizer's seeds."""
    c = collection.only_ok(frames["confusion"], frames)
    mats = []
    for _, g in c[c.optimizer == optimizer].groupby("seed"):
        m = g.pivot_table(index="true", columns="predicted", values="count", fill_value=0).to_numpy(dtype=float)
        mats.append(m / np.clip(m.sum(1, keepdims=True), 1, None))
    return np.mean(mats, axis=0)


def plot_confusion(frames, figsize=(9, 8), labels=None):
    c = collection.only_ok(frames["confusion"], frames)
    opts = collection.optimizers_in(c)
    fig, axes = _panels(len(opts), figsize)
    for ax, opt in zip(axes, opts):
        plots.confusion_heatmap(mean_confusion(frames, opt),
                                f"{_label(opt, labels)} (mean of {collection.seed_count(c, opt)} seeds)", ax=ax)
    fig.tight_layout()
    return fig


def plot_spectral_density(frames, figsize=(9, 6.5), labels=None):
    """SLQ spectral density per optimizer, a line per seed, each seed's λ1 marked."""
    dens, runs = _arrays(frames, "density"), collection.ok_runs(frames)
    opts = sorted(dens, key=collection.optimizer_sort_key)
    fig, axes = _panels(len(opts), figsize)
    for ax, opt in zip(axes, opts):
        for seed, arr in dens[opt]:
            ax.semilogy(arr["grid"], np.clip(arr["density"], 1e-12, None), lw=0.9, label=f"seed {seed}")
            lam = runs[(runs.optimizer == opt) & (runs.seed == seed)].get("lambda1")
            if lam is not None and np.isfinite(lam.iloc[0]):
                ax.axvline(lam.iloc[0], color="grey", lw=0.6, ls=":")
        ax.set(xlabel="eigenvalue", ylabel="density", ylim=(1e-8, None), title=_label(opt, labels))
        ax.legend()
    fig.tight_layout()
    return fig


def plot_hessian_batch_sensitivity(frames, figsize=(11, 3.8), labels=None):
    """λ1 and trace against the Hessian batch size, mean with ±sd error bars over seeds."""
    sens = collection.only_ok(frames["sensitivity"], frames)
    batches = sorted(sens.batch.unique(), key=batch_sort_key) if len(sens) else []
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    opts = collection.optimizers_in(sens)
    for i, opt in enumerate(opts):
        s = sens[sens.optimizer == opt]
        stats = s.groupby("batch")[["lambda1", "trace"]].agg(["mean", "std"]).reindex(batches)
        x = np.arange(len(batches)) + 0.08 * (i - (len(opts) - 1) / 2)
        for ax, col in zip(axes, ("lambda1", "trace")):
            ax.errorbar(x, stats[(col, "mean")], yerr=stats[(col, "std")].fillna(0), color=f"C{i}", marker="o",
                        ms=4, capsize=3, label=f"{_label(opt, labels)} (n={s.seed.nunique()})")
    ticks = [f"full ({int(sens[sens.batch == b].n_samples.max())})" if b == "full" else b for b in batches]
    for ax, what in zip(axes, (r"$\lambda_1$", "trace (Hutchinson)")):
        ax.set(xticks=range(len(batches)), xticklabels=ticks, xlabel="Hessian batch (samples)", ylabel=what,
               yscale="log")
    axes[0].legend()
    fig.tight_layout()
    return fig


def _optional(frame, what):
    """None (and a printed note) when no run carries the file behind a figure: older runs lack the instruments."""
    if frame is None or not len(frame):
        print(f"note: no complete run carries {what}; its figure is skipped")
        return True
    return False


def plot_preconditioned_sharpness(frames, figsize=(9, 6.5), band="minmax", labels=None):
    """Per optimizer: λ1(P⁻¹H) and raw λ1 over the step's stability threshold; 1 is the edge of stability."""
    track = collection.only_ok(frames.get("tracking"), frames)
    if not _optional(track, "tracking.csv"):  # an optimizer with no known preconditioner has no threshold
        track = track[np.isfinite(track.threshold.astype(float))]
    if _optional(track, "a stability threshold (tracking.csv)"):
        return None
    track = track.assign(raw_ratio=track.lambda1 / track.threshold)
    opts = collection.optimizers_in(track)
    fig, axes = _panels(len(opts), figsize, sharex=True)
    for ax, opt in zip(axes, opts):
        t = track[track.optimizer == opt]
        seed_band(ax, t.pivot_table(index="step", columns="seed", values="precond_ratio"), "C0",
                  r"$\lambda_1(P^{-1}H)$ / threshold", band)
        seed_band(ax, t.pivot_table(index="step", columns="seed", values="raw_ratio"), "C1",
                  r"raw $\lambda_1$ / threshold", band)
        ax.axhline(1, color="C3", ls="--", lw=1, label="stability threshold")
        ax.set(yscale="log", xlabel="step", title=_label(opt, labels))
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_subspace_overlap(frames, figsize=(11, 3.8), band="minmax", labels=None):
    """The share of the gradient in the top-k Hessian eigenspace over training, one curve per optimizer."""
    track = collection.only_ok(frames.get("tracking"), frames)
    if _optional(track, "tracking.csv"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True)
    k = int(track.k.max())
    for i, opt in enumerate(collection.optimizers_in(track)):
        t = track[track.optimizer == opt]
        for ax, col in zip(axes, ("overlap_hessian_batch", "overlap_last_batch")):
            seed_band(ax, t.pivot_table(index="step", columns="seed", values=col), f"C{i}", _label(opt, labels), band)
    for ax, what in zip(axes, ("Hessian batch's gradient", "last mini-batch's gradient")):
        ax.set(xlabel="step", ylim=(0, 1.02), title=what)
    axes[0].set_ylabel(f"share of ||g||² in the top-{k} eigenspace")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_equal_loss(frames, figsize=(11, 3.8), labels=None):
    """λ1, λ1(P⁻¹H) and the trace at the first epoch end below each training-loss threshold, per optimizer."""
    eq = collection.only_ok(frames.get("equal_loss"), frames)
    if _optional(eq, "equal_loss.csv"):
        return None
    eq = eq.assign(precond_lambda1=eq.precond_lambda1.where(eq.precond_lambda1 > 0))  # NaN: no preconditioner
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    for i, opt in enumerate(collection.optimizers_in(eq)):
        stats = eq[eq.optimizer == opt].groupby("loss_threshold")[["lambda1", "precond_lambda1", "trace"]]
        mean, sd = stats.mean(), stats.std(ddof=1).fillna(0)
        n = eq[eq.optimizer == opt].seed.nunique()
        for ax, col in zip(axes, ("lambda1", "precond_lambda1", "trace")):
            ax.errorbar(mean.index, mean[col], yerr=sd[col], color=f"C{i}", marker="o", ms=4, capsize=3,
                        label=f"{_label(opt, labels)} (n≤{n})")
    for ax, col, what in zip(axes, ("lambda1", "precond_lambda1", "trace"),
                             (r"$\lambda_1$", r"$\lambda_1(P^{-1}H)$", "trace")):
        positive = bool((eq[col] > 0).any())  # a log axis needs one positive value (no preconditioner: none)
        ax.set(xscale="log", yscale="log" if positive else "linear", xlabel="training-loss threshold", ylabel=what)
        ax.invert_xaxis()
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_outliers(frames, figsize=(6, 4), labels=None):
    """The top eigenvalues of the full training set's Hessian at the final weights, mean over seeds, log scale."""
    out = collection.only_ok(frames.get("outliers"), frames)
    if _optional(out, "full-data eigenvalues in curvature.json"):
        return None
    fig, ax = plt.subplots(figsize=figsize)
    for i, opt in enumerate(collection.optimizers_in(out)):
        o = out[out.optimizer == opt]
        seed_band(ax, o.pivot_table(index="i", columns="seed", values="eigenvalue"), f"C{i}", _label(opt, labels))
    ax.set(yscale="log", xlabel="i", ylabel=r"$\lambda_i$, full training set", xticks=range(1, int(out.i.max()) + 1, 2))
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def save_figure(fig, name, report_dir, formats=("png", "pdf"), dpi=150, close=False) -> list[Path]:
    """``<report_dir>/figures/<name>.<fmt>`` for each format, written atomically; nothing for no figure."""
    paths = []
    if fig is None:
        return paths
    for fmt in formats:
        path = Path(report_dir) / "figures" / f"{name}.{fmt}"
        # no creation date in PDFs: regenerating the report from the same results gives the same bytes
        meta = {"CreationDate": None} if fmt == "pdf" else None
        runs.atomic_write(path, lambda f, fmt=fmt, meta=meta: fig.savefig(f, format=fmt, dpi=dpi,
                                                                             bbox_inches="tight", metadata=meta))
        paths.append(path)
    if close:
        plt.close(fig)
    return paths
