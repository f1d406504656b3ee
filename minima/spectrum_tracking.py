"""The spectrum through training: a per-step callback recording lambda1, lambda2 over the
last steps and the sharpness lambda1 every few hundred steps.

Every measurement is `curvature.top_eigenpairs`, warm-started from the freshest
eigenvectors, so it restores `.grad`, train/eval flags and the torch RNG: a training
run is bitwise the same with or without the tracker. The module imports nothing from
this repository but its sibling `curvature` (and, under it, `krylov`), so the three
lift out together.
"""

import math

from .curvature import top_eigenpairs, vectors_to_cpu
from .curvature.engine import _check_precision


class SpectrumTracker:
    """Per-step callback: lambda1, lambda2 over the last `spectral_steps` steps, and the
    sharpness lambda1 every `sharpness_every` steps and at the last step. Each call
    warm-starts from the freshest eigenvectors, leaves training untouched, and its row
    records the precision that certified it (`precision` as in `top_eigenpairs`)."""

    def __init__(self, criterion, inputs, targets, spectral_steps=100, sharpness_every=200, tol=1e-4,
                 precision="float64"):
        _check_precision(precision)
        self.criterion, self.inputs, self.targets = criterion, inputs, targets
        self.spectral_steps, self.sharpness_every, self.tol = spectral_steps, sharpness_every, tol
        self.precision = precision
        self.spectrum, self.sharpness = [], []
        self._top2 = None    # eigenvectors of the last spectrum step
        self._top1 = None    # eigenvector of the last sharpness step

    def _top(self, model, k, init):
        r = top_eigenpairs(model, self.criterion, self.inputs, self.targets, k=k, tol=self.tol, init=init,
                           precision=self.precision)
        return r, dict(n_hvps=r.n_hvps, n_hvps_float64=r.n_hvps_float64, converged=r.converged,
                       certified_in=r.certified_in)

    def __call__(self, model, *, epoch, step, total_steps):
        if step > total_steps - self.spectral_steps:
            r, cost = self._top(model, 2, self._top2)
            self._top2 = r.eigenvectors
            l1, l2 = r.eigenvalues
            self.spectrum.append(dict(epoch=epoch, step=step, lambda1=l1, lambda2=l2, gap=l1 - l2,
                                      ratio=l1 / l2 if l2 != 0 else math.inf,
                                      residual1=r.residuals[0], residual2=r.residuals[1], **cost))
        if (self.sharpness_every and step % self.sharpness_every == 0) or step == total_steps:
            fresh = self._top2 if self.spectrum and self.spectrum[-1]["step"] == step else None
            r, cost = self._top(model, 1, fresh[:1] if fresh else self._top1)
            self._top1 = r.eigenvectors
            self.sharpness.append(dict(epoch=epoch, step=step, lambda1=r.eigenvalues[0], residual1=r.residuals[0],
                                       **cost))

    def state_dict(self) -> dict:
        return dict(spectrum=[dict(d) for d in self.spectrum], sharpness=[dict(d) for d in self.sharpness],
                    top2=vectors_to_cpu(self._top2), top1=vectors_to_cpu(self._top1))

    def load_state_dict(self, state) -> None:
        self.spectrum = [dict(d) for d in state["spectrum"]]
        self.sharpness = [dict(d) for d in state["sharpness"]]
        self._top2, self._top1 = state["top2"], state["top1"]
