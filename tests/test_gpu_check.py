"""benchmarks/gpu_check.py's CPU dry run: the prepared GPU check runs end to end where CI runs.

Where CUDA is present the real check is the script itself (`make gpu-check`), so this skips.
The dry run takes about two minutes on 2 CPU cores: four smoke runs (two optimizers', and the two "full" ones).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
STEPS = ["environment", "curvature", "lenet5_fast", "pytest", "smoke_study", "landscape", "full_sgd",
         "full_adahessian"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: run benchmarks/gpu_check.py itself")
def test_cpu_dry_run_passes_every_step(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--work", str(work)], cwd=REPO,
                          env=dict(os.environ, MPLBACKEND="Agg"), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines()[0] == "no CUDA device: CPU dry run of the same steps at smoke size"

    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == STEPS
    assert all(s["passed"] is True for s in summary["steps"]), [(s["name"], s["summary"]) for s in summary["steps"]]
    assert summary["complete"] and summary["passed"] and summary["mode"] == "cpu dry run"
    assert (out / "summary.md").read_text().startswith("# GPU check")
    # the dry run's smoke runs (not every optimizer's: the suite has those) finished on the CPU,
    # and the "full" runs were smoke runs
    smoke = summary["steps"][STEPS.index("smoke_study")]["details"]["runs"]
    assert sorted(smoke) == ["adam", "sam"]  # gpu_check.DRY_RUN_SMOKE
    assert all(r["done"] and r["device"] == "cpu" for r in smoke.values())
    assert all(summary["steps"][STEPS.index(f"full_{n}")]["details"]["smoke"] for n in ("sgd", "adahessian"))
    # what a device machine sends back: at most 8 files, none more than 2 folders down
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(len(p.relative_to(out).parts) <= 3 for p in files)
