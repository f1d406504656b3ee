"""Every number that report/report.md and the README quote in prose, recomputed from results/.

The tables and figures are written by ``make report``; the sentences around
them quote ranges, ratios and counts drawn from the same runs. This prints
them, so the prose can be checked against the runs (and updated when the runs
change):

    python -m minima facts [--results results]
"""

import numpy as np

from minima.report import collection
from minima.report import fact_values as values


def _line(label, numbers, spec=".3g"):
    print(f"{label}: " + ", ".join(f"{k} {format(v, spec)}" for k, v in numbers.items()))


def accuracy(runs):
    v = values.accuracy(runs)
    _line("test accuracy, mean over seeds", v["mean"], ".4f")
    _line("test accuracy, sd over seeds", v["sd"], ".4f")
    _line("train accuracy, min over seeds", v["train_min"], ".4f")
    print(f"largest difference: {v['best']} - {v['worst']} = {v['difference']:.4f} "
          f"({v['z']:.1f} standard errors of the difference)")


def curvature(runs, frames):
    v = values.curvature(runs, frames)
    for column, means in v["means"].items():
        _line(f"final {column}, mean", means)
    print(f"max residual of the final top-2 eigenvalues: {v['max_residual']:.1e}")
    _line("lambda1 on 100 samples / on the full training split", v["batch_ratio"])
    _line("lambda1 on the full training split, mean", v["full_lambda1"])
    print(f"trace, largest relative change between Hessian batches: of the means over seeds "
          f"{v['trace_change_means']:.1%} ({v['trace_change_means_at']}); within one run {v['trace_change_run']:.1%}")
    print(f"PyHessian vs certified top-2: max relative difference {v['pyhessian_max_rel']:.2%}; "
          f"its residuals {v['pyhessian_res_min']:.1e} to {v['pyhessian_res_max']:.1e}; converged in "
          f"{v['pyhessian_converged']} of {v['n_runs']} runs")


def spectrum(runs, frames):
    v = values.spectrum(runs, frames)
    _line("median ratio over the tracked steps, mean over seeds", v["median_ratio"])
    _line("  sd over seeds", v["median_ratio_sd"])
    _line("median gap over the tracked steps, mean over seeds", v["median_gap"])
    print(f"tracked steps with ratio < 1: {v['below_1']} of {v['steps']}; unconverged: {v['unconverged']}; "
          f"ratio range {v['ratio_min']:.3f} to {v['ratio_max']:.3f}")
    _line("median HVPs per tracked step", v["median_hvps"])


def sharpness(frames):
    for opt, v in values.sharpness(frames).items():
        peak, first, last = v["peak"], v["first"], v["last"]
        print(f"sharpness {opt}: peak {peak.min():.3g} to {peak.max():.3g}, "
              f"final {last.min():.3g} to {last.max():.3g}, "
              f"log10(peak / final) {np.log10(peak / last).min():.2f} to {np.log10(peak / last).max():.2f} "
              f"(first {first.min():.3g} to {first.max():.3g})")


def peak_accuracy(frames):
    """Per optimizer, over seeds: the best test accuracy of any epoch, when, and what the end keeps of it."""
    for opt, v in values.peak_accuracy(frames).items():
        peak, final, at, loss_min, loss_end = v["peak"], v["final"], v["at"], v["loss_min"], v["loss_end"]
        print(f"peak test accuracy {opt}: {peak.min():.4f} to {peak.max():.4f} at epochs {at.min()} to {at.max()}; "
              f"final - peak {(final - peak).min():.4f} to {(final - peak).max():.4f}; "
              f"test loss min {loss_min.min():.3g} to {loss_min.max():.3g}, final {loss_end.min():.3g} to "
              f"{loss_end.max():.3g}")


def loss_jumps(frames):
    """Per optimizer, over seeds: the training loss's largest late rise over its running minimum, and the end."""
    for opt, v in values.loss_jumps(frames).items():
        rise, at, to, end = v["rise"], v["at"], v["to"], v["end"]
        print(f"training-loss jumps in the second half, {opt}: largest rise over the lowest loss so far "
              f"{min(rise):.3g}x to {max(rise):.3g}x (to {min(to):.2g} to {max(to):.2g}) at epochs {min(at)} to "
              f"{max(at)}; final / lowest {min(end):.3g}x to {max(end):.3g}x")


def gradient_norms(frames, last_epochs=10):
    _line(f"last-mini-batch / full-batch gradient norm, median over the last {last_epochs} epochs",
          values.gradient_norms(frames, last_epochs))


