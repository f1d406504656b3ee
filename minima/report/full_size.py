"""The study at full size (Fashion-MNIST, 60,000 training images) beside the embedded-MNIST study.

The full-size runs live in ``<results>/fashion-mnist/<optimizer>/seed<k>/``
(``runs.run_dir_for``); ``collection.collect`` reads that folder as a study
of its own, so every summary and fair-comparison table applies to it as it
is. This module adds the one thing neither study has alone: each of the
embedded study's findings, restated as a number, at both scales side by side
(``comparison``), so that the report can say which hold at full size.

Ratios to SGD are ratios of geometric means with a 95 % Welch interval on the
logarithms (``fair.ratio``); "same side of 1" compares the two studies'
estimates, and "supported" whether the full-size interval excludes 1.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from minima.report import fair
from minima.report.collection import LABELS, collect, ok_runs, only_ok, optimizers_in
from minima.report.tables import mean_sd
from minima.runs import study_runs

FOLDER = "fashion-mnist"   # <results>/fashion-mnist: the full-size study


def study_dir(results_dir) -> Path:
    return Path(results_dir) / FOLDER


def has_study(results_dir) -> bool:
    """Whether ``<results>/fashion-mnist`` holds at least one complete run."""
    return study_dir(results_dir).is_dir() and bool(study_runs(study_dir(results_dir))[0])


def collect_full_size(results_dir) -> dict:
    return collect(study_dir(results_dir))


def _ratio_cells(frame, column, opt) -> tuple[str, float, float, float]:
    """``column``'s ratio of geometric means, ``opt`` to SGD, as text, and the estimate with its bounds."""
    mine, base = frame[frame.optimizer == opt][column], frame[frame.optimizer == fair.BASELINE][column]
    r = fair.ratio(mine, base)
    return fair.interval_text(r["ratio"], r["low"], r["high"], ".3g"), r["ratio"], r["low"], r["high"]


def _lowest_shared_threshold(frames, opt):
    """The lowest equal-loss threshold that every run of both ``opt`` and SGD reached (None if there is none)."""
    eq, runs = only_ok(frames["equal_loss"], frames), ok_runs(frames)
    pair = [opt, fair.BASELINE]
    n_runs = int(runs.optimizer.isin(pair).sum())
    reached = eq[eq.optimizer.isin(pair)].dropna(subset=["lambda1"]).groupby("loss_threshold").size()
    shared = [float(t) for t, n in reached.items() if n == n_runs]
    return min(shared) if shared else None


def _at_threshold(frames, threshold) -> pd.DataFrame:
    eq = only_ok(frames["equal_loss"], frames)
    return eq[np.isclose(eq.loss_threshold, threshold)] if threshold is not None else eq.iloc[0:0]


def _per_run(frames, statistic) -> pd.DataFrame:
    """One value per non-diverged run (optimizer, seed, value) for a statistic that is not a column of runs."""
    runs = ok_runs(frames)
    if statistic == "full / 100-sample λ1":
        sens = only_ok(frames["sensitivity"], frames)
        small, full = (sens[sens.batch == b].set_index(["optimizer", "seed"]).lambda1 for b in ("100", "full"))
        value = (full / small).dropna()
    elif statistic == "λ1(P⁻¹H) / threshold, median 2nd half":
        t = only_ok(frames["tracking"], frames)
        late = t[t.step > t.groupby(["optimizer", "seed"]).step.transform("max") / 2]
        value = late.groupby(["optimizer", "seed"]).precond_ratio.median()
    else:  # a column of runs; older runs may lack it
        value = runs.set_index(["optimizer", "seed"]).get(statistic, pd.Series(dtype=float))
    return value.rename("value").reset_index() if len(value) else pd.DataFrame(columns=["optimizer", "seed", "value"])


# (label, how the value is read: a runs column or a _per_run statistic, format)
PLAIN = (("test accuracy", "test_accuracy", 4), ("train accuracy", "train_accuracy", 4),
         ("final training loss", "train_loss", None), ("median λ1/λ2, last tracked steps", "median_ratio", 3),
         ("λ1(P⁻¹H) / threshold, median 2nd half", "λ1(P⁻¹H) / threshold, median 2nd half", 3),
         ("outliers among the full-data top 20", "n_outliers", 1),
         ("full / 100-sample λ1", "full / 100-sample λ1", 3))


def _plain(frames, key, opt, decimals) -> str:
    values = _per_run(frames, key)
    values = values[values.optimizer == opt].value
    return mean_sd(values, decimals) if decimals is not None else mean_sd(values, significant=3)


