"""The instruments tracked through training, beside the spectrum tracker: a training callback.

Every ``every`` steps (and at the last one), on the run's fixed Hessian batch:

- raw sharpness λ1 and the top ``k`` eigenvectors (k = 10 = the classes);
- the preconditioned sharpness λ1(P⁻¹H), P the optimizer's diagonal preconditioner
  read from its state at that step (``minima.preconditioning``), against the step's
  stability threshold (2/η for SGD and SAM, (2 + 2β1)/((1 − β1)η) for Adam and
  AdaHessian, 2/η_t for AdaGrad; Cohen et al. 2022);
- the share ||V Vᵀ g||² / ||g||² of the gradient in the span V of those top-k
  eigenvectors (Gur-Ari, Roberts and Dyer 2018), for the Hessian batch's gradient
  and for the gradient of the last mini-batch (the one the step used).

And at each epoch end where the full-batch training loss first drops below one of
``thresholds``: λ1, the preconditioned λ1 and a cheap Hutchinson trace, measured
then (the per-epoch evaluation computes that loss), not interpolated afterwards.

Every measurement goes through ``minima.curvature``, which restores ``.grad``,
train/eval flags and the RNG, and reads the optimizer without touching it: a run
trains to the same weights with or without this callback (tested).
"""

import math

import torch

from minima import curvature, preconditioning, subspace


class Instruments:
    """Per-step and per-epoch callback; ``rows`` (tracking.csv) and ``equal_loss`` (equal_loss.csv) hold the results."""

    def __init__(self, criterion, inputs, targets, *, every=200, k=10, thresholds=(), trace_samples=10, tol=1e-4,
                 seed=0):
        self.criterion, self.inputs, self.targets = criterion, inputs, targets
        self.every, self.k, self.thresholds = every, k, tuple(sorted(thresholds, reverse=True))
        self.trace_samples, self.tol, self.seed = trace_samples, tol, seed
        self.optimizer = None
        self.rows, self.equal_loss = [], []
        self._top, self._pre, self._step = None, None, 0

    def bind(self, optimizer) -> None:
        self.optimizer = optimizer

    # ------------------------------------------------------------------ measurements

    def _preconditioned(self, model, lambda1, init):
        """(λ1(P⁻¹H), threshold, its eigenvector) for the optimizer's current state; P = I costs nothing.

        NaNs for an optimizer whose preconditioner this repository does not know (one registered from
        outside, e.g. RMSprop): the other instruments are still recorded.
        """
        try:
            threshold = preconditioning.stability_threshold(self.optimizer)
            P = preconditioning.preconditioner(self.optimizer)
        except TypeError:           # not a supported optimizer
            return math.nan, math.nan, None
        except RuntimeError:        # no state yet: nothing preconditions the first step
            return math.nan, threshold, None
        if all(bool((p == 1).all()) for p in P):
            return lambda1, threshold, None
        r = curvature.top_eigenpairs(model, self.criterion, self.inputs, self.targets, k=1, tol=self.tol,
                                     preconditioner=P, init=init)
        return r.eigenvalues[0], threshold, r.eigenvectors

    def _gradients(self, model):
        params = list(model.parameters())
        with torch.enable_grad():
            loss = self.criterion(model(self.inputs), self.targets)
            batch = [g.detach() for g in torch.autograd.grad(loss, params)]
        last = [p.grad.detach() for p in params] if all(p.grad is not None for p in params) else None
        return batch, last

    def __call__(self, model, *, epoch, step, total_steps):
        self._step = step
        if not ((self.every and step % self.every == 0) or step == total_steps):
            return
        top = curvature.top_eigenpairs(model, self.criterion, self.inputs, self.targets, k=self.k, tol=self.tol,
                                       init=self._top)
        self._top = top.eigenvectors
        pre, threshold, self._pre = self._preconditioned(model, top.eigenvalues[0], self._pre)
        batch, last = self._gradients(model)
        self.rows.append(dict(
            epoch=epoch, step=step, lambda1=top.eigenvalues[0], lambda_k=top.eigenvalues[-1],
            precond_lambda1=pre, threshold=threshold, precond_ratio=pre / threshold,
            overlap_hessian_batch=subspace.subspace_overlap(top.eigenvectors, batch),
            overlap_last_batch=subspace.subspace_overlap(top.eigenvectors, last) if last else math.nan,
            k=self.k, converged=top.converged, certified_in=top.certified_in, n_hvps=top.n_hvps))

    def on_epoch(self, model, row) -> None:
        reached = {r["loss_threshold"] for r in self.equal_loss}
        crossed = [t for t in self.thresholds if t not in reached and row["train_loss"] < t]
        if not crossed:
            return
        r = curvature.top_eigenpairs(model, self.criterion, self.inputs, self.targets, k=1, tol=self.tol,
                                     init=self._top[:1] if self._top else None)
        pre, threshold, _ = self._preconditioned(model, r.eigenvalues[0], self._pre)
        trace = curvature.hessian_trace(model, self.criterion, self.inputs, self.targets,
                                        n_samples=self.trace_samples, seed=self.seed)
        for t in crossed:
            self.equal_loss.append(dict(
                loss_threshold=t, epoch=row["epoch"], step=row["step"], train_loss=row["train_loss"],
                test_accuracy=row["test_accuracy"], lambda1=r.eigenvalues[0], precond_lambda1=pre,
                threshold=threshold, trace=trace.mean, trace_stderr=trace.stderr, trace_samples=len(trace.samples),
                converged=r.converged, certified_in=r.certified_in))

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict:
        return dict(rows=[dict(r) for r in self.rows], equal_loss=[dict(r) for r in self.equal_loss],
                    top=curvature.vectors_to_cpu(self._top), pre=curvature.vectors_to_cpu(self._pre))

    def load_state_dict(self, state) -> None:
        self.rows = [dict(r) for r in state["rows"]]
        self.equal_loss = [dict(r) for r in state["equal_loss"]]
        self._top, self._pre = state["top"], state["pre"]
