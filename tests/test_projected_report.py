"""The projected experiment's analysis on fixture run folders: labels, the check, loss ratios, cost, the figure."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import params
from minima import projected, runs
from minima.config import make_config
from minima.report import projected as report
from minima.report import projected_collection, statistics

PER_EPOCH, EPOCHS = 4, 5


def _write_run(root, group, optimizer, seed, overrides, losses, *, accuracy=0.9, weights=None, projection=None,
               spectrum=None, equal_loss=None, step_time=0.1, experiment=True):
    config = make_config(optimizer, seed, epochs=len(losses), overrides=overrides, data_source="embedded",
                         results_dir=root, experiment=f"projected/{group}" if experiment else None)
    run_dir = runs.run_dir_for(config)
    run_dir.mkdir(parents=True)
    runs.save_json(run_dir / runs.CONFIG, config)
    runs.save_json(run_dir / runs.FINAL, {"status": "ok", "test_accuracy": accuracy})
    runs.save_csv(run_dir / runs.HISTORY, [dict(epoch=e + 1, step=(e + 1) * PER_EPOCH, train_loss=loss,
                                                test_accuracy=accuracy, step_time_s=step_time * PER_EPOCH)
                                           for e, loss in enumerate(losses)])
    torch.save(weights if weights is not None else {"w": torch.zeros(3)}, run_dir / runs.MODEL)
    if projection is not None:
        runs.save_csv(run_dir / projected.PROJECTION, projection)
    if spectrum is not None:
        runs.save_csv(run_dir / runs.SPECTRUM, spectrum)
    if equal_loss is not None:
        runs.save_csv(run_dir / runs.EQUAL_LOSS, equal_loss)
    runs.mark_done(run_dir)
    return run_dir


def _refreshes(n, hvps):
    return [dict(step=PER_EPOCH + i * 10, n_hvps=hvps, converged=True, cpu_s=0.5, grad_share=0.8) for i in range(n)]


@pytest.fixture
def study(tmp_path):
    lr = params.SGD["lr"]
    for seed, scale in ((0, 1.0), (1, 2.0)):
        _write_run(tmp_path, "early", "sgd", seed, {}, [1.0, 0.5, 0.4, 0.3, 0.2 * scale])
        _write_run(tmp_path, "early", "projected", seed, {"lam": 1.0, "start_step": PER_EPOCH},
                   [1.0, 0.9, 0.9, 0.9, 0.8 * scale], accuracy=0.8, projection=_refreshes(2, 40), step_time=0.5)
        _write_run(tmp_path, "check", "sgd", seed, {"lr": lr / 2}, [1.0, 0.6], weights={"w": torch.ones(3)})
        # seed 1's λ = 0.5 run ends 1e-3 away from SGD at half the step: the check must say so
        _write_run(tmp_path, "check", "projected", seed, {"lam": 0.5, "start_step": 0}, [1.0, 0.6],
                   weights={"w": torch.ones(3) + (1e-3 if seed else 0.0)})
    return tmp_path


def test_each_run_is_labelled_by_its_setting(study):
    found = report.collect(study)
    assert {(r["group"], r["setting"]) for r in found} == {
        ("early", "sgd"), ("early", "λ=1"), ("check", "sgd lr/2"), ("check", "λ=0.5")}
    config = make_config("projected", 0, overrides={"lam": 0.25, "refresh_every": 50}, data_source="embedded")
    assert projected_collection.setting_of(config) == "λ=0.25 R=50"


def test_the_check_reports_identical_and_differing_weights(study):
    table = report.check_table(report.collect(study)).set_index("seed")
    assert bool(table.loc[0, "identical weights"]) and table.loc[0, "max |Δw|"] == "0.0e+00"
    assert not bool(table.loc[1, "identical weights"])
    assert float(table.loc[1, "max |Δw|"]) == pytest.approx(1e-3, rel=1e-2)


def test_the_loss_ratio_is_the_ratio_of_geometric_means(study):
    table = report.loss_table(report.collect(study), "early").set_index("setting")
    # λ = 1 ends at 0.8 and 1.6, SGD at 0.2 and 0.4: the ratio is 4 in both seeds, so the interval is [4, 4]
    assert table.loc["λ=1", "loss vs SGD (ratio, 95 % CI)"] == "4 [4, 4]"
    assert table.loc["λ=1", "loss supported"] == "yes"
    # the loss at the end over the loss at the switch-on (epoch 1: 1.0): 0.8 and 1.6
    assert table.loc["λ=1", "loss end / switch-on"] == "1.20 ± 0.57"
    assert table.loc["λ=1", "accuracy vs SGD (diff, 95 % CI)"].startswith("-0.1000")


def test_the_cost_counts_hvps_per_projected_step(study):
    cost = report.cost_rows(report.collect(study))
    early = cost[cost.group == "early"].iloc[0]
    projected_steps = EPOCHS * PER_EPOCH - PER_EPOCH
    assert early.hvps_per_step == pytest.approx(2 * 40 / projected_steps)
    assert early.step_ratio == pytest.approx(5.0)           # 0.5 s per step against SGD's 0.1 s
    table = report.cost_table(report.collect(study))
    assert list(table.R) == [params.PROJECTED["refresh_every"]] and table["HVPs per refresh"].iloc[0] == "40.0 ± 0.0"


def test_the_final_regime_compares_curvature_at_the_lowest_common_threshold(tmp_path):
    for seed in (0, 1):
        spectrum = [dict(step=s, lambda1=2.0 * (seed + 1), lambda2=1.0) for s in (18, 19, 20)]
        thresholds = [dict(loss_threshold=t, epoch=e, lambda1=l1) for t, e, l1 in ((0.5, 2, 3.0), (0.1, 4, 1.5))]
        _write_run(tmp_path, "final", "sgd", seed, {}, [1.0, 0.5, 0.3, 0.1, 0.05], spectrum=spectrum,
                   equal_loss=thresholds, experiment=False)
        _write_run(tmp_path, "final", "projected", seed, {"lam": 0.0, "start_step": 16}, [1.0, 0.5, 0.3, 0.1, 0.04],
                   spectrum=[dict(r, lambda1=r["lambda1"] / 2) for r in spectrum], equal_loss=thresholds[:1],
                   projection=_refreshes(1, 30))
    found = report.collect(tmp_path)
    # plain SGD's rows are the study's own runs, <results>/sgd/seed<k>
    assert sorted(Path(r["run_dir"]).relative_to(tmp_path).as_posix() for r in found if r["setting"] == "sgd") == \
        ["sgd/seed0", "sgd/seed1"]
    table = report.spectrum_table(found).set_index("setting")
    assert table.loc["λ=0", "vs SGD (ratio, 95 % CI)"] == "0.5 [0.5, 0.5]"
    assert "λ1 at train loss 0.5" in table.columns        # 0.1 is not reached by the projected runs
    assert table.loc["sgd", "median λ1/λ2"] == "3.00 ± 1.41"


def test_the_figure_draws_both_regimes(study, tmp_path):
    import matplotlib
    matplotlib.use("Agg")
    fig = report.plot_projected(report.collect(study))
    ax = fig.axes[0]
    assert len(ax.lines) == 3                     # SGD, λ = 1, and the switch-on line
    assert math.isclose(ax.lines[0].get_ydata()[-1], np.sqrt(0.2 * 0.4))   # the geometric mean over seeds
    names = report.tables(report.collect(study))
    assert set(names) == {"projected_check", "projected_early", "projected_cost"}
    assert all(isinstance(t, pd.DataFrame) and len(t) for t, _ in names.values())


def test_the_paired_interval_against_a_hand_computation():
    # per-seed differences 1, 2, 4: mean 7/3, sd sqrt(7/3), t(0.975, 2 df) = 4.302652729911275
    p = statistics.paired({0: 1.0, 1: 2.0, 2: 4.0, 3: 9.0}, {0: 0.0, 1: 0.0, 2: 0.0})   # seed 3 has no partner
    half = 4.302652729911275 * math.sqrt(7 / 3) / math.sqrt(3)
    assert p["n"] == 3 and p["estimate"] == pytest.approx(7 / 3)
    assert (p["low"], p["high"]) == pytest.approx((7 / 3 - half, 7 / 3 + half))
    q = statistics.paired({0: 2.0, 1: 8.0}, {0: 1.0, 1: 4.0}, log=True)   # ratio 2 in both seeds: exact
    assert (q["estimate"], q["low"], q["high"]) == pytest.approx((2.0, 2.0, 2.0))


def test_make_report_writes_the_experiments_tables_and_none_without_it(study, tmp_path_factory):
    from minima.report.build import write_projected_tables
    out = tmp_path_factory.mktemp("tables")
    written = write_projected_tables(study, out)
    assert sorted(p.name for p in written) == sorted(f"projected_{n}.{ext}" for n in ("check", "early", "cost")
                                                     for ext in ("md", "tex"))
    assert "λ=1" in (out / "projected_early.md").read_text()
    assert write_projected_tables(tmp_path_factory.mktemp("empty"), out) == []
