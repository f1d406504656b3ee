"""The fair comparison's figures: the sweep's learning-rate sensitivity, and the two studies side by side.

``sweep_frames`` reads a collected sweep (its ``runs.csv`` and ``summary.csv``,
written by ``python -m minima sweep collect``); the other functions take the
frames of ``collection.collect`` for each study, keyed by the study's name.
"""

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from minima import optimizers
from minima.report import collection, fair, statistics
from minima.runs import StudyError


def has_sweep(sweep_dir) -> bool:
    """Whether ``sweep_dir`` holds a collected sweep (``summary.csv`` and ``runs.csv``)."""
    return all((Path(sweep_dir) / f"{name}.csv").exists() for name in ("runs", "summary"))


def sweep_frames(sweep_dir) -> dict:
    """{"runs", "summary"} of a collected sweep; StudyError when it has not been collected."""
    root = Path(sweep_dir)
    paths = {name: root / f"{name}.csv" for name in ("runs", "summary")}
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise StudyError(f"{', '.join(missing)} missing; collect the sweep first: "
                         f"python -m minima sweep collect --name {root.name}")
    return {name: pd.read_csv(path) for name, path in paths.items()}


def plot_lr_sensitivity(sweep, figsize=(13, 6.5), labels=None, ylim=(0.9, 1.0)):
    """Per optimizer: final validation accuracy against the learning rate, mean ± sd over seeds and each seed.

    The original learning rate is a dashed line, the selected one a star; a
    setting where a seed diverged (a non-finite loss) is a red cross at the
    bottom edge, and a seed below the axis (one that trained to chance, say)
    a grey triangle there.
    """
    runs, summary = sweep["runs"], sweep["summary"]
    opts = sorted(summary.optimizer.unique(), key=collection.optimizer_sort_key)
    ncols = 3
    fig, axes = plt.subplots(math.ceil(len(opts) / ncols), ncols, figsize=figsize, squeeze=False, sharey=True)
    for ax in axes.ravel()[len(opts):]:
        ax.set_visible(False)
    for ax, opt in zip(axes.ravel(), opts):
        s = summary[summary.optimizer == opt].sort_values("lr")
        r = runs[(runs.optimizer == opt) & (runs.status == "done")]
        inside, below = r[r.val_accuracy >= ylim[0]], r[r.val_accuracy < ylim[0]]
        ax.scatter(inside.lr, inside.val_accuracy, s=10, color="0.55", zorder=2, label="one seed")
        if len(below):
            ax.scatter(below.lr, np.full(len(below), ylim[0]), marker="v", s=30, color="0.4", zorder=4,
                       clip_on=False, label=f"a seed below {ylim[0]:g}")
        ok = s[s.done > 0]
        ax.errorbar(ok.lr, ok.val_accuracy_mean, yerr=ok.val_accuracy_sd.fillna(0), color="C0", marker="o", ms=4,
                    capsize=3, zorder=3, label="mean ± sd")
        ax.set_xlim(s.lr.min() / 1.6, s.lr.max() * 1.6)
        bad = s[s.diverged > 0]
        if len(bad):
            ax.scatter(bad.lr, np.full(len(bad), ylim[0]), marker="x", color="C3", s=40, zorder=4, clip_on=False,
                       label="a seed diverged")
        best = s[s.best.astype(bool)]
        if len(best):
            ax.scatter(best.lr, best.val_accuracy_mean, marker="*", s=160, color="C1", zorder=5, label="selected")
        original = optimizers.get(opt).defaults.get("lr") if opt in optimizers.names(everything=True) else None
        if original:
            ax.axvline(original, color="0.3", ls="--", lw=1, label="original lr")
        ax.set(xscale="log", ylim=ylim, xlabel="learning rate", title=(labels or collection.LABELS).get(opt, opt))
    for row in axes:
        row[0].set_ylabel("final validation accuracy")
    handles = {}
    for ax in axes.ravel()[:len(opts)]:
        for h, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, h)
    spare = axes.ravel()[len(opts):]
    if len(spare):  # the legend in the empty panel, else over the first
        spare[0].set_visible(True)
        spare[0].axis("off")
        spare[0].legend(handles.values(), handles.keys(), loc="center")
    else:
        axes.ravel()[0].legend(handles.values(), handles.keys(), fontsize="small", loc="lower left")
    fig.tight_layout()
    return fig


