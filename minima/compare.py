"""How close two studies are: every number of every run compared with the run of the same config in the other.

``python -m minima compare A B`` (and ``make reproduce``, which runs the study
into ``runs/`` and then compares it with ``results/``) prints, per run and per
file, the largest absolute and relative difference, and ends with one verdict:

- *reproduced bit for bit*: every number equal, and ``model.pt`` byte for byte;
- *reproduced within tolerance*: within ``params.REPRO_*`` (relative on losses and
  weights, looser on eigenvalues, which are certified to ``EIG_TOL`` only, and a
  few images on accuracies);
- *differs*, naming the worst number.

Timing columns (``*_s``) and solver diagnostics (residuals, HVP counts) are
reported but not judged. When two runs are close but not bitwise, a different
torch thread count or CPU, read from their provenance, is named as the likely
cause: the order of floating-point sums depends on both.
"""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import params
from minima import runs

FILES = (runs.HISTORY, runs.FINAL, runs.SPECTRUM, runs.SHARPNESS, runs.CURVATURE, runs.LANDSCAPE, runs.DENSITY)
# clocks, memory, solver effort (the missed-eigenvalue guard's record too: what it changes, the eigenvalues show)
NOT_JUDGED = re.compile(r"(_s$|_s\[|residual|n_hvps|hvps|started|time|rss|guard|git_commit)")
EIGEN = re.compile(r"(lambda|eigen|gap|ratio|eig_|density|nodes|weights|pyhessian)")
CONFIG_KEYS = ("optimizer", "seed", "hyperparameters", "epochs", "batch_size", "smoke", "hessian", "landscape")


@dataclass
class FileDiff:
    name: str
    n_values: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    worst: str = ""            # the judged number furthest outside its tolerance (or the largest difference)
    worst_excess: float = 0.0  # |a - b| / tolerance of that number; <= 1 is within tolerance
    exact: bool = True
    missing: str = ""          # "" or which side lacks the file


@dataclass
class RunDiff:
    name: str
    files: list = field(default_factory=list)
    note: str = ""             # config mismatch, missing run, likely cause

    @property
    def exact(self):
        return not self.note.startswith("no ") and all(f.exact and not f.missing for f in self.files)

    @property
    def within(self):
        return not self.note.startswith("no ") and all(not f.missing and f.worst_excess <= 1 for f in self.files)


def _leaves(obj, prefix=""):
    """Flatten JSON into {"a.b[2]": value}."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, obj


def _values(path: Path) -> dict:
    """Every number (or string) a result file holds, keyed by where it sits."""
    if path.suffix == ".json":
        return dict(_leaves(runs.load_json(path)))
    if path.suffix == ".csv":
        import pandas as pd
        frame = pd.read_csv(path) if path.stat().st_size > 1 else pd.DataFrame()
        return {f"{col}[{i}]": v for col in frame.columns for i, v in enumerate(frame[col].tolist())}
    with np.load(path) as f:
        return {f"{k}[{i}]": v for k in f.files for i, v in enumerate(np.ravel(f[k]).tolist())}


def _tolerance(key, b, n_test):
    if "confusion" in key:
        return params.REPRO_ACCURACY_SAMPLES
    if "accuracy" in key:
        per_class = "per_class" in key
        n = max(1, n_test // params.NUM_CLASSES) if per_class else max(1, n_test)
        return params.REPRO_ACCURACY_SAMPLES / n
    rtol = params.REPRO_EIG_RTOL if EIGEN.search(key) else params.REPRO_RTOL
    return rtol * abs(b) + 1e-12


def compare_files(name, a: Path, b: Path, n_test) -> FileDiff:
    diff = FileDiff(name)
    if not a.exists() or not b.exists():
        diff.missing = "first" if not a.exists() else "second"
        diff.exact = not (a.exists() or b.exists())
        return diff
    va, vb = _values(a), _values(b)
    for key in sorted(set(va) | set(vb)):
        x, y = va.get(key), vb.get(key)
        diff.n_values += 1
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
        if numbers and (x == y or (math.isnan(x) and math.isnan(y))):
            continue
        if not numbers:
            if x != y and not (key.startswith("started") or NOT_JUDGED.search(key)):
                diff.exact = False
                if diff.worst_excess < math.inf:
                    diff.worst, diff.worst_excess = f"{key}: {x!r} vs {y!r}", math.inf
            continue
        judged = not NOT_JUDGED.search(key)
        delta = abs(x - y)
        if judged:
            diff.exact = False
            diff.max_abs = max(diff.max_abs, delta)
            diff.max_rel = max(diff.max_rel, delta / abs(y) if y else math.inf)
            excess = delta / _tolerance(key, y, n_test)
            if excess > diff.worst_excess:
                diff.worst, diff.worst_excess = f"{key}: {x:.9g} vs {y:.9g}", excess
    return diff


def _without_none(value):
    """A config with its None-valued keys dropped: a setting added later with the old behaviour as None."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def _config(run_dir):
    cfg = _without_none(runs.load_json(Path(run_dir) / runs.CONFIG))
    data = cfg.get("data", {})
    data = dict(data, dataset=data.get("dataset", "mnist"))
    return {k: cfg.get(k) for k in CONFIG_KEYS}, {k: data.get(k) for k in ("dataset", "source", "n_train", "n_test",
                                                                            "n_validation")}


