"""curvature.py's eigenpairs and their certificates (and the krylov.py under it) against exact
answers: dense float64 Hessians of models small enough to build them (tests/curvature_cases.py).

Trace, density and the spectrum tracker are in test_curvature_spectrum.py.
"""

import copy

import numpy as np
import pytest
import torch
from curvature_cases import (
    CE,
    TOL,
    Stopped,
    StoppingJournal,
    batch,
    dense_hessian,
    descending_eigenvalues,
    mlp,
    quadratic,
)
from torch import nn

from minima import curvature, krylov
from minima.spectrum_tracking import SpectrumTracker

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- fixtures

def relative_errors(found, exact):
    return np.abs(np.asarray(found) - exact) / np.abs(exact)


def flat(vector):
    return torch.cat([t.reshape(-1) for t in vector])


def positive_diagonal(model, seed=4):
    """A preconditioner P: log-normal entries spanning e^-3 to e^3, shaped and typed like the parameters."""
    g = torch.Generator().manual_seed(seed)
    return [torch.exp(torch.randn(p.shape, generator=g, dtype=torch.float64)).to(p.dtype) for p in model.parameters()]


@pytest.fixture(scope="module")
def flat_minimum():
    """A float32 8 -> 16 -> 4 MLP trained by Adam to a loss below 1e-5 on 20 points (~1.5 s), and
    its dense float64 spectrum: softmax probabilities within 1e-5 of 1, where float32 HVPs cancel."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4))
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(20, 8, generator=g), torch.randint(0, 4, (20,), generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(5000):
        opt.zero_grad(set_to_none=True)
        loss = CE(model(x), y)
        if loss.item() < 5e-6:
            break
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    double = copy.deepcopy(model).double()
    assert CE(double(x.double()), y).item() < 1e-5
    H = dense_hessian(double, CE, x.double(), y)
    return model, x, y, descending_eigenvalues(H), H


# ----------------------------------------------------------------------------- eigenpairs

def test_top_eigenpairs_match_dense_hessian_cross_entropy():
    model, (x, y) = mlp(), batch()
    H = dense_hessian(model, CE, x, y)
    exact = descending_eigenvalues(H)
    r = curvature.top_eigenpairs(model, CE, x, y, k=3, tol=TOL)
    assert r.converged
    assert np.all(relative_errors(r.eigenvalues, exact[:3]) <= TOL)
    assert r.eigenvalues == sorted(r.eigenvalues, reverse=True)
    for lam, vec, res in zip(r.eigenvalues, r.eigenvectors, r.residuals):
        assert [t.shape for t in vec] == [p.shape for p in model.parameters()]
        v = flat(vec)
        assert abs(v.norm().item() - 1) < 1e-12
        # the reported residual is the one the dense Hessian gives
        assert abs((H @ v - lam * v).norm().item() / abs(lam) - res) < 1e-8


def test_largest_algebraic_not_largest_magnitude():
    spectrum = [-10.0, 3.0, 2.5, 1.0] + list(np.linspace(-4, 0.5, 26))
    model, criterion, x, A = quadratic(spectrum)
    exact = descending_eigenvalues(dense_hessian(model, criterion, x, A))
    assert np.allclose(exact, sorted(spectrum, reverse=True))  # the construction does what it says
    r = curvature.top_eigenpairs(model, criterion, x, A, k=2, tol=TOL)
    assert r.converged
    assert np.all(relative_errors(r.eigenvalues, [3.0, 2.5]) <= TOL)
    # Evidence this test can fail: PyHessian's power iteration locks onto |-10| first.
    ph = curvature.top_eigenpairs(model, criterion, x, A, k=2, tol=TOL, method="pyhessian", pyhessian_tol=1e-6)
    assert abs(ph.eigenvalues[1] - (-10.0)) < 1e-2
    assert not np.all(relative_errors(ph.eigenvalues, [3.0, 2.5]) <= TOL)


def test_top_pair_within_one_percent():
    rng = np.random.default_rng(3)
    spectrum = [5.0, 4.97] + list(rng.uniform(-2.0, 3.5, 58))
    model, criterion, x, A = quadratic(spectrum)
    r = curvature.top_eigenpairs(model, criterion, x, A, k=2, tol=TOL)
    assert r.converged
    assert np.all(relative_errors(r.eigenvalues, [5.0, 4.97]) <= TOL)
    # Evidence this test can fail: the original's power iteration (relative change 1e-3) stops early,
    # and the residual test says so.
    ph = curvature.top_eigenpairs(model, criterion, x, A, k=2, tol=TOL, method="pyhessian")
    assert not np.all(relative_errors(ph.eigenvalues, [5.0, 4.97]) <= TOL)
    assert not ph.converged


def test_converged_flag_is_honest():
    # Stop Lanczos after every possible number of HVPs: whenever it claims convergence the
    # eigenvalues must be within tol, and the sweep must cross from inaccurate to converged.
    model, (x, y) = mlp(), batch()
    exact = descending_eigenvalues(dense_hessian(model, CE, x, y))[:2]  # lambda3 is only 3.6 % below lambda2
    tol, seen_inaccurate = 1e-6, False
    for max_hvps in range(2, 40):
        r = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=tol, max_hvps=max_hvps)
        error = relative_errors(r.eigenvalues, exact).max()
        if r.converged:
            assert error <= tol, (max_hvps, error)
            break
        seen_inaccurate |= error > tol
    assert r.converged and seen_inaccurate


def test_thick_restart_keeps_converging():
    # An evenly spread spectrum converges slowly: the basis fills up and restarts, still correctly.
    spectrum = list(np.linspace(0.0, 1.0, 400))
    model, criterion, x, A = quadratic(spectrum)
    r = curvature.top_eigenpairs(model, criterion, x, A, k=2, tol=TOL)
    assert r.n_hvps > krylov.MAX_BASIS
    assert r.converged
    assert np.all(relative_errors(r.eigenvalues, spectrum[:-3:-1]) <= TOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])  # float32: the float64 copy's path
def test_model_state_untouched(dtype):
    model, (x, y) = mlp(dropout=0.2).to(dtype), batch()
    x = x.to(dtype)
    model.train()
    model[0].eval()  # mixed flags: a blanket model.train() on exit would be caught
    CE(model(x), y).backward()
    model[3].bias.grad = None  # one None among real gradients
    grads = [p.grad for p in model.parameters()]
    values = [None if g is None else g.clone() for g in grads]
    weights = [p.detach().clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()
    P = positive_diagonal(model)
    calls = [
        lambda: curvature.top_eigenpairs(model, CE, x, y, k=2),
        lambda: curvature.top_eigenpairs(model, CE, x, y, k=2, batch_size=15),
        lambda: curvature.top_eigenpairs(model, CE, x, y, k=2, method="pyhessian"),
        lambda: curvature.top_eigenpairs(model, CE, x, y, k=2, precision="mixed"),
        lambda: curvature.top_eigenpairs(model, CE, x, y, k=2, preconditioner=P),
        lambda: curvature.top_eigenpairs(model, CE, x, y, k=2, preconditioner=P, precision="mixed", batch_size=15),
        lambda: curvature.hessian_trace(model, CE, x, y, n_samples=5),
        lambda: curvature.hessian_trace(model, CE, x, y, n_samples=5, precision="float64"),
        lambda: curvature.spectral_density(model, CE, x, y, n_runs=1, n_steps=5),
        lambda: curvature.spectral_density(model, CE, x, y, n_runs=1, n_steps=5, precision="float64"),
    ]
    for call in calls:
        call()
        for p, g, v, w in zip(model.parameters(), grads, values, weights):
            assert p.grad is g  # the very same tensor, or still None
            assert g is None or torch.equal(g, v)
            assert p.dtype == dtype and torch.equal(p, w)
        assert [m.training for m in model.modules()] == modes
        assert torch.equal(torch.get_rng_state(), rng)


def test_float64_copies_are_freed_after_every_call(monkeypatch):
    """PyHessian's create-graph backward ties each copied parameter to its .grad's graph (a cycle that Python's
    collector cannot see); unless the guard breaks it, every call keeps a float64 model and its activations."""
    import gc
    import weakref

    model, (x, y) = mlp().float(), batch()  # float32: the path that makes float64 copies
    x = x.float()
    alive, deepcopy = [], copy.deepcopy

    def spied(obj, *args, **kwargs):
        made = deepcopy(obj, *args, **kwargs)
        alive.extend(weakref.ref(p) for p in made.parameters())
        return made

    monkeypatch.setattr(copy, "deepcopy", spied)
    curvature.top_eigenpairs(model, CE, x, y, k=2)
    curvature.top_eigenpairs(model, CE, x, y, k=2, precision="mixed", batch_size=15)
    curvature.hessian_trace(model, CE, x, y, n_samples=3, precision="float64")
    curvature.spectral_density(model, CE, x, y, n_runs=1, n_steps=4, precision="float64")
    gc.collect()
    assert len(alive) == 4 * len(list(model.parameters()))  # each call made its copy ...
    assert [ref() for ref in alive if ref() is not None] == []  # ... and none survives it


def test_warm_start_needs_fewer_hvps():
    model, (x, y) = mlp(), batch()
    before = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=TOL)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    opt.zero_grad()
    CE(model(x), y).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    exact = descending_eigenvalues(dense_hessian(model, CE, x, y))[:2]
    cold = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=TOL)
    warm = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=TOL, init=before.eigenvectors)
    assert cold.converged and warm.converged
    assert np.all(relative_errors(warm.eigenvalues, exact) <= TOL)
    assert warm.n_hvps <= 0.6 * cold.n_hvps, (warm.n_hvps, cold.n_hvps)


def test_warm_start_weights_the_lower_pairs_more():
    q, _ = torch.linalg.qr(torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    u1, u2, u3 = q.T
    assert torch.allclose(krylov.warm_start([u1, u2, u3], 7), u1 + 2 * u2 + 3 * u3)
    # not orthonormal on entry: Gram-Schmidt first, in order; a vector in the span of the earlier ones is dropped
    assert torch.allclose(krylov.warm_start([3 * u1, u1 + u2, 2 * u1], 7), u1 + 2 * u2)
    assert krylov.warm_start([torch.zeros(7, dtype=torch.float64)], 7) is None


def test_batch_size_chunks_give_the_whole_batch_hessian():
    # chunks of 15, 15, 10: an unweighted mean of chunk Hessians would differ
    model, (x, y) = mlp(), batch(n=40)
    whole = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=TOL)
    chunked = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=TOL, batch_size=15)
    assert chunked.converged
    assert np.all(relative_errors(chunked.eigenvalues, np.array(whole.eigenvalues)) <= TOL)
    t_whole = curvature.hessian_trace(model, CE, x, y, n_samples=4, seed=5)
    t_chunk = curvature.hessian_trace(model, CE, x, y, n_samples=4, seed=5, batch_size=15)
    assert np.allclose(t_chunk.samples, t_whole.samples, rtol=1e-10)


def test_invalid_arguments():
    model, (x, y) = mlp(), batch()
    for kwargs in (dict(method="power"), dict(k=0), dict(tol=0.0), dict(pyhessian_tol=-1.0)):
        with pytest.raises(ValueError, match="lanczos"):
            curvature.top_eigenpairs(model, CE, x, y, **kwargs)
    for call in (lambda: curvature.top_eigenpairs(model, CE, x, y, precision="float16"),
                 lambda: curvature.hessian_trace(model, CE, x, y, precision="mixed"),
                 lambda: SpectrumTracker(CE, x, y, precision="double")):
        with pytest.raises(ValueError, match="precision must be one of"):
            call()


# ----------------------------------------------------------------------------- missed eigenvalues

CLUSTER = [56.8, 39.5, 23.06, 16.95, 15.653, 15.251, 14.9, 14.0]  # the Fashion-MNIST AdaGrad run's top, rounded


def clustered(n=300, seed=3):
    """A dense symmetric matrix whose 5th and 6th eigenvalues are 2.6 % apart above a bulk in [-0.5, 1]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    values = torch.tensor(CLUSTER + list(np.linspace(-0.5, 1.0, n - len(CLUSTER))), dtype=torch.float64)
    return Q @ torch.diag(values) @ Q.T, Q, values


