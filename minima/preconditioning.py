"""An optimizer's step as theta <- theta - eta P^-1 m, and the eta at which it stops being stable.

Cohen et al. 2022, "Adaptive gradient methods at the edge of stability" (arXiv:2207.14484), write an
adaptive optimizer with a diagonal preconditioner P > 0 and momentum buffer m as

    m <- beta1 m + (1 - beta1) g,        theta <- theta - eta P^-1 m.

On a quadratic with Hessian H and P frozen, every eigenvector of P^-1 H (eigenvalue lam) evolves alone:
x <- x - eta m, m <- beta1 m + (1 - beta1) lam x, with characteristic polynomial
z^2 - (1 + beta1 - eta (1 - beta1) lam) z + beta1. For 0 <= beta1 < 1 and lam > 0 both roots lie inside
the unit circle exactly while

    lambda_1(P^-1 H) < (2 + 2 beta1) / ((1 - beta1) eta)     (2/eta at beta1 = 0, 2.44/eta at 0.1, 38/eta at 0.9)

and a root leaves through z = -1 there. `stability_threshold` is the one place this number is computed.

The update rules, read from the installed sources (torch 2.x optim/*.py, every code path: single-tensor,
foreach, fused, capturable; torch_optimizer 0.3.0; pytorch_optimizer 4.1.0), t the step count after the step:

- torch.optim.Adam: v <- beta2 v + (1 - beta2) g^2 and
  theta <- theta - eta/(1 - beta1^t) * m / (sqrt(v)/sqrt(1 - beta2^t) + eps), so
  P = (1 - beta1^t) (sqrt(v_hat) + eps), v_hat = v/(1 - beta2^t): eps sits outside the v bias correction
  and inside the m one. amsgrad uses max(v) so far in place of v. weight_decay adds wd*theta to g, hence
  to m (H becomes H + wd I); AdamW's decoupled decay is theta <- (1 - eta wd) theta first, outside m.
- torch.optim.Adagrad: s <- s + g^2 (s starts at initial_accumulator_value),
  theta <- theta - eta_t g/(sqrt(s) + eps), eta_t = eta/(1 + (t - 1) lr_decay): P = sqrt(s) + eps, m = g.
- torch_optimizer.Adahessian: D = |H z| for a Rademacher z (for 4-d weights the mean over each kernel's
  spatial dims), v <- beta2 v + (1 - beta2) D^2, m <- beta1 m + (1 - beta1) g and
  theta <- theta - eta (m/(1 - beta1^t) / (sqrt(v)^k/sqrt(1 - beta2^t)^k + eps) + wd theta), k =
  hessian_power: P = (1 - beta1^t)((sqrt(v_hat))^k + eps), as in the issue. The weight decay is decoupled
  and outside m (the m is of the raw gradient): it adds wd to every eigenvalue of P^-1 H in the iteration
  without momentum, about 1e-4 at the study's wd = 1e-4, against a threshold of 2.44/eta = 24.4.
- torch.optim.SGD: buf <- beta buf + (1 - d) g (buf = g at the first step), theta <- theta - eta buf:
  P = I, m = buf. The same polynomial with (1 - beta1) -> (1 - d) gives (2 + 2 beta)/((1 - d) eta): 2/eta
  without momentum, (2 + 2 beta)/eta for heavy ball. Nesterov steps along g + beta buf, whose polynomial
  crosses -1 at (2 + 2 beta)/((1 + 2 beta) eta); its step is not -eta buf, so `momentum_buffer` refuses it.
- pytorch_optimizer.SAM: theta~ = theta + rho g/||g|| (the norm in float32), then from theta the base
  optimizer's step with g~ = grad L(theta~): P, m and threshold are the base optimizer's, m built from g~.
  On a quadratic g~ = (I + rho H/||g||) H theta, so SAM's own threshold is lower; this module does not model it.

Conventions: tensors come shaped like the parameters, in `param_groups` order. Before the first step
(no state) there is no preconditioner and `preconditioner` raises RuntimeError; for Adagrad, which fills
its state at construction, that is step 0. Adagrad's eta_t and P are those of the step last taken.
maximize=True is refused. Imports only torch and math, the optimizer libraries lazily, so the module
can be lifted out as it is.
"""

import math

import torch

SUPPORTED = ("torch.optim.Adam (and AdamW)", "torch.optim.Adagrad", "torch.optim.SGD",
             "torch_optimizer.Adahessian", "pytorch_optimizer.SAM around any of these")


def _kind(optimizer):
    """('adam' | 'adagrad' | 'adahessian' | 'sgd', the optimizer whose state and param_groups step)."""
    for name, cls in (("adam", torch.optim.Adam), ("adagrad", torch.optim.Adagrad), ("sgd", torch.optim.SGD)):
        if isinstance(optimizer, cls):
            kind = name
            break
    else:
        kind = None
        # imported only now: each library costs about a second to import and may be absent
        try:
            from pytorch_optimizer import SAM
            if isinstance(optimizer, SAM):
                return _kind(optimizer.base_optimizer)
        except ImportError:
            pass
        try:
            from torch_optimizer import Adahessian
            if isinstance(optimizer, Adahessian):
                kind = "adahessian"
        except ImportError:
            pass
    if kind is None:
        raise TypeError(f"unsupported optimizer {type(optimizer).__module__}.{type(optimizer).__qualname__}; "
                        f"supported: {', '.join(SUPPORTED)}")
    if any(group.get("maximize", False) for group in optimizer.param_groups):
        raise ValueError("maximize=True is not supported: the threshold is for descent on the loss")
    return kind, optimizer


