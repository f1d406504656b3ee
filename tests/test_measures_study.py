"""make measures: the population of minima, one row per model and stopping point, resumable."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from minima import measures_study, runs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One smoke run that keeps a stopping point (its first epoch's loss is below 2.3) and one that does not."""
    root = tmp_path_factory.mktemp("measured")
    code = ("import sys; from minima.config import make_config; from minima.runner import run_configs; "
            f"root = {str(root)!r}; "
            "cs = [make_config('sgd', 0, smoke=True, data_source='embedded', results_dir=root, stop_loss=2.3), "
            "make_config('adam', 0, smoke=True, data_source='embedded', results_dir=root)]; "
            "sys.exit(run_configs(cs, jobs=1, quiet=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return root


def test_every_model_and_stopping_point_gets_one_row_and_a_rerun_computes_none(study, tmp_path, monkeypatch):
    entries = measures_study.population(study)
    assert sorted((e["key"], e["stop"]) for e in entries) == [("adam/seed0", "final"), ("sgd/seed0", "final"),
                                                              ("sgd/seed0", "stop")]
    table = pd.read_csv(measures_study.run(study, tmp_path, progress=False))
    assert len(table) == 3 and table[["lambda1", "trace", "adaptive_worst", "pac_bayes_sigma"]].notna().all().all()
    stop = table[table.stop == "stop"].iloc[0]
    at = runs.load_json(study / "sgd" / "seed0" / runs.STOP)
    assert stop.epoch == at["epoch"] and stop.gap_loss == pytest.approx(at["test_loss"] - at["train_loss"])
    final = table[(table.stop == "final") & (table.optimizer == "sgd")].iloc[0]
    assert final.lambda1 != stop.lambda1   # other weights, other curvature
    monkeypatch.setattr(measures_study, "measure", lambda *a, **k: pytest.fail("a complete row was recomputed"))
    assert len(pd.read_csv(measures_study.run(study, tmp_path, progress=False))) == 3
