"""Projected SGD: the gradient's part in the top-k Hessian eigenspace scaled by λ, the rest by 1 − λ.

Let g be the mini-batch gradient and V (n × k, orthonormal columns) the top-k eigenvectors, largest
algebraic eigenvalues first, of the Hessian H of the loss on the run's fixed Hessian batch, so that
V Vᵀ is the orthogonal projector onto their span. The step uses, in place of g,

    g̃ = λ V Vᵀ g + (1 − λ)(I − V Vᵀ) g = (1 − λ) g + (2λ − 1) V Vᵀ g,      λ ∈ [0, 1],

then takes the base optimizer's own step with it (SGD in the study: w ← w − η g̃). λ = 1 keeps only
the dominant part, λ = 0 removes it, and λ = 0.5 gives g̃ = g/2 whatever V is: plain SGD at half the
step size (exactly so in floating point too, because the second form multiplies V Vᵀ g by 0; the
tests check it weight for weight). This is the update the original study proposed and never tried.

Why it is interesting: Gur-Ari, Roberts and Dyer, "Gradient descent happens in a tiny subspace"
(arXiv:1812.04754), find the gradient mostly inside the top-C eigenspace (C = 10 classes);
Song, Ahn and Yun, "Does SGD really happen in tiny subspaces?" (ICLR 2025), find that SGD restricted
to that span (their Dom-SGD, λ = 1) stops decreasing the training loss, while SGD with it removed
(Bulk-SGD, λ = 0) trains as well as SGD. Along an eigenvector of eigenvalue h inside span(V), plain
SGD multiplies the component by 1 − ηλh, so for those directions the edge of stability moves from
2/η to 2/(λη) (none at λ = 0), while V tracks them; the instruments' threshold
(``minima.preconditioning``) reads the base optimizer and still reports 2/η.

Schedule, counting optimizer steps t = 1, 2, ...: steps t ≤ ``start_step`` are the base optimizer's
alone and no eigenvector is computed. V is computed at the weights w_s for s = start_step,
start_step + R, start_step + 2R, ... (R = ``refresh_every``), after step s and before step s + 1,
and used for steps s + 1 ... s + R. The solver is ``minima.curvature.top_eigenpairs`` (certified
Lanczos on float64 HVPs, to the run's ``hessian.tol``), warm-started from the previous V; it restores
``.grad``, train/eval flags and the RNG, so a refresh changes the training only through V. A refresh
that does not certify is still used, and its row says ``converged`` False.

Mechanism. ``wrap(base_optimizer, lam, k, refresh_every, start_step)`` validates the four settings,
keeps a ``Projection`` as ``optimizer.projection`` and registers its ``pre_step`` as a step pre-hook
(``torch.optim.Optimizer.register_step_pre_hook``): the optimizer stays an instance of its own class,
with its own state_dict, so everything that reads an SGD (the preconditioning instruments) reads it
as one. The refresh needs the model and the Hessian batch, which a constructor never sees:
``attach(optimizer, model, data, config)``, the registry entry's ``attach``, hands them over, and
``minima.training.train`` calls it and runs the ``Projection`` it returns as a callback whose state
(V, the step count, the log) is checkpointed and whose ``save`` writes ``projection.csv`` (one row
per refresh: the step s, its HVPs, certificate, wall and CPU seconds, λ1..λk, and the share
||Vᵀg||²/||g||² of step s + 1's gradient in the fresh span). A projected step without ``attach``
raises rather than quietly taking the base optimizer's step.

After the step ``.grad`` holds g̃, not g: a run's ``grad_norm_last_batch`` and the instruments'
``overlap_last_batch`` are those of the gradient the step used.
"""

import numbers
import time
from pathlib import Path

import torch

from minima import analysis, curvature, runs
from minima.data import hessian_batch

PROJECTION = "projection.csv"   # in the run folder, beside history.csv


