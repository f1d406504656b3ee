"""The run folder: its file names, atomic writes, the lock, status, discovery, provenance, and StudyError.

Every writer and every reader of a run folder goes through this module:
notebooks (through ``helpers``), the runner, sweeps, the report and the
facts. It does not import torch (``save_torch`` and ``load_torch`` import it
when called), so the report and status stay light.

A run folder is ``<root>/<optimizer>/seed<k>/`` (``<root>/sweeps/<name>/<optimizer>-<setting>/seed<k>/``
for sweeps). Its files, written atomically (temporary file, fsync, rename, the
mode the umask allows), with ``done`` written last::

    config.json  history.csv  final.json  model.pt  spectrum.csv  sharpness.csv  tracking.csv
    equal_loss.csv  curvature.json  density.npz  landscape.npz  notebook.ipynb  done
    (while running: checkpoint.pt, hvp-journal/, lock; on failure: error.txt; sweeps: job.log)
"""

import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minima import schema
from minima.errors import StudyError  # noqa: F401 - re-exported: the package's error
from minima.lock import ALIVE_S, HEARTBEAT_S, RunLock, file_mode  # noqa: F401 - re-exported: the run folder's lock

REPO_ROOT = Path(__file__).resolve().parents[1]

# the result files, named (and their contents declared) in minima.schema
CONFIG, HISTORY, FINAL, MODEL = schema.CONFIG_FILE, schema.HISTORY_FILE, schema.FINAL_FILE, schema.MODEL_FILE
SPECTRUM, SHARPNESS, CURVATURE = schema.SPECTRUM_FILE, schema.SHARPNESS_FILE, schema.CURVATURE_FILE
TRACKING, EQUAL_LOSS = schema.TRACKING_FILE, schema.EQUAL_LOSS_FILE
DENSITY, LANDSCAPE, NOTEBOOK = schema.DENSITY_FILE, schema.LANDSCAPE_FILE, "notebook.ipynb"
STOP, STOP_MODEL = schema.STOP_FILE, schema.STOP_MODEL_FILE
CHECKPOINT, DONE, ERROR, JOB_LOG, LOCK = "checkpoint.pt", "done", "error.txt", "job.log", "lock"
HVP_JOURNAL = "hvp-journal"   # the final analysis's saved products (curvature.HvpJournal), for a resume
# config["hessian"] keys that choose how the large-batch eigenvalues are solved, not what they are (each path is
# certified to the same tolerance); a run recorded before they existed solved in float64, in chunks of 1,000
LEGACY_SOLVER = {"full_data_precision": "float64", "full_data_chunk": 1000}
CSV_FILES = (HISTORY, SPECTRUM, SHARPNESS, TRACKING, EQUAL_LOSS)
JSON_FILES = (CONFIG, FINAL, CURVATURE)
NPZ_FILES = (DENSITY, LANDSCAPE)

GIT_STATUS_TIMEOUT_S = 120   # the dirty check of `git_commit`

STATUSES = ("done", "diverged", "failed", "running", "incomplete")
NAME_RULE = r"[A-Za-z0-9][A-Za-z0-9_.-]*"   # sweep names


# ---------------------------------------------------------------------------- names

def setting_tag(overrides) -> str:
    """``{"lr": 0.0316}`` -> ``lr0.0316``; the folder name of a sweep setting (``default`` when empty)."""
    tag = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(overrides.items()))
    return tag or "default"


def check_experiment_name(name) -> str:
    """An experiment's folder under the results: one or more names joined by '/', e.g. ``projected/early``."""
    parts = str(name).split("/")
    if not isinstance(name, str) or not all(re.fullmatch(NAME_RULE, part) for part in parts):
        raise StudyError(f"experiment {name!r} must be names of letters, digits, '.', '_' or '-', joined by '/'")
    return name


def run_dir_for(config) -> Path:
    """``<results>/<optimizer>/seed<k>/``, or ``<results>/sweeps/<name>/<optimizer>-<setting>/seed<k>/``.

    A run of an experiment (``config["experiment"]``, e.g. ``projected/early``)
    goes to ``<results>/<experiment>/<optimizer>-<setting>/seed<k>/``, named like a sweep's.

    A run on another dataset than MNIST goes one level down, under the
    dataset's name: ``<results>/fashion-mnist/<optimizer>/seed<k>/``, so that
    MNIST's paths stay as they were and a study folder holds one dataset.
    Sweeps keep ``<results>/sweeps/<name>/`` (their manifest records the dataset).
    """
    root = Path(config["results_dir"])
    if config.get("sweep"):
        setting = f"{config['optimizer']}-{setting_tag(config['overrides'])}"
        return root / "sweeps" / config["sweep"] / setting / f"seed{config['seed']}"
    if config.get("experiment"):
        setting = f"{config['optimizer']}-{setting_tag(config['overrides'])}"
        return root / config["experiment"] / setting / f"seed{config['seed']}"
    dataset = config.get("data", {}).get("dataset", "mnist")
    if dataset != "mnist":
        root = root / dataset
    return root / config["optimizer"] / f"seed{config['seed']}"


