"""Curvature of a loss at the current weights: top Hessian eigenpairs, trace, spectral density.

Everything takes a model, a criterion and a batch, and imports nothing from this
repository, so the module can be lifted into another project as it is.

- `top_eigenpairs`: the k largest *algebraic* eigenvalues with certified relative
  accuracy, warm-startable; `method="pyhessian"` runs the original's power iteration.
- `hessian_trace`: Hutchinson's estimator with a seeded local generator.
- `spectral_density`, `density_on_grid`: stochastic Lanczos quadrature (PyHessian
  0.1's `density()` calls `torch.eig`, gone in torch 2).
- `SpectrumTracker`: a training callback recording lambda1, lambda2 over the last
  steps and the sharpness lambda1 every few hundred steps.

Hessian-vector products (HVPs) come from PyHessian's engine: one retained
double-backward graph for a single batch, or its dataloader mode (forward and
backward per chunk, weighted by chunk size) when `batch_size` splits the batch.
Its HVP is the same `torch.autograd.grad` call a hand-written one would make:
25.8 ms vs 25.7 ms per HVP (LeNet5, batch 100, one CPU thread), so we keep it.

A `pyhessian.hessian` object writes create-graph gradients into `.grad`, calls
`model.eval()` and draws from the global RNG, so every function here restores
`.grad` (None-ness included), each module's train/eval flag and the torch RNG
state: a training run is bitwise the same with or without these calls.

`converged` means every returned eigenvalue is within tol (relative) of an
eigenvalue by the residual bounds in `_error_bounds`; the same test judges
PyHessian's output, which rarely passes it.
"""

import contextlib
import importlib
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from pyhessian import hessian as PyHessian
from pyhessian.utils import hessian_vector_product

# `pyhessian.hessian` the attribute is the class; we need the module to count its HVPs
_pyhessian_module = importlib.import_module("pyhessian.hessian")

METHODS = ("lanczos", "pyhessian")
_MAX_BASIS = 60        # Lanczos basis rows kept before a thick restart (2 x 60 float64 copies of the parameters)
_PYHESSIAN_MAX_ITER = 100   # PyHessian's default power-iteration cap per eigenvalue, as in the original


@dataclass
class EigenResult:
    eigenvalues: list[float]                 # k largest algebraic eigenvalues, descending
    eigenvectors: list[list[torch.Tensor]]   # k vectors shaped like the parameters, unit norm overall
    residuals: list[float]                   # ||Hv - lambda v|| / |lambda| per pair
    n_hvps: int
    converged: bool                          # every pair's error bound is within tol * |lambda|


@dataclass
class TraceResult:
    mean: float
    stderr: float          # sample sd / sqrt(n)
    samples: list[float]
    n_hvps: int


@dataclass
class DensityResult:
    nodes: np.ndarray      # (n_runs, n_steps) Ritz values
    weights: np.ndarray    # (n_runs, n_steps) squared first components; each run sums to 1
    n_hvps: int


# ----------------------------------------------------------------------------- state and engine

@contextlib.contextmanager
def _untouched(model):
    """Run a block and give the model back as it was: .grad, train/eval flags, torch RNG."""
    params = list(model.parameters())
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
            yield
        finally:
            for p, g in zip(params, grads):
                p.grad = g
            for m, t in zip(model.modules(), modes):
                m.training = t  # per module, not model.train(): submodules may differ


def _engine(model, criterion, inputs, targets, batch_size):
    """A PyHessian object and a flat float64 HVP on it. Call inside `_untouched`."""
    device = next(model.parameters()).device
    inputs, targets = inputs.to(device), targets.to(device)
    cuda = device.type == "cuda"
    if batch_size is not None and len(inputs) > batch_size:
        chunks = [(inputs[i:i + batch_size], targets[i:i + batch_size])
                  for i in range(0, len(inputs), batch_size)]
        H = PyHessian(model, criterion, dataloader=chunks, cuda=cuda)
    else:
        chunks = None
        H = PyHessian(model, criterion, data=(inputs, targets), cuda=cuda)
    sizes = [p.numel() for p in H.params]

    def hvp(v):
        # The solvers keep their vectors in float64; the model sees its own dtype.
        vs = [c.view_as(p).to(p.dtype) for c, p in zip(v.split(sizes), H.params)]
        hv = H.dataloader_hv_product(vs)[1] if chunks else hessian_vector_product(H.gradsH, H.params, vs)
        return torch.cat([h.reshape(-1) for h in hv]).to(torch.float64)

    return H, hvp, sum(sizes), device


def _flat(vector, device):
    return torch.cat([t.detach().reshape(-1).to(device, torch.float64) for t in vector])


