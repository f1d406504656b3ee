"""Instruments on a spectrum's top: how much of the gradient lies in the top eigenspace, and how
many eigenvalues stand out of the bulk.

Companions to `minima.curvature` (feed them its eigenvectors and eigenvalues) that,
like it, import nothing from this repository, so either can be lifted out alone.

- `subspace_overlap`: ||V V^T g||^2 / ||g||^2 for an orthonormalised basis V, the
  measure of Gur-Ari, Roberts and Dyer, "Gradient descent happens in a tiny
  subspace" (arXiv:1812.04754), who find it near 1 for the top-C eigenvectors
  (C the number of classes) early in training.
- `count_outliers`: the number of outliers above the bulk, by the largest ratio
  between consecutive positive eigenvalues; Sagun et al. (arXiv:1706.04454) and
  Papyan (arXiv:1901.08244) describe C outliers separated from a bulk.
"""

import numpy as np
import torch


def _flatten(vector, shapes, what):
    if [tuple(t.shape) for t in vector] != shapes:
        raise ValueError(f"{what} must be tensors shaped like the gradient {shapes}, "
                         f"got {[tuple(t.shape) for t in vector]}")
    return torch.cat([t.detach().reshape(-1).to("cpu", torch.float64) for t in vector])


def subspace_overlap(vectors, gradient) -> float:
    """The fraction ||V V^T g||^2 / ||g||^2 of the gradient g in span(vectors), in [0, 1].

    vectors: a list of vectors, each a list of tensors shaped like the parameters
    (e.g. `top_eigenpairs(...).eigenvectors`); gradient: one such list. The vectors
    are orthonormalised first (Householder QR in float64), and directions that are
    numerically dependent on the others are dropped (|R_ii| <= 1e-10 max |R_jj|), so
    near-duplicate vectors do not count twice. With V orthonormal, V V^T is the
    orthogonal projector onto the span and the fraction is ||V^T g||^2 / ||g||^2.
    """
    shapes = [tuple(t.shape) for t in gradient]
    g = _flatten(gradient, shapes, "gradient")
    if not len(vectors):
        raise ValueError("subspace_overlap needs at least one vector")
    if not float(g.norm()) > 0:
        raise ValueError("the gradient is zero: its overlap with a subspace is undefined")
    A = torch.stack([_flatten(v, shapes, "vectors") for v in vectors], dim=1)   # (n, m)
    Q, R = torch.linalg.qr(A)
    diag = R.diagonal().abs()
    Q = Q[:, diag > 1e-10 * diag.max()]
    # normalise g first so that the squares cannot overflow or underflow
    u = g / g.norm()
    return float(min(1.0, (Q.T @ u).square().sum()))


def count_outliers(eigenvalues, top=None, min_ratio=1.0) -> int:
    """The number of outliers at the top of a spectrum: the position of its largest gap in ratio.

    Rule: sort the positive eigenvalues descending, lambda_1 >= lambda_2 >= ...,
    and keep the first `top` (all of them by default). The outliers are
    lambda_1..lambda_c with c = argmax_i lambda_i / lambda_{i+1}, i = 1..n-1, the
    largest drop by ratio (ratios, not differences, so the rule does not depend on
    the loss's scale). If that largest ratio is at most `min_ratio`, no eigenvalue
    stands out and the count is 0. Ties go to the smaller c. Non-positive
    eigenvalues are ignored: a ratio across zero has no meaning.

    eigenvalues: any iterable of numbers (e.g. `top_eigenpairs(...).eigenvalues`, or
    a dense spectrum); give more than the outliers you expect, or the bulk's edge
    is not seen. Raises ValueError with fewer than two positive eigenvalues.
    """
    if top is not None and top < 2:
        raise ValueError(f"top must be at least 2, got {top}")
    lam = np.sort(np.asarray(list(eigenvalues), dtype=float))[::-1]
    if not np.all(np.isfinite(lam)):
        raise ValueError("eigenvalues must be finite")
    lam = lam[lam > 0][:top]
    if len(lam) < 2:
        raise ValueError(f"count_outliers needs at least two positive eigenvalues, got {len(lam)}")
    ratios = lam[:-1] / lam[1:]
    c = int(np.argmax(ratios))
    return c + 1 if ratios[c] > min_ratio else 0
