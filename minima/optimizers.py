"""The optimizer registry: one entry per optimizer, and the one training step each needs.

An entry holds the name, the label the report prints, a one-line
description, the constructor, the default hyperparameters (their values live
in ``params.py``) and the step: a plain ``backward``, ``backward(create_graph=True)``
for AdaHessian's Hessian-diagonal estimate, or SAM's two passes. The runner,
sweeps, notebooks, report and plotting notebook all take the list from here.

Adding an optimizer is one ``params.py`` block, one ``register(...)`` call
below, and ``make notebooks`` to stamp its notebook. A project that does not
want to edit this file can name Python files in ``$MINIMA_EXTRA_OPTIMIZERS``
(separated by the path separator); each is executed at import and calls
``register`` itself. The tests register ``torch.optim.RMSprop`` that way.

Any keyword of the constructor is a valid override (``--set momentum=0.9
nesterov=true`` for SGD); an unknown one is refused with the valid list, and a
combination the constructor rejects is refused with its own message.
"""

import inspect
import os
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

import params
from minima.errors import StudyError

# ---------------------------------------------------------------------------- the steps

def plain_step(model, optimizer, loss_fn, x, y) -> torch.Tensor:
    """zero_grad, loss, backward, step; returns the batch loss (detached)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y)
    loss.backward()
    optimizer.step()
    return loss.detach()


def second_order_step(model, optimizer, loss_fn, x, y) -> torch.Tensor:
    """As ``plain_step``, keeping the gradient's graph: AdaHessian differentiates it again (Hutchinson)."""
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y)
    loss.backward(create_graph=True)
    optimizer.step()
    return loss.detach()


def sam_step(model, optimizer, loss_fn, x, y) -> torch.Tensor:
    """SAM (Foret et al. 2021): the gradient at w, a step of rho along it, the gradient there, the base step from w.

    Returns the loss at w, the one the other optimizers report. ``.grad`` is
    left holding the gradient the step used (at the perturbed point).
    """
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(model, x, y)
    loss.backward()
    optimizer.first_step(zero_grad=True)     # w -> w + rho g / ||g||
    loss_fn(model, x, y).backward()
    optimizer.second_step()                  # back to w, then the base optimizer's step with the new gradient
    return loss.detach()


# ---------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class OptimizerEntry:
    name: str
    label: str
    description: str
    build: Callable[..., torch.optim.Optimizer]   # build(model_parameters, **hyperparameters)
    defaults: Mapping                             # from params.py
    step: Callable = plain_step
    accepts: tuple | Callable = field(default=())  # constructors whose keywords are valid overrides, or a function
                                                  # returning them (imports the optimizer's package only when asked)
    attach: Callable | None = None                # attach(optimizer, model, data, config) -> callbacks that
                                                  # training.train runs after the caller's (state, files)
    in_study: bool = True                         # one of the study's optimizers (False: an experiment's)

    def valid_keywords(self) -> list[str]:
        names = []
        for fn in signatures(self):
            for p in inspect.signature(fn).parameters.values():
                if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name in ("self", "params", "base_optimizer"):
                    continue
                if p.name not in names:
                    names.append(p.name)
        return names


REGISTRY: dict[str, OptimizerEntry] = {}


def signatures(entry: OptimizerEntry) -> tuple:
    """The constructors whose keywords are valid overrides of ``entry``."""
    accepts = entry.accepts() if callable(entry.accepts) else entry.accepts
    return tuple(accepts) or (entry.build,)


def register(entry: OptimizerEntry) -> OptimizerEntry:
    if entry.name in REGISTRY:
        raise ValueError(f"optimizer {entry.name!r} is registered already")
    REGISTRY[entry.name] = entry
    return entry


def names(everything=False) -> list[str]:
    """The study's optimizers, in the report's order; ``everything`` adds the experiments' (projected SGD)."""
    return [n for n, e in REGISTRY.items() if everything or e.in_study]


def labels() -> dict[str, str]:
    return {name: e.label for name, e in REGISTRY.items()}


def get(name) -> OptimizerEntry:
    if name not in REGISTRY:
        raise StudyError(f"unknown optimizer {name!r}; valid choices: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def _tuples(hyper) -> dict:
    """JSON gives lists; constructors want tuples (betas)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hyper.items()}


def hyperparameters(name, overrides=None) -> dict:
    """The entry's defaults with ``overrides`` on top, checked against the constructor (raises StudyError)."""
    entry = get(name)
    overrides = dict(overrides or {})
    valid = entry.valid_keywords()
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise StudyError(f"unknown hyperparameter(s) {', '.join(unknown)} for {name}; "
                         f"valid choices: {', '.join(valid)}")
    hyper = {**entry.defaults, **overrides}
    lr = hyper.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0
                           or lr == float("inf")):
        raise StudyError(f"lr must be a positive number, got {lr!r}")
    try:  # the constructor's own checks (nesterov without momentum, a negative eps, ...), on a throwaway tensor
        entry.build([torch.nn.Parameter(torch.zeros(1))], **_tuples(hyper))
    except (ValueError, TypeError) as e:
        raise StudyError(f"{name} refuses hyperparameters {overrides or hyper}: {e}") from None
    return hyper


