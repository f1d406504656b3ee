"""preconditioning.py against the optimizers themselves, on a float64 quadratic 0.5 th^T A th - b^T th."""

import pytest
import torch
import torch_optimizer
from pytorch_optimizer import SAM

from minima.preconditioning import effective_lr, momentum_buffer, preconditioner, stability_threshold

torch.set_num_threads(1)
SHAPES = ((2, 3), (6,))   # two parameter tensors, one of them 2-d, twelve numbers in all
N = 12
RHO = 0.05


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(N, N, generator=g, dtype=torch.float64))
    a = q @ torch.diag(torch.logspace(-1, 1, N, dtype=torch.float64)) @ q.T
    b = torch.randn(N, generator=g, dtype=torch.float64)
    params = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in SHAPES]
    return a, b, params


def flat(tensors):
    return torch.cat([t.detach().reshape(-1) for t in tensors])


def loss(a, b, params):
    th = torch.cat([p.reshape(-1) for p in params])
    return 0.5 * th @ a @ th - b @ th


# name: (build, decoupled weight decay: the step's extra -lr * wd * theta outside m)
CASES = {
    "adam": (lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.9, 0.99)), 0.0),
    "adam_amsgrad_l2": (lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True, weight_decay=0.1), 0.0),
    "adamw": (lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1), 0.1),
    "adagrad": (lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.3, initial_accumulator_value=0.1), 0.0),
    "adahessian": (lambda ps: torch_optimizer.Adahessian(ps, lr=0.1, betas=(0.1, 0.1), weight_decay=0.0), 0.0),
    "adahessian_wd": (lambda ps: torch_optimizer.Adahessian(ps, lr=0.1, betas=(0.1, 0.1), weight_decay=1e-2), 1e-2),
    "sgd": (lambda ps: torch.optim.SGD(ps, lr=0.05), 0.0),
    "sgd_momentum": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), 0.0),
    "sgd_dampening_l2": (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.5, dampening=0.3, weight_decay=0.1), 0.0),
    "sam": (lambda ps: SAM(ps, base_optimizer=torch.optim.SGD, lr=0.05, rho=RHO), 0.0),
}


def take_step(opt, a, b, params):
    """One step as the study takes it: SAM's two passes, Adahessian's create-graph backward."""
    opt.zero_grad()
    if isinstance(opt, SAM):
        loss(a, b, params).backward()
        opt.first_step(zero_grad=True)
        loss(a, b, params).backward()
        opt.second_step(zero_grad=True)
    else:
        loss(a, b, params).backward(create_graph=isinstance(opt, torch_optimizer.Adahessian))
        opt.step()


def rel_err(x, y):
    return ((x - y).norm() / y.norm()).item()


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("case", CASES)
def test_step_is_minus_lr_times_preconditioned_momentum(case):
    torch.manual_seed(0)   # Adahessian's Hutchinson probes come from the global RNG
    build, decay = CASES[case]
    a, b, params = problem()
    opt = build(params)
    for _ in range(3):
        take_step(opt, a, b, params)
    before = flat(params)
    if isinstance(opt, SAM):   # the two passes by hand, to see the perturbed point
        opt.zero_grad()
        loss(a, b, params).backward()
        opt.first_step(zero_grad=True)
        perturbed = flat(params)
        g = a @ before - b
        # SAM's gradient norm is taken in float32, so its perturbation agrees with float64 to ~1e-7
        assert rel_err(perturbed - before, RHO * g / g.norm()) < 1e-6
        loss(a, b, params).backward()
        opt.second_step(zero_grad=True)
        m = a @ perturbed - b   # the base SGD step from `before` with the gradient at the perturbed point
    else:
        take_step(opt, a, b, params)
        m = flat(momentum_buffer(opt))
    p_list = preconditioner(opt)
    assert [tuple(p.shape) for p in p_list] == list(SHAPES)
    p = flat(p_list)
    assert (p > 0).all()
    if case in ("sgd", "sgd_momentum", "sgd_dampening_l2", "sam"):
        assert torch.equal(p, torch.ones(N, dtype=torch.float64))
    delta = flat(params) - before
    expected = -effective_lr(opt) * (m / p + decay * before)
    assert rel_err(delta, expected) < 1e-12
    if decay:   # the decoupled decay is visible at this tolerance: leaving it out fails
        assert rel_err(delta, -effective_lr(opt) * m / p) > 1e-6