def check_sweep_name(name) -> str:
    if not re.fullmatch(NAME_RULE, str(name)):
        raise StudyError(f"sweep name {name!r} must be letters, digits, '.', '_' or '-'")
    return str(name)


# ---------------------------------------------------------------------------- atomic I/O

def atomic_write(path, write) -> None:
    """Write through a temporary file in the same folder, fsync, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_text(path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def _to_builtin(value):
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:   # numpy and torch scalars
        return value.item()
    if hasattr(value, "tolist"):                                     # arrays and tensors
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def save_json(path, obj) -> None:
    save_text(path, json.dumps(obj, indent=2, default=_to_builtin) + "\n")


def load_json(path):
    return json.loads(Path(path).read_text())


def save_csv(path, rows: list[dict]) -> None:
    """Rows of dicts -> CSV with a header (columns in first-seen order)."""
    import pandas as pd
    save_text(path, pd.DataFrame(rows).to_csv(index=False))


def save_npz(path, **arrays) -> None:
    import numpy as np
    atomic_write(path, lambda f: np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def save_torch(path, obj) -> None:
    import torch
    atomic_write(path, lambda f: torch.save(obj, f))


def load_torch(path, map_location="cpu"):
    """Checkpoints and weights are only ever read with ``weights_only=True``."""
    import torch
    return torch.load(path, map_location=map_location, weights_only=True)


def load_checkpoint(path, map_location="cpu"):
    """A run's resume checkpoint, or one clear StudyError naming the file and the remedy."""
    try:
        return load_torch(path, map_location)
    except Exception as e:  # noqa: BLE001 - torch's zip reader and unpickler say nothing a user can act on
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StudyError(f"checkpoint {path} is unreadable ({reason[:120]}); delete it to start this run "
                         f"from scratch, or pass --force (FORCE = True)") from None


def load_run(run_dir) -> dict:
    """Everything a run folder holds, as DataFrames, dicts and arrays (missing files are left out)."""
    import numpy as np
    import pandas as pd
    run_dir, run = Path(run_dir), {}
    for name in CSV_FILES:
        path = run_dir / name
        if path.exists() and path.stat().st_size > 1:
            run[name.removesuffix(".csv")] = pd.read_csv(path)
    for name in JSON_FILES:
        path = run_dir / name
        if path.exists():
            run[name.removesuffix(".json")] = load_json(path)
    for name in NPZ_FILES:
        path = run_dir / name
        if path.exists():
            with np.load(path) as f:
                run[name.removesuffix(".npz")] = {k: f[k] for k in f.files}
    return run


def is_done(run_dir) -> bool:
    return (Path(run_dir) / DONE).exists()


def mark_done(run_dir) -> None:
    """The ``done`` marker goes last: a folder without it is incomplete, whatever else it holds.

    The resume state goes first (model.pt holds the final weights, curvature.json what the journal
    served); the lock after ``done``.
    """
    run_dir = Path(run_dir)
    (run_dir / CHECKPOINT).unlink(missing_ok=True)
    shutil.rmtree(run_dir / HVP_JOURNAL, ignore_errors=True)
    save_text(run_dir / DONE, time.strftime("%Y-%m-%dT%H:%M:%S%z\n"))
    RunLock(run_dir).release()


def ensure_writable(folder) -> Path:
    """Create ``folder`` if needed and prove it takes files, or raise one clear StudyError."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise StudyError(f"results folder {folder} is not writable ({e.strerror or e}); "
                         f"choose another results folder") from None
    return folder


# ---------------------------------------------------------------------------- status and discovery

def _mtime(path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0


def status(run_dir) -> tuple[str, str]:
    """(status, detail) of one run folder: done, diverged, failed, running or incomplete."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "incomplete", "not started"
    final = run_dir / FINAL
    if is_done(run_dir):
        info = load_json(final) if final.exists() else {}
        if info.get("status") == "diverged":
            at = info.get("diverged_at") or {}
            return "diverged", f"epoch {at.get('epoch')}, step {at.get('step')}"
        acc = info.get("test_accuracy")
        return "done", "" if acc is None else f"test accuracy {acc:.4f}"
    lock = RunLock(run_dir)
    info = lock.holder()
    if info is not None and not lock.is_stale(info):
        return "running", f"held by {lock.describe(info)}"
    if (run_dir / ERROR).exists():
        lines = (run_dir / ERROR).read_text().strip().splitlines()
        return "failed", lines[-1] if lines else "error.txt is empty"
    try:  # a stale lock's own heartbeat says nothing about the run
        recent = max((_mtime(f) for f in run_dir.iterdir() if f.name != LOCK), default=0)
    except FileNotFoundError:
        return "incomplete", "not started"
    if time.time() - recent < ALIVE_S:
        return "running", "updated in the last 2 minutes"
    if not (run_dir / CHECKPOINT).exists():
        return "incomplete", "no checkpoint yet"
    journaled = len(list((run_dir / HVP_JOURNAL).glob("*.pt")))  # none when there is no journal
    return "incomplete", "resumes from its checkpoint" + (
        f"; its final analysis replays {journaled} journaled Hessian-vector products" if journaled else "")


