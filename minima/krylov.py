"""Certified top eigenpairs of a symmetric operator given only as a product v -> A v.

The linear algebra under `minima.curvature.top_eigenpairs`, which supplies the
Hessian-vector products. It imports nothing from this repository (torch and
numpy only): lift it out together with `curvature`.

- `error_bounds`, `certified`: residual bounds (Weyl, Kato-Temple) on approximate
  eigenvalues, and the test that each is within tol (relative).
- `lanczos`: thick-restart Lanczos with full reorthogonalisation that stops on
  those bounds, from one start vector or a block of them.
- `lanczos_in_stages`: Lanczos on a sequence of approximations of the same
  operator (e.g. its float32 then its float64 products), each stage starting from
  the previous one's top k+1 Ritz vectors; the last stage's bounds certify.
- `missed_eigenvalue`, `lanczos_guarded`: the guard against an eigenvalue the
  solver never saw (which no residual bound can reveal): Lanczos from a fresh
  random start on the complement of the pairs found, and a re-solve with any
  direction it finds.
- `warm_start`, `add_direction`: start vectors from earlier eigenvectors, and the
  Gram-Schmidt step shared with stochastic Lanczos quadrature.

Vectors are flat float64 tensors; operators take and return them.
"""

import math

import numpy as np
import torch

MAX_BASIS = 60        # Lanczos basis rows kept before a thick restart (2 x 60 float64 copies of the vector)
GUARD_STEPS = 40      # Krylov dimension of the guard's search (one product each)
GUARD_FAILURE = 0.01  # the chance its resolution allows of missing an eigenvalue above it
GUARD_ROUNDS = 3      # searches (and re-solves) before a solve with eigenvalues still missing is declared unconverged


def error_bounds(theta, rnorm):
    """Upper bounds on |theta_i - lambda_i| for approximate eigenpairs sorted descending.

    theta_i must be the Rayleigh quotient v_i^T A v_i of its unit vector v_i, with
    r = A v - theta v (Parlett, The Symmetric Eigenvalue Problem, SIAM 1998).
    Weyl: some eigenvalue lies within ||r|| of theta. Kato-Temple: if no other
    eigenvalue lies within `gap` of theta, the error is at most ||r||^2 / gap, much
    tighter once ||r|| << gap. We take the gap as the distance to each
    neighbouring approximate eigenvalue less that neighbour's own residual (where
    its eigenvalue may really be), so a neighbour that has not converged gives no
    credit. The bottom pair has no neighbour below unless the solver supplies one
    (Lanczos passes its (k+1)-th Ritz value), and falls back to Weyl. What no
    residual can show is an eigenvalue the solver never saw: Krylov subspaces
    make that rare (it happened once in 29 committed runs), power iteration on an
    indefinite Hessian makes it routine; `missed_eigenvalue` searches for one.
    The bounds are for the operator whose products gave r, whatever its rounding.
    """
    bounds = []
    for i in range(len(theta)):
        gaps = [abs(theta[i] - theta[j]) - rnorm[j] for j in (i - 1, i + 1) if 0 <= j < len(theta)]
        bound = rnorm[i]
        if i + 1 < len(theta) and min(gaps) > 0:  # a known neighbour below is required for gap credit
            bound = min(bound, rnorm[i] ** 2 / min(gaps))
        bounds.append(float(bound))
    return bounds


def certified(theta, bounds, k, tol):
    """Whether the top k bounds are within tol * |theta_i| (False with fewer than k pairs)."""
    return len(theta) >= k and all(bounds[i] <= tol * abs(theta[i]) for i in range(k))


def add_direction(V, W, m, v, hvp, gen):
    """Orthogonalise v against V[:m], store it as row m with A v in W. False once the space is exhausted."""
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


def basis_size(n, k):
    return min(n, max(MAX_BASIS, 3 * k + 10))


def _ritz(V, W, m, k):
    """Rayleigh-Ritz on span(V[:m]): eigenvectors S of T = V A V^T, the top k+1 Ritz pairs and residuals."""
    T = V[:m] @ W[:m].T
    theta, S = torch.linalg.eigh((T + T.T) / 2)  # symmetrise: A is symmetric, its float32 products not exactly
    theta, S = theta.flip(0), S.flip(1)
    top = min(m, k + 1)  # the (k+1)-th Ritz value bounds the k-th pair's gap
    Y, AY = S[:, :top].T @ V[:m], S[:, :top].T @ W[:m]
    R = AY - theta[:top, None] * Y
    return S, Y, R, theta[:top].tolist(), R.norm(dim=1).tolist()


