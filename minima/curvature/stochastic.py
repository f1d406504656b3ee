"""Stochastic estimates over the whole spectrum: Hutchinson's trace, and the spectral density by stochastic
Lanczos quadrature (PyHessian 0.1's `density()` calls `torch.eig`, gone in torch 2)."""

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..krylov import add_direction
from .engine import _check_precision, _engine, _rademacher, _untouched


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
