"""Every number that report/report.md and the README quote in prose, recomputed from results/.

The tables and figures are written by ``make report``; the sentences around
them quote ranges, ratios and counts drawn from the same runs. This prints
them, so the prose can be checked against the runs (and updated when the runs
change):

    python -m minima facts [--results results]
"""

import numpy as np

from minima.report import collection
from minima.runs import load_run


def _by_optimizer(frame, column, reduce="mean"):
    return {opt: getattr(frame[frame.optimizer == opt][column], reduce)() for opt in collection.optimizers_in(frame)}


def _line(label, values, spec=".3g"):
    print(f"{label}: " + ", ".join(f"{k} {format(v, spec)}" for k, v in values.items()))


def accuracy(runs):
    _line("test accuracy, mean over seeds", _by_optimizer(runs, "test_accuracy"), ".4f")
    _line("test accuracy, sd over seeds", _by_optimizer(runs, "test_accuracy", "std"), ".4f")
    _line("train accuracy, min over seeds", _by_optimizer(runs, "train_accuracy", "min"), ".4f")
    mean, sd = _by_optimizer(runs, "test_accuracy"), _by_optimizer(runs, "test_accuracy", "std")
    n = {opt: collection.seed_count(runs, opt) for opt in mean}
    best, worst = max(mean, key=mean.get), min(mean, key=mean.get)
    se = np.sqrt(sd[best] ** 2 / n[best] + sd[worst] ** 2 / n[worst])
    print(f"largest difference: {best} - {worst} = {mean[best] - mean[worst]:.4f} "
          f"({(mean[best] - mean[worst]) / se:.1f} standard errors of the difference)")


def curvature(runs, frames):
    for column in ("lambda1", "lambda2", "trace", "train_loss"):
        _line(f"final {column}, mean", _by_optimizer(runs, column))
    print(f"max residual of the final top-2 eigenvalues: {runs[['residual1', 'residual2']].to_numpy().max():.1e}")
    sens = frames["sensitivity"]
    l100 = _by_optimizer(sens[sens.batch == "100"], "lambda1")
    lfull = _by_optimizer(sens[sens.batch == "full"], "lambda1")
    _line("lambda1 on 100 samples / on the full training split", {k: l100[k] / lfull[k] for k in l100})
    _line("lambda1 on the full training split, mean", lfull)
    per_run = sens.groupby(["optimizer", "seed"]).trace.agg(lambda t: t.max() / t.min() - 1)
    means = sens.groupby(["optimizer", "batch"]).trace.mean().groupby("optimizer").agg(lambda t: t.max() / t.min() - 1)
    print(f"trace, largest relative change between Hessian batches: of the means over seeds {means.max():.1%} "
          f"({means.idxmax()}); within one run {per_run.max():.1%}")
    rel = ((runs.pyhessian_lambda1 - runs.lambda1).abs() / runs.lambda1).tolist()
    rel += ((runs.pyhessian_lambda2 - runs.lambda2).abs() / runs.lambda2).tolist()
    res = runs[["pyhessian_residual1", "pyhessian_residual2"]].to_numpy()
    print(f"PyHessian vs certified top-2: max relative difference {max(rel):.2%}; "
          f"its residuals {res.min():.1e} to {res.max():.1e}; converged in {int(runs.pyhessian_converged.sum())} "
          f"of {len(runs)} runs")


def spectrum(runs, frames):
    spec = frames["spectrum"]
    _line("median ratio over the tracked steps, mean over seeds", _by_optimizer(runs, "median_ratio"))
    _line("  sd over seeds", _by_optimizer(runs, "median_ratio", "std"))
    _line("median gap over the tracked steps, mean over seeds", _by_optimizer(runs, "median_gap"))
    print(f"tracked steps with ratio < 1: {int((spec.ratio < 1).sum())} of {len(spec)}; "
          f"unconverged: {int((~spec.converged.astype(bool)).sum())}; "
          f"ratio range {spec.ratio.min():.3f} to {spec.ratio.max():.3f}")
    _line("median HVPs per tracked step",
          {o: spec[spec.optimizer == o].n_hvps.median() for o in collection.optimizers_in(spec)})


