"""Curvature of a loss at the current weights: top Hessian eigenpairs, trace, spectral density.

Everything takes a model, a criterion and a batch. The module imports nothing from
this repository but its sibling `krylov` (the certified Lanczos solver, which
imports nothing at all), so the two lift out together into any package as they are.

- `top_eigenpairs`: the k largest *algebraic* eigenvalues of the Hessian (or of a
  diagonally preconditioned one), certified against the float64 Hessian,
  warm-startable; `method="pyhessian"` runs the original's power iteration.
- `HvpJournal`: products saved as they are computed, so that a stopped solve resumes.
- `hessian_trace`: Hutchinson's estimator; `spectral_density`, `density_on_grid`:
  stochastic Lanczos quadrature (PyHessian 0.1's `density()` calls `torch.eig`, gone in torch 2).

The training callback built on `top_eigenpairs`, `SpectrumTracker`, lives in the
sibling `spectrum_tracking`, which needs nothing of this repository but this module.

Hessian-vector products (HVPs) come from PyHessian's engine: one retained
double-backward graph for a single batch. When `batch_size` splits the batch,
one retained graph per chunk while they all fit in `GRAPH_MEMORY_MIB`, else
PyHessian's dataloader mode (forward and backward per chunk for every product);
either way weighted by chunk size. Its HVP is the same `torch.autograd.grad` call
a hand-written one would make (benchmarks/README.md), so we keep it.

Precision: where softmax probabilities come within 1e-5 of 1, float32 HVPs lose
about 4 digits to cancellation in the cross-entropy Hessian's p(1 - p) terms, and
residual bounds on float32 products certify the float32 operator, not the Hessian
(seen 3.8e-4 off at tol 1e-4). Eigenpairs are therefore computed and certified on
HVPs of a float64 copy of the model, made inside the state guard and thrown away:
the same number of products, each ~2.5x a float32 one on a CPU (LeNet5). The trace
and density stay in the model's precision by default (off by far less than their noise).

A `pyhessian.hessian` object writes create-graph gradients into `.grad`, calls
`model.eval()` and draws from the global RNG, so every function here restores
`.grad` (None-ness included), each module's train/eval flag and the torch RNG
state: a training run is bitwise the same with or without these calls.
"""

import contextlib
import copy
import hashlib
import importlib
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pyhessian import hessian as PyHessian
from pyhessian.utils import hessian_vector_product

from .krylov import GUARD_STEPS, add_direction, certified, error_bounds, lanczos_guarded, warm_start

# `pyhessian.hessian` the attribute is the class; we need the module to count its HVPs
_pyhessian_module = importlib.import_module("pyhessian.hessian")

METHODS = ("lanczos", "pyhessian")
PRECISIONS = ("float64", "mixed", "model")
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


@dataclass
class TraceResult:
    mean: float
    stderr: float          # sample sd / sqrt(n)
    samples: list[float]
    n_hvps: int
    computed_in: str = "float32"


@dataclass
class DensityResult:
    nodes: np.ndarray      # (n_runs, n_steps) Ritz values
    weights: np.ndarray    # (n_runs, n_steps) squared first components; each run sums to 1
    n_hvps: int
    computed_in: str = "float32"


# ----------------------------------------------------------------------------- state and engine

@contextlib.contextmanager
def _untouched(model):
    """Run a block and give the model back as it was: .grad, train/eval flags, torch RNG.

    Yields a list for the parameters of the block's float64 copies (`_engine` adds them): PyHessian's
    create-graph backward leaves each parameter's .grad holding a graph that holds the parameter, a
    cycle inside autograd that Python's collector cannot see. Clearing their .grad on the way out
    frees the copy and its saved activations (left alone, ~20 MB per call at batch 100 accumulated).
    """
    params = list(model.parameters())
    copies = []
    grads = [p.grad for p in params]
    modes = [m.training for m in model.modules()]
    cuda = sorted({p.device.index for p in params if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.enable_grad(), warnings.catch_warnings():
        # PyHessian's backward(create_graph=True) warns about a param <-> grad reference
        # cycle; putting the old .grad back below is what breaks that cycle.
        warnings.filterwarnings("ignore", message=".*create_graph=True.*")
        try:
            for p in params:
                p.grad = None  # so PyHessian's backward never accumulates onto the caller's gradients
            yield copies
        finally:
            for p in copies:
                p.grad = None
            for p, g in zip(params, grads):
                p.grad = g
            for m, t in zip(model.modules(), modes):
                m.training = t  # per module, not model.train(): submodules may differ


GRAPH_MEMORY_MIB = 2048  # chunked HVPs keep every chunk's double-backward graph while they fit in this; 0: never


def _graph_bytes(model, criterion, inputs, targets) -> int:
    """What one chunk's retained double-backward graph holds: the bytes of every tensor autograd saves for it.

    Counted by `saved_tensors_hooks` over the forward and the create-graph backward; a tensor saved twice
    counts twice, so this bounds the memory from above. Leaves `.grad` as it found it (None).
    """
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = criterion(model(inputs), targets)
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], create_graph=True)
    del loss, grads
    return total[0]


