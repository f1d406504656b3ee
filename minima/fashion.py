"""Fashion-MNIST's raw files: where they come from, the checks, and where the run says they came from.

``provide`` puts the four IDX files in ``<data_dir>/FashionMNIST/raw/``
(``raw_folder``), taking, in order: the files already there; Debian's package
``dataset-fashion-mnist`` (its .gz files in ``FASHION_PACKAGE_DIR``, decompressed
into the raw folder atomically and checked against ``FASHION_FILES``);
torchvision's bounded download. It then checks them, and raises one StudyError
saying how to get the files when no source works. ``description`` names the
folder and the files' origin for the run's config. ``minima.data`` reads the
files with torchvision's reader and prepares them as it does MNIST's.
"""

import gzip
import hashlib
import subprocess
import zlib
from pathlib import Path

import params
from minima.idx import bounded_download, file_md5, idx_intact
from minima.runs import StudyError, atomic_write, save_text

FASHION_FILES = {  # raw IDX file -> md5 of its decompressed contents (Debian's .gz bytes differ from torchvision's)
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
FASHION_SIZES = {"train-images-idx3-ubyte": 47_040_016, "train-labels-idx1-ubyte": 60_008,
                 "t10k-images-idx3-ubyte": 7_840_016, "t10k-labels-idx1-ubyte": 10_008}  # bytes, decompressed
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_PACKAGE_DIR = Path(params.FASHION_PACKAGE_DIR)  # tests point it at a folder of their own
FASHION_ORIGIN = "origin.txt"  # written beside the raw files: where they came from, quoted in the description
FASHION_HOWTO = (f"install Debian's package (apt-get install {FASHION_PACKAGE}) or, online, download the files "
                 f"(data source auto or torchvision does it)")


def raw_folder(data_dir) -> Path:
    return Path(data_dir) / "FashionMNIST" / "raw"


def _download_fashion(data_dir, timeout_s) -> str | None:
    """Try torchvision's Fashion-MNIST download, bounded in time. Returns None on success, else the reason."""
    return bounded_download("FashionMNIST", data_dir, timeout_s)


def _verify_fashion(data_dir) -> None:
    """IDX headers against the file sizes; a file of the published size also against its published MD5.

    Smaller files (test fixtures, hand-made subsets) are only checked for
    intact headers: the MD5s hold for the full 60,000 / 10,000 only.
    """
    raw = raw_folder(data_dir)
    for name, md5 in FASHION_FILES.items():
        path = raw / name
        if not idx_intact(path):
            raise StudyError(f"corrupted Fashion-MNIST file {path}: the IDX header does not match its size "
                             f"({path.stat().st_size} bytes); delete {raw.parent} to have it rebuilt")
        if path.stat().st_size == FASHION_SIZES[name] and file_md5(path) != md5:
            raise StudyError(f"checksum mismatch for {path}: expected md5 {md5}, got {file_md5(path)}; "
                             f"delete {raw.parent} to have it rebuilt")


def _package_version() -> str:
    """The installed version of Debian's package, when the files are the package's own ('' if unknown)."""
    if FASHION_PACKAGE_DIR != Path(params.FASHION_PACKAGE_DIR):
        return ""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", FASHION_PACKAGE], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def _unpack_fashion(data_dir) -> None:
    """Decompress the package's four .gz files into the raw folder, each atomically and checked against its MD5.

    A file whose decompressed contents do not match never appears under its
    name (the temporary file is removed): one clear StudyError instead.
    """
    raw, package = raw_folder(data_dir), Path(FASHION_PACKAGE_DIR)
    reinstall = f"reinstall the package (apt-get install --reinstall {FASHION_PACKAGE})"
    for name, md5 in FASHION_FILES.items():
        gz = package / (name + ".gz")

        def write(f, gz=gz, md5=md5):
            h = hashlib.md5()
            with gzip.open(gz, "rb") as src:
                while True:
                    try:
                        block = src.read(1 << 20)
                    except (OSError, EOFError, zlib.error) as e:  # unreadable, truncated, not gzip
                        raise StudyError(f"cannot decompress {gz} ({e}); {reinstall}") from None
                    if not block:
                        break
                    h.update(block)
                    f.write(block)
            if h.hexdigest() != md5:
                raise StudyError(f"checksum mismatch for {gz}: its decompressed contents have md5 "
                                 f"{h.hexdigest()}, expected {md5}; {reinstall}")

        try:
            atomic_write(raw / name, write)
        except OSError as e:
            raise StudyError(f"cannot write Fashion-MNIST into {raw} ({e.strerror or e}); "
                             f"choose another data folder") from None
    version = _package_version()
    save_text(raw / FASHION_ORIGIN, f"decompressed from Debian's package {FASHION_PACKAGE}"
              + (f" {version}" if version else "") + f" ({package}), md5-checked\n")


def provide(data_dir, timeout_s) -> None:
    """Put Fashion-MNIST's four raw files in place: (a) already there, (b) Debian's package, (c) download.

    Raises one StudyError, saying how to get the files, when none works.
    """
    raw, package = raw_folder(data_dir), Path(FASHION_PACKAGE_DIR)
    if not all((raw / name).exists() for name in FASHION_FILES):
        if all((package / (name + ".gz")).exists() for name in FASHION_FILES):
            _unpack_fashion(data_dir)
        else:
            why = _download_fashion(data_dir, timeout_s)
            if why is not None:
                raise StudyError(f"Fashion-MNIST is not in {raw}, Debian's package files are not in {package}, "
                                 f"and torchvision's download failed ({why}); {FASHION_HOWTO}")
            save_text(raw / FASHION_ORIGIN, "downloaded by torchvision\n")
    _verify_fashion(data_dir)


def description(data_dir) -> str:
    """Stable from run to run (a resumed run compares it): the folder, and where its files came from."""
    raw = raw_folder(data_dir)
    origin = raw / FASHION_ORIGIN
    return f"torchvision FashionMNIST from {raw}" + (f", {origin.read_text().strip()}" if origin.exists() else "")
