"""The k largest algebraic eigenvalues of a (preconditioned) Hessian, certified against the float64 Hessian;
and PyHessian's power iteration, as the original ran it, judged the same way."""

import importlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..krylov import GUARD_STEPS, certified, error_bounds, lanczos_guarded, warm_start
from .engine import _check_precision, _engine, _flat, _reporting, _unflat, _untouched
from .journal import _operator_digest

# `pyhessian.hessian` the attribute is the class; we need the module to count its HVPs
_pyhessian_module = importlib.import_module("pyhessian.hessian")

METHODS = ("lanczos", "pyhessian")
_PYHESSIAN_MAX_ITER = 100   # PyHessian's default power-iteration cap per eigenvalue, as in the original


@dataclass
class EigenResult:
    eigenvalues: list[float]                 # k largest algebraic eigenvalues, descending
    eigenvectors: list[list[torch.Tensor]]   # k vectors shaped (and typed) like the parameters, unit norm overall
    residuals: list[float]                   # ||Av - lambda v|| / |lambda| per pair, A the certifying operator
    n_hvps: int                              # products of either precision
    converged: bool                          # every pair's error bound is within tol * |lambda|
    n_hvps_float64: int = 0                  # how many of n_hvps were float64 products
    certified_in: str = "float64"            # dtype of the operator the bounds hold for
    guard: dict | None = None                # the missed-eigenvalue search, if asked for: its products (in n_hvps),
                                             # eigenvalues it found and resolution (krylov.lanczos_guarded)


def _scaling(preconditioner, params, device):
    """d = P^(-1/2) as a flat float64 vector, after checking that P is positive and shaped like the parameters."""
    shapes = [tuple(p.shape) for p in params]
    if not isinstance(preconditioner, (list, tuple)) or not all(torch.is_tensor(t) for t in preconditioner) \
            or [tuple(t.shape) for t in preconditioner] != shapes:
        raise ValueError(f"preconditioner must be a list of tensors shaped like the parameters {shapes}")
    d = _flat(preconditioner, device)
    if not bool(torch.isfinite(d).all() and (d > 0).all()):
        raise ValueError(f"preconditioner must be finite and positive; its smallest entry is {float(d.min()):g}")
    return d.rsqrt()


