"""Generalization measures of one trained network: sharpness that survives rescaling, and the baselines.

Each function takes a model, a criterion (mean loss over a batch) and a batch, and returns plain floats. Like
`curvature` and `landscape`, this module imports nothing of the package but that numeric core, so it lifts out
with it. The model is never modified: perturbed losses are evaluated by `torch.func.functional_call` on
perturbed copies of the parameters, in eval mode, with the caller's mode restored.

Rescaling a ReLU network's layer by a > 0 and the next one by 1/a leaves its function unchanged but moves
lambda1 and the trace (Dinh et al. 2017). The *adaptive* measures perturb each weight in proportion to its
magnitude, w + |w| * u, so they are unchanged by such rescalings (Kwon et al. 2021; Andriushchenko et al. 2023);
tests/test_measures.py checks this on LeNet5 with ReLU. (tanh has no such symmetry.)
"""

import math

import numpy as np
import torch
from torch.func import functional_call

from minima import curvature


def _params(model):
    return {name: p.detach() for name, p in model.named_parameters()}


def _loss_fn(model, criterion, inputs, targets):
    """theta -> criterion(model_theta(inputs), targets) in eval mode, buffers as they are."""
    buffers = dict(model.named_buffers())

    def loss(theta):
        return criterion(functional_call(model, {**theta, **buffers}, (inputs,)), targets)

    return loss


class _Eval:
    """Eval mode for the block; each module's flag restored after it."""

    def __init__(self, model):
        self.model, self.modes = model, [m.training for m in model.modules()]

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        for m, t in zip(self.model.modules(), self.modes):
            m.training = t


# ----------------------------------------------------------------------------- curvature on a fixed batch

def lambda_max(model, criterion, inputs, targets, tol=1e-4, seed=0, precision="mixed", batch_size=None) -> float:
    """lambda1, the largest eigenvalue of the Hessian on this batch, certified to ``tol`` in float64 and guarded
    against a missed eigenvalue (`curvature.top_eigenpairs`). Keskar et al. 2017's sharpness, up to the radius.

    ``precision="mixed"`` (the default) runs Lanczos on the model's own products and certifies the result on
    float64 ones, so the certificate is the float64 path's; "float64" is the plain path beside it
    (benchmarks/bench_measures.py times both). ``batch_size`` splits the batch into chunks."""
    result = curvature.top_eigenpairs(model, criterion, inputs, targets, k=1, tol=tol, seed=seed, guard=True,
                                      precision=precision, batch_size=batch_size)
    if not result.converged:
        raise RuntimeError(f"lambda1 was not certified to {tol:g} within the product budget")
    return result.eigenvalues[0]


def hutchinson(model, criterion, inputs, targets, n_probes=50, seed=0) -> dict:
    """tr(H) and tr(Diag(H)^1/2) from the same Rademacher probes z, with standard errors.

    tr(H) is the mean of z^T H z (Hutchinson 1990). Diag(H) is estimated by the mean of z * Hz (Bekas et al.
    2007), and tr(Diag(H)^1/2) = sum_i sqrt(max(d_i, 0)) from that estimate; its standard error is the
    jackknife's over probes (the square root makes it biased at few probes). Li, Wen and Lyu (2025) argue that
    Adam lowers this quantity near a minimum while SGD lowers tr(H).
    """
    if n_probes < 2:
        raise ValueError(f"n_probes must be >= 2 for a standard error, got {n_probes}")
    params = [p for p in model.parameters()]
    gen = torch.Generator().manual_seed(seed)
    flat = torch.cat([p.detach().reshape(-1) for p in params]).double()
    with _Eval(model):
        loss = criterion(model(inputs), targets)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        zs, hzs = [], []
        for _ in range(n_probes):
            z = (torch.randint(0, 2, flat.shape, generator=gen) * 2 - 1).to(flat.device, params[0].dtype)
            pieces = [c.view_as(p) for c, p in zip(z.split([p.numel() for p in params]), params)]
            hz = torch.autograd.grad(grads, params, pieces, retain_graph=True)
            zs.append(z.double())
            hzs.append(torch.cat([h.reshape(-1) for h in hz]).double())
    Z, HZ = torch.stack(zs), torch.stack(hzs)
    quad = (Z * HZ).sum(1).cpu().numpy()
    prods = (Z * HZ).cpu().numpy()                       # per probe: z * Hz, whose mean estimates Diag(H)
    total = prods.sum(0)
    diag = total / n_probes
    sqrt_trace = float(np.sqrt(np.clip(diag, 0, None)).sum())
    leave_one = [float(np.sqrt(np.clip((total - prods[j]) / (n_probes - 1), 0, None)).sum()) for j in range(n_probes)]
    jack = np.asarray(leave_one)
    sqrt_se = float(math.sqrt((n_probes - 1) / n_probes * ((jack - jack.mean()) ** 2).sum()))
    return {"trace": float(quad.mean()), "trace_se": float(quad.std(ddof=1) / math.sqrt(n_probes)),
            "sqrt_diag_trace": sqrt_trace, "sqrt_diag_trace_se": sqrt_se, "n_probes": n_probes}