def lanczos(hvp, n, device, k, tol, starts, max_hvps, gen):
    """Thick-restart Lanczos with full reorthogonalisation, from the rows of `starts`.

    Hand-written because the stop test decides the cost. scipy's eigsh (ARPACK)
    stops on ||r|| <= tol |theta|, far stricter than tol needs, and takes one
    start vector; stopping on the Kato-Temple bound takes fewer products, cold
    and warm (benchmarks/bench_eigensolver.py and its README section).

    Keeping W = A V next to the basis V makes every residual an explicit
    combination of computed products: the error bounds cost no extra ones. Each
    step expands by the residual of the least-converged wanted Ritz pair; in a
    Krylov space all residuals are parallel, so this is plain Lanczos, and it
    carries on unchanged after a restart to the top half of the Ritz vectors.
    All start rows enter the basis before the first test. Returns up to k+1 Ritz
    values, their vectors (rows) and residual norms, the products spent, and
    whether the top k are certified at tol.
    """
    size = basis_size(n, k)
    V = torch.empty(size, n, dtype=torch.float64, device=device)
    W = torch.empty_like(V)
    m = n_hvps = 0
    pending, S, done = list(starts), None, False
    while not done:
        if m == size < n:  # restart: keep the top half of the Ritz pairs; A Y is a combination of W, no new products
            keep = size // 2
            V[:keep], W[:keep] = S[:, :keep].T @ V[:m], S[:, :keep].T @ W[:m]
            m = keep
        v = pending.pop(0) if pending else v  # noqa: F821 - the residual chosen on the last pass
        if n_hvps >= max_hvps or not add_direction(V, W, m, v, hvp, gen):
            break
        m, n_hvps = m + 1, n_hvps + 1
        if pending:
            continue
        S, Y, R, th, rn = _ritz(V, W, m, k)
        bounds = error_bounds(th, rn)
        done = certified(th, bounds, k, tol)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.nan_to_num(np.array(bounds[:k]) / np.abs(th[:k]), nan=np.inf)
        v = R[int(np.argmax(score))]
    if not done:  # out of products or of space, perhaps before the first test
        S, Y, R, th, rn = _ritz(V, W, m, k)
    return th, Y, rn, n_hvps, done or certified(th, error_bounds(th, rn), k, tol)


def lanczos_in_stages(hvps, n, device, k, tol, start, max_hvps, gen):
    """`lanczos` on each operator of `hvps` in turn, all approximations of one A.

    Every stage after the first starts from the previous stage's top k+1 Ritz
    vectors as a block: their k+1 products and one Rayleigh-Ritz step already
    give the new operator's bounds, and only if those fail does Lanczos carry on
    there. So a cheap, less accurate operator first (float32) and an accurate one
    last (float64) cost the accurate one k+1 products where the cheap one was
    good enough, and a refinement where it was not. An early stage gets at most
    one basis of products (beyond that it stalls on its own rounding) and leaves
    k+1 for the last; the last gets the rest of max_hvps but at least its k+1 starts.
    Returns the last stage's values, vectors and residual norms (top k+1), the
    products each stage spent, and whether the last stage certified the top k.
    """
    rows, counts = (start if start.dim() == 2 else start[None]), []
    for i, hvp in enumerate(hvps):
        last = i + 1 == len(hvps)
        budget = max(len(rows), max_hvps - sum(counts)) if last else min(basis_size(n, k), max(k, max_hvps - (k + 1)))
        theta, rows, rnorm, used, converged = lanczos(hvp, n, device, k, tol, rows, budget, gen)
        counts.append(used)
    return theta, rows, rnorm, counts, converged


