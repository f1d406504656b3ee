"""IDX files, the raw format MNIST and Fashion-MNIST come in: writing and checking them, and fetching them.

``write_idx`` writes one (tests and benchmarks make tiny datasets with it);
``idx_intact`` checks a header against the file's size; ``file_md5`` hashes a
file in blocks; ``bounded_download`` runs torchvision's download of either
dataset, given up after a time limit. ``minima.data`` and ``minima.fashion``
both use these, and this module imports nothing of ours.
"""

import contextlib
import hashlib
import io
import socket
import threading
from pathlib import Path

import numpy as np


def file_md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def bounded_download(class_name, data_dir, timeout_s) -> str | None:
    """``torchvision.datasets.<class_name>(data_dir, download=True)``, given up after ``timeout_s``."""
    import torchvision.datasets
    reader = getattr(torchvision.datasets, class_name)  # looked up now: tests stand a stalled server in for it
    outcome = {}

    def attempt():
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                reader(str(data_dir), train=True, download=True)
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


def idx_intact(path: Path) -> bool:
    """Whether the file is a uint8 IDX file (1 or 3 dimensions) whose header matches its size."""
    blob = path.read_bytes()
    ndim = blob[3] if len(blob) >= 4 else 0
    dims = ([int.from_bytes(blob[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
            if len(blob) >= 4 + 4 * ndim else [])
    expected = 4 + 4 * ndim + int(np.prod(dims)) if dims else -1
    return blob[:3] == b"\x00\x00\x08" and ndim in (1, 3) and len(blob) == expected