def _state(optimizer, p, key):
    state = optimizer.state.get(p, {})
    if key not in state or ("step" in state and float(state["step"]) == 0):
        raise RuntimeError(f"{type(optimizer).__name__} has no preconditioner before its first step "
                           f"(no {key!r} in the state of a parameter of shape {tuple(p.shape)})")
    return state


def _uniform(optimizer, what, value):
    """The one value `value(group)` takes over all param groups: one threshold needs one eta and beta."""
    values = {value(group) for group in optimizer.param_groups}
    if len(values) != 1:
        raise ValueError(f"the param groups differ in {what} ({sorted(values)}); one threshold needs one value")
    return values.pop()


def preconditioner(optimizer) -> list[torch.Tensor]:
    """P > 0 of the step last taken, one tensor per parameter: the step was theta -= eta_t P^-1 m.

    Adam: (1 - beta1^t)(sqrt(v)/sqrt(1 - beta2^t) + eps), v = exp_avg_sq (max_exp_avg_sq with amsgrad).
    Adagrad: sqrt(sum) + eps. Adahessian: (1 - beta1^t)(sqrt(v)^k/sqrt(1 - beta2^t)^k + eps),
    v = exp_hessian_diag_sq, k = hessian_power. SGD, and SAM around SGD: ones.
    Raises RuntimeError before the first step (see the module docstring for the update rules).
    """
    kind, opt = _kind(optimizer)
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            if kind == "sgd":
                out.append(torch.ones_like(p))
            elif kind == "adagrad":
                out.append(_state(opt, p, "sum")["sum"].sqrt() + group["eps"])
            else:
                state = _state(opt, p, "exp_avg")
                t = float(state["step"])
                beta1, beta2 = (float(b) for b in group["betas"])
                if kind == "adam":
                    v = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
                    root = v.sqrt() / math.sqrt(1 - beta2**t)
                else:
                    k = group["hessian_power"]
                    root = state["exp_hessian_diag_sq"].sqrt() ** k / math.sqrt(1 - beta2**t) ** k
                out.append((1 - beta1**t) * (root + group["eps"]))
    return out


def momentum_buffer(optimizer) -> list[torch.Tensor]:
    """The m of the step last taken, theta -= eta_t P^-1 m: the buffers themselves, not copies.

    Adam and Adahessian: exp_avg. SGD with momentum: momentum_buffer. SGD without momentum and Adagrad:
    p.grad, so read it before zero_grad; with weight_decay their m is p.grad + wd*theta at the weights
    before the step, which are gone, so that case is refused. SAM: its base optimizer's, from the
    gradient at the perturbed point (SAM's second_step(zero_grad=True) clears that p.grad).
    """
    kind, opt = _kind(optimizer)
    out = []
    for group in opt.param_groups:
        if kind == "sgd" and group["nesterov"]:
            raise ValueError("Nesterov SGD steps along g + momentum * buf: its step is not -lr * (one buffer)")
        momentum = kind in ("adam", "adahessian") or (kind == "sgd" and group["momentum"] != 0)
        if not momentum and group["weight_decay"] != 0:
            raise ValueError(f"{type(opt).__name__} with weight_decay: m = p.grad + weight_decay * (the weights "
                             "before the step), which are no longer there")
        for p in group["params"]:
            if momentum:
                key = "momentum_buffer" if kind == "sgd" else "exp_avg"
                out.append(_state(opt, p, key)[key])
            elif p.grad is None:
                raise RuntimeError(f"p.grad is None for a parameter of shape {tuple(p.shape)}: "
                                   f"{type(opt).__name__}'s m is the gradient, read it before zero_grad")
            else:
                out.append(p.grad)
    return out


def effective_lr(optimizer) -> float:
    """eta_t of the step last taken (Adagrad: lr/(1 + (t - 1) lr_decay)); lr for the others."""
    kind, opt = _kind(optimizer)
    lr = _uniform(opt, "lr", lambda group: float(group["lr"]))
    if kind != "adagrad":
        return lr
    lr_decay = _uniform(opt, "lr_decay", lambda group: float(group["lr_decay"]))
    t = {float(_state(opt, p, "sum")["step"]) for group in opt.param_groups for p in group["params"]}
    if len(t) != 1:
        raise ValueError(f"Adagrad's parameters have taken different numbers of steps ({sorted(t)})")
    return lr / (1 + (t.pop() - 1) * lr_decay)


def stability_threshold(optimizer) -> float:
    """The lambda_1(P^-1 H) above which the step, P frozen, is unstable on a quadratic.

    Adam, Adahessian: (2 + 2 beta1)/((1 - beta1) eta). Adagrad: 2/eta_t. SGD (and SAM around it):
    (2 + 2 beta)/((1 - dampening) eta), 2/eta without momentum; Nesterov (2 + 2 beta)/((1 + 2 beta) eta).
    Needs no state except Adagrad's step count.
    """
    kind, opt = _kind(optimizer)
    eta = effective_lr(optimizer)
    if kind == "adagrad":
        return 2 / eta
    if kind in ("adam", "adahessian"):
        beta1 = _uniform(opt, "betas[0]", lambda group: float(group["betas"][0]))
        return (2 + 2 * beta1) / ((1 - beta1) * eta)
    beta = _uniform(opt, "momentum", lambda group: float(group["momentum"]))
    if _uniform(opt, "nesterov", lambda group: bool(group["nesterov"])):
        return (2 + 2 * beta) / ((1 + 2 * beta) * eta)
    dampening = _uniform(opt, "dampening", lambda group: float(group["dampening"])) if beta else 0.0
    if dampening >= 1:
        raise ValueError("SGD with dampening >= 1 never takes a new gradient into its buffer")
    return (2 + 2 * beta) / ((1 - dampening) * eta)
