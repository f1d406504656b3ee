"""curvature.py's trace and spectral density against exact answers (dense float64 Hessians of
small models, tests/curvature_cases.py), and spectrum_tracking.py's tracker: the right steps,
training left alone, its state round-tripped.

Eigenpairs and their certificates are in test_curvature.py.
"""

import io
import math

import numpy as np
import pytest
import torch
from curvature_cases import CE, TOL, batch, dense_hessian, descending_eigenvalues, mlp, quadratic
from pyhessian import hessian

from minima import curvature
from minima.spectrum_tracking import SpectrumTracker

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- trace and density

def test_trace_agrees_with_dense_trace():
    model, (x, y) = mlp(), batch()
    exact = torch.trace(dense_hessian(model, CE, x, y)).item()
    t = curvature.hessian_trace(model, CE, x, y, n_samples=200, seed=0)
    assert len(t.samples) == 200 and t.n_hvps == 200
    assert t.stderr == pytest.approx(np.std(t.samples, ddof=1) / math.sqrt(200))
    assert abs(t.mean - exact) <= 3 * t.stderr


def test_density_weights_and_nodes():
    model, (x, y) = mlp(), batch()
    exact = descending_eigenvalues(dense_hessian(model, CE, x, y))
    d = curvature.spectral_density(model, CE, x, y, n_runs=3, n_steps=30)
    assert d.nodes.shape == d.weights.shape == (3, 30)
    assert np.allclose(d.weights.sum(axis=1), 1.0, atol=1e-10)
    slack = 1e-8 * np.abs(exact).max()
    assert d.nodes.min() >= exact[-1] - slack and d.nodes.max() <= exact[0] + slack
    # with 30 steps the extreme Ritz values have converged to the extreme eigenvalues
    assert d.nodes.max() == pytest.approx(exact[0], rel=1e-6)
    grid = np.linspace(exact[-1] - 1, exact[0] + 1, 4000)
    assert np.trapezoid(curvature.density_on_grid(d, grid), grid) == pytest.approx(1.0, abs=1e-3)


def test_density_recovers_a_small_spectrum_exactly():
    # Lanczos run to the dimension finds every eigenvalue; extra steps are padding with weight 0.
    spectrum = np.linspace(-1.0, 2.0, 20)
    model, criterion, x, A = quadratic(list(spectrum))
    d = curvature.spectral_density(model, criterion, x, A, n_runs=2, n_steps=25)
    assert d.n_hvps == 2 * 20
    assert np.allclose(d.nodes[:, :20], spectrum[None, :], atol=1e-8)
    assert np.all(d.weights[:, 20:] == 0) and np.allclose(d.weights.sum(axis=1), 1.0)


# ----------------------------------------------------------------------------- tracker

def train(model, x, y, steps, callback=None):
    """SGD with momentum on shuffled mini-batches drawn from the global RNG, dropout on:
    anything that leaves the model in eval mode or draws random numbers changes the weights."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(1, steps + 1):
        idx = torch.randperm(len(x))[:10]
        opt.zero_grad()
        CE(model(x[idx]), y[idx]).backward()
        opt.step()
        if callback:
            callback(model, epoch=1 + (step - 1) // 5, step=step, total_steps=steps)
    return [p.detach().clone() for p in model.parameters()]


def test_tracker_records_the_right_steps_and_leaves_training_alone():
    x, y = batch()
    hx, hy = x[:20], y[:20]
    torch.manual_seed(10)
    off = train(mlp(dropout=0.2), x, y, steps=10)
    tracker = SpectrumTracker(CE, hx, hy, spectral_steps=3, sharpness_every=4)
    torch.manual_seed(10)
    on = train(mlp(dropout=0.2), x, y, steps=10, callback=tracker)
    assert [r["step"] for r in tracker.spectrum] == [8, 9, 10]
    assert [r["step"] for r in tracker.sharpness] == [4, 8, 10]
    assert [r["epoch"] for r in tracker.spectrum] == [2, 2, 2]
    assert all(r["converged"] and r["certified_in"] == "float64" for r in tracker.spectrum + tracker.sharpness)
    last = tracker.spectrum[-1]
    assert last["gap"] == last["lambda1"] - last["lambda2"] and last["ratio"] == last["lambda1"] / last["lambda2"]
    assert tracker.sharpness[-1]["lambda1"] == pytest.approx(last["lambda1"], rel=2 * TOL)
    assert all(torch.equal(a, b) for a, b in zip(on, off))

    # Evidence the comparison can fail: PyHessian called directly changes training.
    def naive(model, **_):
        hessian(model, CE, data=(hx, hy), cuda=False).eigenvalues(top_n=1)
    torch.manual_seed(10)
    changed = train(mlp(dropout=0.2), x, y, steps=10, callback=naive)
    assert not all(torch.equal(a, b) for a, b in zip(changed, off))


def test_tracker_state_dict_round_trips():
    x, y = batch()
    model = mlp()
    tracker = SpectrumTracker(CE, x, y, spectral_steps=2, sharpness_every=1)
    for step in (1, 2):
        tracker(model, epoch=1, step=step, total_steps=3)
    buffer = io.BytesIO()
    torch.save(tracker.state_dict(), buffer)
    buffer.seek(0)
    restored = SpectrumTracker(CE, x, y, spectral_steps=2, sharpness_every=1)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert restored.spectrum == tracker.spectrum and restored.sharpness == tracker.sharpness
    assert len(restored.spectrum) == 1 and len(restored.sharpness) == 2
    # the warm-start vectors came back too: the next step is identical on both
    tracker(model, epoch=1, step=3, total_steps=3)
    restored(model, epoch=1, step=3, total_steps=3)
    assert restored.spectrum == tracker.spectrum and restored.sharpness == tracker.sharpness


@pytest.mark.parametrize("precision, certified_in", [("float64", "float64"), ("model", "float32")])
def test_tracker_rows_record_the_certifying_precision(precision, certified_in):
    x, y = batch()
    model = mlp().float()
    tracker = SpectrumTracker(CE, x.float(), y, spectral_steps=2, sharpness_every=1, precision=precision)
    for step in (1, 2):
        tracker(model, epoch=1, step=step, total_steps=2)
    rows = tracker.spectrum + tracker.sharpness
    assert len(rows) == 4 and all(r["certified_in"] == certified_in for r in rows)
    assert all(r["n_hvps_float64"] == (r["n_hvps"] if precision == "float64" else 0) for r in rows)