def test_state_matches_a_replay_of_the_gradients():
    """m and P rebuilt from the gradient history by the textbook recursions, not from the state."""
    a, b, params = problem()
    for build, beta1, beta2 in (
        (lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.9, 0.99), eps=1e-3), 0.9, 0.99),
        (lambda ps: torch.optim.Adagrad(ps, lr=0.1, lr_decay=0.3, initial_accumulator_value=0.1, eps=1e-3), 0, 1),
        (lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9), 0.9, None),
    ):
        ps = [p.detach().clone().requires_grad_() for p in params]
        opt = build(ps)
        grads = []
        for _ in range(5):
            grads.append(a @ flat(ps) - b)
            take_step(opt, a, b, ps)
        t = len(grads)
        if isinstance(opt, torch.optim.Adam):
            m = sum((1 - beta1) * beta1 ** (t - i) * g for i, g in enumerate(grads, 1))
            v = sum((1 - beta2) * beta2 ** (t - i) * g**2 for i, g in enumerate(grads, 1))
            p = (1 - beta1**t) * ((v / (1 - beta2**t)).sqrt() + 1e-3)
        elif isinstance(opt, torch.optim.Adagrad):
            m, p = grads[-1], (0.1 + sum(g**2 for g in grads)).sqrt() + 1e-3
        else:   # heavy ball: buf = g_1, then buf <- 0.9 buf + g
            m, p = sum(beta1 ** (t - i) * g for i, g in enumerate(grads, 1)), torch.ones(N, dtype=torch.float64)
        assert rel_err(flat(momentum_buffer(opt)), m) < 1e-12
        assert rel_err(flat(preconditioner(opt)), p) < 1e-12


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_thresholds_exact_values():
    a, b, params = problem()
    assert stability_threshold(torch.optim.Adam(params, lr=2e-4)) == pytest.approx(190000, rel=1e-12)
    assert stability_threshold(torch.optim.Adam(params, lr=0.1, betas=(0.0, 0.9))) == pytest.approx(20, rel=1e-12)
    ah = torch_optimizer.Adahessian(params, lr=0.1, betas=(0.1, 0.1))
    assert stability_threshold(ah) == pytest.approx((2.2 / 0.9) / 0.1, rel=1e-12)   # 2.44/eta
    assert stability_threshold(torch.optim.SGD(params, lr=0.1)) == pytest.approx(20, rel=1e-12)
    assert stability_threshold(torch.optim.SGD(params, lr=0.1, momentum=0.9)) == pytest.approx(38, rel=1e-12)
    assert stability_threshold(torch.optim.SGD(params, lr=0.1, momentum=0.5, dampening=0.5)) == pytest.approx(60)
    assert stability_threshold(torch.optim.SGD(params, lr=0.1, momentum=0.5, nesterov=True)) == pytest.approx(15)
    assert stability_threshold(SAM(params, base_optimizer=torch.optim.SGD, lr=0.1)) == pytest.approx(20, rel=1e-12)
    adagrad = torch.optim.Adagrad(params, lr=0.01, lr_decay=0.5)
    for _ in range(3):
        take_step(adagrad, a, b, params)
    # eta_3 = 0.01/(1 + 2 * 0.5)
    assert effective_lr(adagrad) == pytest.approx(0.005, rel=1e-12)
    assert stability_threshold(adagrad) == pytest.approx(400, rel=1e-12)


def diverges(step, theta, n=1000):
    """True when ||theta|| passes 1e6 ||theta_0||; False when it ends below ||theta_0||."""
    start = theta.norm()
    for _ in range(n):
        theta = step(theta)
        if theta.norm() > 1e6 * start:
            return True
    assert theta.norm() < start, "neither converging nor diverging"
    return False


@pytest.mark.parametrize("hyper", [dict(), dict(momentum=0.9), dict(momentum=0.5, dampening=0.3),
                                   dict(momentum=0.9, nesterov=True)])
@pytest.mark.parametrize("factor", [0.98, 1.02])
def test_sgd_diverges_just_above_its_threshold(hyper, factor):
    """torch's SGD itself on 0.5 th^T cA th, c putting lambda_1(cA) at factor * threshold."""
    a, _, params = problem()
    opt = torch.optim.SGD(params, lr=0.1, **hyper)
    a = a * factor * stability_threshold(opt) / torch.linalg.eigvalsh(a)[-1]

    def step(theta):
        opt.zero_grad()
        loss(a, torch.zeros(N, dtype=torch.float64), params).backward()
        opt.step()
        return flat(params)

    assert diverges(step, flat(params)) == (factor > 1)


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
@pytest.mark.parametrize("build", [lambda ps: torch.optim.Adam(ps, lr=1e-2),
                                   lambda ps: torch_optimizer.Adahessian(ps, lr=0.1, betas=(0.1, 0.1))])
@pytest.mark.parametrize("factor", [0.98, 1.02])
def test_frozen_preconditioner_diverges_just_above_threshold(build, factor):
    """m <- beta1 m + (1 - beta1) g, theta <- theta - eta P^-1 m with the optimizer's P frozen."""
    torch.manual_seed(0)
    a, b, params = problem()
    opt = build(params)
    for _ in range(3):
        take_step(opt, a, b, params)
    p = flat(preconditioner(opt))
    eta, beta1 = opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]
    lam1 = torch.linalg.eigvalsh(a / torch.outer(p.sqrt(), p.sqrt()))[-1]   # P^-1 A is similar to this
    a = a * factor * stability_threshold(opt) / lam1
    m = torch.zeros(N, dtype=torch.float64)

    def step(theta):
        nonlocal m
        m = beta1 * m + (1 - beta1) * (a @ theta)
        return theta - eta * m / p

    assert diverges(step, flat(params)) == (factor > 1)


def test_bad_input():
    a, b, params = problem()
    with pytest.raises(TypeError, match=r"RMSprop.*Adam.*Adagrad.*SGD.*Adahessian.*SAM"):
        preconditioner(torch.optim.RMSprop(params))
    with pytest.raises(TypeError, match="supported"):
        stability_threshold(torch.optim.RMSprop(params))
    with pytest.raises(RuntimeError, match="first step"):
        preconditioner(torch.optim.Adam(params))
    with pytest.raises(RuntimeError, match="first step"):   # Adagrad's state exists, at step 0
        preconditioner(torch.optim.Adagrad(params))
    with pytest.raises(ValueError, match="Nesterov"):
        momentum_buffer(torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True))
    with pytest.raises(ValueError, match="weight_decay"):
        momentum_buffer(torch.optim.SGD(params, lr=0.1, weight_decay=1e-4))
    with pytest.raises(ValueError, match="maximize"):
        preconditioner(torch.optim.Adam(params, maximize=True))
    two_lrs = torch.optim.Adam([{"params": params[:1], "lr": 0.1}, {"params": params[1:], "lr": 0.2}])
    with pytest.raises(ValueError, match="lr"):
        stability_threshold(two_lrs)
    sgd = torch.optim.SGD(params, lr=0.1)
    with pytest.raises(RuntimeError, match="zero_grad"):
        momentum_buffer(sgd)