def find_runs(root, include_sweeps=True) -> list[Path]:
    """Every run folder (one holding config.json, notebook.ipynb, error.txt or lock) under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = {p.parent for pattern in (CONFIG, NOTEBOOK, ERROR, LOCK) for p in root.rglob(pattern)}
    if not include_sweeps:
        found = {p for p in found if "sweeps" not in p.relative_to(root).parts}
    return sorted(p for p in found if not any(part.startswith(".") for part in p.relative_to(root).parts))


def study_runs(root) -> tuple[list[Path], list[Path]]:
    """(complete, incomplete) folders of a study, ``<root>/<optimizer>/seed<k>/``; sweeps are not looked at."""
    complete, incomplete = [], []
    for run_dir in find_runs(root, include_sweeps=False):
        if re.fullmatch(r"seed\d+", run_dir.name) and run_dir.parent.parent == Path(root):
            (complete if is_done(run_dir) else incomplete).append(run_dir)
    return complete, incomplete


def print_status(root, runs=None) -> dict:
    """One line per run folder and a count per status; returns the counts."""
    root = Path(root)
    counts = dict.fromkeys(STATUSES, 0)
    for run_dir in find_runs(root) if runs is None else runs:
        state, detail = status(run_dir)
        counts[state] += 1
        print(f"{state:<10} {run_dir.relative_to(root)}  {detail}")
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return counts


# ---------------------------------------------------------------------------- provenance

def git_commit() -> str:
    """HEAD's commit, "-dirty" when the code differs from it, "unknown" without git or a repository.

    results/, runs/ and report/ are outputs and *.md is prose, so they never make a commit dirty. In a
    fresh clone or worktree, the first check hashes every tracked file (longer than the 10 s a commit
    lookup gets); when the check cannot finish, the commit is still recorded,
    marked "-unchecked".
    """
    def git(*args, timeout):
        return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                              timeout=timeout).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD", timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    try:
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results",
                    ":(exclude)runs", ":(exclude)report", ":(exclude)*.md", timeout=GIT_STATUS_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return commit + "-unchecked"
    return commit + ("-dirty" if dirty else "")


VERSIONED = ("torch", "torchvision", "numpy", "scipy", "pyhessian", "torch-optimizer", "pytorch-optimizer", "mlxtend")


def provenance(device: dict) -> dict:
    """Versions, device (as ``config.device_info`` describes it) and commit, recorded in every config.json."""
    import importlib.metadata as md
    versions = {"python": platform.python_version()}
    for pkg in VERSIONED:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"versions": versions, "device": device, "platform": platform.platform(), "host": socket.gethostname(),
            "git_commit": git_commit(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": " ".join(sys.argv)}


COMPARED_KEYS = ("optimizer", "seed", "hyperparameters", "epochs", "batch_size", "data", "hessian", "smoke")


def prepare_run_dir(config, data, device: dict, force=False) -> Path:
    """Lock the run folder, create or reopen it (resume), and write its config.json.

    ``data`` is the loaded dataset (its ``source``, ``description`` and
    ``sizes()`` are recorded). A complete folder is refused unless ``force``;
    an incomplete one is resumed if its config matches, else refused unless ``force``.
    """
    run_dir = ensure_writable(run_dir_for(config))
    full = dict(config, data=dict(config["data"], source=data.source, description=data.description,
                                  **{f"n_{k}": v for k, v in data.sizes().items()}))
    existing = run_dir / CONFIG
    if is_done(run_dir) and not force:
        raise StudyError(f"{run_dir} already holds a complete run; pass force (FORCE = True / --force) to redo it")
    lock = RunLock(run_dir).acquire()
    try:
        if force:
            for f in run_dir.iterdir():
                if f.is_file() and f.name not in (LOCK, JOB_LOG, NOTEBOOK):
                    f.unlink()
        elif existing.exists():
            old = load_json(existing)
            old.setdefault("data", {}).setdefault("dataset", "mnist")  # runs made before datasets were recorded
            differs = [k for k in COMPARED_KEYS
                       if json.dumps(old.get(k), sort_keys=True) != json.dumps(full.get(k), sort_keys=True)]
            if differs:
                raise StudyError(f"{run_dir} holds an incomplete run with a different {', '.join(differs)}; "
                                 f"pass force (FORCE = True / --force) to start it again")
            return run_dir  # resume: keep the original config and provenance
        save_json(existing, schema.CONFIG.written(dict(full, provenance=provenance(device))))
    except BaseException:
        lock.release()
        raise
    return run_dir
