"""A new user's first hour: every notebook runs top to bottom on a fresh-clone-like tree without touching
results/, a finished notebook run is drawn from its files, and the reproduction check compares two studies."""

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import papermill
import pytest

from minima import compare, optimizers, runs
from minima.notebooks import KERNEL_OPTIONS

ROOT = Path(__file__).resolve().parents[1]


def _digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """The committed files only, as a fresh clone has them: results/ present, no runs/."""
    tree = tmp_path_factory.mktemp("clone")
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (tree / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, tree / name)
    return tree


def _execute(notebook: Path, out: Path, **parameters):
    papermill.execute_notebook(str(notebook), str(out), parameters=parameters, cwd=str(notebook.parent),
                               kernel_name="python3", progress_bar=False, execution_timeout=900, **KERNEL_OPTIONS)
    return json.loads(out.read_text())


def _outputs(nb) -> str:
    return "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))


def test_every_notebook_runs_on_a_fresh_clone_and_leaves_results_alone(clone, tmp_path):
    before = _digest(clone / "results")
    for name in optimizers.names():
        _execute(clone / "notebooks" / f"{name}.ipynb", tmp_path / f"{name}.ipynb", SMOKE=True,
                 DATA_SOURCE="embedded")
        assert (clone / "runs" / name / "seed0" / "done").exists()
    # run again: the complete run is read back and drawn, not refused and not retrained
    again = _execute(clone / "notebooks" / "sgd.ipynb", tmp_path / "again.ipynb", SMOKE=True, DATA_SOURCE="embedded")
    assert "(complete: figures from its files)" in _outputs(again)
    assert sum(o.get("output_type") == "display_data" for c in again["cells"] for o in c.get("outputs", [])) >= 5
    _execute(clone / "notebooks" / "plotting_results.ipynb", tmp_path / "plots.ipynb", DPI=30)
    assert (clone / "report" / "figures" / "sharpness.png").exists()
    assert _digest(clone / "results") == before  # byte for byte


def test_kernels_start_without_the_tcp_warning(clone, tmp_path):
    nb = _execute(clone / "notebooks" / "sgd.ipynb", tmp_path / "quiet.ipynb", SMOKE=True, DATA_SOURCE="embedded",
                  PROGRESS=False)
    assert "without encryption" not in json.dumps(nb)


# ---------------------------------------------------------------------------- the reproduction check

@pytest.fixture
def twin(tmp_path):
    """A copy of one committed run, and the committed study beside it."""
    a = tmp_path / "runs"
    shutil.copytree(ROOT / "results" / "sgd" / "seed0", a / "sgd" / "seed0")
    return a, ROOT / "results"


def _main(*argv):
    return subprocess.run([sys.executable, "-m", "minima", *argv], capture_output=True, text=True, cwd=ROOT)


def test_an_identical_run_is_reproduced_bit_for_bit(twin):
    a, b = twin
    out = _main("compare", str(a), str(b))
    assert out.returncode == 0 and out.stdout.strip().endswith("reproduced bit for bit (1 runs)")


def test_small_differences_are_within_tolerance_and_large_ones_are_named(twin):
    a, b = twin
    final = a / "sgd" / "seed0" / "final.json"
    info = json.loads(final.read_text())
    info["train_loss"] *= 1 + 3e-6
    runs.save_json(final, info)
    cfg = json.loads((a / "sgd" / "seed0" / "config.json").read_text())
    committed = cfg["provenance"]["device"]["torch_threads"]
    cfg["provenance"]["device"]["torch_threads"] = committed + 1  # as if this copy had run with another count
    runs.save_json(a / "sgd" / "seed0" / "config.json", cfg)
    diffs = compare.compare_studies(a, b)
    assert compare.verdict(diffs).startswith("reproduced within tolerance")
    assert f"torch threads {committed + 1} vs {committed}" in diffs[0].note
    info["test_accuracy"] += 10 / 1000  # ten images of the 1,000
    runs.save_json(final, info)
    line = compare.verdict(compare.compare_studies(a, b))
    assert line.startswith("differs: worst is sgd/seed0/final.json test_accuracy")
    out = _main("compare", str(a), str(b))
    assert out.returncode == 1 and "DIFFERS" in out.stdout


def test_a_run_with_another_config_is_not_compared_like_for_like(twin):
    a, b = twin
    cfg = json.loads((a / "sgd" / "seed0" / "config.json").read_text())
    cfg["hyperparameters"]["lr"] = 0.05
    runs.save_json(a / "sgd" / "seed0" / "config.json", cfg)
    line = compare.verdict(compare.compare_studies(a, b))
    assert line == "differs: sgd/seed0: no like-for-like comparison: the configs differ in hyperparameters"


def test_nothing_to_compare_is_one_clear_error(tmp_path):
    out = _main("compare", str(tmp_path), str(ROOT / "results"))
    assert out.returncode == 2 and out.stderr.startswith("error: no complete runs to compare in")