def missed_eigenvalue(hvp, n, device, found, limit, steps, gen):
    """Search for an eigenvalue of A above `limit` outside the span of `found` (orthonormal rows).

    Residual bounds place each Ritz value near *some* eigenvalue; none shows that
    an eigenvalue was skipped. A start vector nearly orthogonal to an eigenvector
    keeps it out of the Krylov space until the others have converged: on a
    Fashion-MNIST LeNet5 Hessian, Lanczos certified the 6th eigenvalue (15.252)
    as the 5th and never saw the 5th (15.653). This runs Lanczos, `steps` products
    at most, on P A P, P the projector onto the complement of `found`, from a fresh
    random start there. Its Ritz values are lower bounds on P A P's largest
    eigenvalue, so one above `limit` proves an eigenvalue the solve missed
    (up to the found vectors' own residuals): the search stops and returns its
    Ritz vector. If none rises above `limit`, the miss it rules out is
    probabilistic: by Kuczynski and Wozniakowski (SIAM J. Matrix Anal. Appl. 13,
    1992), m Lanczos steps from a uniformly random start on a positive
    semi-definite B underestimate its top eigenvalue by more than a fraction eps
    with probability at most 1.648 sqrt(N) exp(-sqrt(eps) (2m - 1)). Applied to
    B = P A P - a I, a = min(0, the search's lowest Ritz value) standing in for the
    spectrum's lower end, an eigenvalue more than eps/(1 - eps) (limit - a) above
    `limit` is found with probability >= 1 - GUARD_FAILURE: that margin is the
    returned `resolution` (0 once the Krylov space is exhausted, hence exact).
    Returns (the Ritz vector of a missed eigenvalue or None, resolution or None
    if something was missed, products spent).
    """
    def deflated(v):
        v = v - found.T @ (found @ v)
        w = hvp(v)
        return w - found.T @ (found @ w)

    dim = n - len(found)
    size = min(steps, dim)
    V = torch.empty(size, n, dtype=torch.float64, device=device)
    W = torch.empty_like(V)
    v = torch.randn(n, generator=gen, dtype=torch.float64).to(device)
    m = 0
    while m < size:
        v = v - found.T @ (found @ v)
        if not add_direction(V, W, m, v, deflated, gen):
            break
        m += 1
        _, Y, R, theta, _ = _ritz(V, W, m, 0)  # the top Ritz pair
        if theta[0] > limit:
            return Y[0], None, m
        v = R[0]  # its residual: plain Lanczos
    if m < size or m == dim:  # the Krylov space is exhausted (invariant): its Ritz values are exact
        return None, 0.0, m
    T = V[:m] @ W[:m].T
    lowest = min(0.0, float(torch.linalg.eigvalsh((T + T.T) / 2)[0]))
    eps = (math.log(1.648 * math.sqrt(dim) / GUARD_FAILURE) / (2 * m - 1)) ** 2
    return None, (math.inf if eps >= 1 else eps / (1 - eps) * (limit - lowest)), m


def lanczos_guarded(hvps, n, device, k, tol, start, max_hvps, gen, guard_steps=GUARD_STEPS):
    """`lanczos_in_stages`, then `missed_eigenvalue` on the first (cheapest) operator of `hvps`.

    A missed eigenvalue counts once it lies above the k-th found one by more than
    tol |theta_k| (closer, it leaves every reported value within tol of its own).
    Its direction joins the found top k as the start block of a new solve, which is
    then searched again, GUARD_ROUNDS searches at most; if every one of them found
    an eigenvalue, the result is declared not converged. max_hvps caps the solves;
    each search adds up to guard_steps products of the first operator. Returns the last solve's values,
    vectors and residual norms, the products each stage spent, whether it is
    certified, and the guard's record: its products, the eigenvalues it found, and
    the resolution of its last search (see `missed_eigenvalue`; None if no search ran).
    """
    theta, rows, rnorm, counts, converged = lanczos_in_stages(hvps, n, device, k, tol, start, max_hvps, gen)
    guard = dict(n_hvps=0, found=0, resolution=None)
    for _round in range(GUARD_ROUNDS):
        if not converged or guard_steps <= 0:
            break
        limit = theta[k - 1] + tol * abs(theta[k - 1])
        missed, resolution, used = missed_eigenvalue(hvps[0], n, device, rows[:k], limit, guard_steps, gen)
        guard["n_hvps"] += used
        guard["resolution"] = resolution
        if missed is None:
            break
        guard["found"] += 1
        block = torch.cat([rows[:k], missed[None]])
        theta, rows, rnorm, more, converged = lanczos_in_stages(hvps, n, device, k, tol, block,
                                                                max(k + 1, max_hvps - sum(counts)), gen)
        counts = [a + b for a, b in zip(counts, more)]
    else:
        converged = False  # every round found another: give up rather than certify
    return theta, rows, rnorm, counts, converged, guard


def warm_start(vectors, n):
    """The orthonormalised earlier eigenvectors (flat, in descending order), the i-th weighted by i, summed;
    None if none is usable.

    The sum's Krylov space holds all of them, so one start vector serves k pairs. The weights: Lanczos
    converges to the lower pairs more slowly than to the top one, so they get the larger share of the
    start (benchmarks/bench_eigensolver.py compares it with equal weights).
    """
    basis = []
    for u in vectors:
        if u.numel() != n:
            raise ValueError(f"init vector has {u.numel()} entries, the model {n} parameters")
        for b in basis:
            u = u - (b @ u) * b
        if u.norm() > 1e-8:
            basis.append(u / u.norm())
    return sum(i * b for i, b in enumerate(basis, start=1)) if basis else None