def _unflat(v, params):
    v = v / v.norm()
    return [c.view_as(p).to(p.dtype).detach().clone() for c, p in zip(v.split([p.numel() for p in params]), params)]


def _rademacher(n, gen, device):
    return (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(device, torch.float64)


# ----------------------------------------------------------------------------- certification

def _error_bounds(theta, rnorm):
    """Upper bounds on |theta_i - lambda_i| for approximate eigenpairs sorted descending.

    Weyl: for unit v with residual r = Hv - theta v, some eigenvalue lies within
    ||r|| of theta. Kato-Temple: if no other eigenvalue lies within `gap` of theta,
    the error is at most ||r||^2 / gap, much tighter once ||r|| << gap. We take
    the gap as the distance to each neighbouring approximate eigenvalue less that
    neighbour's own residual (where its eigenvalue may really be), so a neighbour
    that has not converged gives no credit. The bottom pair has no neighbour
    below unless the solver supplies one (Lanczos passes its (k+1)-th Ritz value),
    and falls back to Weyl. What no residual can show is an eigenvalue the
    solver never saw: Krylov subspaces make that unlikely, power iteration on an
    indefinite Hessian makes it routine.
    """
    bounds = []
    for i in range(len(theta)):
        gaps = [abs(theta[i] - theta[j]) - rnorm[j] for j in (i - 1, i + 1) if 0 <= j < len(theta)]
        bound = rnorm[i]
        if i + 1 < len(theta) and min(gaps) > 0:  # a known neighbour below is required for gap credit
            bound = min(bound, rnorm[i] ** 2 / min(gaps))
        bounds.append(float(bound))
    return bounds


def _certified(theta, bounds, k, tol):
    return all(bounds[i] <= tol * abs(theta[i]) for i in range(k))


# ----------------------------------------------------------------------------- Lanczos

def _add_direction(V, W, m, v, hvp, gen):
    """Orthogonalise v against V[:m], store it as row m with H v in W. False once the space is exhausted."""
    for _attempt in range(2):  # the given direction, then a random one if it already lies in span(V)
        norm0 = v.norm()
        for _ in range(2):  # "twice is enough": one Gram-Schmidt pass loses orthogonality to rounding
            v = v - V[:m].T @ (V[:m] @ v)
        norm = v.norm()
        if norm0 > 0 and norm > 1e-10 * norm0:
            V[m] = v / norm
            W[m] = hvp(V[m])
            return True
        v = torch.randn(V.shape[1], generator=gen, dtype=torch.float64).to(V.device)
    return False


def _lanczos(hvp, n, device, k, tol, start, max_hvps, gen):
    """Thick-restart Lanczos with full reorthogonalisation.

    Hand-written because the stop test decides the cost. scipy's eigsh (ARPACK)
    stops on ||r|| <= tol |theta|, far stricter than tol needs: on LeNet5 after
    300 SGD steps it took 13-15 HVPs cold and still 13 warm-started (it accepts
    one start vector; lobpcg took 16 warm, 22-25 cold), with errors ~1e-7 at
    tol 1e-4. Stopping on the Kato-Temple bound takes ~10 cold, 6-8 warm.

    Keeping W = H V next to the basis V makes every residual an explicit
    combination of computed HVPs: the error bounds cost no extra products. Each
    step expands by the residual of the least-converged wanted Ritz pair; in a
    Krylov space all residuals are parallel, so this is plain Lanczos, and it
    carries on unchanged after a restart to the top half of the Ritz vectors.
    """
    size = min(n, max(_MAX_BASIS, 3 * k + 10))
    V = torch.empty(size, n, dtype=torch.float64, device=device)
    W = torch.empty_like(V)
    m = n_hvps = 0
    v = start
    while True:
        if m == size < n:  # restart: keep the top half of the Ritz pairs; H Y is a combination of W, no new HVPs
            keep = size // 2
            V[:keep], W[:keep] = S[:, :keep].T @ V[:m], S[:, :keep].T @ W[:m]  # noqa: F821 - S of the last pass
            m = keep
        if n_hvps >= max_hvps or not _add_direction(V, W, m, v, hvp, gen):
            break
        m, n_hvps = m + 1, n_hvps + 1
        T = V[:m] @ W[:m].T
        theta, S = torch.linalg.eigh((T + T.T) / 2)  # symmetrise: H is symmetric, its float32 products not exactly
        theta, S = theta.flip(0), S.flip(1)
        top = min(m, k + 1)  # the (k+1)-th Ritz value bounds the k-th pair's gap
        Y, HY = S[:, :top].T @ V[:m], S[:, :top].T @ W[:m]
        R = HY - theta[:top, None] * Y
        th, rn = theta[:top].tolist(), R.norm(dim=1).tolist()
        bounds = _error_bounds(th, rn)
        if m >= k and _certified(th, bounds, k, tol):
            break
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.nan_to_num(np.array(bounds[:k]) / np.abs(th[:k]), nan=np.inf)
        v = R[int(np.argmax(score))]
    return th[:k], Y[:k], rn[:k], n_hvps, len(th) >= k and _certified(th, bounds, k, tol)


# ----------------------------------------------------------------------------- public API

def top_eigenpairs(model, criterion, inputs, targets, k=2, tol=1e-4, init=None, method="lanczos",
                   batch_size=None, max_hvps=500, seed=0, pyhessian_tol=1e-3) -> EigenResult:
    """The k largest algebraic Hessian eigenvalues of criterion(model(inputs), targets).

    tol: relative accuracy promised for each eigenvalue; `converged` is True when
        every pair's bound from `_error_bounds` is within tol * |lambda|.
    init: earlier eigenvectors (e.g. a previous result's `.eigenvectors`); Lanczos
        then starts from their sum, whose Krylov space holds all of them.
    method: "lanczos" (ours) or "pyhessian": PyHessian's largest-*magnitude* power
        iteration with deflation, stopped by its relative change < `pyhessian_tol`
        (default 1e-3, PyHessian's and the original's), results sorted, `converged`
        judged at `tol` like ours. Its residuals cost k extra HVPs, not counted
        in n_hvps (which counts what PyHessian itself spent).
    batch_size: split inputs into chunks of this size (PyHessian dataloader mode);
        the Hessian is still that of the mean loss over all inputs.
    seed: seeds the local generator for random starts (and PyHessian's draws).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if k < 1 or tol <= 0 or pyhessian_tol <= 0 or max_hvps < k:
        raise ValueError(f"need k >= 1, tol > 0, pyhessian_tol > 0 and max_hvps >= k; got k={k}, tol={tol}, "
                         f"pyhessian_tol={pyhessian_tol}, max_hvps={max_hvps} (methods: {METHODS})")
    gen = torch.Generator().manual_seed(seed)
    with _untouched(model):
        H, hvp, n, device = _engine(model, criterion, inputs, targets, batch_size)
        if k > n:
            raise ValueError(f"k={k} exceeds the {n} parameters")
        if method == "lanczos":
            start = torch.randn(n, generator=gen, dtype=torch.float64).to(device)
            warm = _warm_start([_flat(u, device) for u in init], n) if init else None
            start = start if warm is None else warm
            theta, Y, rnorm, n_hvps, converged = _lanczos(hvp, n, device, k, tol, start, max_hvps, gen)
            vectors = [_unflat(y, H.params) for y in Y]
        else:
            theta, vectors, rnorm, n_hvps, converged = _pyhessian_eigenpairs(H, hvp, k, tol, pyhessian_tol,
                                                                             max_hvps, seed, device)
    residuals = [r / abs(t) if t != 0 else math.inf for r, t in zip(rnorm, theta)]
    return EigenResult([float(t) for t in theta], vectors, residuals, n_hvps, converged)


def _warm_start(vectors, n):
    """Sum of the orthonormalised earlier eigenvectors, or None if none is usable."""
    basis = []
    for u in vectors:
        if u.numel() != n:
            raise ValueError(f"init vector has {u.numel()} entries, the model {n} parameters")
        for b in basis:
            u = u - (b @ u) * b
        if u.norm() > 1e-8:
            basis.append(u / u.norm())
    return sum(basis) if basis else None


def _pyhessian_eigenpairs(H, hvp, k, tol, pyhessian_tol, max_hvps, seed, device):
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
    rnorm = [float((hvp(f) - t * f).norm()) for f, t in zip(flats, theta)]
    converged = _certified(theta, _error_bounds(theta, rnorm), k, tol)
    return theta, [_unflat(f, H.params) for f in flats], rnorm, count[0], converged


def hessian_trace(model, criterion, inputs, targets, n_samples=100, seed=0, batch_size=None) -> TraceResult:
    """Hutchinson's estimate of tr(H): the mean of z^T H z over Rademacher probes z.

    A fixed number of probes from a local generator (PyHessian's `trace()` uses the
    global RNG and stops on a relative change divided by trace + 1e-6, which
    misbehaves for traces near or below zero).
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2 for a standard error, got {n_samples}")
    gen = torch.Generator().manual_seed(seed)
    with _untouched(model):
        _, hvp, n, device = _engine(model, criterion, inputs, targets, batch_size)
        samples = []
        for _ in range(n_samples):
            z = _rademacher(n, gen, device)
            samples.append(float(z @ hvp(z)))
    return TraceResult(float(np.mean(samples)), float(np.std(samples, ddof=1) / math.sqrt(n_samples)),
                       samples, n_samples)


def spectral_density(model, criterion, inputs, targets, n_runs=3, n_steps=60, seed=0,
                     batch_size=None) -> DensityResult:
    """Stochastic Lanczos quadrature: per run, n_steps of fully reorthogonalised Lanczos
    from a normalised Rademacher vector; nodes are the Ritz values, weights the
    squared first components of the Ritz vectors (so each run's weights sum to 1).
    If the model has fewer than n_steps parameters the Krylov space is exhausted
    early; the missing nodes repeat the largest one with weight 0.
    """
    if n_runs < 1 or n_steps < 1:
        raise ValueError(f"need n_runs >= 1 and n_steps >= 1, got {n_runs}, {n_steps}")
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = np.zeros((n_runs, n_steps)), np.zeros((n_runs, n_steps))
    n_hvps = 0
    with _untouched(model):
        _, hvp, n, device = _engine(model, criterion, inputs, targets, batch_size)
        size = min(n, n_steps)
        V = torch.empty(size, n, dtype=torch.float64, device=device)
        W = torch.empty_like(V)
        for run in range(n_runs):
            z = _rademacher(n, gen, device)
            m = 0
            # A mid-run breakdown continues with a random orthogonal vector; its block has
            # zero first components, hence zero weight, as in PyHessian.
            while m < size and _add_direction(V, W, m, z if m == 0 else W[m - 1], hvp, gen):
                m += 1
            n_hvps += m
            T = V[:m] @ W[:m].T
            theta, S = torch.linalg.eigh((T + T.T) / 2)
            nodes[run, :m], weights[run, :m] = theta.cpu().numpy(), (S[0] ** 2).cpu().numpy()
            nodes[run, m:] = nodes[run, m - 1]
    return DensityResult(nodes, weights, n_hvps)


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


# ----------------------------------------------------------------------------- training callback

class SpectrumTracker:
    """Per-step callback: lambda1, lambda2 over the last `spectral_steps` steps, and the
    sharpness lambda1 every `sharpness_every` steps and at the last step. Each call
    warm-starts from the freshest eigenvectors, and leaves training untouched."""

    def __init__(self, criterion, inputs, targets, spectral_steps=100, sharpness_every=200, tol=1e-4):
        self.criterion, self.inputs, self.targets = criterion, inputs, targets
        self.spectral_steps, self.sharpness_every, self.tol = spectral_steps, sharpness_every, tol
        self.spectrum, self.sharpness = [], []
        self._top2 = None    # eigenvectors of the last spectrum step
        self._top1 = None    # eigenvector of the last sharpness step

    def __call__(self, model, *, epoch, step, total_steps):
        if step > total_steps - self.spectral_steps:
            r = top_eigenpairs(model, self.criterion, self.inputs, self.targets, k=2, tol=self.tol, init=self._top2)
            self._top2 = r.eigenvectors
            l1, l2 = r.eigenvalues
            self.spectrum.append(dict(epoch=epoch, step=step, lambda1=l1, lambda2=l2, gap=l1 - l2,
                                      ratio=l1 / l2 if l2 != 0 else math.inf,
                                      residual1=r.residuals[0], residual2=r.residuals[1],
                                      n_hvps=r.n_hvps, converged=r.converged))
        if (self.sharpness_every and step % self.sharpness_every == 0) or step == total_steps:
            fresh = self._top2 if self.spectrum and self.spectrum[-1]["step"] == step else None
            init = fresh[:1] if fresh else self._top1
            r = top_eigenpairs(model, self.criterion, self.inputs, self.targets, k=1, tol=self.tol, init=init)
            self._top1 = r.eigenvectors
            self.sharpness.append(dict(epoch=epoch, step=step, lambda1=r.eigenvalues[0],
                                       residual1=r.residuals[0], n_hvps=r.n_hvps, converged=r.converged))

    def state_dict(self) -> dict:
        def cpu(vectors):
            return None if vectors is None else [[t.detach().cpu() for t in v] for v in vectors]
        return dict(spectrum=[dict(d) for d in self.spectrum], sharpness=[dict(d) for d in self.sharpness],
                    top2=cpu(self._top2), top1=cpu(self._top1))

    def load_state_dict(self, state) -> None:
        self.spectrum = [dict(d) for d in state["spectrum"]]
        self.sharpness = [dict(d) for d in state["sharpness"]]
        self._top2, self._top1 = state["top2"], state["top1"]