def make_optimizer(name, model, hyper) -> torch.optim.Optimizer:
    return get(name).build(model.parameters(), **_tuples(hyper))


def state_dict(optimizer) -> dict:
    """The optimizer's state for a checkpoint, a wrapped base optimizer's (SAM's SGD) included."""
    base = getattr(optimizer, "base_optimizer", None)
    return {"optimizer": optimizer.state_dict(), "base": base.state_dict() if base is not None else None}


def load_state_dict(optimizer, state) -> None:
    optimizer.load_state_dict(state["optimizer"])
    if state.get("base") is not None:
        optimizer.base_optimizer.load_state_dict(state["base"])


# ---------------------------------------------------------------------------- the study's optimizers

def _adahessian(model_params, **hyper):
    import torch_optimizer
    return torch_optimizer.Adahessian(model_params, **hyper)


def _sam(model_params, **hyper):
    from pytorch_optimizer import SAM
    return SAM(model_params, base_optimizer=torch.optim.SGD, **hyper)


def _adahessian_signatures():
    import torch_optimizer
    return (torch_optimizer.Adahessian.__init__,)


def _sam_signatures():
    from pytorch_optimizer import SAM
    return SAM.__init__, torch.optim.SGD.__init__


register(OptimizerEntry(
    "sgd", "SGD", "plain stochastic gradient descent: the baseline whose sharpness is read against 2/lr",
    lambda p, **hp: torch.optim.SGD(p, **hp), params.SGD, accepts=(torch.optim.SGD.__init__,)))
register(OptimizerEntry(
    "adam", "Adam", "per-coordinate step sizes from running moments of the gradient",
    lambda p, **hp: torch.optim.Adam(p, **hp), params.ADAM, accepts=(torch.optim.Adam.__init__,)))
register(OptimizerEntry(
    "adagrad", "AdaGrad", "per-coordinate step sizes that shrink with the accumulated squared gradients",
    lambda p, **hp: torch.optim.Adagrad(p, **hp), params.ADAGRAD, accepts=(torch.optim.Adagrad.__init__,)))
register(OptimizerEntry(
    "adahessian", "AdaHessian",
    "Adam-like, with a Hutchinson estimate of the Hessian diagonal in place of the squared gradient "
    "(torch_optimizer.Adahessian, as the original ran it)",
    _adahessian, params.ADAHESSIAN, step=second_order_step, accepts=_adahessian_signatures))
register(OptimizerEntry(
    "sam", "SAM",
    "sharpness-aware minimisation (Foret et al. 2021) around SGD: the step taken with the gradient at the worst "
    "point within rho (pytorch_optimizer.SAM)",
    _sam, params.SAM, step=sam_step, accepts=_sam_signatures))


def _projected(params, base, lam, k, refresh_every, start_step, **base_hyper):
    """The base optimizer, built from its own hyperparameters, stepping with the projected gradient.

    (The first argument is named ``params`` as in torch's constructors, which ``valid_keywords`` skips.)
    """
    bases = [n for n, e in REGISTRY.items() if e.step is plain_step and e.attach is None]
    if base not in bases:
        raise ValueError(f"base must be one of {', '.join(bases)}, got {base!r}: the projection replaces the one "
                         "gradient of a plain step (AdaHessian differentiates .grad again, SAM takes two)")
    from minima import projected  # the eigensolver and PyHessian, loaded only when a projected run is built
    return projected.wrap(REGISTRY[base].build(params, **base_hyper), lam, k, refresh_every, start_step)


def _projected_signatures():
    """Its own keywords, then those of every plain-step base registered (their lr, momentum, ...)."""
    return (_projected, *(fn for e in REGISTRY.values() if e.step is plain_step and e.name != "projected"
                          for fn in signatures(e)))


def _projected_attach(*args, **kwargs):
    from minima import projected
    return projected.attach(*args, **kwargs)


register(OptimizerEntry(
    "projected", "Projected SGD",
    "the base optimizer (SGD) stepping with lam times the gradient's part in the top-k Hessian eigenspace plus "
    "1 - lam times the rest, the eigenvectors refreshed every few steps (minima/projected.py)",
    _projected, params.PROJECTED, accepts=_projected_signatures, attach=_projected_attach, in_study=False))


for _path in filter(None, os.environ.get("MINIMA_EXTRA_OPTIMIZERS", "").split(os.pathsep)):
    runpy.run_path(_path, run_name="minima_extra_optimizers")
