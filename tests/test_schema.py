"""The declared contents of a run folder's files: what the writers emit, and what the committed study holds."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minima import runs, schema
from minima.errors import StudyError

ROOT = Path(__file__).resolve().parents[1]


def test_a_writer_with_an_undeclared_or_a_missing_key_is_stopped():
    record = schema.FINAL.example(status="ok")
    assert list(record) == list(schema.FINAL.fields)
    with pytest.raises(StudyError, match="final.json as written: keys the schema lacks: test_acc "):
        schema.FINAL.written(dict(record, test_acc=0.9))
    with pytest.raises(StudyError, match="final.json as written: declared keys left out: test_loss "):
        schema.FINAL.written({k: v for k, v in record.items() if k != "test_loss"})
    with pytest.raises(StudyError, match="curvature.json as written, full_data_top: keys the schema lacks: lam1"):
        schema.CURVATURE.written(schema.CURVATURE.example(full_data_top={"lam1": 1.0}))
    with pytest.raises(StudyError, match="final.json fixture: keys the schema lacks: accuracy"):
        schema.FINAL.example(accuracy=1.0)
    # a sweep's validation columns are declared, and only written when asked for
    row = {k: 0.0 for k in schema.HISTORY.fields}
    assert schema.HISTORY.written([row, dict(row, val_loss=1.0, val_accuracy=0.5)])


def test_every_committed_run_reads_under_the_schema():
    """The committed results are the schema's first test case: every file of every complete run."""
    done = sorted(p.parent for p in (ROOT / "results").rglob(runs.DONE))
    assert len(done) >= 150
    for run_dir in done:
        for declared in schema.SCHEMAS:
            declared.readable(run_dir)


def test_an_older_key_set_reads_but_a_renamed_key_does_not(tmp_path):
    record = schema.CURVATURE.example()
    for old in schema.CURVATURE.legacy:
        del record[old]
    (tmp_path / runs.CURVATURE).write_text(json.dumps(record))
    schema.CURVATURE.readable(tmp_path)
    record["top_eigenvalue"] = record.pop("top_eigenvalues")
    (tmp_path / runs.CURVATURE).write_text(json.dumps(record))
    with pytest.raises(StudyError, match="keys the schema lacks: top_eigenvalue; declared keys left out: "
                                         "top_eigenvalues"):
        schema.CURVATURE.readable(tmp_path)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("schema")
    out = subprocess.run([sys.executable, "-m", "minima", "run", "--smoke", "--optimizers", "sgd", "--seeds", "0",
                          "--data-source", "embedded", "--quiet", "--results-dir", str(root)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    return root / "sgd" / "seed0"


@pytest.mark.parametrize("declared", schema.SCHEMAS, ids=lambda s: s.file)
def test_a_new_run_writes_exactly_the_declared_keys(smoke_run, declared):
    path = smoke_run / declared.file
    if declared is schema.STOP:  # only a run that asks for a stopping point writes one (tests/test_flatness_study.py)
        assert json.loads((smoke_run / runs.CONFIG).read_text())["stop_loss"] is None and not path.exists()
        return
    if path.suffix == ".json":
        record = json.loads(path.read_text())
        assert set(record) == set(declared.fields)
        for key, inner in declared.nested.items():
            for part in record[key] if isinstance(record[key], list) else [record[key]]:
                assert set(part) == set(inner.fields), key
    elif declared is schema.EQUAL_LOSS and path.stat().st_size <= 1:
        pytest.skip("no equal-loss threshold reached in two smoke epochs")
    else:
        with path.open() as f:
            assert next(csv.reader(f)) == list(declared.fields)


def test_readers_name_keys_through_the_schema_so_a_rename_fails_where_it_is_read(monkeypatch):
    """collection (the report's reader) and findings (compare's) ask the schema for each key they read."""
    import dataclasses

    from minima import findings
    from minima.report import collection
    with pytest.raises(KeyError, match="curvature.json declares no key 'top_eigenvalue'"):
        schema.CURVATURE.key("top_eigenvalue")
    run_dir = ROOT / "results" / "sgd" / "seed0"
    assert findings.quoted(run_dir)["lambda1"] == json.loads((run_dir / runs.CURVATURE).read_text())[
        "top_eigenvalues"][0]
    renamed = dataclasses.replace(schema.CURVATURE, fields=tuple(
        "top_eigenvalue" if f == "top_eigenvalues" else f for f in schema.CURVATURE.fields))
    monkeypatch.setattr(schema, "CURVATURE", renamed)
    with pytest.raises(KeyError, match="declares no key 'top_eigenvalues'"):
        collection._run_row(run_dir, runs.load_run(run_dir))
    with pytest.raises(KeyError, match="declares no key 'top_eigenvalues'"):
        findings.quoted(run_dir)