def test_a_start_blind_to_the_kth_eigenvector_is_certified_wrong_and_the_guard_finds_it():
    A, Q, values = clustered()
    n, k = A.shape[0], 5
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(n, generator=gen, dtype=torch.float64)
    start -= (Q[:, 4] @ start) * Q[:, 4]  # no component along the 5th eigenvector

    def hvp(v):
        return A @ v

    theta, _, _, _, converged = krylov.lanczos_in_stages([hvp], n, "cpu", k, TOL, start, 500, gen)
    # the residual bounds certify, yet the 5th value reported is the 6th eigenvalue
    assert converged and abs(theta[4] - CLUSTER[5]) < 1e-6
    assert relative_errors(theta[:k], values[:k].numpy())[4] > 100 * TOL
    theta, rows, _, counts, converged, guard = krylov.lanczos_guarded([hvp], n, "cpu", k, TOL, start, 500, gen)
    assert converged and guard["found"] >= 1
    assert np.all(relative_errors(theta[:k], values[:k].numpy()) <= TOL)
    # its last search saw nothing above the new 5th value, and says how far above it could have missed one
    assert 0 < guard["resolution"] < CLUSTER[4] - CLUSTER[5]
    assert guard["n_hvps"] <= krylov.GUARD_ROUNDS * krylov.GUARD_STEPS


