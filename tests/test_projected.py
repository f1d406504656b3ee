"""Projected SGD: the projection against a dense computation, λ = 0.5 against SGD at half the step,
the refresh schedule, resume after a kill, and the refusal of bad settings."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import helpers
from minima import optimizers, projected, runs, subspace, training
from minima.config import make_config

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def _tiny(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, y = torch.randn(24, 4), torch.randint(0, 3, (24,))
    return model, x, y


def _split(flat, model):
    """A flat vector as tensors shaped like the parameters."""
    out, offset = [], 0
    for p in model.parameters():
        out.append(flat[offset:offset + p.numel()].view_as(p).clone())
        offset += p.numel()
    return out


def _flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors]).double().numpy()


def _dense_hessian(model, x, y):
    """The Hessian of the mean cross-entropy w.r.t. all parameters, as one float64 matrix."""
    model64 = copy.deepcopy(model).double()
    names = [n for n, _ in model64.named_parameters()]
    shapes = [p.shape for p in model64.parameters()]
    sizes = [p.numel() for p in model64.parameters()]

    def loss(flat):
        ps = dict(zip(names, (t.view(s) for t, s in zip(torch.split(flat, sizes), shapes))))
        return F.cross_entropy(torch.func.functional_call(model64, ps, (x.double(),)), y)

    w = torch.cat([p.detach().reshape(-1) for p in model64.parameters()])
    return torch.autograd.functional.hessian(loss, w).numpy()


# ---------------------------------------------------------------------------- the projection

@pytest.mark.parametrize("lam", [1.0, 0.0, 0.5, 0.25])
def test_the_projection_keeps_removes_or_halves_the_top_span(lam):
    model, x, y = _tiny()
    n, k = sum(p.numel() for p in model.parameters()), 3
    gen = torch.Generator().manual_seed(1)
    Q, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    g = torch.randn(n, generator=gen)
    proj = projected.Projection(lam, k, refresh_every=1, start_step=0)
    proj.set_hessian(model, F.cross_entropy, x, y, 1e-4)
    proj.set_vectors([_split(Q[:, i].float(), model) for i in range(k)])
    for p, t in zip(model.parameters(), _split(g, model)):
        p.grad = t
    share = proj.project(list(model.parameters()))
    out = _flat([p.grad for p in model.parameters()])

    V = Q.float().double().numpy()                  # the float32 vectors the projection holds
    P, gd = V @ V.T, g.double().numpy()
    expected = lam * P @ gd + (1 - lam) * (gd - P @ gd)
    scale = np.linalg.norm(gd)
    assert np.allclose(out, expected, rtol=0, atol=1e-6 * scale)
    if lam == 1.0:      # only components in span(V) are left
        assert np.linalg.norm(out - P @ out) < 1e-6 * scale and np.linalg.norm(out) > 0.1 * scale
    if lam == 0.0:      # none are
        assert np.linalg.norm(V.T @ out) < 1e-6 * scale
    if lam == 0.5:      # g / 2 bit for bit, whatever V is
        assert torch.equal(torch.cat([p.grad.reshape(-1) for p in model.parameters()]), g / 2)
    assert share == pytest.approx(subspace.subspace_overlap(proj.vectors, _split(g, model)), rel=1e-6)


def test_the_solver_gives_orthonormal_top_eigenvectors_of_the_hessian():
    model, x, y = _tiny()
    proj = projected.Projection(0.0, 3, refresh_every=1, start_step=0)
    proj.set_hessian(model, F.cross_entropy, x, y, 1e-6)
    row = proj.refresh(step=0)
    V = np.stack([_flat(v) for v in proj.vectors], axis=1)              # (n, k)
    assert np.allclose(V.T @ V, np.eye(3), atol=1e-6)
    values, vectors = np.linalg.eigh(_dense_hessian(model, x, y))
    top = vectors[:, ::-1][:, :3]
    assert [row[f"lambda{i}"] for i in (1, 2, 3)] == pytest.approx(values[::-1][:3], rel=1e-5)
    assert np.linalg.norm(V @ V.T - top @ top.T) < 1e-3                  # the same span
    assert row["converged"] and row["n_hvps"] > 0 and row["step"] == 0


def test_one_projected_step_is_the_base_step_with_the_projected_gradient():
    model, x, y = _tiny()
    lr, lam = 0.1, 0.25
    hyper = optimizers.hyperparameters("projected", dict(lr=lr, lam=lam, k=3, refresh_every=1, start_step=0))
    opt = optimizers.make_optimizer("projected", model, hyper)
    assert isinstance(opt, torch.optim.SGD)   # the base optimizer itself: its state and readers are SGD's
    w0 = _flat(model.parameters())
    loss_fn = lambda m, a, b: F.cross_entropy(m(a), b)  # noqa: E731
    with pytest.raises(RuntimeError, match="no model or Hessian batch"):
        training.training_step(model, opt, x, y, name="projected", loss_fn=loss_fn)
    assert opt.projection.steps == 0 and _flat(model.parameters()) == pytest.approx(w0, abs=0)
    opt.projection.set_hessian(model, F.cross_entropy, x, y, 1e-6)
    g = torch.autograd.grad(loss_fn(model, x, y), list(model.parameters()))
    training.training_step(model, opt, x, y, name="projected", loss_fn=loss_fn)
    V = np.stack([_flat(v) for v in opt.projection.vectors], axis=1)
    gd = _flat(g)
    g_tilde = lam * V @ (V.T @ gd) + (1 - lam) * (gd - V @ (V.T @ gd))
    assert np.allclose(_flat(model.parameters()), w0 - lr * g_tilde, rtol=0, atol=1e-7)


# ---------------------------------------------------------------------------- training runs

@pytest.fixture(scope="module")
def small():
    return helpers.load_mnist("embedded", train_size=300, test_size=100, verbose=False)


def _config(optimizer, tmp_path=None, epochs=3, **overrides):
    config = helpers.make_config(optimizer, 0, epochs=epochs, batch_size=50, data_source="embedded",
                                 overrides=overrides, results_dir=tmp_path)
    config["hessian"]["batch_size"] = 32   # a cheaper Hessian batch; the mechanism is the same
    return config


def _train(config, data, run_dir=None, callback=None):
    model = training.build_model(config["seed"])
    return model, training.train(model, config, data, run_dir=run_dir, callback=callback, progress=False)


def _rows(run_dir):
    return pd.read_csv(Path(run_dir) / projected.PROJECTION)


class Solves:
    """Counts calls of the eigensolver the projection uses."""

    def __init__(self, monkeypatch):
        self.calls, solver = 0, projected.curvature.top_eigenpairs

        def counted(*args, **kwargs):
            self.calls += 1
            return solver(*args, **kwargs)
        monkeypatch.setattr(projected.curvature, "top_eigenpairs", counted)


SCHEDULE = dict(lam=0.0, k=2, refresh_every=4, start_step=2)   # 300 / 50 = 6 steps per epoch, 18 steps
EXPECTED_REFRESHES = [2, 6, 10, 14]                             # after these steps, for the next one


@pytest.fixture(scope="module")
def reference(small, tmp_path_factory):
    """An uninterrupted projected run with a run folder, its solver calls seen after every step."""
    run_dir = tmp_path_factory.mktemp("reference")
    seen, checksums = {}, {}
    mp = pytest.MonkeyPatch()
    solves = Solves(mp)

    def watch(model, *, epoch, step, total_steps):
        seen[step], checksums[step] = solves.calls, training.state_checksum(model)
    try:
        model, out = _train(_config("projected", **SCHEDULE), small, run_dir, callback=watch)
    finally:
        mp.undo()
    return dict(run_dir=run_dir, model=model, out=out, seen=seen, checksums=checksums)


def test_lam_half_is_plain_sgd_at_half_the_learning_rate(small, tmp_path):
    half, half_out = _train(_config("projected", lam=0.5, k=2, refresh_every=4, start_step=0, lr=0.1), small, tmp_path)
    sgd, sgd_out = _train(_config("sgd", lr=0.05), small)
    assert _rows(tmp_path).step.tolist() == [0, 4, 8, 12, 16]   # the projection really ran, refreshes included
    # (1 - 0.5) g + 0 * V V^T g is g/2 exactly, and 0.1 * (g/2) rounds as 0.05 * g does: weight for weight
    for p, q in zip(half.parameters(), sgd.parameters()):
        assert torch.allclose(p, q, rtol=1e-6, atol=0)
    assert training.state_checksum(half) == training.state_checksum(sgd)
    assert [r["train_loss"] for r in half_out["history"]] == [r["train_loss"] for r in sgd_out["history"]]


def test_the_refreshes_follow_the_schedule_and_nothing_runs_before_the_start(small, reference):
    rows = _rows(reference["run_dir"])
    assert rows.step.tolist() == EXPECTED_REFRESHES
    assert (rows.n_hvps > 0).all() and rows.converged.all() and (rows.wall_s > 0).all()
    assert ((rows.grad_share >= 0) & (rows.grad_share <= 1)).all()
    assert (rows.lambda1 >= rows.lambda2).all() and "lambda3" not in rows
    # the solver ran only at the scheduled points: after step t, once per refresh point s < t
    assert reference["seen"] == {t: sum(s < t for s in EXPECTED_REFRESHES) for t in range(1, 19)}
    # up to the start the run is plain SGD, weight for weight; after it, it is not
    sgd_checksums = {}

    def watch(model, *, epoch, step, total_steps):
        sgd_checksums[step] = training.state_checksum(model)
    sgd, _ = _train(_config("sgd"), small, callback=watch)
    assert [reference["checksums"][t] for t in (1, 2)] == [sgd_checksums[t] for t in (1, 2)]
    assert reference["checksums"][3] != sgd_checksums[3]


class Kill(Exception):
    pass


def test_a_killed_run_resumes_with_the_same_v_and_ends_bitwise_equal(small, reference, tmp_path, monkeypatch):
    config = _config("projected", **SCHEDULE)

    def kill_in_epoch_3(model, *, epoch, step, total_steps):
        if epoch == 3:  # step 13: the checkpoint after step 12 holds the V computed after step 10
            raise Kill

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(Kill):
        _train(config, small, run_dir, callback=kill_in_epoch_3)
    saved = runs.load_checkpoint(run_dir / runs.CHECKPOINT)["owned"][0]
    assert saved["steps"] == 12 and [r["step"] for r in saved["rows"]] == [2, 6, 10]
    solves = Solves(monkeypatch)
    resumed, out = _train(config, small, run_dir)
    assert solves.calls == 1          # only the refresh after step 14: steps 13-14 used the checkpoint's V
    assert training.state_checksum(resumed) == training.state_checksum(reference["model"])
    numbers = lambda h: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in h]  # noqa: E731
    assert numbers(out["history"]) == numbers(reference["out"]["history"])
    clocks = ["wall_s", "cpu_s"]
    assert _rows(run_dir).drop(columns=clocks).equals(_rows(reference["run_dir"]).drop(columns=clocks))


# ---------------------------------------------------------------------------- settings

def test_the_settings_are_hyperparameters_recorded_in_the_config():
    config = make_config("projected", 0, overrides={"lam": 0.25, "start_step": 40}, data_source="embedded")
    assert config["hyperparameters"] == {"base": "sgd", "lr": 0.1, "lam": 0.25, "k": 10, "refresh_every": 10,
                                         "start_step": 40}
    hyper = optimizers.hyperparameters("projected", {"base": "adam", "lr": 0.001, "betas": [0.9, 0.99]})
    opt = optimizers.make_optimizer("projected", torch.nn.Linear(2, 2), hyper)
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["betas"] == (0.9, 0.99)
    assert opt.projection.lam == 0.0 and opt.projection.k == 10


@pytest.mark.parametrize("overrides, message", [
    ({"lam": 1.5}, "lam must be a number in [0, 1], got 1.5"),
    ({"lam": "half"}, "lam must be a number in [0, 1], got 'half'"),
    ({"k": 0}, "k must be an integer >= 1, got 0"),
    ({"k": 2.5}, "k must be an integer >= 1, got 2.5"),
    ({"refresh_every": 0}, "refresh_every must be an integer >= 1, got 0"),
    ({"start_step": -1}, "start_step must be an integer >= 0, got -1"),
    ({"base": "sam"}, "base must be one of sgd, adam, adagrad, got 'sam'"),
    ({"R": 5}, "unknown hyperparameter(s) R for projected; valid choices: base, lam, k, refresh_every, start_step"),
])
def test_bad_settings_give_one_clear_line(overrides, message):
    with pytest.raises(runs.StudyError) as err:
        make_config("projected", 0, overrides=overrides, data_source="embedded")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_command_line_refuses_a_bad_lam_before_anything_starts(tmp_path):
    out = subprocess.run([sys.executable, "-m", "minima", "run", "--optimizers", "projected", "--set", "lam=2",
                          "--data-source", "embedded", "--results-dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, "MPLBACKEND": "Agg"}, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip() == ("error: projected refuses hyperparameters {'lam': 2}: "
                                  "lam must be a number in [0, 1], got 2")
    assert not (tmp_path / "projected").exists()
