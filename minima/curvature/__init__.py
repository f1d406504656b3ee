"""Curvature of a loss at the current weights: top Hessian eigenpairs, trace, spectral density.

Everything takes a model, a criterion and a batch. The package imports nothing from this
repository but its sibling `krylov` (the certified Lanczos solver, which imports nothing
at all), so the two lift out together into any package as they are.

- `engine`: Hessian-vector products (PyHessian's engine, chunked, graphs kept while they fit,
  on the model or a float64 copy) and the guard that gives the model back untouched.
- `eigenpairs`: `top_eigenpairs`, the k largest *algebraic* eigenvalues of the Hessian (or of a
  diagonally preconditioned one), certified against the float64 Hessian, warm-startable;
  `method="pyhessian"` runs the original's power iteration.
- `journal`: `HvpJournal`, products saved as they are computed, so that a stopped solve resumes.
- `stochastic`: `hessian_trace` (Hutchinson) and `spectral_density`, `density_on_grid`
  (stochastic Lanczos quadrature).

The training callback built on `top_eigenpairs`, `SpectrumTracker`, lives in the sibling
`spectrum_tracking`, which needs nothing of this repository but this package.

Precision: where softmax probabilities come within 1e-5 of 1, float32 HVPs lose about 4
digits to cancellation in the cross-entropy Hessian's p(1 - p) terms, and residual bounds on
float32 products certify the float32 operator, not the Hessian (seen 3.8e-4 off at tol 1e-4).
Eigenpairs are therefore certified on HVPs of a float64 copy of the model, made inside the
state guard and thrown away. The trace and density stay in the model's precision by default
(off by far less than their noise).
"""

from .eigenpairs import METHODS, EigenResult, top_eigenpairs
from .engine import GRAPH_MEMORY_MIB, PRECISIONS, PROGRESS_EVERY, vectors_to_cpu
from .journal import HvpJournal
from .stochastic import DensityResult, TraceResult, density_on_grid, hessian_trace, spectral_density

__all__ = [
    # eigenpairs
    "top_eigenpairs", "EigenResult", "METHODS", "PRECISIONS",
    # trace and density
    "hessian_trace", "TraceResult", "spectral_density", "DensityResult", "density_on_grid",
    # resume, engine settings
    "HvpJournal", "GRAPH_MEMORY_MIB", "PROGRESS_EVERY", "vectors_to_cpu",
]