def sharpness(frames):
    sh = frames["sharpness"]
    for opt in collection.optimizers_in(sh):
        per_seed = sh[sh.optimizer == opt].groupby("seed").lambda1
        peak, first, last = per_seed.max(), per_seed.first(), per_seed.last()
        print(f"sharpness {opt}: peak {peak.min():.3g} to {peak.max():.3g}, "
              f"final {last.min():.3g} to {last.max():.3g}, "
              f"log10(peak / final) {np.log10(peak / last).min():.2f} to {np.log10(peak / last).max():.2f} "
              f"(first {first.min():.3g} to {first.max():.3g})")


def peak_accuracy(frames):
    """Per optimizer, over seeds: the best test accuracy of any epoch, when, and what the end keeps of it."""
    hist = collection.only_ok(frames["history"], frames)
    for opt in collection.optimizers_in(hist):
        h = hist[hist.optimizer == opt].sort_values("epoch")
        per_seed = h.groupby("seed")
        peak, final = per_seed.test_accuracy.max(), per_seed.test_accuracy.last()
        at = h.loc[per_seed.test_accuracy.idxmax(), "epoch"]  # the first epoch at the peak
        loss_min, loss_end = per_seed.test_loss.min(), per_seed.test_loss.last()
        print(f"peak test accuracy {opt}: {peak.min():.4f} to {peak.max():.4f} at epochs {at.min()} to {at.max()}; "
              f"final - peak {(final - peak).min():.4f} to {(final - peak).max():.4f}; "
              f"test loss min {loss_min.min():.3g} to {loss_min.max():.3g}, final {loss_end.min():.3g} to "
              f"{loss_end.max():.3g}")


