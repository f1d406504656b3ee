"""The generalization measures against closed forms, a dense Hessian, and the rescaling symmetry of ReLU nets."""

import math

import pytest
import torch
from curvature_cases import CE, batch, dense_hessian, mlp
from torch import nn

from cnn_architectures import LeNet5
from minima import measures


class Point(nn.Module):
    """Returns its own weights: with `half_quadratic` the loss is 1/2 sum_i h_i (w_i - c_i)^2."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w.clone())

    def forward(self, x):
        return self.w


def quadratic_at_minimum(d=50, seed=0):
    """A diagonal quadratic whose minimum is the current (nonzero) weights: Hessian diag(h), gradient zero."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, generator=g, dtype=torch.float64)
    h = torch.rand(d, generator=g, dtype=torch.float64) * 3 + 0.1
    model = Point(w)

    def half_quadratic(out, target):
        return 0.5 * (h * (out - target) ** 2).sum()

    return model, half_quadratic, torch.zeros(1), w.clone(), h, w


def test_adaptive_worst_case_is_the_corner_of_the_box_on_a_quadratic():
    model, crit, x, y, h, w = quadratic_at_minimum()
    for rho in (0.01, 0.1):
        expected = float(0.5 * (h * (rho * w.abs()) ** 2).sum())
        assert measures.adaptive_worst_case(model, crit, x, y, rho) == pytest.approx(expected, rel=1e-12)


def test_adaptive_average_case_matches_its_closed_form_within_its_error():
    model, crit, x, y, h, w = quadratic_at_minimum()
    rho = 0.05
    out = measures.adaptive_average_case(model, crit, x, y, rho, n_samples=400)
    expected = float(0.5 * rho ** 2 * (h * w ** 2).sum())
    assert abs(out["mean"] - expected) < 4 * out["se"] and out["se"] < 0.05 * expected


def test_pac_bayes_sigma_solves_its_equation_on_a_quadratic():
    model, crit, x, y, h, w = quadratic_at_minimum()
    threshold = 0.01
    out = measures.pac_bayes_flatness(model, crit, x, y, threshold=threshold, n_samples=400)
    sigma = math.sqrt(2 * threshold / float((h * w ** 2).sum()))    # sigma^2 / 2 sum h_i w_i^2 = threshold
    assert out["sigma"] == pytest.approx(sigma, rel=0.03)
    assert out["flatness"] == pytest.approx(1 / out["sigma"] ** 2)


def test_hutchinson_trace_and_diagonal_against_the_dense_hessian():
    model, crit, x, y, h, w = quadratic_at_minimum()
    out = measures.hutchinson(model, crit, x, y, n_probes=8)
    # a diagonal Hessian: every probe gives z * Hz = diag(H) exactly
    assert out["trace"] == pytest.approx(float(h.sum()), rel=1e-12) and out["trace_se"] < 1e-12
    assert out["sqrt_diag_trace"] == pytest.approx(float(h.sqrt().sum()), rel=1e-12)
    model, (x, y) = mlp(), batch()
    H = dense_hessian(model, CE, x, y)
    out = measures.hutchinson(model, CE, x, y, n_probes=400, seed=1)
    assert abs(out["trace"] - float(H.trace())) < 4 * out["trace_se"]
    exact = float(H.diagonal().clamp(min=0).sqrt().sum())
    assert abs(out["sqrt_diag_trace"] - exact) < 4 * out["sqrt_diag_trace_se"] + 0.02 * exact


def test_the_baselines():
    model, (x, y) = mlp(), batch()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert measures.weight_norm(model) == pytest.approx(float(flat.norm()))
    assert measures.distance_from_init(model, model) == 0.0
    logits = model(x).detach()
    margins = sorted(float(logits[i, y[i]] - torch.cat([logits[i, :y[i]], logits[i, y[i] + 1:]]).max())
                     for i in range(len(y)))
    assert measures.output_margin(model, x, y) == pytest.approx(float(torch.quantile(torch.tensor(margins), 0.1)))


def _rescaled(model, alpha):
    """conv2's weights and bias times alpha, conv3's weights divided by it: the same function for ReLU."""
    other = LeNet5(activation="relu").double()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.conv2.weight.mul_(alpha)
        other.conv2.bias.mul_(alpha)
        other.conv3.weight.div_(alpha)
    return other


def test_adaptive_measures_survive_rescaling_and_lambda1_and_the_trace_do_not():
    torch.manual_seed(0)
    model = LeNet5(activation="relu").double()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, 32, 32, generator=g, dtype=torch.float64)
    y = torch.randint(0, 10, (32,), generator=g)
    other = _rescaled(model, 4.0)
    assert torch.allclose(model(x), other(x), rtol=1e-12, atol=1e-12)   # the same function
    lam, lam2 = (measures.lambda_max(m, CE, x, y) for m in (model, other))
    tr, tr2 = (measures.hutchinson(m, CE, x, y, n_probes=10)["trace"] for m in (model, other))
    assert abs(lam2 / lam - 1) > 0.05 and abs(tr2 / tr - 1) > 0.05
    for fn in (lambda m: measures.adaptive_worst_case(m, CE, x, y, rho=0.05),
               lambda m: measures.adaptive_average_case(m, CE, x, y, rho=0.05)["mean"],
               lambda m: measures.pac_bayes_flatness(m, CE, x, y, threshold=1e-4)["sigma"]):
        assert fn(other) == pytest.approx(fn(model), rel=1e-9)
    assert 0 < measures.pac_bayes_flatness(model, CE, x, y, threshold=1e-4)["sigma"] < 0.5  # found by bisection


def test_pac_bayes_returns_the_ends_of_its_range_when_the_threshold_is_outside_it():
    model, crit, x, y, h, w = quadratic_at_minimum()
    flat = measures.pac_bayes_flatness(model, crit, x, y, threshold=1e9, sigma_max=0.5)
    sharp = measures.pac_bayes_flatness(model, crit, x, y, threshold=1e-30, sigma_min=1e-3)
    assert flat["sigma"] == 0.5 and sharp["sigma"] == 1e-3 and sharp["flatness"] == pytest.approx(1e6)


def test_the_worst_case_rounding_is_the_float32_increase_against_float64():
    model, crit, x, y, h, w = quadratic_at_minimum()
    small = Point(w.float())
    h32 = h.float()
    best, rounding = measures.adaptive_worst_case(small, lambda o, t: 0.5 * (h32 * (o - t) ** 2).sum(),
                                                  torch.zeros(1), w.float(), 0.01, rounding=True)
    expected = float(0.5 * (h * (0.01 * w.abs()) ** 2).sum())
    assert rounding == pytest.approx(abs(best - expected), abs=1e-9) and 0 < rounding < 1e-3 * expected