def top_eigenpairs(model, criterion, inputs, targets, k=2, tol=1e-4, init=None, method="lanczos",
                   batch_size=None, max_hvps=500, seed=0, pyhessian_tol=1e-3, precision="float64",
                   preconditioner=None, guard=False, guard_steps=GUARD_STEPS, progress=None,
                   journal=None, graph_memory_mib=None) -> EigenResult:
    """The k largest algebraic eigenvalues of A = P^(-1/2) H P^(-1/2), H the Hessian of
    criterion(model(inputs), targets), P a positive diagonal (the identity by default).

    converged=True means every returned eigenvalue is within tol * |lambda| of an
    eigenvalue of A built from the float64 Hessian: the bounds of `krylov.error_bounds`
    hold on float64 products (`certified_in` "float64"). `precision` says how:
      "float64" (default): Lanczos on HVPs of a float64 copy of the model.
      "mixed": Lanczos to tol on the model's own HVPs (at most one basis of them);
          its top k+1 Ritz vectors enter a float64 basis (k+1 float64 HVPs). If the
          float64 bounds certify there, that is the answer; if not, float64 Lanczos
          carries on from them, so float64 refines only where float32 fell short.
      "model": the model's precision throughout; the bounds then hold for the
          computed (e.g. float32) operator, not the Hessian, and `certified_in` says so.
    For a float64 model the three are one. n_hvps counts products of either
    precision, n_hvps_float64 the float64 ones; max_hvps caps n_hvps (the float64
    check of "mixed" always gets its k+1). Eigenvectors have the parameters' dtype.
    init: earlier eigenvectors (e.g. a previous result's `.eigenvectors`); Lanczos
        then starts from their rank-weighted sum (`krylov.warm_start`), whose Krylov space holds all of them.
    preconditioner: P as tensors shaped like the parameters (e.g. Adam's sqrt(v_hat)
        + eps). A is similar to P^(-1) H, the preconditioned Hessian of Cohen et al.
        2022 (arXiv:2207.14484), so these are P^(-1) H's eigenvalues. Eigenvectors u
        (like `init` and the residuals) are the symmetric A's, in its coordinates:
        P^(-1/2) u is the eigenvector of P^(-1) H, P^(1/2) u that of H P^(-1).
    method: "lanczos" (ours) or "pyhessian": PyHessian's largest-*magnitude* power
        iteration with deflation on the model's own HVPs, stopped by its relative
        change < `pyhessian_tol` (default 1e-3, PyHessian's and the original's),
        sorted, `converged` judged at `tol` in `precision` like ours. Judging costs
        k extra HVPs, not counted in n_hvps (what PyHessian itself spent).
    batch_size: split inputs into chunks of this size (PyHessian dataloader mode);
        the Hessian is still that of the mean loss over all inputs.
    seed: seeds the local generator for random starts (and PyHessian's draws).
    guard: after a converged solve, search the complement of the k pairs from a fresh
        random start for an eigenvalue the solve missed, and re-solve with any found
        (`krylov.missed_eigenvalue`; `guard_steps` products of the first operator per
        search, in n_hvps). Residual bounds cannot show a missed eigenvalue, so this
        is what makes the i-th value the Hessian's i-th, with the search's
        `resolution` (in `.guard`): a miss further above lambda_k than that is found
        with probability >= 99 % (fewer steps, coarser resolution). Off by default: a
        warm start from the last step's pairs (tracking) would pay 40 products for 5;
        `minima.analysis` turns it on for every final-weights solve (smoke runs: 10
        steps, params.SMOKE). Lanczos only.
    progress: a callable given one line every PROGRESS_EVERY products (count, precision,
        seconds so far), for solves that take minutes (the full training set's Hessian).
    journal: an `HvpJournal`: every product is saved to its folder as it is computed, and a
        rerun of the same solve reads them back, so a stopped solve resumes where it stopped
        with the same answer, bit for bit (on a CPU at the same thread count). Lanczos only.
    graph_memory_mib: with `batch_size`, keep each chunk's graph while all fit in this many MiB
        (`_engine`; None: `GRAPH_MEMORY_MIB`); 0 rebuilds them for every product, as PyHessian's dataloader
        mode does.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if guard and (not isinstance(guard_steps, int) or guard_steps < 2):
        raise ValueError(f"guard_steps must be an integer >= 2, got {guard_steps!r}")
    if k < 1 or tol <= 0 or pyhessian_tol <= 0 or max_hvps < k:
        raise ValueError(f"need k >= 1, tol > 0, pyhessian_tol > 0 and max_hvps >= k; got k={k}, tol={tol}, "
                         f"pyhessian_tol={pyhessian_tol}, max_hvps={max_hvps} (methods: {METHODS})")
    _check_precision(precision)
    params = list(model.parameters())
    n, device = sum(p.numel() for p in params), params[0].device
    if k > n:
        raise ValueError(f"k={k} exceeds the {n} parameters")
    if preconditioner is not None and method == "pyhessian":
        raise ValueError("method='pyhessian' takes no preconditioner (PyHessian iterates on H itself)")
    if journal is not None and method != "lanczos":
        raise ValueError("journal needs method='lanczos' (PyHessian computes its products itself)")
    if guard and method != "lanczos":
        raise ValueError("guard=True needs method='lanczos' (PyHessian's power iteration is reported as it ran)")
    scale = None if preconditioner is None else _scaling(preconditioner, params, device)
    wide = precision != "model" and any(p.dtype != torch.float64 for p in params)
    gen = torch.Generator().manual_seed(seed)
    # PyHessian's own iteration reads one graph (or rebuilds chunks itself): no kept chunk graphs for it
    memory = dict(graph_memory_mib=0 if method == "pyhessian" else graph_memory_mib)
    with _untouched(model) as copies:
        # the operators in the order they are used; the last one certifies
        ops = [_engine(model, criterion, inputs, targets, batch_size, copies, scale=scale, **memory)] \
            if not wide or precision == "mixed" or method == "pyhessian" else []
        ops += [_engine(model, criterion, inputs, targets, batch_size, copies, float64=True, scale=scale, **memory)] \
            if wide else []
        if journal is not None:
            key = _operator_digest(model, criterion, inputs, targets, batch_size, scale)
            ops = [(H, journal.wrap(hvp, f"{key}/{i}/{dtype}"), dtype) for i, (H, hvp, dtype) in enumerate(ops)]
        if progress is not None:
            ops = _reporting(ops, progress)
        if method == "lanczos":
            start = torch.randn(n, generator=gen, dtype=torch.float64).to(device)
            warm = warm_start([_flat(u, device) for u in init], n) if init else None
            theta, rows, rnorm, counts, converged, searched = lanczos_guarded(
                [hvp for _, hvp, _ in ops], n, device, k, tol, start if warm is None else warm, max_hvps, gen,
                guard_steps=guard_steps if guard else 0)
            counts[0] += searched["n_hvps"]  # the search runs on the first operator
            searched = searched if guard else None
            theta, rnorm = theta[:k], rnorm[:k]
            vectors = [_unflat(y, params) for y in rows[:k]]
        else:
            theta, vectors, rnorm, used, converged = _pyhessian_eigenpairs(ops[0][0], ops[-1][1], k, tol,
                                                                           pyhessian_tol, max_hvps, seed, device)
            counts = [used] + [0] * (len(ops) - 1)  # PyHessian's own products, in the model's precision
            searched = None
    residuals = [r / abs(t) if t != 0 else math.inf for r, t in zip(rnorm, theta)]
    n64 = sum(c for c, (_, _, dtype) in zip(counts, ops) if dtype == "float64")
    return EigenResult([float(t) for t in theta], vectors, residuals, sum(counts), converged, n64, ops[-1][2],
                       searched)


def _pyhessian_eigenpairs(H, judge, k, tol, pyhessian_tol, max_hvps, seed, device):
    """PyHessian's eigenvalues(), with its HVPs counted and its pairs judged on the HVP `judge`."""
    count = [0]
    single_batch_hvp, loader_hvp = _pyhessian_module.hessian_vector_product, H.dataloader_hv_product

    def counted(fn):
        def wrapper(*args, **kwargs):
            count[0] += 1
            return fn(*args, **kwargs)
        return wrapper

    # PyHessian offers no hook, so count by wrapping the two functions its eigenvalues() calls.
    _pyhessian_module.hessian_vector_product = counted(single_batch_hvp)
    H.dataloader_hv_product = counted(loader_hvp)
    try:
        torch.default_generator.manual_seed(seed)  # its start vectors come from the CPU's global RNG (restored)
        values, vecs = H.eigenvalues(maxIter=min(_PYHESSIAN_MAX_ITER, max_hvps // k), tol=pyhessian_tol, top_n=k)
    finally:
        _pyhessian_module.hessian_vector_product = single_batch_hvp
        H.dataloader_hv_product = loader_hvp
    order = np.argsort(values)[::-1]
    theta = [float(values[i]) for i in order]
    flats = [_flat(vecs[i], device) for i in order]
    flats = [f / f.norm() for f in flats]
    products = [judge(f) for f in flats]
    # theta is PyHessian's (float32) Rayleigh quotient, the bounds want the judge's rho = v^T A v:
    # |theta - lambda| <= |theta - rho| + bound(rho), with gap credit only while rho keeps theta's order.
    rho = [float(f @ p) for f, p in zip(flats, products)]
    inner = [float((p - r * f).norm()) for f, p, r in zip(flats, products, rho)]
    inner = error_bounds(rho, inner) if rho == sorted(rho, reverse=True) else inner
    bounds = [abs(t - r) + b for t, r, b in zip(theta, rho, inner)]
    rnorm = [float((p - t * f).norm()) for f, p, t in zip(flats, products, theta)]
    return theta, [_unflat(f, H.params) for f in flats], rnorm, count[0], certified(theta, bounds, k, tol)