def landscapes(runs):
    for opt, at_one in values.landscapes(runs).items():
        print(f"filter-normalised random direction, loss rise one unit from the minimum, {opt}: "
              f"mean {np.mean(at_one):.3g} (seeds {min(at_one):.3g} to {max(at_one):.3g})")


def hardest_digits(frames, k=3):
    for opt, mean in values.hardest_digits(frames, k).items():
        print(f"hardest digits, {opt}: " + ", ".join(f"{d} ({a:.3f})" for d, a in mean.items()))


def tracking_cost(frames):
    """What the trackers add to the optimizer's steps: (steps + trackers) / steps - 1, from runs that time both."""
    v = values.tracking_cost(frames)
    if v is None:
        print("tracking cost: no run records step_time_s yet")
        return
    _line("trackers' time / the optimizer's steps, median over timed seeds", v["steps"], ".0%")
    _line("  ... over steps plus the per-epoch evaluation", v["with_evaluation"], ".0%")


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


def analysis_cost(runs, frames):
    """The final weights' analysis per run: wall time, and the full-data top-k's HVPs (float64 ones) and time."""
    sens = frames["sensitivity"]
    for r in runs.itertuples():
        if not np.isfinite(getattr(r, "analysis_s", np.nan)):
            continue
        times = sens[(sens.optimizer == r.optimizer) & (sens.seed == r.seed)] if "time_s" in sens else sens.iloc[:0]
        sensitivity = ", ".join(f"{b} {t:.0f} s" for b, t in zip(times.batch, times.time_s) if t and np.isfinite(t))
        k, n, hvps, h64, t = (getattr(r, f"full_data_{c}", None) for c in ("k", "n_samples", "n_hvps",
                                                                             "n_hvps_float64", "time_s"))
        rss = getattr(r, "peak_rss_mib", None)
        print(f"final analysis, {r.optimizer} seed {r.seed}: {r.analysis_s:.0f} s in all; full-data top-"
              f"{_int(k)} on {_int(n)} images: {_int(hvps)} HVPs ({_int(h64)} float64) in "
              f"{t if t is not None and np.isfinite(t) else float('nan'):.0f} s, converged "
              f"{getattr(r, 'full_data_converged', None)}; sensitivity " + sensitivity
              + (f"; the process's peak RSS {rss / 1024:.2f} GiB" if rss and np.isfinite(rss) else ""))


def _int(value):
    """A count as the run recorded it (None where it did not)."""
    return None if value is None or (isinstance(value, float) and not np.isfinite(value)) else int(value)


_two_slots = values.two_slots


def seed_cost(runs):
    """One seed of every optimizer from each run's own records (``fact_values.seed_cost``), then on two slots."""
    v = values.seed_cost(runs)
    if v is None:
        return
    _line("one run's training plus final analysis, minutes, median over seeds", v["median"], ".0f")
    print(f"one seed of the {len(v['median'])} optimizers: {v['total_h']:.1f} h of runs, "
          f"{v['two_slots_h']:.1f} h on two slots")


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
    analysis_cost(collection.ok_runs(frames), frames)
    seed_cost(collection.ok_runs(frames))
    _print_rows("full size vs embedded", fs.comparison(embedded, frames))


def flatness(results_dir):
    """The flatness study's quoted numbers (``<results>/measures``): population sizes, tau and Psi per measure, the
    runs that never reached the stopping loss, and the fingerprints at equal loss."""
    import pandas as pd

    from minima import schema
    from minima.report import flatness as fl

    if not fl.has_measures(results_dir):
        print(f"flatness: no measured minima in {fl.measures_path(results_dir)}")
        return
    table = fl.load(results_dir)
    path = fl.measures_path(results_dir).parent / schema.SCORES_FILE
    found = pd.read_csv(path) if path.exists() else fl.scores(table)
    print(f"\nflatness: {len(table)} measured rows; " + ", ".join(
        f"{name} {len(rows)}" for name, (rows, _) in fl.populations(table).items()))
    unreached, _ = fl.unreached_table(results_dir)
    print(f"flatness runs that never reached the stopping loss: {len(unreached)} ({', '.join(unreached.run)})")
    for r in found.itertuples():
        print(f"{r.statistic} {r.population} {r.gap} {r.measure} {r.group}: {r.value:+.2f} "
              f"[{r.low:+.2f}, {r.high:+.2f}] n={r.n}")
    if (found.statistic == "psi").any():
        for column, per in fl.fingerprints(table).items():
            print(f"fingerprint {column}: " + ", ".join(
                f"{o} {e['mean']:.3g} [{e['low']:.3g}, {e['high']:.3g}] / SGD {e['ratio']:.3g} "
                f"[{e['ratio_low']:.3g}, {e['ratio_high']:.3g}]" for o, e in per.items()))


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
    flatness(results_dir)