def _likely_cause(a_dir, b_dir) -> str:
    pa = runs.load_json(Path(a_dir) / runs.CONFIG).get("provenance", {})
    pb = runs.load_json(Path(b_dir) / runs.CONFIG).get("provenance", {})
    da, db = pa.get("device", {}), pb.get("device", {})
    causes = []
    for key, label in (("torch_threads", "torch threads"), ("name", "CPU"), ("type", "device")):
        if da.get(key) != db.get(key):
            causes.append(f"{label} {da.get(key)} vs {db.get(key)}")
    va, vb = pa.get("versions", {}), pb.get("versions", {})
    causes += [f"{k} {va.get(k)} vs {vb.get(k)}" for k in ("torch", "numpy") if va.get(k) != vb.get(k)]
    return "; ".join(causes)


def compare_runs(a_dir: Path, b_dir: Path, name: str) -> RunDiff:
    result = RunDiff(name)
    if not runs.is_done(b_dir):
        result.note = "no complete run of this name in the second study"
        return result
    (cfg_a, data_a), (cfg_b, data_b) = _config(a_dir), _config(b_dir)
    if cfg_a != cfg_b or data_a != data_b:
        differs = [k for k in CONFIG_KEYS if cfg_a[k] != cfg_b[k]] + [k for k in data_a if data_a[k] != data_b[k]]
        result.note = f"no like-for-like comparison: the configs differ in {', '.join(differs)}"
        return result
    n_test = int(data_b.get("n_test") or 1)
    result.files = [compare_files(f, Path(a_dir) / f, Path(b_dir) / f, n_test) for f in FILES]
    model_a, model_b = Path(a_dir) / runs.MODEL, Path(b_dir) / runs.MODEL
    weights = FileDiff(runs.MODEL)
    if model_a.exists() and model_b.exists() and model_a.read_bytes() != model_b.read_bytes():
        wa, wb = runs.load_torch(model_a), runs.load_torch(model_b)
        delta = max(float((wa[k] - wb[k]).abs().max()) for k in wb)
        scale = max(float(wb[k].abs().max()) for k in wb)
        weights.exact, weights.max_abs, weights.max_rel = False, delta, delta / scale
        weights.worst = f"weights: max |difference| {delta:.3g}"
        weights.worst_excess = delta / (params.REPRO_RTOL * scale)
    result.files.append(weights)
    if not result.exact:
        result.note = _likely_cause(a_dir, b_dir)
    return result


def compare_studies(a_root, b_root, optimizers=None, seeds=None) -> list[RunDiff]:
    """A RunDiff per complete run of study ``a_root`` (optionally only these optimizers and seeds)."""
    a_root, b_root = Path(a_root), Path(b_root)
    complete, _ = runs.study_runs(a_root)
    chosen = [d for d in complete if (not optimizers or d.parent.name in optimizers)
              and (not seeds or int(d.name.removeprefix("seed")) in seeds)]
    if not chosen:
        raise runs.StudyError(f"no complete runs to compare in {a_root}"
                              + (f" for {', '.join(optimizers)}" if optimizers else "")
                              + "; run them first (make reproduce, or python -m minima run)")
    return [compare_runs(d, b_root / d.relative_to(a_root), str(d.relative_to(a_root))) for d in chosen]


def verdict(diffs) -> str:
    if all(d.exact for d in diffs):
        return f"reproduced bit for bit ({len(diffs)} runs)"
    files = [(d, f) for d in diffs for f in d.files]
    if all(d.within for d in diffs):
        d, f = max(files, key=lambda df: df[1].worst_excess)
        return (f"reproduced within tolerance ({len(diffs)} runs); closest to its tolerance: {d.name}/{f.name} "
                f"{f.worst} ({f.worst_excess:.2g} of the tolerance)")
    missing = [d for d in diffs if d.note.startswith("no ")]
    if missing:
        return f"differs: {missing[0].name}: {missing[0].note}"
    d, f = max(((d, f) for d, f in files if f.missing or f.worst_excess > 1),
               key=lambda df: math.inf if df[1].missing else df[1].worst_excess)
    what = f"missing in the {f.missing} study" if f.missing else f"{f.worst} ({f.worst_excess:.3g}x tolerance)"
    return f"differs: worst is {d.name}/{f.name} {what}"


def print_comparison(diffs, a_root, b_root) -> str:
    print(f"comparing {a_root} with {b_root}")
    for d in diffs:
        state = "bit for bit" if d.exact else ("within tolerance" if d.within else "DIFFERS")
        print(f"{d.name}: {state}" + (f"  ({'likely cause: ' if d.files else ''}{d.note})" if d.note else ""))
        for f in d.files:
            if f.missing:
                print(f"  {f.name:<15} missing in the {f.missing} study")
            elif not f.exact:
                print(f"  {f.name:<15} max |diff| {f.max_abs:.3g}, max relative {f.max_rel:.3g}; worst: {f.worst}")
    line = verdict(diffs)
    print(line)
    return line
