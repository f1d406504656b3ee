"""The Hessian-vector product engines: PyHessian's, on the model or on a float64 copy, chunked or not, and the
guard that gives the model back as it was.

PyHessian's HVP is the same `torch.autograd.grad` call a hand-written one would make, so we keep its engine:
one retained double-backward graph for a single batch. When `batch_size` splits the batch, one retained
graph per chunk while they all fit in `GRAPH_MEMORY_MIB`, else PyHessian's dataloader mode (forward and
backward per chunk for every product); either way weighted by chunk size.

A `pyhessian.hessian` object writes create-graph gradients into `.grad`, calls `model.eval()` and draws
from the global RNG, so `_untouched` restores `.grad` (None-ness included), each module's train/eval flag
and the torch RNG state: a training run is bitwise the same with or without these calls.
"""

import contextlib
import copy
import time
import warnings

import torch
from pyhessian import hessian as PyHessian
from pyhessian.utils import hessian_vector_product

PRECISIONS = ("float64", "mixed", "model")

@contextlib.contextmanager
def _untouched(model):
    """Run a block and give the model back as it was: .grad, train/eval flags, torch RNG.

    Yields a list for the parameters of the block's float64 copies (`_engine` adds them): PyHessian's
    create-graph backward leaves each parameter's .grad holding a graph that holds the parameter, a
    cycle inside autograd that Python's collector cannot see. Clearing their .grad on the way out
    frees the copy and its saved activations (left alone, ~20 MB per call at batch 100 accumulated).
    """
    params = list(model.parameters())
    copies = []
    grads = [p.grad for p in params]
    modes = [m.training for m in model.modules()]
    cuda = sorted({p.device.index for p in params if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.enable_grad(), warnings.catch_warnings():
        # PyHessian's backward(create_graph=True) warns about a param <-> grad reference
        # cycle; putting the old .grad back below is what breaks that cycle.
        warnings.filterwarnings("ignore", message=".*create_graph=True.*")
        try:
            for p in params:
                p.grad = None  # so PyHessian's backward never accumulates onto the caller's gradients
            yield copies
        finally:
            for p in copies:
                p.grad = None
            for p, g in zip(params, grads):
                p.grad = g
            for m, t in zip(model.modules(), modes):
                m.training = t  # per module, not model.train(): submodules may differ


GRAPH_MEMORY_MIB = 2048  # chunked HVPs keep every chunk's double-backward graph while they fit in this; 0: never


def _graph_bytes(model, criterion, inputs, targets) -> int:
    """What one chunk's retained double-backward graph holds: the bytes of every tensor autograd saves for it.

    Counted by `saved_tensors_hooks` over the forward and the create-graph backward; a tensor saved twice
    counts twice, so this bounds the memory from above. Leaves `.grad` as it found it (None).
    """
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        # a saved output that kept its grad_fn would tie the graph to itself, a cycle that is never freed
        return t if t.grad_fn is None else t.detach()

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = criterion(model(inputs), targets)
        grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], create_graph=True)
    del loss, grads
    return total[0]


