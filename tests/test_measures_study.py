"""make measures: the population of minima, one row per model and stopping point, resumable."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from minima import measures_study, runs, schema

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
    assert set(table.columns) == set(schema.MEASURES.fields)
    assert len(table) == 3 and table[["lambda1", "trace", "adaptive_worst", "pac_bayes_sigma"]].notna().all().all()
    stop = table[table.stop == "stop"].iloc[0]
    at = runs.load_json(study / "sgd" / "seed0" / runs.STOP)
    assert stop.epoch == at["epoch"] and stop.gap_loss == pytest.approx(at["test_loss"] - at["train_loss"])
    final = table[(table.stop == "final") & (table.optimizer == "sgd")].iloc[0]
    assert final.lambda1 != stop.lambda1   # other weights, other curvature
    monkeypatch.setattr(measures_study, "measure", lambda *a, **k: pytest.fail("a complete row was recomputed"))
    assert len(pd.read_csv(measures_study.run(study, tmp_path, progress=False))) == 3


def test_shards_split_the_population_once(study, tmp_path, monkeypatch):
    from minima import schema

    seen = []

    def fake(entry, cache):   # the real rows are tested above; here only who measures what
        seen.append((entry["key"], entry["stop"]))
        return {**{f: 0.0 for f in schema.MEASURES.fields}, "run": entry["key"], "stop": entry["stop"]}

    monkeypatch.setattr(measures_study, "measure", fake)
    for k in (0, 1):
        measures_study.run(study, tmp_path, progress=False, shard=(k, 2))
    assert sorted(seen) == sorted((e["key"], e["stop"]) for e in measures_study.population(study))
    assert len(pd.read_csv(tmp_path / schema.MEASURES_FILE)) == 3


def test_the_population_puts_the_flatness_runs_stops_first():
    keys = [{"key": k, "stop": s} for k, s in [
        ("projected/early/x/seed0", "final"), ("sweeps/tuning/sgd-lr0.1/seed0", "final"), ("tuned/sgd/seed0", "final"),
        ("sgd/seed0", "final"), ("flatness/bs32/sgd-lr0.1/seed0", "final"), ("flatness/bs32/sgd-lr0.1/seed0", "stop"),
        ("adam/seed0", "final")]]
    ordered = sorted(keys, key=measures_study._order)
    assert [(e["key"].split("/")[0], e["stop"]) for e in ordered] == [
        ("flatness", "stop"), ("flatness", "final"), ("adam", "final"), ("sgd", "final"), ("tuned", "final"),
        ("sweeps", "final"), ("projected", "final")]


def test_the_rho_check_resolves_the_increase_above_float32_rounding(study, tmp_path):
    from minima import schema

    out = measures_study.rho_sensitivity(study, tmp_path / schema.RHO_CHECK_FILE, rhos=(0.001, 0.01),
                                         run_keys=("sgd/seed0",), progress=False)
    table = pd.read_csv(out)
    assert list(table.columns) == list(schema.RHO_CHECK.fields) and len(table) == 2
    assert table.pac_bayes_sigma.nunique() == 1   # one per model
    assert (table.worst > 0).all() and table.worst.is_monotonic_increasing   # a larger box holds the smaller
    assert (table.worst_rounding < 1e-3 * table.worst).all()


def test_bad_shards_are_refused_in_one_line():
    out = subprocess.run([sys.executable, "-m", "minima", "measures", "--shard", "2/2"], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 2 and "need 0 <= K < N" in out.stderr and "Traceback" not in out.stderr


def test_a_model_that_cannot_be_measured_is_named_and_the_others_still_get_rows(study, tmp_path, monkeypatch):
    def flaky(entry, cache):
        if entry["key"] == "adam/seed0":
            raise runs.StudyError("its data is missing")
        return {**{f: 0.0 for f in schema.MEASURES.fields}, "run": entry["key"], "stop": entry["stop"]}

    monkeypatch.setattr(measures_study, "measure", flaky)
    with pytest.raises(runs.StudyError, match=r"1 model\(s\) not measured.*adam/seed0 \(final\): its data is missing"):
        measures_study.run(study, tmp_path, progress=False)
    assert len(list((tmp_path / "rows").glob("*.json"))) == 2


def test_gather_scores_the_rows_measured_so_far_without_measuring(study, tmp_path, monkeypatch):
    monkeypatch.setattr(measures_study, "measure", lambda *a, **k: pytest.fail("gather measured a model"))
    with pytest.raises(runs.StudyError, match="no measured rows"):
        measures_study.gather(tmp_path)
    row = {**{f: 0.0 for f in schema.MEASURES.fields}, "run": "sgd/seed0", "stop": "final"}
    runs.save_json(tmp_path / "rows" / "sgd_seed0__final.json", row)
    assert len(pd.read_csv(measures_study.gather(tmp_path))) == 1
    runs.save_json(tmp_path / "rows" / "bad__final.json", {**row, "extra": 1})
    with pytest.raises(runs.StudyError, match="extra"):
        measures_study.gather(tmp_path)