def check_settings(lam, k, refresh_every, start_step) -> None:
    """Raise ValueError, one line, on the first setting out of range: λ in [0, 1], k, R >= 1, start >= 0."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not 0 <= lam <= 1:
        raise ValueError(f"lam must be a number in [0, 1], got {lam!r}")
    for name, value, least in (("k", k, 1), ("refresh_every", refresh_every, 1), ("start_step", start_step, 0)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


class Projection:
    """The optimizer's step pre-hook (g -> g̃) and the training callback that checkpoints its V.

    ``vectors``: the last refresh's eigenvectors (k lists of tensors shaped like the parameters), or
    None before the first; ``steps``: optimizer steps taken; ``rows``: one dict per refresh.
    """

    def __init__(self, lam, k, refresh_every, start_step):
        check_settings(lam, k, refresh_every, start_step)
        self.lam, self.k, self.refresh_every, self.start_step = float(lam), int(k), int(refresh_every), int(start_step)
        self.steps, self.vectors, self.rows = 0, None, []
        self._basis = None      # the vectors as the rows of one (k, n) float64 matrix
        self._hessian = None    # (model, criterion, inputs, targets, tol), from set_hessian

    # ------------------------------------------------------------------ wiring

    def set_hessian(self, model, criterion, inputs, targets, tol) -> None:
        """The model whose gradients are projected and the Hessian whose eigenvectors span V."""
        self._hessian = (model, criterion, inputs, targets, tol)

    def _params(self):
        return list(self._hessian[0].parameters())

    def set_vectors(self, vectors) -> None:
        """Use ``vectors`` (k lists of tensors shaped like the parameters, orthonormal) as V."""
        device = self._params()[0].device
        self.vectors = [[t.detach().to(device) for t in v] for v in vectors]
        self._basis = torch.stack([torch.cat([t.reshape(-1) for t in v]) for v in self.vectors]).double()

    # ------------------------------------------------------------------ the update

    def refreshes_before(self, t) -> bool:
        """Whether V is recomputed just before step t, at w_(t-1): t - 1 = start, start + R, ..."""
        s = t - 1
        return s >= self.start_step and (s - self.start_step) % self.refresh_every == 0

    def refresh(self, step) -> dict:
        """V from the top-k eigenpairs at the current weights w_step, warm-started from the last V."""
        model, criterion, inputs, targets, tol = self._hessian
        t0, c0 = time.perf_counter(), time.process_time()
        r = curvature.top_eigenpairs(model, criterion, inputs, targets, k=self.k, tol=tol, init=self.vectors)
        # CPU seconds beside wall seconds: on a shared machine the wall clock also counts the neighbours
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.set_vectors(r.eigenvectors)
        row = dict(step=step, n_hvps=r.n_hvps, n_hvps_float64=r.n_hvps_float64, converged=r.converged,
                   certified_in=r.certified_in, wall_s=wall, cpu_s=cpu,
                   **{f"lambda{i + 1}": value for i, value in enumerate(r.eigenvalues)})
        self.rows.append(row)
        return row

    def project(self, params) -> float:
        """Replace each p.grad by its part of g̃ = (1 − λ) g + (2λ − 1) V Vᵀ g; returns ||Vᵀg||²/||g||².

        In float64 (the vectors are orthonormal to float32 rounding; the cost is one k × n product
        each way), written back in the gradients' dtype.
        """
        if any(p.grad is None for p in params):
            raise RuntimeError("projected step: every parameter needs a gradient (one has p.grad None)")
        g = torch.cat([p.grad.reshape(-1) for p in params]).double()
        coefficients = self._basis @ g
        new = g * (1 - self.lam) + (coefficients @ self._basis) * (2 * self.lam - 1)
        offset = 0
        for p in params:
            p.grad.copy_(new[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()
        norm2 = float(g.square().sum())
        return float(coefficients.square().sum()) / norm2 if norm2 > 0 else float("nan")

    def pre_step(self, optimizer, args, kwargs) -> None:
        """The step pre-hook: before step t > start, refresh V if due, then project the gradients."""
        t = self.steps + 1
        if t > self.start_step:
            if self._hessian is None:
                raise RuntimeError("the projected optimizer has no model or Hessian batch: call "
                                   "minima.projected.attach(optimizer, model, data, config) first "
                                   "(minima.training.train does)")
            row = self.refresh(t - 1) if self.refreshes_before(t) else None
            share = self.project(self._params())
            if row is not None:
                row["grad_share"] = share
        self.steps = t

    # ------------------------------------------------------------------ the training callback

    def __call__(self, model, *, epoch, step, total_steps):
        # the schedule counts optimizer steps; a step function that stepped twice would shift it silently
        if step != self.steps:
            raise RuntimeError(f"projected optimizer: {self.steps} optimizer steps after training step {step}; "
                               "its step function must call optimizer.step() once per step")

    def state_dict(self) -> dict:
        return dict(steps=self.steps, vectors=curvature.vectors_to_cpu(self.vectors), rows=[dict(r) for r in self.rows])

    def load_state_dict(self, state) -> None:
        self.steps, self.rows = int(state["steps"]), [dict(r) for r in state["rows"]]
        if state["vectors"] is None:
            self.vectors, self._basis = None, None
        else:
            self.set_vectors(state["vectors"])

    def save(self, run_dir) -> None:
        """projection.csv: one row per refresh (empty when the run never reached its start step)."""
        runs.save_csv(Path(run_dir) / PROJECTION, self.rows)


def wrap(base_optimizer, lam, k, refresh_every, start_step) -> torch.optim.Optimizer:
    """``base_optimizer``, its steps after ``start_step`` taken with g̃ (validates; raises ValueError)."""
    projection = Projection(lam, k, refresh_every, start_step)
    base_optimizer.register_step_pre_hook(projection.pre_step)
    base_optimizer.projection = projection
    return base_optimizer


def attach(optimizer, model, data, config) -> list:
    """Give a wrapped optimizer its model and the run's Hessian batch; returns [its Projection] for train.

    The batch is the run's fixed one (``hessian_batch(data, hessian.batch_size, seed)``), the criterion
    ``minima.analysis.CRITERION``: the same Hessian the spectrum tracker and the instruments measure.
    """
    projection = getattr(optimizer, "projection", None)
    if not isinstance(projection, Projection):
        raise ValueError("attach needs an optimizer built by minima.projected.wrap")
    stepped = [p for group in optimizer.param_groups for p in group["params"]]
    if [id(p) for p in stepped] != [id(p) for p in model.parameters()]:
        raise ValueError("the optimizer must step exactly the model's parameters, in order: V is laid out like them")
    h = config["hessian"]
    x, y = hessian_batch(data, h["batch_size"], config["seed"])
    projection.set_hessian(model, analysis.CRITERION, x, y, h["tol"])
    return [projection]