def _engine(model, criterion, inputs, targets, batch_size, copies, float64=False, scale=None,
            graph_memory_mib=None):
    """A PyHessian object, a flat float64 HVP v -> d * H(d * v) on it (d = `scale`, else 1) and
    the dtype its products are computed in. Call inside `_untouched`, passing the list it yields.

    float64: on a float64 copy of the model (unless it is float64 already), floating
    inputs and targets cast; the copy holds no .grad (`_untouched` cleared them), and its
    parameters go into `copies` for `_untouched` to release (not to be confused with the
    missed-eigenvalue guard of `top_eigenpairs`).

    Chunked (`batch_size` smaller than the batch): PyHessian's dataloader mode repeats every
    chunk's forward and create-graph backward for every product. When all the chunks' graphs
    fit in `graph_memory_mib` (measured on the first chunk, `_graph_bytes`), each chunk's
    create-graph gradient is built once and kept instead, so a product is only PyHessian's
    `hessian_vector_product` on each chunk, weighted by chunk size as the dataloader mode weights them.
    None: the module's `GRAPH_MEMORY_MIB`, read at the call.
    """
    device = next(model.parameters()).device
    inputs, targets = inputs.to(device), targets.to(device)
    if float64 and any(p.dtype != torch.float64 for p in model.parameters()):
        model = copy.deepcopy(model).double()  # reads the weights, draws no random numbers
        copies.extend(model.parameters())
        inputs, targets = (t.double() if t.is_floating_point() else t for t in (inputs, targets))
    cuda, chunks, kept = device.type == "cuda", None, None
    if batch_size is not None and len(inputs) > batch_size:
        chunks = [(inputs[i:i + batch_size], targets[i:i + batch_size]) for i in range(0, len(inputs), batch_size)]
        budget = (GRAPH_MEMORY_MIB if graph_memory_mib is None else graph_memory_mib) * 2 ** 20
        H = PyHessian(model, criterion, dataloader=chunks, cuda=cuda)  # eval mode; computes nothing yet
        if budget > 0 and len(chunks) * _graph_bytes(model, criterion, *chunks[0]) <= budget:
            # each chunk's create-graph gradient by torch.autograd.grad, as PyHessian's single-batch mode makes
            # it but without writing .grad: a kept graph that .grad also held would tie the parameters to it
            kept = [(torch.autograd.grad(criterion(model(cx), cy), H.params, create_graph=True), float(len(cy)))
                    for cx, cy in chunks]
            chunks = None
    else:
        H = PyHessian(model, criterion, data=(inputs, targets), cuda=cuda)
    sizes = [p.numel() for p in H.params]

    def kept_product(vs):
        total = [torch.zeros_like(p) for p in H.params]
        for grads, weight in kept:
            total = [t + h * weight for t, h in zip(total, hessian_vector_product(grads, H.params, vs))]
        return [t / float(len(inputs)) for t in total]

    def hvp(v):
        v = v if scale is None else scale * v
        # The solvers keep their vectors in float64; the model sees its own dtype.
        vs = [c.view_as(p).to(p.dtype) for c, p in zip(v.split(sizes), H.params)]
        if kept is not None:
            hv = kept_product(vs)
        else:
            hv = H.dataloader_hv_product(vs)[1] if chunks else hessian_vector_product(H.gradsH, H.params, vs)
        hv = torch.cat([h.reshape(-1) for h in hv]).to(torch.float64)
        return hv if scale is None else scale * hv

    return H, hvp, str(H.params[0].dtype).removeprefix("torch.")


PROGRESS_EVERY = 10  # products between two progress lines


def _reporting(ops, progress):
    """The operators of `ops` with their products counted together and a line to `progress` every PROGRESS_EVERY."""
    count, started = [0], time.perf_counter()

    def wrap(hvp, dtype):
        def counted(v):
            out = hvp(v)
            count[0] += 1
            if count[0] % PROGRESS_EVERY == 0:
                progress(f"  {count[0]} Hessian-vector products (the last in {dtype}), "
                         f"{time.perf_counter() - started:.0f} s")
            return out
        return counted

    return [(H, wrap(hvp, dtype), dtype) for H, hvp, dtype in ops]


def vectors_to_cpu(vectors):
    """Eigenvectors (lists of per-parameter tensors) detached onto the CPU, for a checkpoint; None stays None."""
    return None if vectors is None else [[t.detach().cpu() for t in v] for v in vectors]


def _flat(vector, device):
    return torch.cat([t.detach().reshape(-1).to(device, torch.float64) for t in vector])


def _unflat(v, params):
    v = v / v.norm()
    return [c.view_as(p).to(p.dtype).detach().clone() for c, p in zip(v.split([p.numel() for p in params]), params)]


def _rademacher(n, gen, device):
    return (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(device, torch.float64)


def _check_precision(precision, allowed=PRECISIONS):
    if precision not in allowed:
        raise ValueError(f"precision must be one of {allowed}, got {precision!r}")