def loss_jumps(frames):
    """Per optimizer, over seeds: the training loss's largest rise above its lowest value so far in the second
    half of training (epoch-end losses), when and to what; and how far above its lowest the run ends."""
    hist = collection.only_ok(frames["history"], frames)
    for opt in collection.optimizers_in(hist):
        rise, at, to, end = [], [], [], []
        for _, h in hist[hist.optimizer == opt].sort_values("epoch").groupby("seed"):
            loss = h.train_loss.to_numpy()
            start = max(1, len(loss) // 2)  # the first epoch of the second half, with one before it
            if len(loss) <= start:
                continue
            ratio = loss[start:] / np.minimum.accumulate(loss)[start - 1:-1]
            i = start + int(np.argmax(ratio))
            rise.append(loss[i] / loss[:i].min())
            at.append(int(h.epoch.iloc[i]))
            to.append(loss[i])
            end.append(loss[-1] / loss.min())
        if rise:
            print(f"training-loss jumps in the second half, {opt}: largest rise over the lowest loss so far "
                  f"{min(rise):.3g}x to {max(rise):.3g}x (to {min(to):.2g} to {max(to):.2g}) at epochs {min(at)} to "
                  f"{max(at)}; final / lowest {min(end):.3g}x to {max(end):.3g}x")


def gradient_norms(frames, last_epochs=10):
    hist = frames["history"]
    late = hist[hist.epoch > hist.epoch.max() - last_epochs]
    ratio = late.grad_norm_last_batch / late.grad_norm_full
    _line(f"last-mini-batch / full-batch gradient norm, median over the last {last_epochs} epochs",
          {o: ratio[late.optimizer == o].median() for o in collection.optimizers_in(late)})


def landscapes(runs):
    for opt in collection.optimizers_in(runs):
        at_one = []
        for run_dir in runs[runs.optimizer == opt].run_dir:
            land = load_run(run_dir).get("landscape")
            if land is None:
                continue
            a = land["alphas"]
            ends = [np.interp(-1.0, a, land["random_1d"]), np.interp(1.0, a, land["random_1d"])]
            at_one.append(np.mean(ends) - np.interp(0.0, a, land["random_1d"]))
        if at_one:
            print(f"filter-normalised random direction, loss rise one unit from the minimum, {opt}: "
                  f"mean {np.mean(at_one):.3g} (seeds {min(at_one):.3g} to {max(at_one):.3g})")


def hardest_digits(frames, k=3):
    pc = frames["per_class"]
    for opt in collection.optimizers_in(pc):
        mean = pc[pc.optimizer == opt].groupby("digit").accuracy.mean().sort_values()
        print(f"hardest digits, {opt}: " + ", ".join(f"{d} ({a:.3f})" for d, a in mean.head(k).items()))


def tracking_cost(frames):
    """What the trackers add to the optimizer's steps: (steps + trackers) / steps − 1, from runs that time both."""
    hist = frames["history"]
    if "step_time_s" not in hist or hist.step_time_s.isna().all():
        print("tracking cost: no run records step_time_s yet")
        return
    timed = hist.dropna(subset=["step_time_s"])
    sums = timed.groupby(["optimizer", "seed"])[["step_time_s", "train_time_s", "epoch_time_s"]].sum()
    added = (sums.train_time_s / sums.step_time_s - 1).groupby("optimizer").median()
    trackers = sums.train_time_s - sums.step_time_s
    whole = trackers / (sums.epoch_time_s - trackers)  # against the run without them: steps and evaluation
    _line("trackers' time / the optimizer's steps, median over timed seeds",
          {o: added[o] for o in collection.optimizers_in(timed.reset_index())}, ".0%")
    _line("  ... over steps plus the per-epoch evaluation", whole.groupby("optimizer").median().to_dict(), ".0%")


def fair_comparison(frames, label):
    """The equal-loss flatness gap: how much of the end-of-training λ1 ratio to SGD is left at each common loss."""
    from minima.report import fair

    common = fair.common_thresholds(frames)
    if not common:
        print(f"{label}: no equal-loss threshold reached by every run (runs without equal_loss.csv count as not)")
        return
    gap = fair.flatness_gap(frames)
    for r in gap.itertuples():
        print(f"{label}, {r.optimizer}: lambda1 / SGD's {r.ratio_end:.3g} at the end, {r.ratio_at_threshold:.3g} at "
              f"train loss < {r.threshold:g}: {r.share_left:.0%} of the log gap left")


def sweep_selection(sweep_dir):
    from pathlib import Path

    import pandas as pd

    path = Path(sweep_dir) / "summary.csv"
    if not path.exists():
        print(f"sweep: {path} not found")
        return
    table = pd.read_csv(path)
    for r in table[table.best.astype(bool)].itertuples():
        grid = table[table.optimizer == r.optimizer].lr
        print(f"sweep selection, {r.optimizer}: lr {r.lr:g}, val accuracy {r.val_accuracy_mean:.4f} "
              f"± {r.val_accuracy_sd:.4f}, test {r.test_accuracy_mean:.4f} (grid {grid.min():g} to {grid.max():g})")


def _print_rows(label, table):
    """A table's rows, one line each: ``label: column value; column value; ...``."""
    for row in table.to_dict("records"):
        print(f"{label}: " + "; ".join(f"{k} {v}" for k, v in row.items()))


def projected_update(results_dir):
    """The projected-update experiment: the check, each regime's losses against SGD, the curvature, the cost."""
    from minima.report import projected

    if not projected.has_experiment(results_dir):
        return
    for name, (table, _) in projected.tables(projected.collect(results_dir)).items():
        _print_rows(name, table)


def analysis_cost(runs):
    """The final weights' analysis per run: wall time, and the full-data top-k's HVPs (float64 ones) and time."""
    for r in runs.itertuples():
        curv = load_run(r.run_dir).get("curvature") or {}
        top = curv.get("full_data_top") or {}
        if curv.get("time_s") is None:
            continue
        sens = {row["batch"]: row.get("time_s") for row in curv.get("batch_sensitivity", [])}
        print(f"final analysis, {r.optimizer} seed {r.seed}: {curv['time_s']:.0f} s in all; full-data top-"
              f"{len(top.get('eigenvalues', []))} on {top.get('n_samples')} images: {top.get('n_hvps')} HVPs "
              f"({top.get('n_hvps_float64')} float64) in {top.get('time_s') or float('nan'):.0f} s, converged "
              f"{top.get('converged')}; sensitivity " + ", ".join(f"{b} {t:.0f} s" for b, t in sens.items() if t)
              + (f"; the process's peak RSS {curv['peak_rss_mib'] / 1024:.2f} GiB" if curv.get("peak_rss_mib") else ""))


def _two_slots(minutes):
    """The wall time of these jobs on two slots, longest first, each to the slot that frees first."""
    slots = [0.0, 0.0]
    for m in sorted(minutes, reverse=True):
        slots[slots.index(min(slots))] += m
    return max(slots)


def seed_cost(runs):
    """One seed of every optimizer, from each run's own records: its training epochs (trackers included) plus
    its final analysis (the landscapes, under a minute, are left out), median over seeds; then the five on two
    slots, as `make reproduce` runs them (one thread each). The parts were timed under whatever else shared
    the cores, so this is an estimate from measured parts, not one timed end to end."""
    if not {"epochs_s", "analysis_s"} <= set(runs):
        return
    timed = runs.dropna(subset=["epochs_s", "analysis_s"])
    if not len(timed):
        return
    minutes = (timed.epochs_s + timed.analysis_s) / 60
    median = {opt: float(m) for opt, m in minutes.groupby(timed.optimizer, sort=False).median().items()}
    _line("one run's training plus final analysis, minutes, median over seeds", median, ".0f")
    print(f"one seed of the {len(median)} optimizers: {sum(median.values()) / 60:.1f} h of runs, "
          f"{_two_slots(median.values()) / 60:.1f} h on two slots")


def study(frames, heading, label):
    """One study's numbers: accuracy, curvature, spectrum, sharpness, the trackers' cost, the equal-loss gap."""
    runs = collection.ok_runs(frames)
    print(f"{heading}{len(runs)} complete runs that did not diverge")
    accuracy(runs)
    peak_accuracy(frames)
    loss_jumps(frames)
    curvature(runs, frames)
    spectrum(runs, frames)
    sharpness(frames)
    tracking_cost(frames)
    fair_comparison(frames, label)


def full_size(results_dir, embedded):
    """The full-size study (<results>/fashion-mnist): its own numbers, and the embedded findings beside them."""
    from minima.report import full_size as fs

    if not fs.has_study(results_dir):
        print(f"full size: no complete run in {fs.study_dir(results_dir)}")
        return
    frames = fs.collect_full_size(results_dir)
    study(frames, f"\nfull size ({fs.study_dir(results_dir)}): ", "full size")
    analysis_cost(collection.ok_runs(frames))
    seed_cost(collection.ok_runs(frames))
    _print_rows("full size vs embedded", fs.comparison(embedded, frames))


def print_facts(results_dir="results", tuned_dir=None, sweep_dir=None) -> None:
    """Print every quoted number, recomputed from the study in ``results_dir`` (and its tuned study and sweep)."""
    from pathlib import Path

    frames = collection.collect(results_dir)
    study(frames, "", "original settings")
    gradient_norms(frames)
    landscapes(collection.ok_runs(frames))
    hardest_digits(frames)
    from minima.report.fair import tuned_study_beside

    sweep_dir = sweep_dir or Path(results_dir) / "sweeps" / "tuning"
    tuned = tuned_study_beside(frames, tuned_dir or Path(results_dir) / "tuned", sweep_dir)
    if tuned is not None:  # the optimizers whose selection is the original lr: the original study's runs
        print(f"tuned study: {len(collection.ok_runs(tuned))} complete runs that did not diverge")
        accuracy(collection.ok_runs(tuned))
        fair_comparison(tuned, "tuned learning rates")
    sweep_selection(sweep_dir)
    projected_update(results_dir)
    full_size(results_dir, frames)