def plot_studies_side_by_side(studies: dict, figsize=(13, 3.8), labels=None):
    """Test accuracy, steps to the largest common loss threshold, and final λ1, per optimizer, one marker per study.

    ``studies``: {name: frames}. Bars are 95 % t intervals of the mean over
    seeds (for λ1, of the geometric mean, on its log axis), as in the tables' comparisons.
    """
    labels = labels or collection.LABELS
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    thresholds = [t for t in sorted({t for f in studies.values() for t in fair.common_thresholds(f)}, reverse=True)]
    target = min(thresholds) if thresholds else 1e-2
    opts = sorted({o for f in studies.values() for o in collection.optimizers_in(collection.ok_runs(f))},
                  key=collection.optimizer_sort_key)
    width = 0.8 / max(1, len(studies))
    for j, (name, frames) in enumerate(studies.items()):
        runs = collection.ok_runs(frames)
        ttt = fair.time_to_target(collection.only_ok(frames["history"], frames), [target])
        for ax, values, log in zip(axes, ({o: runs[runs.optimizer == o].test_accuracy for o in opts},
                                          {o: ttt[(ttt.optimizer == o) & ttt.reached].step for o in opts},
                                          {o: runs[runs.optimizer == o].lambda1 for o in opts}), (False, False, True)):
            x = np.arange(len(opts)) + (j - (len(studies) - 1) / 2) * width
            centre, low, high = np.array([statistics.mean_interval(values[o], log) for o in opts]).T
            ax.errorbar(x, centre, yerr=[centre - low, high - centre], fmt="o", color=f"C{j}", capsize=3, ms=5,
                        label=name)
    for ax, what in zip(axes, ("test accuracy", f"steps to training loss < {target:g}", r"final $\lambda_1$")):
        ax.set_xticks(range(len(opts)), [labels.get(o, o) for o in opts], rotation=20)
        ax.set_ylabel(what)
    axes[2].set_yscale("log")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_time_to_target(frames, thresholds, figsize=(11, 3.8), labels=None):
    """Steps to each training-loss threshold and each test-accuracy target, mean ± sd over the seeds that reached it.

    A filled marker: every seed reached the target; hollow: only some did (the
    table gives how many); none: no seed did ("not reached" is never drawn as a number).
    """
    labels = labels or collection.LABELS
    ttt = fair.all_times_to_target(frames, thresholds)
    fig, axes = plt.subplots(1, 2, figsize=figsize, sharey=True)
    opts = collection.optimizers_in(ttt)
    for ax, measure in zip(axes, ("train_loss", "test_accuracy")):
        m = ttt[ttt.measure == measure]
        targets = sorted(m.target.unique(), reverse=measure == "train_loss")
        for i, opt in enumerate(opts):
            x = np.arange(len(targets)) + (i - (len(opts) - 1) / 2) * 0.12
            for xi, t in zip(x, targets):
                g = m[(m.optimizer == opt) & (m.target == t)]
                hit = g[g.reached].step
                if not len(hit):
                    continue
                full = len(hit) == len(g)
                ax.errorbar(xi, hit.mean(), yerr=hit.std(ddof=1) if len(hit) > 1 else 0, fmt="o", color=f"C{i}",
                            mfc=f"C{i}" if full else "white", capsize=2, ms=5,
                            label=labels.get(opt, opt) if t == targets[0] else None)
        ax.set_xticks(range(len(targets)), [f"< {t:g}" if measure == "train_loss" else f"≥ {t:.0%}" for t in targets])
        ax.set(xlabel="training loss" if measure == "train_loss" else "test accuracy", yscale="log")
    axes[0].set_ylabel("steps to reach it")
    axes[0].legend(fontsize="small")
    fig.tight_layout()
    return fig
