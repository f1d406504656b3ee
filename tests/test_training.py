"""The training loop: it learns, reruns bitwise, resumes after a kill, and stops on divergence."""

import pandas as pd
import pytest
import torch

import helpers
from minima import runs, training


@pytest.fixture(scope="module")
def small():
    return helpers.load_mnist("embedded", train_size=300, test_size=100, verbose=False)


def _config(optimizer="sgd", epochs=3, tmp_path=None, **overrides):
    return helpers.make_config(optimizer, 0, epochs=epochs, batch_size=50, data_source="embedded",
                               overrides=overrides, results_dir=tmp_path)


def _train(config, data, run_dir=None, callback=None):
    model = training.build_model(config["seed"])
    outcome = training.train(model, config, data, run_dir=run_dir, callback=callback, progress=False)
    return model, outcome


def _numbers(history):
    return [{k: v for k, v in row.items() if not k.endswith("_s")} for row in history]


def test_loop_learns_on_a_small_subset(small):
    _, out = _train(_config("adam", epochs=4), small)
    h = pd.DataFrame(out["history"])
    assert out["status"] == "ok" and len(h) == 4
    assert h.train_loss.iloc[-1] < 0.7 * h.train_loss.iloc[0]
    assert h.train_accuracy.iloc[-1] > 0.6  # chance is 0.1
    assert (h.grad_norm_full > 0).all() and (h.grad_norm_last_batch > 0).all()


def test_full_batch_gradient_norm_matches_autograd(small):
    model = training.build_model(0)
    loss = torch.nn.functional.cross_entropy(model(small.x_train), small.y_train)
    expected = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(model.parameters()))]).norm()
    got = training.evaluate(model, small.x_train, small.y_train, batch_size=70, with_gradient=True)
    assert got["grad_norm"] == pytest.approx(float(expected), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adagrad", "adahessian", "sam"])
def test_same_seed_gives_bitwise_identical_runs(small, optimizer):
    m1, o1 = _train(_config(optimizer, epochs=2), small)
    m2, o2 = _train(_config(optimizer, epochs=2), small)
    assert _numbers(o1["history"]) == _numbers(o2["history"])
    assert training.state_checksum(m1) == training.state_checksum(m2)


class Kill(Exception):
    pass


@pytest.mark.parametrize("optimizer", ["sgd", "adahessian", "sam"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(small, tmp_path, optimizer):
    config = _config(optimizer, epochs=3, tmp_path=tmp_path)
    reference, ref_out = _train(config, small)

    def kill_in_epoch_3(model, *, epoch, step, total_steps):
        if epoch == 3:
            raise Kill

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(Kill):
        _train(config, small, run_dir, callback=kill_in_epoch_3)
    assert len(pd.read_csv(run_dir / "history.csv")) == 2  # epochs 1-2 were saved before the kill
    resumed, out = _train(config, small, run_dir)
    assert _numbers(out["history"]) == _numbers(ref_out["history"])
    assert training.state_checksum(resumed) == training.state_checksum(reference)


def test_divergence_stops_the_run_and_keeps_the_history(small, tmp_path):
    config = _config("sgd", epochs=3, tmp_path=tmp_path)  # 300 / 50 = 6 steps per epoch

    def blow_up_after_step_7(model, *, epoch, step, total_steps):
        if step == 7:  # as an overflowing update would leave it
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    model, out = _train(config, small, run_dir, callback=blow_up_after_step_7)
    assert out["status"] == "diverged"
    assert (out["diverged_at"]["epoch"], out["diverged_at"]["step"]) == (2, 8)
    assert len(out["history"]) == 1  # epoch 1 is kept
    final = training.finish_training(model, small, out, run_dir)
    assert final["status"] == "diverged" and final["test_accuracy"] is None  # every declared key, null
    assert runs.load_json(run_dir / "final.json")["diverged_at"] == out["diverged_at"]
    assert len(pd.read_csv(run_dir / "history.csv")) == 1


def test_confusion_matrix_counts_every_test_image(small):
    model = training.build_model(0)
    c = training.confusion(model, small.x_test, small.y_test)
    m = torch.tensor(c["confusion_matrix"])
    assert m.sum() == 100 and m.sum(1).tolist() == [10] * 10
    assert c["accuracy"] == pytest.approx(float(m.diag().sum()) / 100)


@pytest.mark.parametrize("optimizer", ["adam", "sam"])
def test_the_instruments_leave_training_unchanged_and_record_each_threshold_once(small, optimizer):
    """Trained with every tracker on, and with tracking off: the same history and weights, bit for bit."""
    from minima import analysis

    config = _config(optimizer, epochs=3)
    config["hessian"].update(spectral_steps=3, sharpness_every=4)
    config["tracking"].update(subspace_k=3, equal_loss_thresholds=[2.29, 2.25, 2.2, 1.9, 1e-9],
                              equal_loss_trace_samples=2)
    callbacks = analysis.trackers(small, config)
    tracked, out_tracked = _train(config, small, callback=callbacks)
    plain, out_plain = _train(dict(config, tracking=dict(config["tracking"], on=False)), small,
                              callback=analysis.trackers(small, dict(config, tracking={"on": False})))
    assert _numbers(out_tracked["history"]) == _numbers(out_plain["history"])
    assert training.state_checksum(tracked) == training.state_checksum(plain)
    instruments = callbacks[1]
    rows = pd.DataFrame(instruments.rows)
    assert list(rows.step) == [4, 8, 12, 16, 18]  # every 4 steps and the last (6 steps per epoch)
    assert (rows.threshold > 0).all() and (rows.overlap_hessian_batch.between(0, 1)).all()
    history = pd.DataFrame(out_tracked["history"])
    equal = pd.DataFrame(instruments.equal_loss)
    for t in config["tracking"]["equal_loss_thresholds"]:
        below = history[history.train_loss < t]
        got = equal[equal.loss_threshold == t]
        if below.empty:
            assert got.empty
        else:  # exactly one row, at the first epoch end below the threshold
            assert len(got) == 1 and int(got.epoch.iloc[0]) == int(below.epoch.iloc[0])