# ----------------------------------------------------------------------------- adaptive (scale-aware) sharpness

def adaptive_worst_case(model, criterion, inputs, targets, rho, steps=20, seed=0, rounding=False):
    """max over ||u||_inf <= rho of L(w + |w| * u) - L(w), by projected sign ascent (Andriushchenko et al. 2023;
    Kwon et al. 2021's adaptive neighbourhood).

    u starts uniform in the box (the gradient vanishes at a minimum, so u = 0 would not move), then ``steps``
    steps u <- clip(u + (rho / 4) sign(grad_u), -rho, rho): a quarter of the box a step, so every coordinate
    can reach either face well within 20 steps. The largest loss increase seen along the way is returned (a
    lower bound on the maximum). With ``rounding=True`` it returns (increase, |increase - the same increase
    in float64 at the same point|): how far the model's precision resolves it.
    """
    if rho <= 0 or steps < 1:
        raise ValueError(f"need rho > 0 and steps >= 1, got rho={rho}, steps={steps}")
    theta = _params(model)
    loss = _loss_fn(model, criterion, inputs, targets)
    gen = torch.Generator().manual_seed(seed)
    u = {k: ((torch.rand(v.shape, generator=gen, dtype=torch.float64) * 2 - 1) * rho).to(v.device, v.dtype)
         for k, v in theta.items()}
    with _Eval(model), torch.enable_grad():
        base = float(loss(theta))
        best, best_u = -math.inf, None
        for step in range(steps + 1):
            u = {k: t.detach().requires_grad_(True) for k, t in u.items()}
            value = loss({k: theta[k] + theta[k].abs() * u[k] for k in theta})
            if float(value.detach()) - base > best:
                best, best_u = float(value.detach()) - base, {k: t.detach() for k, t in u.items()}
            if step == steps:
                break
            grads = torch.autograd.grad(value, list(u.values()))
            u = {k: (t + rho / 4 * g.sign()).clamp(-rho, rho) for (k, t), g in zip(u.items(), grads)}
        if not rounding:
            return best
        wide = {k: v.double() for k, v in theta.items()}
        loss64 = _loss_fn(model, criterion, inputs.double() if inputs.is_floating_point() else inputs, targets)
        with torch.no_grad():
            rise64 = float(loss64({k: wide[k] + wide[k].abs() * best_u[k].double() for k in wide})) \
                - float(loss64(wide))
    return best, abs(best - rise64)


def _noise(theta, n_samples, seed):
    """Fixed standard-normal draws, one dict per sample (common random numbers across radii and reparametrisations
    of the same shapes)."""
    gen = torch.Generator().manual_seed(seed)
    return [{k: torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v.device, v.dtype)
             for k, v in theta.items()} for _ in range(n_samples)]


def _average_increase(loss, theta, base, noise, sigma) -> np.ndarray:
    with torch.no_grad():
        return np.array([float(loss({k: theta[k] + sigma * theta[k].abs() * e[k] for k in theta})) - base
                         for e in noise])


