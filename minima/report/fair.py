"""The fair comparison: intervals over seeds, time to a target loss, and curvature at equal loss against SGD.

Every pairwise claim is a difference (or ratio) of means over seeds with a 95 %
Welch interval: the two groups' variances are not assumed equal, and the
degrees of freedom are Welch–Satterthwaite's. Ratios (curvature, which spans
orders of magnitude) are intervals for the difference of mean logarithms,
exponentiated: a ratio of geometric means. A difference is called *supported*
when its interval excludes zero (a ratio: excludes 1). With 5 seeds per group
the intervals are wide, and the tables say so rather than rank within them.

The inputs are the frames of ``collection.collect`` (one study folder), so
this module reads run folders only through them.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd

from minima.report.collection import LABELS, collect, ok_runs, only_ok, optimizer_sort_key, optimizers_in
from minima.report.statistics import LEVEL, paired, ratio, supported, welch  # noqa: F401 - re-exported
from minima.report.tables import mean_sd
from minima.runs import StudyError

BASELINE = "sgd"   # curvature and speed ratios are to SGD's


# ---------------------------------------------------------------- the tuned study

def tuned_study(tuned_dir, original: dict, selected: dict[str, float], defaults: dict[str, float]) -> dict | None:
    """The frames of the study at the selected learning rates, or None when it has no run yet.

    An optimizer whose selected learning rate is its original one has no runs
    of its own in ``tuned_dir`` (``run --tuned`` skips it: they would repeat the
    original study's runs bit for bit); its rows come from ``original``. The
    others come from ``tuned_dir``. ``selected``: the sweep's choice per optimizer.
    """
    from minima.runs import study_runs

    same = {opt for opt, lr in selected.items() if lr == defaults.get(opt)}
    parts = []
    if Path(tuned_dir).is_dir() and study_runs(tuned_dir)[0]:
        own = collect(tuned_dir)
        parts.append({k: v[~v.optimizer.isin(same)] if "optimizer" in v else v for k, v in own.items()})
    if not parts:
        return None
    parts.append({k: v[v.optimizer.isin(same)] if "optimizer" in v else v.iloc[0:0] for k, v in original.items()})
    merged = {k: pd.concat([p[k] for p in parts], ignore_index=True) for k in parts[0]}
    runs = merged["runs"]
    order = sorted(range(len(runs)), key=lambda i: (optimizer_sort_key(runs.optimizer[i]), runs.seed[i]))
    merged["runs"] = runs.iloc[order].reset_index(drop=True)
    return merged


def tuned_study_beside(original: dict, tuned_dir, sweep_dir) -> dict | None:
    """``tuned_study`` with the selection read from the collected sweep (none collected: ``tuned_dir`` alone)."""
    from minima import optimizers
    from minima.sweeps.summary import selected_learning_rates

    selected = selected_learning_rates(sweep_dir) if (Path(sweep_dir) / "summary.csv").exists() else {}
    defaults = {o: optimizers.get(o).defaults.get("lr") for o in selected if o in optimizers.names(everything=True)}
    return tuned_study(tuned_dir, original, selected, defaults)


# ---------------------------------------------------------------- intervals (minima.report.statistics)

def interval_text(estimate, low, high, spec=".4f") -> str:
    if not math.isfinite(estimate):
        return "–"
    if not (math.isfinite(low) and math.isfinite(high)):
        return format(estimate, spec)
    return f"{estimate:{spec}} [{low:{spec}}, {high:{spec}}]"


def _label(opt):
    return LABELS.get(opt, opt)


# ---------------------------------------------------------------- accuracy

def accuracy_pairs(frames, column="test_accuracy") -> pd.DataFrame:
    """Every pair of optimizers: the difference in mean ``column`` over seeds, its interval, and whether supported."""
    runs = ok_runs(frames)
    opts, rows = optimizers_in(runs), []
    for i, a in enumerate(opts):
        for b in opts[i + 1:]:
            w = welch(runs[runs.optimizer == a][column], runs[runs.optimizer == b][column])
            rows.append({"pair": f"{_label(a)} − {_label(b)}", "n": f"{w['n_a']} vs {w['n_b']}",
                         "difference [95 % CI]": interval_text(w["diff"], w["low"], w["high"]),
                         "supported": supported(w["low"], w["high"])})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- speed

def accuracy_targets(frames) -> tuple:
    """The test-accuracy targets of the study's dataset (``params.ACCURACY_TARGETS``): the other half of "how soon"."""
    import params

    runs = ok_runs(frames)
    if not len(runs):
        return ()
    # collection always fills the column ("mnist" for runs older than the dataset choice); frames built by hand may not
    datasets = sorted(set(runs["dataset"])) if "dataset" in runs else ["mnist"]
    if len(datasets) != 1 or datasets[0] not in params.ACCURACY_TARGETS:
        raise StudyError(f"one study holds runs of one dataset with accuracy targets "
                         f"({', '.join(params.ACCURACY_TARGETS)}); these runs are of {', '.join(datasets) or 'none'}")
    return params.ACCURACY_TARGETS[datasets[0]]


def time_to_target(history: pd.DataFrame, targets, column="train_loss") -> pd.DataFrame:
    """Per run and target: the first epoch that reaches it, its step, and the seconds of optimizer steps until then.

    ``column="train_loss"`` reaches a target when the full-batch training loss
    is below it; an accuracy column (``test_accuracy``) when it is at least the
    target. Seconds are the optimizer's steps alone (``step_time_s``, without
    trackers or evaluation); NaN for runs that predate that column. A target
    never reached has ``reached=False`` and NaN epoch, step and seconds.
    """
    rows = []
    for (opt, seed), h in history.groupby(["optimizer", "seed"], sort=False):
        h = h.sort_values("epoch")
        seconds = h["step_time_s"].cumsum() if "step_time_s" in h and h["step_time_s"].notna().all() else None
        for t in targets:
            hit = h[h[column] < t] if column.endswith("loss") else h[h[column] >= t]
            row = {"optimizer": opt, "seed": seed, "measure": column, "target": t, "reached": bool(len(hit)),
                   "epoch": math.nan, "step": math.nan, "seconds": math.nan}
            if len(hit):
                first = hit.index[0]
                row.update(epoch=int(h.loc[first, "epoch"]), step=int(h.loc[first, "step"]),
                           seconds=float(seconds.loc[first]) if seconds is not None else math.nan)
            rows.append(row)
    return pd.DataFrame(rows, columns=["optimizer", "seed", "measure", "target", "reached", "epoch", "step",
                                       "seconds"])


def all_times_to_target(frames, thresholds, targets=None) -> pd.DataFrame:
    """Every non-diverged run's time to each loss threshold and each test-accuracy target (one row each;
    ``targets`` default to the dataset's, ``accuracy_targets``)."""
    history = only_ok(frames["history"], frames)
    targets = accuracy_targets(frames) if targets is None else targets
    return pd.concat([time_to_target(history, thresholds, "train_loss"),
                      time_to_target(history, targets, "test_accuracy")], ignore_index=True)


def speed_table(frames, thresholds, targets=None) -> pd.DataFrame:
    """Per target and optimizer: seeds that reached it, mean ± sd epochs, steps and seconds, the step ratio to SGD."""
    ttt = all_times_to_target(frames, thresholds, targets)
    rows = []
    for (measure, t), at in ttt.groupby(["measure", "target"], sort=False):
        base = at[(at.optimizer == BASELINE) & at.reached]
        base_all = len(base) == int((at.optimizer == BASELINE).sum())
        for opt in optimizers_in(at):
            g = at[at.optimizer == opt]
            hit = g[g.reached]
            r = ratio(hit.step, base.step) if opt != BASELINE and len(hit) == len(g) and len(base) and base_all \
                else None
            target = f"train loss < {t:g}" if measure == "train_loss" else f"test accuracy ≥ {t:.0%}"
            rows.append({"target": target, "optimizer": _label(opt), "reached": f"{len(hit)}/{len(g)}",
                         "epochs": mean_sd(hit.epoch, 1), "steps": mean_sd(hit.step, 0),
                         "seconds of steps": mean_sd(hit.seconds, 1)
                         + (f" (n={hit.seconds.notna().sum()})" if 0 < hit.seconds.notna().sum() < len(hit) else ""),
                         "steps / SGD's [95 % CI]": "1" if opt == BASELINE else
                         (interval_text(r["ratio"], r["low"], r["high"], ".2f") if r else "–"),
                         "supported": supported(r["low"], r["high"], 1.0) if r else "–"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- curvature at equal loss

CURVATURE = (("lambda1", "λ1"), ("precond_lambda1", "λ1(P⁻¹H)"), ("trace", "trace"))


def common_thresholds(frames) -> list[float]:
    """The equal-loss thresholds that every complete, non-diverged run of the study reached."""
    eq = only_ok(frames["equal_loss"], frames)
    n_runs = len(ok_runs(frames))
    counts = eq.dropna(subset=["lambda1"]).groupby("loss_threshold").size()
    return sorted((float(t) for t, n in counts.items() if n == n_runs), reverse=True)


def equal_loss_ratios(frames) -> pd.DataFrame:
    """λ1, λ1(P⁻¹H) and the trace as a ratio to SGD's, at each common threshold and at the final weights.

    The final weights' λ1 and trace come from curvature.json (the last row, "end");
    their λ1(P⁻¹H) is not measured there, so it is left out of that row.
    """
    eq = only_ok(frames["equal_loss"], frames)
    runs = ok_runs(frames)
    rows = []
    stages = [(f"{t:g}", eq[np.isclose(eq.loss_threshold, t)]) for t in common_thresholds(frames)]
    stages.append(("end of training", runs.assign(precond_lambda1=math.nan)))
    for stage, g in stages:
        base = g[g.optimizer == BASELINE]
        for opt in optimizers_in(g):
            if opt == BASELINE:
                continue
            row = {"train loss below": stage, "optimizer": _label(opt)}
            mine = g[g.optimizer == opt]
            for column, name in CURVATURE:
                r = ratio(mine[column], base[column])
                row[f"{name} / SGD's [95 % CI]"] = interval_text(r["ratio"], r["low"], r["high"], ".2f")
                row[f"{name} supported"] = supported(r["low"], r["high"], 1.0)
            rows.append(row)
    return pd.DataFrame(rows)


def flatness_gap(frames, column="lambda1") -> pd.DataFrame:
    """How much of the end-of-training λ1 ratio to SGD is left at each common equal-loss threshold.

    ``left`` is log(ratio at the threshold) / log(ratio at the end): 1 when the
    gap at equal loss is as large as at the end, 0 when it vanishes.
    """
    eq, runs, common = only_ok(frames["equal_loss"], frames), ok_runs(frames), common_thresholds(frames)
    rows = []
    for opt in optimizers_in(runs):
        if opt == BASELINE:
            continue
        end = ratio(runs[runs.optimizer == opt][column], runs[runs.optimizer == BASELINE][column])["ratio"]
        for t in common:
            g = eq[np.isclose(eq.loss_threshold, t)]
            at = ratio(g[g.optimizer == opt][column], g[g.optimizer == BASELINE][column])["ratio"]
            left = math.log(at) / math.log(end) if end > 0 and at > 0 and abs(math.log(end)) > 1e-12 else math.nan
            rows.append({"optimizer": opt, "threshold": t, "ratio_end": end, "ratio_at_threshold": at,
                         "share_left": left})
    return pd.DataFrame(rows)


def fair_tables(frames, thresholds) -> dict:
    """name -> (table, caption) for one study: accuracy pairs, speed, and curvature at equal loss."""
    n = {opt: int((ok_runs(frames).optimizer == opt).sum()) for opt in optimizers_in(ok_runs(frames))}
    seeds = ", ".join(f"{_label(o)} {k}" for o, k in n.items())
    return {
        "accuracy_pairs": (accuracy_pairs(frames),
                           f"Test accuracy, difference of means over seeds ({seeds}) with a 95 % Welch interval; "
                           f"supported when the interval excludes 0."),
        "speed": (speed_table(frames, thresholds),
                  "Time to a target: the first epoch whose full-batch training loss is below the threshold (or whose "
                  "test accuracy reaches the target), its step, and the seconds spent in optimizer steps until then "
                  "(no trackers, no evaluation, as measured with the study's runs sharing the cores; n when some runs "
                  "predate "
                  "the step time's record, '—' when all do), mean ± sd over "
                  "the seeds that reached it; 'reached' counts them. Steps / SGD's is a ratio of geometric means with "
                  "a 95 % Welch interval on the logarithms, given when every seed of both reached the target."),
        "equal_loss_ratios": (equal_loss_ratios(frames),
                              "Curvature at equal training loss, as a ratio of geometric means to SGD's with a 95 % "
                              "Welch interval on the logarithms, at every threshold that every run reached, and at "
                              "the final weights (where the losses differ). Supported: the interval excludes 1."),
    }
