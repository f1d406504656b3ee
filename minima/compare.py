"""How close two studies are: every number of every run compared with the run of the same config in the other.

``python -m minima compare A B`` (and ``make reproduce``, which runs the study
into ``runs/`` and then compares it with ``results/``) prints, per run and per
file, the largest absolute and relative difference, and gives each run one of
four verdicts, in order:

- *bit for bit*: every number equal, and ``model.pt`` byte for byte;
- *within rounding tolerance*: every judged number within ``params.REPRO_*``
  (relative on losses and weights, looser on eigenvalues, which are certified
  to ``EIG_TOL`` only, and a few images on accuracies);
- *same findings*: training drifted further (6,000 chaotic steps on another CPU
  may), but every quantity the report quotes (``minima.findings``) is within
  ``params.REPRO_FINDINGS_SD_FRACTION`` of its seed-to-seed standard deviation in
  the second study (or within its rounding tolerance), so no finding can move;
- *differs*, naming the quantity, its difference and the seed spread it was
  held against (or the file and number, where no findings could be judged).

The study's verdict is its worst run's; ``compare`` exits 0 unless it is *differs*.

Tolerances scale with each array: a number's tolerance is rtol times the
largest magnitude in its array (a CSV column, a JSON list, an ``.npz`` array;
a scalar is its own array), so a value near zero in an array of large ones is
judged on the array's scale, where its rounding lives. A column that spans
decades (a loss per epoch) is then judged absolutely at its late, small values;
``final.json`` holds the final values, each judged on its own. The spectral
density's eigenvalue grid is derived from the extreme Ritz values and is judged
as eigenvalues are; its quadrature weights and smoothed density on the scale of
their largest entries.

Timing columns (``*_s``) and solver diagnostics (residuals, HVP counts) are
reported but not judged. Neither is how the large-batch eigenvalues were solved
(``runs.LEGACY_SOLVER``'s keys: every path is certified to the same tolerance).
When two runs are not bitwise equal, what differs in their provenance (torch
threads, the CPU model, torch's CPU capability, versions, that solver path) is
named as the likely cause: the order of floating-point sums depends on them.
"""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import params
from minima import findings, runs

FILES = (runs.HISTORY, runs.FINAL, runs.SPECTRUM, runs.SHARPNESS, runs.CURVATURE, runs.LANDSCAPE, runs.DENSITY)
# clocks, memory, solver effort (the missed-eigenvalue guard's record too: what it changes, the eigenvalues show)
NOT_JUDGED = re.compile(r"(_s$|_s\[|residual|n_hvps|hvps|started|time|rss|guard|git_commit)")
EIGEN = re.compile(r"(lambda|eigen|gap|ratio|eig_|density|nodes|weights|grid|pyhessian|sharpness)")
INDEX = re.compile(r"\[\d+\]$")  # a number's position in its array: "nodes[3]" is in the array "nodes"
VERDICTS = ("bit for bit", "within rounding tolerance", "same findings", "differs")
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
class FindingDiff:
    name: str                  # a quantity of findings.quoted
    ours: float | None         # None: the first run lacks it
    committed: float
    seed_sd: float             # its seed-to-seed sd in the second study (nan with fewer than 2 seeds)
    n_seeds: int
    allowed: float             # max(REPRO_FINDINGS_SD_FRACTION x seed_sd, its rounding tolerance)

    @property
    def excess(self) -> float:
        if self.ours is None or not math.isfinite(self.allowed):
            return math.inf
        delta = abs(self.ours - self.committed)
        return 0.0 if delta == 0 else delta / self.allowed if self.allowed > 0 else math.inf

    def describe(self) -> str:
        if self.ours is None:
            return f"{self.name} missing (committed {self.committed:.6g})"
        sd = (f"{params.REPRO_FINDINGS_SD_FRACTION:g} x the seed sd {self.seed_sd:.3g} over {self.n_seeds} seeds"
              if math.isfinite(self.seed_sd) else f"no seed spread ({self.n_seeds} seed)")
        delta = abs(self.ours - self.committed)
        return (f"{self.name} {self.ours:.6g} vs {self.committed:.6g}: difference {delta:.3g} "
                f"against {self.allowed:.3g} ({sd})")


