"""The small cases the curvature tests compare against: models whose dense float64 Hessian
can be built, and that Hessian, the exact answer.

Shared by test_curvature.py (eigenpairs and their certificates) and
test_curvature_spectrum.py (trace, density, the spectrum tracker); `StoppingJournal` also by
test_runner.py (a final analysis stopped inside its full-data solve).
"""

import math

import torch
from torch import nn
from torch.func import functional_call

from minima import curvature

TOL = 1e-4
CE = nn.CrossEntropyLoss()


class Stopped(Exception):
    pass


class StoppingJournal(curvature.HvpJournal):
    """A journal whose process is 'killed' (raises Stopped) before its (after + 1)-th new product."""

    def __init__(self, folder, after):
        super().__init__(folder)
        self.after = after

    def wrap(self, hvp, operator):
        def stopping(v):
            if self.computed == self.after:
                raise Stopped
            return hvp(v)
        return super().wrap(stopping, operator)


def mlp(dropout=0.0, seed=0):
    """8 -> 16 -> 4 tanh MLP in float64: 212 parameters, a dense Hessian in well under a second."""
    torch.manual_seed(seed)
    layers = [nn.Linear(8, 16), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(16, 4)]
    return nn.Sequential(*layers).double()


def batch(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 8, generator=g, dtype=torch.float64), torch.randint(0, 4, (n,), generator=g)


def quadratic(eigenvalues, seed=2):
    """A model, criterion and batch whose loss is 0.5 p^T A p with a prescribed spectrum for A.

    Linear(d, 1) on the identity returns its weight p, so the Hessian in p is exactly A.
    """
    d = len(eigenvalues)
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    A = Q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ Q.T
    model = nn.Linear(d, 1, bias=False).double()

    def criterion(out, A):
        return 0.5 * out.flatten() @ A @ out.flatten()

    return model, criterion, torch.eye(d, dtype=torch.float64), (A + A.T) / 2


def dense_hessian(model, criterion, x, y):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(v):
        pieces = torch.split(v, [math.prod(s) for s in shapes])
        return criterion(functional_call(model, {n: t.view(s) for n, t, s in zip(names, pieces, shapes)}, (x,)), y)

    return torch.autograd.functional.hessian(loss, flat)


def descending_eigenvalues(H):
    return torch.linalg.eigvalsh(H).flip(0).numpy()
