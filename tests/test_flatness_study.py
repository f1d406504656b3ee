"""The flatness study's population: its stopping point (the weights at the first epoch end below a training loss)
and its plan (optimizer x learning rate x batch size x seed)."""

import json

import pandas as pd
import pytest
import torch

import helpers
import params
from minima import flatness_study, runs, schema, training
from minima.errors import StudyError


@pytest.fixture(scope="module")
def small():
    return helpers.load_mnist("embedded", train_size=300, test_size=100, verbose=False)


def _run(small, tmp_path, name, epochs, stop_loss):
    config = helpers.make_config("sgd", 0, epochs=epochs, batch_size=50, data_source="embedded",
                                 results_dir=tmp_path, stop_loss=stop_loss)
    run_dir = tmp_path / name
    run_dir.mkdir()
    model = training.build_model(0)
    out = training.train(model, config, small, run_dir=run_dir, progress=False)
    training.finish_training(model, small, out, run_dir)
    return run_dir, out


def test_the_stopping_point_is_the_first_epoch_end_below_the_loss_and_its_weights_are_that_epochs(small, tmp_path):
    probe, out = _run(small, tmp_path, "probe", 3, None)
    losses = [row["train_loss"] for row in out["history"]]
    assert not (probe / runs.STOP).exists()  # no stop_loss, no stopping point
    threshold = (losses[0] + losses[1]) / 2   # first crossed at the end of epoch 2
    stopped, out = _run(small, tmp_path, "stopped", 3, threshold)
    two_epochs, _ = _run(small, tmp_path, "two", 2, None)
    record = json.loads((stopped / runs.STOP).read_text())
    assert set(record) == set(schema.STOP.fields)
    assert record["reached"] and record["epoch"] == 2 and record["threshold"] == threshold
    assert record["train_loss"] == out["history"][1]["train_loss"] < threshold
    at_stop = runs.load_torch(stopped / runs.STOP_MODEL)
    after_two = runs.load_torch(two_epochs / runs.MODEL)
    assert all(torch.equal(at_stop[k], after_two[k]) for k in after_two)  # the weights at that epoch, bit for bit
    assert [row["train_loss"] for row in out["history"]] == losses  # training itself unchanged, bit for bit


def test_a_run_that_never_reaches_the_loss_says_so(small, tmp_path):
    run_dir, _ = _run(small, tmp_path, "never", 1, 1e-9)
    record = json.loads((run_dir / runs.STOP).read_text())
    assert record["reached"] is False and record["epoch"] is None and not (run_dir / runs.STOP_MODEL).exists()


def test_the_plan_is_every_optimizer_lr_batch_and_seed_once(tmp_path):
    lrs = flatness_study.learning_rates(runs.REPO_ROOT / "results" / "sweeps" / "tuning" / "summary.csv")
    table = pd.read_csv(runs.REPO_ROOT / "results" / "sweeps" / "tuning" / "summary.csv")
    for opt, values in lrs.items():
        rows = table[table.optimizer == opt]
        grid, best = sorted(rows.lr), float(rows[rows.best].lr.iloc[0])
        assert best in values and len(values) == 3 and values == sorted(values)
        assert grid.index(values[0]) + 2 == grid.index(values[2])   # the selection and its grid neighbours
    configs = flatness_study.plan(lrs, results_dir=tmp_path)
    assert len(configs) == 5 * 3 * len(params.FLATNESS_BATCH_SIZES) * len(params.FLATNESS_SEEDS) == 90
    folders = {runs.run_dir_for(c) for c in configs}
    assert len(folders) == 90 and all("flatness/bs" in str(f) for f in folders)
    assert {c["batch_size"] for c in configs} == set(params.FLATNESS_BATCH_SIZES)
    assert all(c["stop_loss"] == params.STOP_LOSS and not c["tracking"]["on"] and not c["final_analysis"]
               for c in configs)
    with pytest.raises(StudyError, match="no learning rates for adam"):
        flatness_study.plan({k: v for k, v in lrs.items() if k != "adam"}, results_dir=tmp_path)
