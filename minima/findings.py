"""The numbers a run's findings rest on, read from its folder, and how far two runs' numbers may differ.

``quoted(run_dir)`` gives what the report quotes of one run: test and train
accuracy and loss, the final top eigenvalues and trace, the full training set's
lambda1, the medians of lambda1, lambda2, the gap and the ratio over the last
steps, the sharpness peaks (raw and preconditioned), and lambda1, lambda1(P^-1 H)
and the trace at each equal-loss threshold the run reached.

``seed_spread(run_dirs)`` is each quantity's seed-to-seed standard deviation
over a study's seeds of one setting. A rerun on another machine has the *same
findings* as the committed run when every quantity differs from it by less than
``params.REPRO_FINDINGS_SD_FRACTION`` of that spread (or by less than its rounding
tolerance): a difference that small cannot move an interval built from the seeds.
Reads files only (no torch), so ``compare`` stays light.
"""

import math
from pathlib import Path

import numpy as np

from minima import runs, schema


def _csv(path: Path):
    import pandas as pd
    return pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else None


def quoted(run_dir) -> dict[str, float]:
    """Every quantity the report quotes of this run, by name; a quantity the run lacks is left out."""
    run_dir, out = Path(run_dir), {}
    F, C, T, SPEC, EQ = schema.FINAL, schema.CURVATURE, schema.FULL_DATA_TOP, schema.SPECTRUM, schema.EQUAL_LOSS
    final = runs.load_json(run_dir / runs.FINAL) if (run_dir / runs.FINAL).exists() else {}
    for key in F.keys("test_accuracy", "train_accuracy", "test_loss", "train_loss"):
        if isinstance(final.get(key), (int, float)):
            out[key] = float(final[key])
    if (run_dir / runs.CURVATURE).exists():
        curv = runs.load_json(run_dir / runs.CURVATURE)
        for i, value in enumerate(curv.get(C.key("top_eigenvalues"), [])):
            out[f"lambda{i + 1}"] = float(value)
        if curv.get(C.key("trace")):
            out["trace"] = float(curv["trace"]["mean"])
        if curv.get(C.key("full_data_top")):
            out["full_data_lambda1"] = float(curv["full_data_top"][T.key("eigenvalues")][0])
    spectrum = _csv(run_dir / runs.SPECTRUM)
    if spectrum is not None:
        for col in SPEC.keys("lambda1", "lambda2", "gap", "ratio"):
            out[f"median_last_steps_{col}"] = float(spectrum[col].median())
    sharpness = _csv(run_dir / runs.SHARPNESS)
    if sharpness is not None:
        out["sharpness_peak"] = float(sharpness[schema.SHARPNESS.key("lambda1")].max())
    tracking = _csv(run_dir / runs.TRACKING)
    if tracking is not None:
        out["precond_sharpness_peak"] = float(tracking[schema.TRACKING.key("precond_lambda1")].max())
    equal = _csv(run_dir / runs.EQUAL_LOSS)
    if equal is not None:
        for row in equal.to_dict("records"):
            for col in EQ.keys("lambda1", "precond_lambda1", "trace"):
                if isinstance(row.get(col), (int, float)) and math.isfinite(row[col]):
                    out[f"equal_loss_{row[EQ.key('loss_threshold')]:g}_{col}"] = float(row[col])
    return out


def seed_spread(run_dirs) -> dict[str, tuple[float, int]]:
    """Each quantity's seed-to-seed standard deviation (ddof 1) over these runs, with the number of seeds it has."""
    values: dict[str, list[float]] = {}
    for run_dir in run_dirs:
        for key, value in quoted(run_dir).items():
            values.setdefault(key, []).append(value)
    return {k: (float(np.std(v, ddof=1)) if len(v) > 1 else math.nan, len(v)) for k, v in values.items()}
