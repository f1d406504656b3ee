"""benchmarks/edge_of_stability.py at a tiny size: its files, their columns, and thresholds taken from the settings.

100 images, 30 steps of each optimizer, one torch thread, then --replot: about 10 s on a CPU core. The numbers of a real
run are the script's business (results/edge_of_stability/); this checks that what it writes is well formed.
"""

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "edge_of_stability.py"
GD_LR, ADAM_LR, BETA1 = 0.2, 2e-4, 0.9
STEPS, EVERY = 30, 10


def read(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_tiny_run_writes_well_formed_outputs(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--n-images", "100", "--gd-steps", str(STEPS), "--adam-steps", str(STEPS),
           "--gd-every", str(EVERY), "--adam-every", str(EVERY), "--gd-lr", str(GD_LR), "--adam-lr", str(ADAM_LR),
           "--beta1", str(BETA1), "--threads", "1", "--out-dir", str(tmp_path), "--figure-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=dict(os.environ, MPLBACKEND="Agg"), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    columns, gd = read(tmp_path / "gd.csv")
    assert columns == ["step", "train_loss", "train_acc", "lambda1", "threshold", "ratio", "converged", "n_hvps",
                       "measure_s", "wall_s"]
    assert [int(r["step"]) for r in gd] == [0, 10, 20, 30]
    columns, adam = read(tmp_path / "adam.csv")
    assert columns == ["step", "train_loss", "train_acc", "lambda1_precond", "threshold", "ratio",
                       "converged_precond", "n_hvps_precond", "lambda1_raw", "converged_raw", "n_hvps_raw",
                       "measure_s", "wall_s"]
    assert [int(r["step"]) for r in adam] == [10, 20, 30]  # Adam has no preconditioner before its first step

    # thresholds written out here, independently of preconditioning.stability_threshold
    adam_threshold = (2 + 2 * BETA1) / ((1 - BETA1) * ADAM_LR)
    assert math.isclose(adam_threshold, 38 / ADAM_LR)
    parts = ((gd, ["lambda1"], 2 / GD_LR), (adam, ["lambda1_precond", "lambda1_raw"], adam_threshold))
    for rows, keys, threshold in parts:
        for r in rows:
            assert math.isclose(float(r["threshold"]), threshold, rel_tol=1e-9)
            for key in keys:
                value = float(r[key])
                assert math.isfinite(value) and value > 0, (key, r)
            assert math.isclose(float(r["ratio"]), float(r[keys[0]]) / threshold, rel_tol=1e-8)
            assert math.isfinite(float(r["train_loss"])) and 0 <= float(r["train_acc"]) <= 1

    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["settings"]["n_per_class"] == [10] * 10
    assert {"gd", "adam", "versions", "wall_s"} <= summary.keys()
    assert summary["gd"]["ratio_last_half"]["n"] == 2  # steps 20 and 30 of 30
    for ext in ("png", "pdf"):
        assert (tmp_path / f"edge_of_stability.{ext}").stat().st_size > 0

    # --replot recomputes the statistics from the CSVs (10 significant digits) and keeps the run's checks
    # (in this process: it trains nothing and sets no threads, and a second interpreter would cost a torch import)
    (tmp_path / "edge_of_stability.png").unlink()
    spec = importlib.util.spec_from_file_location("edge_of_stability", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--replot", "--out-dir", str(tmp_path), "--figure-dir", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "summary.json").read_text())
    assert again["statistics_from"] == "the CSVs (--replot)" and again["wall_s"] == summary["wall_s"]
    for part in ("gd", "adam"):
        assert math.isclose(again[part]["ratio_last_half"]["median"], summary[part]["ratio_last_half"]["median"],
                            rel_tol=1e-8)
        assert {k: v for k, v in again[part].items() if k.startswith("check")} == \
            {k: v for k, v in summary[part].items() if k.startswith("check")}
    assert (tmp_path / "edge_of_stability.png").stat().st_size > 0
