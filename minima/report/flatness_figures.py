"""The flatness study's figures: every measure against the gap, tau with its interval, and the radius check."""

import numpy as np

import params
from minima.report import statistics
from minima.report.flatness import GAPS, LABELS, MEASURES, populations

MARKERS = {32: "o", 100: "s", 500: "^"}   # batch size -> marker (others: "x")


def plot_scatter_grid(table, population="flatness, at 0.01", gap="gap_error", figsize=(13, 6.5)):
    """One panel per measure: the measure (x; log scale where every value is positive and they span a decade)
    against the gap (y), colour = optimizer, marker = batch size; tau in the panel's title."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator, NullFormatter

    rows, _ = populations(table)[population]
    if rows.empty:
        return None
    opts = list(dict.fromkeys(rows.optimizer))
    colors = {o: f"C{i}" for i, o in enumerate(opts)}
    ncols = 5
    fig, axes = plt.subplots(int(np.ceil(len(MEASURES) / ncols)), ncols, figsize=figsize, sharey=True, squeeze=False)
    for ax, (column, label) in zip(axes.flat, MEASURES.items()):
        for (opt, batch), group in rows.groupby(["optimizer", "batch_size"], sort=False):
            ax.scatter(group[column], group[gap], s=18, color=colors[opt], marker=MARKERS.get(batch, "x"),
                       alpha=0.8, lw=0)
        values = rows[column].dropna()
        if len(values) and (values > 0).all() and np.log10(values.max() / values.min()) >= 1:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())   # the minor labels of a short decade overlap
        else:   # under a decade, or a value at or below 0 (an unresolved average case): linear, few ticks
            ax.xaxis.set_major_locator(MaxNLocator(4))
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
            ax.xaxis.get_offset_text().set_fontsize(7)
        tau = statistics.kendall_tau(rows[column], rows[gap], n_resamples=200)["tau"]
        ax.set_title(f"{label}\nτ = {tau:+.2f}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel(GAPS[gap], fontsize=8)
    for ax in axes.flat[len(MEASURES):]:
        ax.set_visible(False)
    handles = [plt.Line2D([], [], ls="", marker="o", color=colors[o], label=LABELS.get(o, o)) for o in opts]
    handles += [plt.Line2D([], [], ls="", marker=MARKERS.get(b, "x"), color="grey", label=f"batch {b}")
                for b in sorted(rows.batch_size.unique())]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(f"Each measure against the generalization gap: {population} ({len(rows)} models)", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return fig


def plot_tau_bars(table, population="flatness, at 0.01", figsize=(10, 4), n_resamples=2000):
    """Kendall's tau of every measure with both gaps, with 95 % bootstrap intervals."""
    import matplotlib.pyplot as plt

    rows, _ = populations(table)[population]
    if len(rows) < 3:
        return None
    fig, ax = plt.subplots(figsize=figsize)
    x = np.arange(len(MEASURES))
    width = 0.38
    for i, (gap, label) in enumerate(GAPS.items()):
        found = [statistics.kendall_tau(rows[c], rows[gap], n_resamples=n_resamples) for c in MEASURES]
        tau = np.array([f["tau"] for f in found])
        err = np.array([[f["tau"] - f["low"] for f in found], [f["high"] - f["tau"] for f in found]])
        ax.bar(x + (i - 0.5) * width, tau, width, yerr=np.nan_to_num(err), capsize=2, color=f"C{i}", label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x, list(MEASURES.values()), rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="Kendall τ with the gap", ylim=(-1, 1),
           title=f"Does the measure order the gap? {population} ({len(rows)} models), 95 % bootstrap intervals")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_rho_check(check, figsize=(10, 3.6)):
    """The radius check: worst-case and average-case increase against rho per model (log-log), rho^2 for scale,
    the float32 rounding of the worst case, and the radii chosen (grey)."""
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=figsize)
    for i, (run, group) in enumerate(check.groupby("run", sort=False)):
        label = LABELS.get(group.optimizer.iloc[0], run)
        a.plot(group.rho, group.worst, "o-", color=f"C{i}", ms=3, lw=1, label=label)
        a.plot(group.rho, group.worst_rounding, ":", color=f"C{i}", lw=0.8)
        positive = group.average > 0
        b.errorbar(group.rho[positive], group.average[positive], yerr=group.average_se[positive], fmt="o-",
                   color=f"C{i}", ms=3, lw=1, capsize=2, label=label)
    rho = np.array(sorted(check.rho.unique()))
    for ax in (a, b):
        ax.set(xscale="log", yscale="log", xlabel="ρ")
    a.plot(rho, check.worst.max() * (rho / rho.max()) ** 2, "k--", lw=0.8, label="∝ ρ²")
    a.axvline(params.MEASURES_RHO_WORST, color="grey", ls=":", lw=1)
    b.axvline(params.MEASURES_RHO_AVERAGE, color="grey", ls=":", lw=1)
    a.set(ylabel="loss increase", title=f"worst case (dotted: float32 rounding; ρ = {params.MEASURES_RHO_WORST:g})")
    b.set(title=f"average case (± Monte Carlo SE; ρ = {params.MEASURES_RHO_AVERAGE:g})")
    a.legend(fontsize=7)
    fig.tight_layout()
    return fig
