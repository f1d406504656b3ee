"""The flatness study's scores on a synthetic grid whose answers are known: a measure that orders the gap exactly
has tau = Psi = 1, one that reverses it -1; the fingerprints' ratios are the ones built in."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from minima import runs, schema
from minima.report import flatness

LRS = {"sgd": (0.0316, 0.1, 0.316), "adam": (0.000316, 0.001, 0.00316)}


def grid_rows():
    """Every optimizer × lr × batch × seed at its stop and final weights. gap_error rises with lambda1 (exactly),
    the margin falls with it, and Adam's tr(H) is 2x SGD's on every matched pair."""
    rng = np.random.default_rng(0)
    rows = []
    for (opt, lrs), batch, seed in itertools.product(LRS.items(), (32, 500), (0, 1)):
        for lr in lrs:
            for stop in ("stop", "final"):
                lam = float(rng.uniform(1, 100))
                row = {f: 1.0 for f in schema.MEASURES.fields}
                row.update(run=f"flatness/bs{batch}/{opt}-lr{lr}/seed{seed}", stop=stop, dataset="mnist",
                           optimizer=opt, lr=lr, batch_size=batch, seed=seed, experiment=f"flatness/bs{batch}",
                           code_commit="x", lambda1=lam, gap_error=0.01 * lam, gap_loss=0.02 * lam,
                           margin=-lam, trace=(2.0 if opt == "adam" else 1.0) * (1 + lrs.index(lr) + batch + seed),
                           weight_norm=float(rng.uniform(1, 2)), train_loss=0.005)
                rows.append(row)
    return pd.DataFrame(rows)[list(schema.MEASURES.fields)]


@pytest.fixture
def results(tmp_path):
    path = flatness.measures_path(tmp_path)
    path.parent.mkdir(parents=True)
    grid_rows().to_csv(path, index=False)
    return tmp_path


def test_a_measure_that_orders_the_gap_has_tau_and_psi_one_and_the_margin_minus_one(results):
    table = flatness.load(results)
    assert sorted(table.lr_step.dropna().unique()) == [-1, 0, 1]
    stop, _ = flatness.populations(table)["flatness, at 0.01"]
    assert len(stop) == 24
    found = flatness.scores(table, n_resamples=50)
    tau, _ = flatness.tau_table(found)
    by = tau.set_index("measure")
    assert by.loc["λ1"].iloc[0].startswith("+1.00") and by.loc["output margin"].iloc[0].startswith("-1.00")
    psi, caption = flatness.psi_table(found)
    row = psi.set_index("measure").loc["λ1"]
    assert all(v.startswith("+1.00") for v in row)
    assert "optimizer 12" in caption and "lr step 8" in caption and "batch size 12" in caption


def test_the_fingerprints_recover_the_built_in_ratio(results):
    found = flatness.fingerprints(flatness.load(results))
    adam = found["trace"]["adam"]
    assert adam["ratio"] == pytest.approx(2.0) and adam["pairs"] == 12
    assert found["trace"]["sgd"]["ratio"] == pytest.approx(1.0)
    table, caption = flatness.fingerprint_table(flatness.load(results))
    lowest = table[(table.quantity == "tr(H)") & (table.lowest == "yes")]
    assert list(lowest.optimizer) == ["SGD"] and "Li, Wen and Lyu 2025" in caption


def test_final_populations_keep_only_models_at_the_stopping_loss(results):
    rows = grid_rows()
    rows.loc[(rows.stop == "final") & (rows.optimizer == "adam"), "train_loss"] = 0.5
    rows.to_csv(flatness.measures_path(results), index=False)
    final, _ = flatness.populations(flatness.load(results))["flatness, final"]
    assert set(final.optimizer) == {"sgd"} and len(final) == 12


def test_the_scores_file_round_trips_and_feeds_every_table(results):
    path = flatness.write_scores(results, n_resamples=20)
    found = pd.read_csv(path)
    assert list(found.columns) == list(schema.SCORES.fields)
    within = found[(found.statistic == "tau_within") & (found.measure == "lambda1") & (found.gap == "gap_error")]
    assert sorted(within.group) == ["adam", "sgd"] and np.allclose(within.value, 1.0) and (within.n == 12).all()
    made = flatness.tables(results)
    assert {"flatness_tau", "flatness_psi", "flatness_within", "flatness_fingerprints"} <= set(made)


def test_unreached_runs_are_listed(results):
    run = results / "flatness" / "bs32" / "sgd-lr0.0316" / "seed0"
    run.mkdir(parents=True)
    runs.save_json(run / schema.STOP_FILE, {"threshold": 0.01, "reached": False, **{k: None for k in (
        "epoch", "step", "train_loss", "train_accuracy", "test_loss", "test_accuracy")}})
    runs.save_json(run / schema.FINAL_FILE, {"train_loss": 0.05, "test_accuracy": 0.95})
    (run / "done").write_text("")
    table, _ = flatness.unreached_table(results)
    assert list(table.run) == ["bs32/sgd-lr0.0316/seed0"] and table["final training loss"].iloc[0] == "0.05"


def test_a_measures_file_with_a_missing_column_is_refused(results):
    path = flatness.measures_path(results)
    pd.read_csv(path).drop(columns=["lambda1"]).to_csv(path, index=False)
    with pytest.raises(runs.StudyError, match="lambda1"):
        flatness.load(results)


def test_figures_draw_from_the_grid(results):
    import matplotlib

    matplotlib.use("Agg")
    from minima.report import flatness_figures

    table = flatness.load(results)
    assert flatness_figures.plot_scatter_grid(table) is not None
    assert flatness_figures.plot_tau_bars(table, n_resamples=20) is not None
    assert not math.isnan(flatness.fingerprints(table)["lambda1"]["adam"]["mean"])


def test_facts_print_the_quoted_scores(results, capsys):
    from minima.report import facts

    flatness.write_scores(results, n_resamples=20)
    facts.flatness(results)
    out = capsys.readouterr().out
    assert "tau flatness, at 0.01 gap_error lambda1 all: +1.00" in out
    assert "psi flatness, at 0.01 gap_error margin overall: -1.00" in out
    assert "fingerprint trace: sgd" in out