@dataclass
class RunDiff:
    name: str
    files: list = field(default_factory=list)
    note: str = ""             # config mismatch, missing run, likely cause
    findings: list = field(default_factory=list)  # FindingDiffs, judged only when the files are not within tolerance

    @property
    def exact(self):
        return not self.note.startswith("no ") and all(f.exact and not f.missing for f in self.files)

    @property
    def within(self):
        return not self.note.startswith("no ") and all(not f.missing and f.worst_excess <= 1 for f in self.files)

    @property
    def same_findings(self):
        return not self.note.startswith("no ") and bool(self.findings) and all(f.excess <= 1 for f in self.findings)

    @property
    def verdict(self) -> str:
        """The first of VERDICTS that holds."""
        return VERDICTS[0] if self.exact else VERDICTS[1] if self.within else \
            VERDICTS[2] if self.same_findings else VERDICTS[3]


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


def _tolerance(key, b, n_test, scale=0.0):
    """How far a number may move by rounding: a few images for accuracies; else rtol times the larger of its
    own magnitude and ``scale``, the largest magnitude in its array."""
    if "confusion" in key:
        return params.REPRO_ACCURACY_SAMPLES
    if "accuracy" in key:
        per_class = "per_class" in key
        n = max(1, n_test // params.NUM_CLASSES) if per_class else max(1, n_test)
        return params.REPRO_ACCURACY_SAMPLES / n
    rtol = params.REPRO_EIG_RTOL if EIGEN.search(key) else params.REPRO_RTOL
    return rtol * max(abs(b), scale) + 1e-12


def _array_scales(values: dict) -> dict:
    """The largest finite magnitude in each array, keyed by the array's name (a key less its trailing index)."""
    scales = {}
    for key, v in values.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            name = INDEX.sub("", key)
            scales[name] = max(scales.get(name, 0.0), abs(v))
    return scales


def compare_files(name, a: Path, b: Path, n_test) -> FileDiff:
    diff = FileDiff(name)
    if not a.exists() or not b.exists():
        diff.missing = "first" if not a.exists() else "second"
        diff.exact = not (a.exists() or b.exists())
        return diff
    va, vb = _values(a), _values(b)
    scales = _array_scales(vb)
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
            excess = delta / _tolerance(key, y, n_test, scales.get(INDEX.sub("", key), 0.0))
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
    cfg["hessian"] = {k: v for k, v in cfg.get("hessian", {}).items() if k not in runs.LEGACY_SOLVER}
    data = cfg.get("data", {})
    data = dict(data, dataset=data.get("dataset", "mnist"))
    return {k: cfg.get(k) for k in CONFIG_KEYS}, {k: data.get(k) for k in ("dataset", "source", "n_train", "n_test",
                                                                            "n_validation")}


def _likely_cause(a_dir, b_dir) -> str:
    """What differs between two runs' provenance that changes the rounding of sums; "" when nothing recorded does."""
    ca, cb = (runs.load_json(Path(d) / runs.CONFIG) for d in (a_dir, b_dir))
    pa, pb = ca.get("provenance", {}), cb.get("provenance", {})
    da, db = pa.get("device", {}), pb.get("device", {})
    causes = []
    for key, label in (("torch_threads", "torch threads"), ("cpu_model", "CPU"), ("cpu_capability",
                       "torch CPU capability"), ("name", "CPU architecture"), ("type", "device")):
        if da.get(key) != db.get(key):
            unknown = "not recorded"
            causes.append(f"{label} {da.get(key, unknown)} vs {db.get(key, unknown)}")
    va, vb = pa.get("versions", {}), pb.get("versions", {})
    causes += [f"{k} {va.get(k)} vs {vb.get(k)}" for k in ("torch", "numpy") if va.get(k) != vb.get(k)]
    ha, hb = ca.get("hessian", {}), cb.get("hessian", {})
    solver = [f"{k} {ha.get(k, v)} vs {hb.get(k, v)}" for k, v in runs.LEGACY_SOLVER.items()
              if ha.get(k, v) != hb.get(k, v)]
    if solver:
        causes.append("large-batch eigensolver " + ", ".join(solver) + " (both certified to the same tolerance)")
    return "; ".join(causes)


def _siblings(b_dir) -> list[Path]:
    """The second study's complete runs of this run's setting: every seed of it."""
    def setting(run_dir):  # the config and data, less the seed
        cfg, data = _config(run_dir)
        return {k: v for k, v in cfg.items() if k != "seed"}, data

    b_dir = Path(b_dir)
    mine = setting(b_dir)
    return [d for d in sorted(b_dir.parent.glob("seed*")) if runs.is_done(d) and setting(d) == mine]


def compare_findings(a_dir, b_dir, n_test) -> list[FindingDiff]:
    """Every quoted quantity of the second run, against the first's, with the seed spread it is held against."""
    ours, committed = findings.quoted(a_dir), findings.quoted(b_dir)
    spread = findings.seed_spread(_siblings(b_dir))
    out = []
    for name, value in committed.items():
        sd, n = spread.get(name, (math.nan, 1))
        rounding = _tolerance(name, value, n_test)
        allowed = max(params.REPRO_FINDINGS_SD_FRACTION * sd, rounding) if math.isfinite(sd) else math.nan
        out.append(FindingDiff(name, ours.get(name), value, sd, n, allowed))
    return out


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
    if not result.within:
        result.findings = compare_findings(a_dir, b_dir, n_test)
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
    """One line for the study: its worst run's verdict, and what came closest to (or went past) its limit."""
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
    counts = ", ".join(f"{sum(d.verdict == v for d in diffs)} {v}" for v in VERDICTS[:3])
    judged = [(d, q) for d in diffs if not d.within for q in d.findings]
    if all(d.verdict != "differs" for d in diffs):
        d, q = max(judged, key=lambda dq: dq[1].excess)
        return (f"reproduced with the same findings ({len(diffs)} runs: {counts}); closest to its allowance: "
                f"{d.name} {q.describe()}")
    bad = [d for d in diffs if d.verdict == "differs"]
    if any(d.findings for d in bad):
        d, q = max(((d, q) for d in bad for q in d.findings), key=lambda dq: dq[1].excess)
        return f"differs: {d.name}: {q.describe()}"
    d = bad[0]
    f = max((f for f in d.files if f.missing or f.worst_excess > 1),
            key=lambda f: math.inf if f.missing else f.worst_excess)
    what = f"missing in the {f.missing} study" if f.missing else f"{f.worst} ({f.worst_excess:.3g}x tolerance)"
    return f"differs: worst is {d.name}/{f.name} {what}; no quoted quantity to judge findings by"


def print_comparison(diffs, a_root, b_root) -> str:
    print(f"comparing {a_root} with {b_root}")
    for d in diffs:
        state = d.verdict.upper() if d.verdict == "differs" else d.verdict
        print(f"{d.name}: {state}" + (f"  ({'likely cause: ' if d.files else ''}{d.note})" if d.note else ""))
        for f in d.files:
            if f.missing:
                print(f"  {f.name:<15} missing in the {f.missing} study")
            elif not f.exact:
                flag = "  OUTSIDE rounding tolerance" if f.worst_excess > 1 else ""
                print(f"  {f.name:<15} max |diff| {f.max_abs:.3g}, max relative {f.max_rel:.3g}; "
                      f"worst: {f.worst}{flag}")
        if d.findings:
            worst = max(d.findings, key=lambda q: q.excess)
            outside = [q for q in d.findings if q.excess > 1]
            print(f"  findings: {len(d.findings) - len(outside)} of {len(d.findings)} quoted quantities within "
                  f"{params.REPRO_FINDINGS_SD_FRACTION:g} seed sd; closest: {worst.describe()}")
            for q in outside:
                print(f"    OUTSIDE: {q.describe()}")
    line = verdict(diffs)
    print(line)
    return line
