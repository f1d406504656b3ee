"""Top-2 Hessian eigenvalues of a trained LeNet5: PyHessian's power iteration vs curvature.top_eigenpairs,
and what certifying against the float64 Hessian costs.

Run from the repository root:  python benchmarks/bench_eigensolver.py [--flat RUN_DIR] [--threads 1]
Prints HVP counts, wall times (median of repeats), relative errors against a
float64 eigsh reference at tol 1e-10, and the ratios against the targets
(cold <= 0.5x PyHessian's HVPs, warm <= 0.2x per step, both within 1e-4, HVPs
of either precision counted). Each of top_eigenpairs' precisions runs cold and
warm-started along the same SGD steps: "float64" (the default: Lanczos on a float64
copy), "mixed" (float32 Lanczos, float64 check and refinement) and "model"
(float32 only, certifying the float32 operator). With --flat (a run folder whose
model.pt sits at a training loss near 1e-5), the same comparison of accuracy
there, and how far the float32 Hutchinson trace lies from the float64 one.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse.linalg as sla
import torch
import torch.nn.functional as F
from pyhessian import hessian
from pyhessian.utils import hessian_vector_product

import minima  # noqa: F401 - puts the repository root (cnn_architectures, params) on sys.path
from minima import curvature, training
from minima.data import hessian_batch, load_mnist

TRAIN_STEPS = 300       # "a few hundred" SGD steps before measuring
LR, BATCH = 0.1, 100    # the original's SGD settings
HESSIAN_BATCH = 100     # the original's Hessian batch, drawn with replacement
TOL = 1e-4              # relative accuracy asked of every method
REF_TOL = 1e-10         # the reference's eigsh tolerance
PYHESSIAN_TOLS = (1e-3, 3e-4, 1e-4, 3e-5, 1e-5, 3e-6, 1e-6)   # searched for the loosest that reaches TOL
TRACK_STEPS = 20        # consecutive SGD steps of warm-started tracking
REPEATS = 3             # timing repeats for the one-shot methods
PRECISIONS = ("float64", "mixed", "model")
CE = F.cross_entropy


def batches(n, seed=0):
    """Endless mini-batch indices from seeded permutations."""
    g = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(n, generator=g)
        for i in range(0, n - BATCH + 1, BATCH):
            yield perm[i:i + BATCH]


def reference(model, x, y, k=3):
    """Top-k eigenvalues by ARPACK at tol 1e-10 on a float64 copy, with a plain autograd HVP:
    independent of both PyHessian and our solver."""
    m = copy.deepcopy(model).double()
    params = list(m.parameters())
    grads = torch.autograd.grad(CE(m(x.double()), y), params, create_graph=True)
    sizes = [p.numel() for p in params]
    count = [0]

    def matvec(v):
        count[0] += 1
        vs = [c.view_as(p) for c, p in zip(torch.from_numpy(np.ascontiguousarray(v).ravel()).split(sizes), params)]
        return torch.cat([h.reshape(-1) for h in torch.autograd.grad(grads, params, vs, retain_graph=True)]).numpy()

    n = sum(sizes)
    op = sla.LinearOperator((n, n), matvec=matvec, dtype=np.float64)
    values = sla.eigsh(op, k=k, which="LA", tol=REF_TOL, ncv=max(30, 2 * k + 10), v0=np.ones(n))[0]
    return np.sort(values)[::-1], count[0]


def rel_err(found, exact):
    return float(np.max(np.abs(np.asarray(found) - exact[:len(found)]) / np.abs(exact[:len(found)])))


def timed(fn, repeats=1):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def hvp_timings(model, x, y, n=20):
    """ms per HVP: PyHessian's engine vs a plain double-backward (same retained graph, on a copy: PyHessian
    writes into .grad), the plain one on a float64 copy, and ms to make that copy and its graph."""
    model = copy.deepcopy(model)
    H = hessian(model, CE, data=(x, y), cuda=False)
    v = [torch.randn_like(p) for p in H.params]
    _, t_py = timed(lambda: [hessian_vector_product(H.gradsH, H.params, v) for _ in range(n)], REPEATS)

    def graph(m, xx):
        params = list(m.parameters())
        return params, torch.autograd.grad(CE(m(xx), y), params, create_graph=True)

    params, g = graph(model, x)
    _, t_plain = timed(lambda: [torch.autograd.grad(g, params, v, retain_graph=True) for _ in range(n)], REPEATS)
    (p64, g64), t_copy = timed(lambda: graph(copy.deepcopy(model).double(), x.double()), REPEATS)
    v64 = [t.double() for t in v]
    _, t_64 = timed(lambda: [torch.autograd.grad(g64, p64, v64, retain_graph=True) for _ in range(n)], REPEATS)
    return 1e3 * t_py / n, 1e3 * t_plain / n, 1e3 * t_64 / n, 1e3 * t_copy


def pyhessian_search(model, hx, hy, exact):
    print(f"\nPyHessian eigenvalues(top_n=2), searching its tol for {TOL:g} relative accuracy "
          f"(converged: our residual test at {TOL:g}, on float64 products):")
    print(f"  {'tol':>7} {'HVPs':>5} {'max rel err':>12} {'residuals':>17} {'converged':>10}  eigenvalues")
    chosen = None
    for tol in PYHESSIAN_TOLS:
        r = curvature.top_eigenpairs(model, CE, hx, hy, k=2, tol=TOL, method="pyhessian", pyhessian_tol=tol)
        err = rel_err(r.eigenvalues, exact)
        print(f"  {tol:7.0e} {r.n_hvps:5d} {err:12.1e} {r.residuals[0]:8.1e} {r.residuals[1]:8.1e} "
              f"{str(r.converged):>10}  {r.eigenvalues[0]:.6f}, {r.eigenvalues[1]:.6f}")
        if chosen is None and err <= TOL:
            chosen = tol
    return chosen or PYHESSIAN_TOLS[-1]


def track(model, opt, data, loader, hx, hy, first):
    """Warm-started tracking over consecutive SGD steps, every precision along the same steps, each step
    checked against its own reference; also a cold solve per step and precision."""
    rows = {p: dict(hvps=[], hvps64=[], t=[], err=[], conv=[], cold=[], cold64=[], t_cold=[]) for p in PRECISIONS}
    vectors = dict(first)
    for _ in range(TRACK_STEPS):
        idx = next(loader)
        training.training_step(model, opt, data.x_train[idx], data.y_train[idx], name="sgd")
        step_exact, _ = reference(model, hx, hy)
        for p in PRECISIONS:
            r, t = timed(lambda p=p: curvature.top_eigenpairs(model, CE, hx, hy, k=2, tol=TOL, init=vectors[p],
                                                              precision=p))
            vectors[p] = r.eigenvectors
            c, t_c = timed(lambda p=p: curvature.top_eigenpairs(model, CE, hx, hy, k=2, tol=TOL, precision=p))
            row = rows[p]
            for key, value in (("hvps", r.n_hvps), ("hvps64", r.n_hvps_float64), ("t", t),
                               ("err", rel_err(r.eigenvalues, step_exact)), ("conv", r.converged),
                               ("cold", c.n_hvps), ("cold64", c.n_hvps_float64), ("t_cold", t_c)):
                row[key].append(value)
    return rows


def flat_minimum(run_dir):
    """Accuracy of each precision's certificate, and the float32 trace's offset, at a run's final weights
    on its own Hessian batch."""
    cfg = json.loads((Path(run_dir) / "config.json").read_text())
    data = load_mnist("embedded", train_size=cfg["data"]["train_size"], test_size=cfg["data"]["test_size"],
                      validation_size=cfg["data"]["validation_size"], verbose=False)
    model = training.build_model(cfg["seed"])
    model.load_state_dict(torch.load(Path(run_dir) / "model.pt", weights_only=True))
    hx, hy = hessian_batch(data, cfg["hessian"]["batch_size"], cfg["seed"])
    with torch.no_grad():
        loss = float(CE(model(hx), hy))
    exact, _ = reference(model, hx, hy, k=6)
    print(f"\nflat minimum: {run_dir} (Hessian batch loss {loss:.1e}); reference lambda1..5 "
          + ", ".join(f"{v:.6g}" for v in exact[:5]))
    print(f"  {'precision':<9} {'k':>2} {'HVPs':>5} {'f64':>4} {'time [s]':>9} {'max rel err':>12} "
          f"{'converged':>10} {'certified in':>13} {'claim holds':>12}")
    for k in (2, 5):
        for p in PRECISIONS:
            r, t = timed(lambda k=k, p=p: curvature.top_eigenpairs(model, CE, hx, hy, k=k, tol=TOL, precision=p))
            err = rel_err(r.eigenvalues, exact)
            holds = "yes" if not r.converged or err <= TOL else "NO"
            print(f"  {p:<9} {k:2d} {r.n_hvps:5d} {r.n_hvps_float64:4d} {t:9.3f} {err:12.1e} {str(r.converged):>10} "
                  f"{r.certified_in:>13} {holds:>12}")
    n = 100
    t32 = curvature.hessian_trace(model, CE, hx, hy, n_samples=n, seed=0)
    t64 = curvature.hessian_trace(model, CE, hx, hy, n_samples=n, seed=0, precision="float64")
    print(f"  Hutchinson trace, {n} probes (same probes): float32 {t32.mean:.6g}, float64 {t64.mean:.6g} "
          f"+- {t64.stderr:.3g}: float32 is {abs(t32.mean - t64.mean) / t64.stderr:.3f} standard errors off "
          f"({abs(t32.mean - t64.mean) / abs(t64.mean):.1e} relative)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flat", default="results/adahessian/seed0",
                        help="run folder with a low-loss model.pt for the flat-minimum section ('' to skip)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    # PyHessian's backward(create_graph=True) warns about a .grad reference cycle; the timing copy is thrown away
    warnings.filterwarnings("ignore", message=".*create_graph=True.*")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; torch {torch.__version__} with {torch.get_num_threads()} threads; "
          f"pyhessian {version('pyhessian')}; scipy {scipy.__version__}; numpy {np.__version__}")

    data = load_mnist("embedded", verbose=False)
    model = training.build_model(0)
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    loader = batches(len(data.y_train))
    _, t_train = timed(lambda: [training.training_step(model, opt, data.x_train[i], data.y_train[i], name="sgd")
                                for i in (next(loader) for _ in range(TRAIN_STEPS))])
    sgd_ms = 1e3 * t_train / TRAIN_STEPS
    hx, hy = hessian_batch(data, HESSIAN_BATCH, 0)
    print(f"model: LeNet5 ({sum(p.numel() for p in model.parameters()):,} params) after {TRAIN_STEPS} SGD steps "
          f"(lr {LR}, batch {BATCH}, {sgd_ms:.1f} ms/step) on the embedded MNIST digits "
          f"({len(data.y_train)} train, 32x32); Hessian batch {HESSIAN_BATCH} (seed 0)")

    (exact, ref_hvps), t_ref = timed(lambda: reference(model, hx, hy))
    print(f"reference (eigsh float64, tol {REF_TOL:g}): lambda1 {exact[0]:.8f}, lambda2 {exact[1]:.8f}, "
          f"lambda3 {exact[2]:.8f} ({ref_hvps} HVPs, {t_ref:.1f} s)")
    py_ms, plain_ms, f64_ms, copy_ms = hvp_timings(model, hx, hy)
    print(f"HVP engine: PyHessian {py_ms:.1f} ms, plain torch.autograd.grad {plain_ms:.1f} ms per float32 product; "
          f"float64 {f64_ms:.1f} ms ({f64_ms / plain_ms:.2f}x), its copy and graph {copy_ms:.1f} ms once per call")

    chosen = pyhessian_search(model, hx, hy, exact)
    py, t_py = timed(lambda: curvature.top_eigenpairs(model, CE, hx, hy, k=2, tol=TOL, method="pyhessian",
                                                      pyhessian_tol=chosen), REPEATS)
    cold = {p: timed(lambda p=p: curvature.top_eigenpairs(model, CE, hx, hy, k=2, tol=TOL, precision=p), REPEATS)
            for p in PRECISIONS}
    guarded, t_guarded = timed(lambda: curvature.top_eigenpairs(model, CE, hx, hy, k=2, tol=TOL, guard=True), REPEATS)
    rows = track(model, opt, data, loader, hx, hy, {p: cold[p][0].eigenvectors for p in PRECISIONS})

    print(f"\n{'method':<40} {'HVPs':>6} {'f64':>5} {'time [s]':>9} {'max rel err':>12} {'converged':>10}")
    print(f"{f'PyHessian, tol {chosen:g}':<40} {py.n_hvps:6d} {0:5d} {t_py:9.3f} "
          f"{rel_err(py.eigenvalues, exact):12.1e} {str(py.converged):>10}")
    med = statistics.median
    for p in PRECISIONS:
        r, t = cold[p]
        w = rows[p]
        print(f"{f'top_eigenpairs {p}, cold':<40} {r.n_hvps:6d} {r.n_hvps_float64:5d} {t:9.3f} "
              f"{rel_err(r.eigenvalues, exact):12.1e} {str(r.converged):>10}")
        print(f"{f'top_eigenpairs {p}, warm, median/step':<40} {med(w['hvps']):6.1f} {med(w['hvps64']):5.1f} "
              f"{med(w['t']):9.3f} {max(w['err']):12.1e} {str(sum(w['conv'])) + '/' + str(TRACK_STEPS):>10}")
        print(f"{'  cold on the same steps, median':<40} {med(w['cold']):6.1f} {med(w['cold64']):5.1f} "
              f"{med(w['t_cold']):9.3f}")

    print(f"{'top_eigenpairs float64, cold, guarded':<40} {guarded.n_hvps:6d} {guarded.n_hvps_float64:5d} "
          f"{t_guarded:9.3f} {rel_err(guarded.eigenvalues, exact):12.1e} {str(guarded.converged):>10}")

    ok = lambda b: "met" if b else "MISSED"  # noqa: E731
    print(f"\nratios to PyHessian at tol {chosen:g} ({py.n_hvps} HVPs, {t_py:.3f} s), HVPs of either precision:")
    for p in PRECISIONS:
        r, t = cold[p]
        w = rows[p]
        r_cold, r_warm = r.n_hvps / py.n_hvps, med(w["hvps"]) / py.n_hvps
        print(f"  {p:<8} cold HVPs {r_cold:.3f} (<= 0.5: {ok(r_cold <= 0.5)}), time {t / t_py:.2f}; "
              f"warm HVPs/step {r_warm:.3f} (<= 0.2: {ok(r_warm <= 0.2)}; {min(w['hvps'])}-{max(w['hvps'])} per step), "
              f"time {med(w['t']) / t_py:.2f}; "
              f"accuracy cold {ok(rel_err(r.eigenvalues, exact) <= TOL)}, warm {ok(max(w['err']) <= TOL)}")
    r_guard = guarded.n_hvps / py.n_hvps
    print(f"  with the missed-eigenvalue guard (every final-weights solve; tracking is unguarded): cold HVPs "
          f"{r_guard:.3f} (<= 0.5: {ok(r_guard <= 0.5)}; {guarded.guard['n_hvps']} of its {guarded.n_hvps} products "
          f"are the search, found {guarded.guard['found']}, resolution {guarded.guard['resolution']:.3g}), "
          f"time {t_guarded / t_py:.2f}")
    t64, t32 = med(rows["float64"]["t"]), med(rows["model"]["t"])
    print(f"float64 vs float32 per tracked step: {t64:.3f} s vs {t32:.3f} s ({t64 / t32:.2f}x); tracking the last "
          f"100 steps adds about {100 * t64:.0f} s to a run (= {100 * t64 / (sgd_ms / 1e3):.0f} SGD steps at "
          f"{sgd_ms:.1f} ms; float32 only: {100 * t32:.0f} s; PyHessian at tol {chosen:g}: {100 * t_py:.0f} s)")
    if args.flat and (Path(args.flat) / "model.pt").exists():
        flat_minimum(args.flat)
    elif args.flat:
        print(f"\nflat minimum: skipped, no {Path(args.flat) / 'model.pt'}")
    print(f"benchmark wall time: {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
    main()
