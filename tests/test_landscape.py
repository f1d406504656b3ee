"""landscape.py: vectorised surface = plain loop, filter normalisation, no side effects."""


import numpy as np
import pytest
import torch
from torch import nn

from cnn_architectures import LeNet5
from minima import landscape


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches: a second thread only adds contention on a shared machine. Restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ALPHAS = np.linspace(-1, 1, 7)      # contains 0 at index 3
BETAS = np.linspace(-0.5, 1.0, 4)   # a different length, so a transposed result cannot pass; 0 at index 1


def lenet_batch(dtype=torch.float64, n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = LeNet5(num_classes=10)
    with torch.no_grad():  # weights from a local generator: independent of test order
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    inputs = torch.rand(n, 1, 32, 32, generator=gen)
    targets = torch.randint(0, 10, (n,), generator=gen)
    return model.to(dtype), inputs.to(dtype), targets


def small_bn_dropout_model():
    """Buffers (BatchNorm running stats) and train-mode randomness (Dropout): eval mode must be used."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Tanh(), nn.Flatten(),
                          nn.Dropout(0.5), nn.Linear(4 * 30 * 30, 10)).double()
    with torch.no_grad():  # non-trivial running stats, as after training
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2.0)
    return model


def directions(model):
    return (landscape.filter_normalized_direction(model, seed=1),
            landscape.filter_normalized_direction(model, seed=2))


CE = nn.CrossEntropyLoss()


# -----------------------------------------------------------------------------
# vectorised = sequential

@pytest.mark.parametrize("chunk_size", [None, 1, 5, 64])  # default, no vmap, ragged last chunk, one chunk
def test_surface_equals_sequential_float64(chunk_size):
    # float64, so accumulation-order differences between grouped (vmapped) and
    # plain convolutions stay ~1e-15; the 1e-6 bound then tests the algorithm, not rounding
    model, x, y = lenet_batch(torch.float64)
    d1, d2 = directions(model)
    vec = landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, BETAS, chunk_size=chunk_size)
    seq = landscape.loss_surface_sequential(model, CE, x, y, d1, d2, ALPHAS, BETAS)
    assert vec.shape == seq.shape == (len(ALPHAS), len(BETAS))
    np.testing.assert_allclose(vec, seq, rtol=0, atol=1e-6)
    assert np.ptp(seq) > 1e-2  # the grid really moves the loss, so equality is not trivial


def test_surface_equals_sequential_float32():
    # float32 as the notebooks run it: the weights are bitwise the same in both
    # paths, only the summation order inside the convolutions differs
    model, x, y = lenet_batch(torch.float32)
    d1, d2 = directions(model)
    vec = landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, chunk_size=8)
    seq = landscape.loss_surface_sequential(model, CE, x, y, d1, d2, ALPHAS)
    assert vec.shape == (7, 7)
    np.testing.assert_allclose(vec, seq, rtol=0, atol=1e-5)


def test_surface_with_buffers_and_dropout_equals_sequential():
    model = small_bn_dropout_model()
    x, y = torch.rand(6, 1, 32, 32, dtype=torch.float64), torch.arange(6)
    d1, d2 = directions(model)
    vec = landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, BETAS, chunk_size=3)
    seq = landscape.loss_surface_sequential(model, CE, x, y, d1, d2, ALPHAS, BETAS)
    np.testing.assert_allclose(vec, seq, rtol=0, atol=1e-6)


def test_line_equals_surface_row_column_and_sequential():
    model, x, y = lenet_batch(torch.float64)
    d1, d2 = directions(model)
    surface = landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, BETAS, chunk_size=5)
    along_d1 = landscape.loss_along_line(model, CE, x, y, d1, ALPHAS)
    along_d2 = landscape.loss_along_line(model, CE, x, y, d2, BETAS, chunk_size=3)
    assert along_d1.shape == (len(ALPHAS),) and along_d2.shape == (len(BETAS),)
    np.testing.assert_allclose(along_d1, surface[:, 1], rtol=0, atol=1e-6)  # BETAS[1] = 0
    np.testing.assert_allclose(along_d2, surface[3, :], rtol=0, atol=1e-6)  # ALPHAS[3] = 0
    zero = [torch.zeros_like(d) for d in d2]
    seq = landscape.loss_surface_sequential(model, CE, x, y, d1, zero, ALPHAS, [0.0])[:, 0]
    np.testing.assert_allclose(along_d1, seq, rtol=0, atol=1e-6)


def test_origin_equals_plain_loss_in_eval_mode():
    model = small_bn_dropout_model().train()  # dropout active in train mode: must not be used
    x, y = torch.rand(6, 1, 32, 32, dtype=torch.float64), torch.arange(6)
    d1, d2 = directions(model)
    with torch.no_grad():
        expected = CE(model.eval()(x), y).item()
    model.train()
    surface = landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, BETAS, chunk_size=4)
    assert surface[3, 1] == pytest.approx(expected, abs=1e-12)
    lenet, x, y = lenet_batch(torch.float32)
    with torch.no_grad():
        expected = CE(lenet(x), y).item()
    assert landscape.loss_surface(lenet, CE, x, y, *directions(lenet), [0.0])[0, 0] == pytest.approx(expected, abs=1e-6)


# -----------------------------------------------------------------------------
# filter normalisation

def test_filter_normalized_direction():
    model, _, _ = lenet_batch(torch.float32)
    rng_before = torch.get_rng_state()
    d = landscape.filter_normalized_direction(model, seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before)
    params = list(model.parameters())
    assert len(d) == len(params)
    n_multi = 0
    for p, q in zip(params, d):
        assert q.shape == p.shape and q.dtype == p.dtype and q.device == p.device
        if p.dim() <= 1:
            assert torch.count_nonzero(q) == 0
        else:
            n_multi += 1
            torch.testing.assert_close(q.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1),
                                       rtol=1e-5, atol=0)
            assert not torch.allclose(q, p)  # a random direction, not the weights themselves
    assert n_multi == 5  # 3 conv + 2 linear weights
    same = landscape.filter_normalized_direction(model, seed=7)
    other = landscape.filter_normalized_direction(model, seed=8)
    assert all(torch.equal(a, b) for a, b in zip(d, same))
    assert not torch.allclose(d[0], other[0])


# -----------------------------------------------------------------------------
# no side effects

def test_model_left_exactly_as_found():
    model = small_bn_dropout_model().train()
    model[1].eval()  # a mixed mode must come back mixed, not flattened to train()
    x, y = torch.rand(6, 1, 32, 32, dtype=torch.float64), torch.arange(6)
    CE(model(x), y).backward()  # populated .grad, as after a training step
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    modes = [m.training for m in model.modules()]
    d1, d2 = directions(model)
    landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, BETAS, chunk_size=5)
    landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, BETAS, chunk_size=1)
    landscape.loss_along_line(model, CE, x, y, d1, ALPHAS)
    landscape.loss_surface_sequential(model, CE, x, y, d1, d2, ALPHAS, BETAS)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))
    assert [m.training for m in model.modules()] == modes


# -----------------------------------------------------------------------------
# bad input

def test_bad_input_raises_value_error():
    model, x, y = lenet_batch(torch.float64, n=2)
    d1, d2 = directions(model)
    with pytest.raises(ValueError, match="alphas"):
        landscape.loss_surface(model, CE, x, y, d1, d2, [])
    with pytest.raises(ValueError, match="betas"):
        landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, [])
    with pytest.raises(ValueError, match="alphas"):
        landscape.loss_along_line(model, CE, x, y, d1, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="alphas"):
        landscape.loss_surface_sequential(model, CE, x, y, d1, d2, [])
    with pytest.raises(ValueError, match="tensors"):
        landscape.loss_along_line(model, CE, x, y, d1[:-1], ALPHAS)
    with pytest.raises(ValueError, match="shape"):
        landscape.loss_surface(model, CE, x, y, d1, d2[:-1] + [d2[-1][:5]], ALPHAS)
    with pytest.raises(ValueError, match="shape"):
        landscape.loss_surface_sequential(model, CE, x, y, [d.transpose(0, -1) for d in d1], d2, ALPHAS)
    with pytest.raises(ValueError, match="chunk_size"):
        landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, chunk_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_runs_on_cuda():
    model, x, y = lenet_batch(torch.float64)
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    d1, d2 = directions(model)
    assert d1[0].is_cuda
    vec = landscape.loss_surface(model, CE, x, y, d1, d2, ALPHAS, BETAS)
    seq = landscape.loss_surface_sequential(model, CE, x, y, d1, d2, ALPHAS, BETAS)
    np.testing.assert_allclose(vec, seq, rtol=0, atol=1e-6)
