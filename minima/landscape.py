"""Loss landscapes around a trained network: loss along lines and over planes.

What it holds:
- `filter_normalized_direction`: a random direction scaled filter by filter to
  the weights (Li et al. 2018), so that curvature along it can be compared
  across networks whose weights differ in scale (Dinh et al. 2017).
- `loss_along_line`: loss(w + a d) for every a.
- `loss_surface`: loss(w + a d1 + b d2) on a grid, many grid points per forward
  pass with `torch.func.functional_call` + `torch.vmap`, in chunks.
- `loss_surface_sequential`: the plain loop, one perturbed copy per grid point,
  kept as the reference the vectorised path is tested against.

Directions are lists of tensors shaped like `model.parameters()`: eigenvectors
from a Hessian solver work as they are. Nothing here imports the rest of the
repository; it needs a model, a criterion and one batch. The model is left
exactly as found (weights, .grad, train/eval mode of every submodule).
"""

import contextlib
import copy

import numpy as np
import torch
from torch.func import functional_call

# -----------------------------------------------------------------------------
# chunking of the vectorised path
# One grid point costs its own copy of the parameters plus the activations of
# the whole batch. Activations are not known before a forward pass, so they are
# estimated as ACTIVATION_FACTOR x the input size per sample (LeNet5 on 1x32x32
# holds ~15k activations per sample, 14x its input).
MEMORY_BUDGET_BYTES = 512 * 2**20  # per chunk; keeps peak memory well under 1 GB
ACTIVATION_FACTOR = 16             # activations per input element, rounded up
MAX_CHUNK_SIZE = 256               # accelerators: enough points to fill the device (not measured here)
CPU_CHUNK_SIZE = 1                 # CPU: fastest in benchmarks/bench_landscape.py (why: below)