def test_the_guard_leaves_a_correct_solve_alone():
    A, Q, values = clustered()
    n, k = A.shape[0], 3  # lambda_3 = 23.06 is far above lambda_4: nothing to miss
    start = torch.randn(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    plain = krylov.lanczos_in_stages([lambda v: A @ v], n, "cpu", k, TOL, start, 500,
                                     torch.Generator().manual_seed(5))
    guarded = krylov.lanczos_guarded([lambda v: A @ v], n, "cpu", k, TOL, start, 500,
                                     torch.Generator().manual_seed(5))
    assert guarded[0] == plain[0] and guarded[3] == plain[3]
    assert guarded[5]["found"] == 0 and guarded[5]["n_hvps"] == krylov.GUARD_STEPS
    assert np.all(relative_errors(guarded[0][:k], values[:k].numpy()) <= TOL)


def test_guard_through_top_eigenpairs_and_an_exhausted_search_is_exact():
    # the warm start holds every top eigenvector but the 5th: its Krylov space cannot see that one
    spectrum = [9.0, 7.0, 5.0, 3.0, 2.9, 2.8] + list(np.linspace(-0.5, 0.5, 14))
    model, criterion, x, A = quadratic(spectrum)
    exact = descending_eigenvalues(A)
    vals, vecs = torch.linalg.eigh(A)
    blind = [[vecs[:, -i].reshape(1, -1).clone()] for i in (1, 2, 3, 4, 6)]
    r = curvature.top_eigenpairs(model, criterion, x, A, k=5, tol=TOL, init=blind)
    assert r.converged and r.guard is None and abs(r.eigenvalues[4] - 2.8) < 1e-8  # certified, and wrong
    g = curvature.top_eigenpairs(model, criterion, x, A, k=5, tol=TOL, init=blind, guard=True)
    assert g.converged and g.guard["found"] == 1
    assert np.all(relative_errors(g.eigenvalues, exact[:5]) <= TOL)
    assert g.guard["resolution"] == 0.0  # 20 parameters: the search spans the whole complement
    assert g.n_hvps > r.n_hvps and g.n_hvps_float64 == g.n_hvps
    # a shorter search (smoke runs) still finds this well-separated miss, at a coarser resolution
    short = curvature.top_eigenpairs(model, criterion, x, A, k=5, tol=TOL, init=blind, guard=True, guard_steps=5)
    assert short.converged and short.guard["found"] == 1 and short.guard["n_hvps"] <= krylov.GUARD_ROUNDS * 5
    assert np.all(relative_errors(short.eigenvalues, exact[:5]) <= TOL)
    with pytest.raises(ValueError, match="guard=True needs method='lanczos'"):
        curvature.top_eigenpairs(model, criterion, x, A, k=2, method="pyhessian", guard=True)
    with pytest.raises(ValueError, match="guard_steps must be an integer >= 2, got 1"):
        curvature.top_eigenpairs(model, criterion, x, A, k=2, guard=True, guard_steps=1)


def test_long_solves_report_progress_every_ten_products():
    model, (x, y) = mlp(), batch()
    lines = []
    r = curvature.top_eigenpairs(model, CE, x, y, k=3, tol=TOL, guard=True, progress=lines.append)
    assert len(lines) == r.n_hvps // curvature.PROGRESS_EVERY > 0
    assert lines[0].startswith("  10 Hessian-vector products (the last in float64)")
    quiet = curvature.top_eigenpairs(model, CE, x, y, k=3, tol=TOL, guard=True)
    assert quiet.eigenvalues == r.eigenvalues  # reporting changes nothing


# ----------------------------------------------------------------------------- precision

# ----------------------------------------------------------------------------- the journal: a stopped solve resumes

def journaled_case():
    """The full-size analysis in miniature: a float32 model, mixed precision (two operators), chunks, the guard."""
    model, (x, y) = mlp().float(), batch(n=40)
    kwargs = dict(k=3, tol=TOL, batch_size=15, precision="mixed", guard=True, guard_steps=12, seed=3)
    return model, x.float(), y, kwargs


def assert_same_result(a, b):
    assert a.eigenvalues == b.eigenvalues and a.residuals == b.residuals and a.n_hvps == b.n_hvps
    assert a.n_hvps_float64 == b.n_hvps_float64 and a.converged == b.converged and a.guard == b.guard
    assert all(torch.equal(s, t) for u, v in zip(a.eigenvectors, b.eigenvectors) for s, t in zip(u, v))


def test_a_journaled_solve_stopped_part_way_resumes_to_the_same_answer_bit_for_bit(tmp_path):
    model, x, y, kwargs = journaled_case()
    plain = curvature.top_eigenpairs(model, CE, x, y, **kwargs)
    assert plain.converged and plain.n_hvps_float64 > 0 and plain.guard["n_hvps"] == 12

    folder = tmp_path / "journal"
    stopped = StoppingJournal(folder, after=plain.n_hvps // 2)
    with pytest.raises(Stopped):
        curvature.top_eigenpairs(model, CE, x, y, journal=stopped, **kwargs)
    assert len(list(folder.glob("*.pt"))) == plain.n_hvps // 2 and not list(folder.glob(".*"))

    resumed = curvature.HvpJournal(folder)
    assert_same_result(curvature.top_eigenpairs(model, CE, x, y, journal=resumed, **kwargs), plain)
    assert (resumed.replayed, resumed.computed) == (plain.n_hvps // 2, plain.n_hvps - plain.n_hvps // 2)
    assert resumed.replayed_s > 0 and resumed.seconds(1.0) == pytest.approx(1.0 - resumed.replay_s + resumed.replayed_s)

    again = curvature.HvpJournal(folder)
    assert_same_result(curvature.top_eigenpairs(model, CE, x, y, journal=again, **kwargs), plain)
    assert (again.replayed, again.computed) == (plain.n_hvps, 0)


def test_a_journal_never_answers_for_other_weights_and_recomputes_an_unreadable_file(tmp_path):
    model, x, y, kwargs = journaled_case()
    folder = tmp_path / "journal"
    first = curvature.top_eigenpairs(model, CE, x, y, journal=curvature.HvpJournal(folder), **kwargs)
    firsts = sorted(folder.glob("*.pt"))

    moved = copy.deepcopy(model)
    with torch.no_grad():
        next(moved.parameters())[0, 0] += 1e-3
    other = curvature.HvpJournal(folder)
    assert_same_result(curvature.top_eigenpairs(moved, CE, x, y, journal=other, **kwargs),
                       curvature.top_eigenpairs(moved, CE, x, y, **kwargs))
    assert other.replayed == 0 and other.computed > 0

    damaged = firsts[0]
    damaged.write_bytes(damaged.read_bytes()[:100])  # cut short, as by a full disk
    redo = curvature.HvpJournal(folder)
    assert_same_result(curvature.top_eigenpairs(model, CE, x, y, journal=redo, **kwargs), first)
    assert (redo.replayed, redo.computed) == (first.n_hvps - 1, 1)
    with pytest.raises(ValueError, match="journal needs method='lanczos'"):
        curvature.top_eigenpairs(model, CE, x, y, k=2, method="pyhessian", journal=redo)


def test_float32_certificate_is_wrong_at_a_flat_minimum_float64_one_holds(flat_minimum):
    model, x, y, exact, _ = flat_minimum
    # Evidence the test can fail: the float32-only certificate claims tol and misses it by far.
    r32 = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=TOL, precision="model")
    assert r32.converged and r32.certified_in == "float32" and r32.n_hvps_float64 == 0
    assert relative_errors(r32.eigenvalues, exact[:2]).max() > 10 * TOL
    r = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=TOL)
    assert r.converged and r.certified_in == "float64" and r.n_hvps_float64 == r.n_hvps
    assert np.all(relative_errors(r.eigenvalues, exact[:2]) <= TOL)
    assert all(t.dtype == torch.float32 for v in r.eigenvectors for t in v)  # typed like the parameters
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_mixed_refines_in_float64_only_where_float32_falls_short(flat_minimum):
    # Ordinary curvature: float32 vectors pass the float64 check, which costs exactly k + 1 products.
    model, (x, y) = mlp().float(), batch()
    x = x.float()
    exact = descending_eigenvalues(dense_hessian(mlp(), CE, x.double(), y))
    r = curvature.top_eigenpairs(model, CE, x, y, k=2, tol=TOL, precision="mixed")
    assert r.converged and r.certified_in == "float64" and r.n_hvps_float64 == 3 < r.n_hvps
    assert np.all(relative_errors(r.eigenvalues, exact[:2]) <= TOL)
    # At the flat minimum they fail it, and float64 Lanczos carries on from them.
    model, x, y, exact, _ = flat_minimum
    r = curvature.top_eigenpairs(model, CE, x, y, k=4, tol=TOL, precision="mixed")
    assert r.converged and r.n_hvps_float64 > 5
    assert np.all(relative_errors(r.eigenvalues, exact[:4]) <= TOL)


def test_pyhessian_is_judged_against_float64(flat_minimum):
    model, x, y, exact, _ = flat_minimum
    kw = dict(k=1, tol=TOL, method="pyhessian", pyhessian_tol=1e-7)
    # its float32 residual says converged, the float64 Hessian says it is 10 tol away
    own = curvature.top_eigenpairs(model, CE, x, y, precision="model", **kw)
    assert own.converged and relative_errors(own.eigenvalues, exact[:1])[0] > 10 * TOL
    judged = curvature.top_eigenpairs(model, CE, x, y, **kw)
    assert judged.eigenvalues == own.eigenvalues and judged.certified_in == "float64"
    assert not judged.converged and judged.residuals[0] > 10 * TOL


def test_float64_trace_and_density_at_a_flat_minimum(flat_minimum):
    model, x, y, exact, H = flat_minimum
    t = curvature.hessian_trace(model, CE, x, y, n_samples=100, precision="float64")
    assert t.computed_in == "float64" and abs(t.mean - torch.trace(H).item()) <= 3 * t.stderr
    d = curvature.spectral_density(model, CE, x, y, n_runs=1, n_steps=30, precision="float64")
    assert d.computed_in == "float64" and d.nodes.max() == pytest.approx(exact[0], rel=1e-6)
    # the defaults stay in the model's precision, whose top Ritz value is off by more
    d32 = curvature.spectral_density(model, CE, x, y, n_runs=1, n_steps=30)
    assert d32.computed_in == "float32" and d32.nodes.max() != pytest.approx(exact[0], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_float64_certificate_on_cuda(flat_minimum):
    model, x, y, exact, _ = flat_minimum
    r = curvature.top_eigenpairs(copy.deepcopy(model).cuda(), CE, x.cuda(), y.cuda(), k=2, tol=TOL)
    assert r.converged and r.certified_in == "float64" and r.eigenvectors[0][0].is_cuda
    assert np.all(relative_errors(r.eigenvalues, exact[:2]) <= TOL)


# ----------------------------------------------------------------------------- preconditioner

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_preconditioned_eigenpairs_match_dense(dtype):
    model, (x, y) = mlp().to(dtype), batch()
    x = x.to(dtype)
    P = positive_diagonal(model)
    d = flat(P).double().rsqrt()
    A = d[:, None] * dense_hessian(mlp(), CE, x.double(), y) * d[None, :]
    exact = descending_eigenvalues(A)
    r = curvature.top_eigenpairs(model, CE, x, y, k=3, tol=TOL, preconditioner=P)
    assert r.converged and r.certified_in == "float64"
    assert np.all(relative_errors(r.eigenvalues, exact[:3]) <= TOL)
    for lam, vec, res in zip(r.eigenvalues, r.eigenvectors, r.residuals):
        u = flat(vec).double()  # in the symmetric operator's coordinates: its reported residual is A's
        assert (A @ u - lam * u).norm() / abs(lam) == pytest.approx(res, abs=1e-8 if dtype == torch.float64 else 1e-4)
        assert res < 1e-2
    warm = curvature.top_eigenpairs(model, CE, x, y, k=3, tol=TOL, preconditioner=P, init=r.eigenvectors)
    assert warm.converged and warm.n_hvps <= 0.6 * r.n_hvps
    assert np.all(relative_errors(warm.eigenvalues, exact[:3]) <= TOL)


def test_bad_preconditioners_are_rejected():
    model, (x, y) = mlp(), batch()
    P = positive_diagonal(model)
    zero, negative, nan = ([t.clone() for t in P] for _ in range(3))
    zero[0][0, 0], negative[1][2], nan[2][0, 1] = 0.0, -1.0, float("nan")
    for bad, match in ((P[:-1], "shaped"), ([t.reshape(-1) for t in P], "shaped"), (flat(P), "list"),
                       (zero, "positive"), (negative, "positive"), (nan, "positive")):
        with pytest.raises(ValueError, match=match):
            curvature.top_eigenpairs(model, CE, x, y, preconditioner=bad)
    with pytest.raises(ValueError, match="pyhessian"):
        curvature.top_eigenpairs(model, CE, x, y, method="pyhessian", preconditioner=P)


@pytest.mark.parametrize("float64", [False, True])
def test_chunked_products_with_kept_graphs_equal_the_dense_hessian_and_fall_back_when_over_budget(float64):
    """Kept chunk graphs (the default while they fit in GRAPH_MEMORY_MIB) and rebuilt ones (PyHessian's
    dataloader mode, when they do not) are the same operator: the mean loss's Hessian times v."""
    from minima.curvature import engine
    model, (x, y) = mlp(), batch(n=50)
    H = dense_hessian(model, CE, x, y)
    v = torch.randn(H.shape[0], dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    forwards = []
    hook = model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        # chunks of 15: 4 forward passes, and one more to measure the first chunk's graph
        for budget, builds, per_product in ((None, 5, 0), (1e-9, 1, 4)):
            forwards.clear()
            with engine._untouched(model) as copies:
                _, hvp, dtype = engine._engine(model, CE, x, y, 15, copies, float64=float64, graph_memory_mib=budget)
                built = len(forwards)
                hv = hvp(v)
                assert (built, len(forwards) - built) == (builds, per_product)  # kept: no forward per product
            assert torch.allclose(hv, H @ v, rtol=1e-10, atol=1e-12)
    finally:
        hook.remove()