def _engine(model, criterion, inputs, targets, batch_size, copies, float64=False, scale=None,
            graph_memory_mib=None):
    """A PyHessian object, a flat float64 HVP v -> d * H(d * v) on it (d = `scale`, else 1) and
    the dtype its products are computed in. Call inside `_untouched`, passing the list it yields.

    float64: on a float64 copy of the model (unless it is float64 already), floating
    inputs and targets cast; the copy holds no .grad (`_untouched` cleared them), and its
    parameters go into `copies` for `_untouched` to release (not to be confused with the
    missed-eigenvalue guard of `top_eigenpairs`).

    Chunked (`batch_size` smaller than the batch): PyHessian's dataloader mode repeats every
    chunk's forward and create-graph backward for every product. When all the chunks' graphs
    fit in `graph_memory_mib` (measured on the first chunk, `_graph_bytes`), one single-batch
    PyHessian object per chunk is built instead and its graph kept, so a product is only the
    chunks' second backward passes, weighted by chunk size as the dataloader mode weights them.
    None: the module's `GRAPH_MEMORY_MIB`, read at the call.
    """
    device = next(model.parameters()).device
    inputs, targets = inputs.to(device), targets.to(device)
    if float64 and any(p.dtype != torch.float64 for p in model.parameters()):
        model = copy.deepcopy(model).double()  # reads the weights, draws no random numbers
        copies.extend(model.parameters())
        inputs, targets = (t.double() if t.is_floating_point() else t for t in (inputs, targets))
    cuda, chunks, kept = device.type == "cuda", None, None
    if batch_size is not None and len(inputs) > batch_size:
        chunks = [(inputs[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
        budget = (GRAPH_MEMORY_MIB if graph_memory_mib is None else graph_memory_mib) * 2 ** 20
        if budget > 0 and len(chunks) * _graph_bytes(model, criterion, *chunks[0]) <= budget:
            kept = []
            for cx, cy in chunks:
                for p in model.parameters():
                    p.grad = None  # each chunk's gradient (and graph) apart, not accumulated onto the last
                H = PyHessian(model, criterion, data=(cx, cy), cuda=cuda)
                kept.append((H.gradsH, float(len(cy))))
            for p in model.parameters():
                p.grad = None
            chunks = None
        else:
            H = PyHessian(model, criterion, dataloader=chunks, cuda=cuda)
    if chunks is None and kept is None:
        H = PyHessian(model, criterion, data=(inputs, targets), cuda=cuda)
    sizes = [p.numel() for p in H.params]

    def kept_product(vs):
        total = [torch.zeros_like(p) for p in H.params]
        for grads, weight in kept:
            total = [t + h * weight for t, h in zip(total, hessian_vector_product(grads, H.params, vs))]
        return [t / float(len(inputs)) for t in total]

    def hvp(v):
        v = v if scale is None else scale * v
        # The solvers keep their vectors in float64; the model sees its own dtype.
        vs = [c.view_as(p).to(p.dtype) for c, p in zip(v.split(sizes), H.params)]
        if kept is not None:
            hv = kept_product(vs)
        else:
            hv = H.dataloader_hv_product(vs)[1] if chunks else hessian_vector_product(H.gradsH, H.params, vs)
        hv = torch.cat([h.reshape(-1) for h in hv]).to(torch.float64)
        return hv if scale is None else scale * hv

    return H, hvp, str(H.params[0].dtype).removeprefix("torch.")


PROGRESS_EVERY = 10  # products between two progress lines


def _reporting(ops, progress):
    """The operators of `ops` with their products counted together and a line to `progress` every PROGRESS_EVERY."""
    count, started = [0], time.perf_counter()

    def wrap(hvp, dtype):
        def counted(v):
            out = hvp(v)
            count[0] += 1
            if count[0] % PROGRESS_EVERY == 0:
                progress(f"  {count[0]} Hessian-vector products (the last in {dtype}), "
                         f"{time.perf_counter() - started:.0f} s")
            return out
        return counted

    return [(H, wrap(hvp, dtype), dtype) for H, hvp, dtype in ops]


class HvpJournal:
    """A folder of Hessian-vector products, saved as they are computed and read back when the solve reruns.

    The full training set's top eigenvalues take most of a full-size run's analysis (35-55 minutes on two
    cores). Given a journal (`top_eigenpairs(..., journal=)`), a process stopped part-way (Ctrl-C, a
    session's end) loses only the product in flight. Each product is filed under a digest of its operator
    (the weights, inputs, targets, chunking, preconditioner and precision) and of the exact bits of the
    vector it multiplies. On a CPU the solver repeats itself exactly (fixed seeds, the same thread count),
    so a rerun asks for the same vectors, gets the saved products back bit for bit, and computes from the
    first one that is missing. A vector or operator that differs is simply not found: a journal can cost
    time but never change an answer. Files are written atomically; one that cannot be read is recomputed.

    Counts for this process: `replayed` and `computed` products; `replayed_s`, what the replayed products
    took when they were computed; `replay_s`, what reading them back took here.
    """

    def __init__(self, folder):
        self.folder = Path(folder)
        self.replayed = self.computed = 0
        self.replayed_s = self.replay_s = 0.0

    def wrap(self, hvp, operator: str):
        """`hvp` with its products journaled; `operator` names what it multiplies by (`_operator_digest`)."""
        self.folder.mkdir(parents=True, exist_ok=True)

        def journaled(v):
            started = time.perf_counter()
            digest = hashlib.blake2b(operator.encode(), digest_size=20)
            digest.update(_bytes(v))
            path = self.folder / f"{digest.hexdigest()}.pt"
            saved = self._read(path, v)
            if saved is not None:
                self.replayed += 1
                self.replayed_s += saved["seconds"]
                self.replay_s += time.perf_counter() - started
                return saved["hv"].to(v.device)
            hv = hvp(v)
            self._write(path, {"hv": hv.detach().cpu(), "seconds": time.perf_counter() - started})
            self.computed += 1
            return hv

        return journaled

    def seconds(self, wall_s: float) -> float:
        """What a solve that took `wall_s` here would have taken uninterrupted: replays count at their cost."""
        return wall_s - self.replay_s + self.replayed_s

    @staticmethod
    def _read(path, v):
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            hv = saved["hv"]
            if hv.shape == v.shape and hv.dtype == v.dtype:
                return {"hv": hv, "seconds": float(saved["seconds"])}
        except Exception:  # noqa: BLE001 - absent, cut short or foreign: computed again (and overwritten)
            pass
        return None

    def _write(self, path, record):
        handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as f:
                torch.save(record, f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _bytes(t) -> bytes:
    """A tensor's exact bits (any dtype or device)."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _operator_digest(model, criterion, inputs, targets, batch_size, scale) -> str:
    """A digest of everything an HVP operator depends on but its precision: weights, data, chunks, scaling."""
    digest = hashlib.blake2b(repr((type(criterion).__name__, batch_size)).encode(), digest_size=20)
    for t in [*model.parameters(), inputs, targets] + ([] if scale is None else [scale]):
        digest.update(repr((str(t.dtype), tuple(t.shape))).encode())
        digest.update(_bytes(t))
    return digest.hexdigest()


def vectors_to_cpu(vectors):
    """Eigenvectors (lists of per-parameter tensors) detached onto the CPU, for a checkpoint; None stays None."""
    return None if vectors is None else [[t.detach().cpu() for t in v] for v in vectors]


def _flat(vector, device):
    return torch.cat([t.detach().reshape(-1).to(device, torch.float64) for t in vector])


def _unflat(v, params):
    v = v / v.norm()
    return [c.view_as(p).to(p.dtype).detach().clone() for c, p in zip(v.split([p.numel() for p in params]), params)]


def _rademacher(n, gen, device):
    return (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(device, torch.float64)


def _check_precision(precision, allowed=PRECISIONS):
    if precision not in allowed:
        raise ValueError(f"precision must be one of {allowed}, got {precision!r}")


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


# ----------------------------------------------------------------------------- public API

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


def hessian_trace(model, criterion, inputs, targets, n_samples=100, seed=0, batch_size=None,
                  precision="model", graph_memory_mib=None) -> TraceResult:
    """Hutchinson's estimate of tr(H): the mean of z^T H z over Rademacher probes z (Hutchinson
    1990; per probe the variance is 2 (||H||_F^2 - sum_i H_ii^2), Avron and Toledo 2011).

    A fixed number of probes from a local generator (PyHessian's `trace()` uses the
    global RNG and stops on a relative change divided by trace + 1e-6, which
    misbehaves for traces near or below zero). precision: "model" (default: the
    model's own HVPs; on LeNet5 at training loss 1.5e-5, float32 moved the estimate
    by 0.014 standard errors, see benchmarks/bench_eigensolver.py) or "float64".
    graph_memory_mib as in `top_eigenpairs`.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 for a standard error, got {n_samples}")
    _check_precision(precision, ("model", "float64"))
    gen, device = torch.Generator().manual_seed(seed), next(model.parameters()).device
    with _untouched(model) as copies:
        H, hvp, dtype = _engine(model, criterion, inputs, targets, batch_size, copies, float64=precision == "float64",
                                graph_memory_mib=graph_memory_mib)
        n = sum(p.numel() for p in H.params)
        samples = [float(z @ hvp(z)) for z in (_rademacher(n, gen, device) for _ in range(n_samples))]
    return TraceResult(float(np.mean(samples)), float(np.std(samples, ddof=1) / math.sqrt(n_samples)),
                       samples, n_samples, dtype)


def spectral_density(model, criterion, inputs, targets, n_runs=3, n_steps=60, seed=0,
                     batch_size=None, precision="model") -> DensityResult:
    """Stochastic Lanczos quadrature (Lin, Saad, Yang 2016; Ghorbani et al. 2019): per
    run, n_steps of fully reorthogonalised Lanczos from a normalised Rademacher
    vector; nodes are the Ritz values, weights the squared first components of the
    Ritz vectors (so each run's weights sum to 1). If the model has fewer than
    n_steps parameters the Krylov space is exhausted early; the missing nodes
    repeat the largest one with weight 0. precision as in `hessian_trace` ("model"
    by default: at loss 1.5e-5 the top float32 nodes moved 3e-4 relative, far below
    the smoothing width).
    """
    if n_runs < 1 or n_steps < 1:
        raise ValueError(f"need n_runs >= 1 and n_steps >= 1, got {n_runs}, {n_steps}")
    _check_precision(precision, ("model", "float64"))
    gen, device = torch.Generator().manual_seed(seed), next(model.parameters()).device
    nodes, weights, n_hvps = np.zeros((n_runs, n_steps)), np.zeros((n_runs, n_steps)), 0
    with _untouched(model) as copies:
        H, hvp, dtype = _engine(model, criterion, inputs, targets, batch_size, copies, float64=precision == "float64")
        n = sum(p.numel() for p in H.params)
        size = min(n, n_steps)
        V = torch.empty(size, n, dtype=torch.float64, device=device)
        W = torch.empty_like(V)
        for run in range(n_runs):
            z = _rademacher(n, gen, device)
            m = 0
            # A mid-run breakdown continues with a random orthogonal vector; its block has
            # zero first components, hence zero weight, as in PyHessian.
            while m < size and add_direction(V, W, m, z if m == 0 else W[m - 1], hvp, gen):
                m += 1
            n_hvps += m
            T = V[:m] @ W[:m].T
            theta, S = torch.linalg.eigh((T + T.T) / 2)
            nodes[run, :m], weights[run, :m] = theta.cpu().numpy(), (S[0] ** 2).cpu().numpy()
            nodes[run, m:] = nodes[run, m - 1]
    return DensityResult(nodes, weights, n_hvps, dtype)


def density_on_grid(result: DensityResult, grid: np.ndarray, sigma: float | None = None) -> np.ndarray:
    """Gaussian-smoothed spectral density on `grid`, averaged over runs (integrates to ~1).

    sigma defaults to 1 % of the node range, but never below two grid steps so the
    bumps are resolved on the grid.
    """
    grid = np.asarray(grid, dtype=float)
    if sigma is None:
        step = float(np.min(np.diff(grid))) if len(grid) > 1 else 1.0
        sigma = max(0.01 * float(np.ptp(result.nodes)), 2 * step)
    z = (grid[None, None, :] - result.nodes[:, :, None]) / sigma
    bumps = np.exp(-0.5 * z ** 2) / (sigma * math.sqrt(2 * math.pi))
    return (result.weights[:, :, None] * bumps).sum(axis=1).mean(axis=0)
