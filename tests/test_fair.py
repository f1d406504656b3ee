"""The fair comparison's arithmetic: Welch intervals against a hand computation and scipy's own test, ratios of
geometric means, time to target from fixture histories (including "not reached"), and curvature at equal loss."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from minima.report import fair
from minima.runs import StudyError


def test_welch_interval_matches_a_hand_computation_and_scipys_test():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0]
    # by hand: means 2.5 and 4; variances 5/3 and 4; se^2 = (5/3)/4 + 4/3 = 1.75;
    # df = 1.75^2 / ((5/12)^2/3 + (4/3)^2/2) = 3.0625 / 0.9467593 = 3.234719
    w = fair.welch(a, b)
    assert w["diff"] == pytest.approx(-1.5)
    assert w["df"] == pytest.approx(3.0625 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2))
    assert w["df"] == pytest.approx(3.234719, abs=1e-6)
    half = stats.t.ppf(0.975, w["df"]) * math.sqrt(1.75)
    assert (w["low"], w["high"]) == pytest.approx((-1.5 - half, -1.5 + half))
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)  # an independent implementation
    assert (w["low"], w["high"]) == pytest.approx((ci.low, ci.high))
    assert fair.supported(w["low"], w["high"]) == "no"


def test_welch_edge_cases_one_value_identical_groups_and_nan():
    assert math.isnan(fair.welch([1.0], [1.0, 2.0])["low"])  # no variance from one value
    exact = fair.welch([2.0, 2.0, 2.0], [1.0, 1.0])
    assert (exact["diff"], exact["low"], exact["high"]) == (1.0, 1.0, 1.0)
    assert fair.supported(exact["low"], exact["high"]) == "yes"
    assert fair.welch([1.0, np.nan, 3.0], [1.0, 1.0])["n_a"] == 2
    assert fair.supported(math.nan, math.nan) == "–"


def test_ratio_is_of_geometric_means_with_the_log_interval():
    a, b = [0.1, 0.2, 0.4], [1.0, 2.0, 4.0, 8.0]
    r = fair.ratio(a, b)
    geo = lambda v: math.exp(np.mean(np.log(v)))  # noqa: E731
    assert r["ratio"] == pytest.approx(geo(a) / geo(b))
    ci = stats.ttest_ind(np.log(a), np.log(b), equal_var=False).confidence_interval(0.95)
    assert (r["low"], r["high"]) == pytest.approx((math.exp(ci.low), math.exp(ci.high)))
    assert fair.supported(r["low"], r["high"], 1.0) == "yes"  # a tenth, clearly below 1


def _history(opt, seed, losses, step_times=None, steps_per_epoch=40):
    rows = []
    for i, loss in enumerate(losses):
        row = {"optimizer": opt, "seed": seed, "epoch": i + 1, "step": (i + 1) * steps_per_epoch, "train_loss": loss}
        if step_times is not None:
            row["step_time_s"] = step_times[i]
        rows.append(row)
    return rows


def test_time_to_target_is_the_first_epoch_below_each_threshold_or_not_reached():
    history = pd.DataFrame(_history("sgd", 0, [0.5, 0.09, 0.2, 0.02, 0.005], [1.0, 1.5, 1.0, 1.0, 2.0])
                           + _history("adam", 0, [0.05, 0.04]))  # no step times: an old run
    ttt = fair.time_to_target(history, [0.1, 0.01, 1e-3]).set_index(["optimizer", "target"])
    first = ttt.loc[("sgd", 0.1)]
    assert (first.reached, first.epoch, first.step, first.seconds) == (True, 2, 80, 2.5)  # not the later 0.2
    later = ttt.loc[("sgd", 0.01)]
    assert (later.epoch, later.step, later.seconds) == (5, 200, 6.5)
    never = ttt.loc[("sgd", 1e-3)]
    assert not never.reached and math.isnan(never.epoch) and math.isnan(never.seconds)
    old = ttt.loc[("adam", 0.1)]
    assert old.reached and old.epoch == 1 and math.isnan(old.seconds)
    assert not ttt.loc[("adam", 0.01)].reached


def test_time_to_an_accuracy_target_is_the_first_epoch_at_or_above_it():
    rows = _history("sgd", 0, [0.5, 0.4, 0.3, 0.2], [1.0] * 4)
    for row, acc in zip(rows, [0.90, 0.95, 0.949, 0.97]):
        row["test_accuracy"] = acc
    ttt = fair.time_to_target(pd.DataFrame(rows), [0.95, 0.97, 0.99], "test_accuracy").set_index("target")
    assert ttt.loc[0.95, "epoch"] == 2 and ttt.loc[0.97, "epoch"] == 4  # reached at equality; a dip after counts not
    assert ttt.loc[0.97, "seconds"] == 4.0 and not ttt.loc[0.99, "reached"]


def _frames(eq_rows, run_rows, history_rows):
    runs = pd.DataFrame(run_rows)
    return {"runs": runs, "equal_loss": pd.DataFrame(eq_rows), "history": pd.DataFrame(history_rows)}


def test_speed_and_equal_loss_tables_from_fixture_runs():
    run_rows, eq_rows, hist = [], [], []
    for seed in range(3):
        for opt, lam_end, lam_eq, speed in (("sgd", 4.0, 2.0, 1), ("adam", 0.04 * (1 + seed / 10), 1.0, 2)):
            run_rows.append({"optimizer": opt, "seed": seed, "status": "ok", "lambda1": lam_end, "trace": 10 * lam_end,
                             "test_accuracy": 0.98})
            eq_rows.append({"optimizer": opt, "seed": seed, "loss_threshold": 0.1, "lambda1": lam_eq * (1 + seed / 10),
                            "precond_lambda1": 1.0, "trace": 5.0})
            if opt == "sgd":  # adam never reaches 1e-2: that threshold is not common
                eq_rows.append({"optimizer": opt, "seed": seed, "loss_threshold": 0.01, "lambda1": 3.0,
                                "precond_lambda1": 1.0, "trace": 5.0})
            losses = [0.5, 0.05] if speed == 2 else [0.5, 0.3, 0.2, 0.05]
            hist += [dict(r, test_accuracy=0.96) for r in _history(opt, seed, losses, [1.0] * len(losses))]
    frames = _frames(eq_rows, run_rows, hist)
    assert fair.common_thresholds(frames) == [0.1]
    ratios = fair.equal_loss_ratios(frames).set_index("train loss below")
    spread = np.log([1.0, 1.1, 1.2])  # unpaired: the seeds' spread widens the interval around the ratio 1/2
    ci = stats.ttest_ind(np.log(1.0) + spread, np.log(2.0) + spread, equal_var=False).confidence_interval(0.95)
    assert ratios.loc["0.1", "λ1 / SGD's [95 % CI]"] == f"0.50 [{math.exp(ci.low):.2f}, {math.exp(ci.high):.2f}]"
    assert ratios.loc["0.1", "trace / SGD's [95 % CI]"] == "1.00 [1.00, 1.00]"  # identical traces: exact
    assert ratios.loc["end of training", "λ1 supported"] == "yes"
    gap = fair.flatness_gap(frames).iloc[0]
    assert gap.ratio_at_threshold == pytest.approx(0.5)
    assert gap.share_left == pytest.approx(math.log(0.5) / math.log(gap.ratio_end))
    speed = fair.speed_table(frames, [0.1, 0.01]).set_index(["target", "optimizer"])
    assert speed.loc[("train loss < 0.1", "Adam"), "steps / SGD's [95 % CI]"] == "0.50 [0.50, 0.50]"
    assert speed.loc[("train loss < 0.1", "SGD"), "steps"] == "160 ± 0"
    assert speed.loc[("train loss < 0.01", "Adam"), "reached"] == "0/3"
    assert speed.loc[("train loss < 0.01", "Adam"), "steps"] == "—"  # not reached is never a number
    assert speed.loc[("test accuracy ≥ 96%", "Adam"), "epochs"] == "1.0 ± 0.0"
    assert speed.loc[("test accuracy ≥ 97%", "SGD"), "reached"] == "0/3"
    pairs = fair.accuracy_pairs(frames)
    assert pairs.iloc[0]["supported"] == "no"  # identical accuracies: an exact zero difference


def test_accuracy_targets_follow_the_studys_dataset_and_a_mixed_study_is_refused():
    import params

    def frames(datasets, accuracies):
        runs = pd.DataFrame([{"optimizer": "sgd", "seed": s, "status": "ok", "dataset": d}
                             for s, d in enumerate(datasets)])
        hist = []
        for s, acc in enumerate(accuracies):
            hist += [dict(r, test_accuracy=a) for r, a in zip(_history("sgd", s, [0.5, 0.2], [1.0, 1.0]), acc)]
        return _frames([], runs.to_dict("records"), hist)

    fashion = frames(["fashion-mnist"] * 2, [[0.86, 0.89], [0.84, 0.88]])
    targets = params.ACCURACY_TARGETS
    assert fair.accuracy_targets(fashion) == targets["fashion-mnist"] != targets["mnist"]
    speed = fair.speed_table(fashion, [0.1]).set_index(["target", "optimizer"])
    assert speed.loc[("test accuracy ≥ 85%", "SGD"), "reached"] == "2/2"
    assert speed.loc[("test accuracy ≥ 89%", "SGD"), "reached"] == "1/2"  # seed 1 ends at 88 %
    assert not any("95%" in t for t, _ in speed.index)  # the digits' targets are not Fashion-MNIST's
    assert fair.accuracy_targets(frames(["mnist"], [[0.9, 0.97]])) == params.ACCURACY_TARGETS["mnist"]
    with pytest.raises(StudyError, match="one dataset"):
        fair.accuracy_targets(frames(["mnist", "fashion-mnist"], [[0.9, 0.9], [0.9, 0.9]]))


def test_the_mean_interval_against_a_hand_computation():
    from minima.report import statistics
    mean, low, high = statistics.mean_interval([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2   # t(0.975, 3) x sd / sqrt(n)
    assert (mean, low, high) == pytest.approx((2.5, 2.5 - half, 2.5 + half), rel=1e-12)
    g, glow, ghigh = statistics.mean_interval([1.0, 100.0], log=True)   # a geometric mean: 10
    assert g == pytest.approx(10.0) and glow < 1.0 < 100.0 < ghigh
    assert statistics.mean_interval([7.0]) == (7.0, 7.0, 7.0)
    assert all(math.isnan(x) for x in statistics.mean_interval([]))


def test_kendall_tau_and_psi_against_a_hand_computation():
    """Four models on a 2 x 2 grid (lr x batch). Over all four, the measure orders the gap with 5 concordant and
    1 discordant pairs: tau = (5 - 1) / 6. Within each batch size (lr varies) both pairs are concordant: tau 1, 1;
    within each lr (batch varies) one is concordant and one discordant: tau 1, -1."""
    from minima.report import statistics
    frame = pd.DataFrame({"lr": [0.1, 0.2, 0.1, 0.2], "batch": [32, 32, 500, 500],
                          "measure": [1.0, 2.0, 3.0, 4.0], "gap": [0.1, 0.3, 0.4, 0.2]})
    # pairs (i<j) of gap: (.1,.3)+ (.1,.4)+ (.1,.2)+ (.3,.4)+ (.3,.2)- (.4,.2)-  -> 4 concordant, 2 discordant
    t = statistics.kendall_tau(frame.measure, frame.gap, n_resamples=200)
    assert t["tau"] == pytest.approx((4 - 2) / 6) and t["n"] == 4   # four models: too few for an interval
    psi = statistics.granulated_tau(frame, "measure", "gap", ["lr", "batch"], n_resamples=200)
    # lr varies within batch 32: (1,.1),(2,.3) concordant; within batch 500: (3,.4),(4,.2) discordant -> mean 0
    # batch varies within lr .1: (1,.1),(3,.4) concordant; within lr .2: (2,.3),(4,.2) discordant -> mean 0
    assert psi["lr"]["psi"] == pytest.approx(0.0) and psi["lr"]["groups"] == 2
    assert psi["batch"]["psi"] == pytest.approx(0.0) and psi["overall"]["psi"] == pytest.approx(0.0)
    monotone = frame.assign(gap=[0.1, 0.2, 0.3, 0.4])
    psi = statistics.granulated_tau(monotone, "measure", "gap", ["lr", "batch"], n_resamples=200)
    assert psi["overall"]["psi"] == pytest.approx(1.0) and psi["overall"]["low"] == pytest.approx(1.0)
    assert statistics.kendall_tau(monotone.measure, monotone.gap)["tau"] == pytest.approx(1.0)


def test_the_tau_interval_covers_tau_and_narrows_with_more_models():
    from minima.report import statistics
    rng = np.random.default_rng(0)
    widths = []
    for n in (30, 120):
        x = rng.normal(size=n)
        t = statistics.kendall_tau(x, x + rng.normal(size=n), n_resamples=500)
        assert -1 <= t["low"] < t["tau"] < t["high"] <= 1 and t["n"] == n
        widths.append(t["high"] - t["low"])
    assert widths[1] < widths[0]