def adaptive_average_case(model, criterion, inputs, targets, rho, n_samples=20, seed=0) -> dict:
    """E[L(w + rho |w| * eps)] - L(w), eps standard normal, by Monte Carlo with its standard error
    (Andriushchenko et al. 2023's average-case adaptive sharpness)."""
    if rho <= 0 or n_samples < 2:
        raise ValueError(f"need rho > 0 and n_samples >= 2, got rho={rho}, n_samples={n_samples}")
    theta = _params(model)
    loss = _loss_fn(model, criterion, inputs, targets)
    with _Eval(model), torch.no_grad():
        base = float(loss(theta))
        rises = _average_increase(loss, theta, base, _noise(theta, n_samples, seed), rho)
    return {"mean": float(rises.mean()), "se": float(rises.std(ddof=1) / math.sqrt(n_samples)),
            "n_samples": n_samples}


def pac_bayes_flatness(model, criterion, inputs, targets, threshold=0.1, n_samples=20, seed=0, sigma_max=1.0,
                       sigma_min=1e-4, iterations=10) -> dict:
    """Jiang et al. 2020's magnitude-aware PAC-Bayes flatness: the largest sigma with
    E[L(w + sigma |w| * eps)] - L(w) <= ``threshold``, reported as 1 / sigma^2 (larger: sharper).

    Found by bisection in log sigma on [sigma_min, sigma_max], with the same Monte Carlo draws at every sigma (so
    the search sees one monotone-in-expectation function): 10 halvings of log sigma over [1e-4, 10] pin sigma
    to about 1 %. ``sigma_max`` is returned when even it stays below the threshold,
    ``sigma_min`` when even it exceeds it."""
    theta = _params(model)
    loss = _loss_fn(model, criterion, inputs, targets)
    with _Eval(model), torch.no_grad():
        base = float(loss(theta))
        noise = _noise(theta, n_samples, seed)
        rise = lambda s: float(_average_increase(loss, theta, base, noise, s).mean())  # noqa: E731
        lo, hi = sigma_min, sigma_max
        if rise(hi) <= threshold:
            lo = hi
        elif rise(lo) <= threshold:
            for _ in range(iterations):
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if rise(mid) <= threshold else (lo, mid)
    return {"sigma": lo, "flatness": 1 / lo ** 2, "threshold": threshold, "n_samples": n_samples}


def random_direction_sharpness(model, criterion, inputs, targets, directions, alpha=1.0) -> float:
    """The mean loss increase at distance ``alpha`` along filter-normalised random directions (Li et al. 2018;
    ``landscape.filter_normalized_direction`` draws them), both signs averaged: a scale-aware sharpness."""
    theta = _params(model)
    names = list(theta)
    loss = _loss_fn(model, criterion, inputs, targets)
    with _Eval(model), torch.no_grad():
        base = float(loss(theta))
        rises = [float(loss({k: theta[k] + sign * alpha * d[i].to(theta[k]) for i, k in enumerate(names)})) - base
                 for d in directions for sign in (1.0, -1.0)]
    return float(np.mean(rises))


# ----------------------------------------------------------------------------- baselines

def weight_norm(model) -> float:
    """||w||_2 over every parameter."""
    return float(torch.cat([p.detach().reshape(-1).double() for p in model.parameters()]).norm())


def distance_from_init(model, initial) -> float:
    """||w - w0||_2, ``initial`` the same architecture at its initial weights (rebuilt from the run's seed)."""
    pairs = zip(model.parameters(), initial.parameters())
    return float(torch.cat([(p.detach().double() - q.detach().double()).reshape(-1) for p, q in pairs]).norm())


def output_margin(model, inputs, targets, quantile=0.1) -> float:
    """The ``quantile`` (10th percentile by default) over samples of the correct logit minus the largest other."""
    with _Eval(model), torch.no_grad():
        logits = model(inputs).double()
    correct = logits.gather(1, targets.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, targets.view(-1, 1), -math.inf).max(1).values
    return float(torch.quantile(correct - others, quantile))