def comparison(embedded: dict, full: dict) -> pd.DataFrame:
    """The embedded study's findings as numbers, per optimizer, at both scales (mean ± sd or ratio [95 % CI])."""
    rows = []
    n_e, n_f = (ok_runs(f).groupby("optimizer").seed.nunique() for f in (embedded, full))
    opts = [o for o in optimizers_in(ok_runs(embedded)) if o in set(optimizers_in(ok_runs(full)))]

    def row(statistic, opt, e_text, f_text, side="—", supported="—"):
        rows.append({"statistic": statistic, "optimizer": LABELS.get(opt, opt),
                     "embedded MNIST (4,000)": e_text, "Fashion-MNIST (60,000)": f_text,
                     "same side of 1": side, "supported at full size": supported,
                     "n": f"{n_e.get(opt, 0)} / {n_f.get(opt, 0)}"})

    for label, key, decimals in PLAIN:
        for opt in opts:
            row(label, opt, _plain(embedded, key, opt, decimals), _plain(full, key, opt, decimals))
    for label, column in (("λ1 at the end / SGD's", "lambda1"), ("trace at the end / SGD's", "trace"),
                          ("λ1 at equal loss / SGD's", "lambda1")):
        for opt in opts:
            if opt == fair.BASELINE:
                continue
            if label.startswith("λ1 at equal"):  # the lowest training loss that both reached, in each study
                t_e, t_f = _lowest_shared_threshold(embedded, opt), _lowest_shared_threshold(full, opt)
                e, f = _at_threshold(embedded, t_e), _at_threshold(full, t_f)
                shown = " / ".join("none reached" if t is None else f"< {t:g}" for t in (t_e, t_f))
                label_here = f"{label} (loss {shown})"
            else:
                e, f, label_here = ok_runs(embedded), ok_runs(full), label
            e_text, e_est, _, _ = _ratio_cells(e, column, opt)
            f_text, f_est, f_low, f_high = _ratio_cells(f, column, opt)
            side = "—" if not (math.isfinite(e_est) and math.isfinite(f_est)) else (
                "yes" if (e_est - 1) * (f_est - 1) > 0 else "no")
            row(label_here, opt, e_text, f_text, side, fair.supported(f_low, f_high, 1.0))
    return pd.DataFrame(rows)


def comparison_table(embedded: dict, full: dict) -> tuple[pd.DataFrame, str]:
    caption = ("The embedded-MNIST study's findings at full size: each statistic per optimizer on the embedded "
               "4,000 digits and on Fashion-MNIST's 60,000 images (the original's protocol and hyperparameters at "
               "both), mean ± sd over seeds, or a ratio of geometric means to SGD's with a 95 % Welch interval on "
               "the logarithms; n: seeds (embedded / full size). 'Same side of 1' says whether the two estimates "
               "agree in direction, 'supported' whether the full-size interval excludes 1 (– with one seed). "
               "Equal loss is read, per optimizer and study, at the lowest training-loss threshold that every run "
               "of that optimizer and of SGD reached (embedded / full size).")
    return comparison(embedded, full), caption


def plot_both_scales(embedded: dict, full: dict, figsize=(11, 3.8), labels=None):
    """Test accuracy and final training loss per optimizer at both scales: a dot per seed, a bar at the mean."""
    import matplotlib.pyplot as plt

    labels = labels or LABELS
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    studies = (("embedded MNIST, 4,000", ok_runs(embedded), "C0", -0.15),
               ("Fashion-MNIST, 60,000", ok_runs(full), "C1", 0.15))
    opts = optimizers_in(pd.concat([s[1] for s in studies]))
    for ax, column, what in zip(axes, ("test_accuracy", "train_loss"), ("test accuracy", "final training loss")):
        for name, runs, color, shift in studies:
            for i, opt in enumerate(opts):
                v = runs[runs.optimizer == opt][column].dropna()
                if not len(v):
                    continue
                ax.scatter(np.full(len(v), i + shift), v, color=color, s=14, alpha=0.7,
                           label=name if i == 0 else None)
                mean = v.mean() if column == "test_accuracy" else float(np.exp(np.log(v).mean()))
                ax.hlines(mean, i + shift - 0.1, i + shift + 0.1, color=color, lw=2)
        ax.set(xticks=range(len(opts)), xticklabels=[labels.get(o, o) for o in opts], ylabel=what,
               yscale="linear" if column == "test_accuracy" else "log")
    axes[0].legend(fontsize="small")
    axes[1].set_title("bar: geometric mean", fontsize="small")
    axes[0].set_title("bar: mean", fontsize="small")
    fig.tight_layout()
    return fig