def default_chunk_size(n_params, batch_size, sample_numel, element_size=4, device="cpu"):
    """Grid points per vmapped forward pass.

    On CPU one LeNet5 forward on 100 samples is already compute-bound, and
    vmap turns each conv into a grouped conv plus layout copies over
    activations that no longer fit in cache, so a plain loop (chunk 1) is the
    CPU default (benchmarks/bench_landscape.py measures it).
    Elsewhere (GPU), as many points as fit in MEMORY_BUDGET_BYTES, up to MAX_CHUNK_SIZE.
    """
    per_point = (n_params + batch_size * sample_numel * ACTIVATION_FACTOR) * element_size
    cap = CPU_CHUNK_SIZE if torch.device(device).type == "cpu" else MAX_CHUNK_SIZE
    return int(max(1, min(cap, MEMORY_BUDGET_BYTES // per_point)))


def filter_normalized_direction(model, seed: int = 0) -> list[torch.Tensor]:
    """A Gaussian direction with each filter rescaled to the norm of the weights' filter.

    For a parameter with dim > 1 (conv kernel, linear weight) a filter is a slice
    along dim 0 (one output channel or one output unit). Parameters with dim <= 1
    (biases, norm-layer scales) get zero: a bias has no filters to normalise
    against, and rescaling it as one block would move it by its whole size, which
    swamps the picture; Li et al. leave them out by default for the same reason.
    The draw uses its own generator seeded with `seed`, so the global RNG is untouched.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    direction = []
    for p in model.parameters():
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        # draw on the CPU in float64 so that a seed gives the same direction on every device
        d = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        w = p.detach().to(device="cpu", dtype=torch.float64)
        d_norm = d.flatten(1).norm(dim=1).view(-1, *[1] * (p.dim() - 1))
        w_norm = w.flatten(1).norm(dim=1).view(-1, *[1] * (p.dim() - 1))
        # a filter of all-zero weights gets a zero direction (w_norm = 0)
        direction.append((d * (w_norm / d_norm)).to(device=p.device, dtype=p.dtype))
    return direction


# -----------------------------------------------------------------------------
# input checks and model bookkeeping shared by all paths

def _checked_direction(model, direction, name):
    """Direction as tensors on the params' device and dtype, or ValueError."""
    params = list(model.parameters())
    direction = list(direction)
    if len(direction) != len(params):
        raise ValueError(f"{name} has {len(direction)} tensors, the model has {len(params)} parameters")
    for i, (d, p) in enumerate(zip(direction, params)):
        if tuple(d.shape) != tuple(p.shape):
            raise ValueError(f"{name}[{i}] has shape {tuple(d.shape)}, parameter {i} has shape {tuple(p.shape)}")
    return [d.detach().to(device=p.device, dtype=p.dtype) for d, p in zip(direction, params)]


def _checked_coords(values, name):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {values.shape}")
    return values


@contextlib.contextmanager
def _eval_mode(model):
    """Every submodule in eval mode inside; after, each gets its own flag back (mixed modes survive)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


# -----------------------------------------------------------------------------
# vectorised path

def _losses_at(model, criterion, inputs, targets, directions, coeffs, chunk_size=None):
    """loss(w + sum_k coeffs[n, k] directions[k]) for every row n of coeffs (N, K)."""
    names, params = zip(*model.named_parameters())
    buffers = dict(model.named_buffers())
    if chunk_size is None:
        chunk_size = default_chunk_size(sum(p.numel() for p in params), len(inputs),
                                        inputs[0].numel(), params[0].element_size(), params[0].device)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")

    def point_loss(point_params):
        outputs = functional_call(model, ({**dict(zip(names, point_params)), **buffers},), (inputs,))
        return criterion(outputs, targets)

    # params vmapped along dim 0; inputs, targets and buffers are shared by all grid points
    batched_loss = torch.vmap(point_loss)
    losses = []
    with torch.no_grad(), _eval_mode(model):
        for start in range(0, len(coeffs), chunk_size):
            c = torch.as_tensor(coeffs[start:start + chunk_size], dtype=params[0].dtype, device=params[0].device)
            stacked = []
            for i, p in enumerate(params):
                shape = (-1,) + (1,) * p.dim()
                # same elementwise order as the sequential loop: ((w + a d1) + b d2)
                q = p.detach().unsqueeze(0)
                for k, d in enumerate(directions):
                    q = q + c[:, k].view(shape) * d[i]
                stacked.append(q)
            if len(c) == 1:
                # one point needs no vmap; skipping it saves its batching overhead (~25% on CPU)
                losses.append(point_loss([q[0] for q in stacked]).reshape(1))
            else:
                losses.append(batched_loss(tuple(stacked)))
    return torch.cat(losses).double().cpu().numpy()


def loss_along_line(model, criterion, inputs, targets, direction, alphas, chunk_size=None) -> np.ndarray:
    """loss(w + a d) for a in alphas, shape (len(alphas),); a line is a one-column surface."""
    direction = _checked_direction(model, direction, "direction")
    alphas = _checked_coords(alphas, "alphas")
    return _losses_at(model, criterion, inputs, targets, [direction], alphas[:, None], chunk_size)


def loss_surface(model, criterion, inputs, targets, d1, d2, alphas, betas=None, chunk_size=None) -> np.ndarray:
    """loss(w + a d1 + b d2) with out[i, j] at (alphas[i], betas[j]); betas default to alphas.

    chunk_size grid points share one vmapped forward pass; None takes
    default_chunk_size. With chunks > 1 the criterion runs under vmap, so it
    must be plain torch ops (nn.CrossEntropyLoss is; anything calling .item() is not).
    """
    d1, d2 = _checked_direction(model, d1, "d1"), _checked_direction(model, d2, "d2")
    alphas = _checked_coords(alphas, "alphas")
    betas = alphas if betas is None else _checked_coords(betas, "betas")
    # grid row-major: alpha slow, beta fast, so the flat result reshapes to (len(alphas), len(betas))
    coeffs = np.stack(np.meshgrid(alphas, betas, indexing="ij"), axis=-1).reshape(-1, 2)
    losses = _losses_at(model, criterion, inputs, targets, [d1, d2], coeffs, chunk_size)
    return losses.reshape(len(alphas), len(betas))


# -----------------------------------------------------------------------------
# reference path

def loss_surface_sequential(model, criterion, inputs, targets, d1, d2, alphas, betas=None) -> np.ndarray:
    """Same as loss_surface, as a plain loop: write each grid point's weights into a copy, run it."""
    d1, d2 = _checked_direction(model, d1, "d1"), _checked_direction(model, d2, "d2")
    alphas = _checked_coords(alphas, "alphas")
    betas = alphas if betas is None else _checked_coords(betas, "betas")
    # a deep copy, so the caller's model is never written to, even if a forward pass raises
    probe = copy.deepcopy(model).eval()
    weights = [p.detach().clone() for p in model.parameters()]
    dtype = weights[0].dtype
    out = np.empty((len(alphas), len(betas)))
    with torch.no_grad():
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                a_t = torch.tensor(a, dtype=dtype, device=weights[0].device)
                b_t = torch.tensor(b, dtype=dtype, device=weights[0].device)
                for q, w, u, v in zip(probe.parameters(), weights, d1, d2):
                    q.copy_((w + a_t * u) + b_t * v)
                out[i, j] = criterion(probe(inputs), targets).item()
    return out
