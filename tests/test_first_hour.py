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

import params
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
    # ten images is past rounding (3) and past a tenth of the seeds' spread: named with both
    assert line.startswith("differs: sgd/seed0: test_accuracy ") and "the seed sd" in line
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


# ---------------------------------------------------------------------------- the reproduction check across machines

def _edit_npz(path: Path, **changes):
    import numpy as np
    with np.load(path) as f:
        arrays = {k: f[k].copy() for k in f.files}
    for key, (index, value) in changes.items():
        arrays[key].reshape(-1)[index] = value
    runs.save_npz(path, **arrays)


def _edit_json(path: Path, edit):
    info = json.loads(path.read_text())
    edit(info)
    runs.save_json(path, info)


def test_numbers_near_zero_are_judged_on_their_arrays_scale(twin):
    """The density's grid point near zero and a tiny quadrature weight moved as much as another CPU moves them."""
    import numpy as np
    a, b = twin
    density = a / "sgd" / "seed0" / "density.npz"
    with np.load(density) as f:
        near_zero = int(np.argmin(np.abs(f["grid"])))
        grid_value, weights = float(f["grid"][near_zero]), f["weights"].reshape(-1)
        tiny = int(np.argmin(np.where(weights > 0, weights, np.inf)))
    _edit_npz(density, grid=(near_zero, grid_value + 6e-8), weights=(tiny, float(weights[tiny]) * 2.4))
    diffs = compare.compare_studies(a, b)
    assert diffs[0].verdict == "within rounding tolerance"
    assert compare.verdict(diffs).startswith("reproduced within tolerance")


def test_an_eigenvalue_ten_tolerances_off_is_found(twin):
    a, b = twin
    curvature = a / "sgd" / "seed0" / "curvature.json"
    committed = json.loads(curvature.read_text())["top_eigenvalues"][0]
    _edit_json(curvature, lambda c: c["top_eigenvalues"].__setitem__(0, committed * (1 + 10 * params.REPRO_EIG_RTOL)))
    (diff,) = compare.compare_studies(a, b)
    (curv,) = [f for f in diff.files if f.name == "curvature.json"]
    assert curv.worst.startswith("top_eigenvalues[0]") and curv.worst_excess == pytest.approx(10, rel=1e-3)
    assert not diff.within and diff.verdict != "within rounding tolerance"
    out = _main("compare", str(a), str(b))
    assert "curvature.json" in out.stdout and "OUTSIDE rounding tolerance" in out.stdout


def _seed_sd(quantity):
    import numpy as np

    from minima import findings
    values = [findings.quoted(ROOT / "results" / "sgd" / f"seed{k}")[quantity] for k in range(5)]
    return float(np.std(values, ddof=1))


def test_a_drifted_run_within_a_tenth_of_the_seed_spread_has_the_same_findings(twin):
    """As AdaHessian drifts on another CPU: weights, spectrum and lambda1 off by more than rounding, less than
    a tenth of the committed seeds' spread."""
    a, b = twin
    run = a / "sgd" / "seed0"
    weights = runs.load_torch(run / "model.pt")
    import torch
    torch.save({k: v * (1 + 1e-3) for k, v in weights.items()}, run / "model.pt")
    sd = _seed_sd("lambda1")
    _edit_json(run / "curvature.json", lambda c: c["top_eigenvalues"].__setitem__(0, c["top_eigenvalues"][0]
                                                                                    + 0.05 * sd))
    (diff,) = compare.compare_studies(a, b)
    assert diff.verdict == "same findings", [q.describe() for q in diff.findings if q.excess > 1]
    assert len(diff.findings) > 20 and {"lambda1", "trace", "test_accuracy", "median_last_steps_ratio",
                                        "sharpness_peak", "equal_loss_0.01_lambda1"} <= {q.name for q in diff.findings}
    out = _main("compare", str(a), str(b))
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1].startswith(
        "reproduced with the same findings (1 runs: 0 bit for bit, 0 within rounding tolerance, 1 same findings)")


def test_lambda1_moved_by_half_a_seed_sd_differs_and_says_by_how_much(twin):
    a, b = twin
    sd = _seed_sd("lambda1")
    _edit_json(a / "sgd" / "seed0" / "curvature.json",
               lambda c: c["top_eigenvalues"].__setitem__(0, c["top_eigenvalues"][0] + 0.5 * sd))
    line = compare.verdict(compare.compare_studies(a, b))
    assert line.startswith("differs: sgd/seed0: lambda1 ") and f"the seed sd {sd:.3g} over 5 seeds" in line
    assert _main("compare", str(a), str(b)).returncode == 1


def test_the_cpu_model_and_capability_are_recorded_and_named_as_the_likely_cause(twin, tmp_path):
    import torch

    from minima.config import device_info
    info = device_info("cpu")
    assert info["cpu_model"] and info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    a, b = twin
    config = a / "sgd" / "seed0" / "config.json"
    _edit_json(config, lambda c: c["provenance"]["device"].update(cpu_model="Other CPU", cpu_capability="AVX2"))
    _edit_json(a / "sgd" / "seed0" / "final.json", lambda f: f.update(train_loss=f["train_loss"] * (1 + 3e-6)))
    (diff,) = compare.compare_studies(a, b)
    assert "CPU Other CPU vs not recorded" in diff.note and "torch CPU capability AVX2 vs not recorded" in diff.note
    # a run solved by another certified path (the committed one: float64, chunks of 1,000) is still like for like
    _edit_json(config, lambda c: c["hessian"].update(full_data_precision="mixed", full_data_chunk=250))
    (diff,) = compare.compare_studies(a, b)
    assert diff.verdict == "within rounding tolerance"
    assert "large-batch eigensolver full_data_precision mixed vs float64, full_data_chunk 250 vs 1000" in diff.note


def _edited_notebook(name: str, **values) -> dict:
    """The committed notebook with its parameters cell edited as a person edits it: one line per value."""
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    (cell,) = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    lines = "".join(cell["source"]).splitlines()
    for key, value in values.items():
        (i,) = [i for i, line in enumerate(lines) if line.startswith(f"{key} = ")]
        lines[i] = f"{key} = {value!r}"
    cell["source"] = "\n".join(lines)
    return nb


def test_a_notebook_run_in_jupyter_equals_the_runners_run(tmp_path, monkeypatch):
    """The optimizer notebook executed as Jupyter executes it (nbclient, no papermill, torch's default thread
    count in the kernel's environment) and the runner's run of the same config agree bit for bit."""
    import nbformat
    from nbclient import NotebookClient
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # a kernel started by Jupyter gets torch's default
    nb = nbformat.reads(json.dumps(_edited_notebook("sgd", SMOKE=True, DATA_SOURCE="embedded",
                                                     RESULTS_DIR=str(tmp_path / "notebook"))), as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(ROOT / "notebooks")}},
                   **KERNEL_OPTIONS).execute()
    printed = [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.get("name") == "stdout"]
    assert printed[0].startswith(f"torch threads: {params.TORCH_THREADS} (params.TORCH_THREADS")
    notebook_run = tmp_path / "notebook" / "sgd" / "seed0"
    recorded = runs.load_json(notebook_run / "config.json")["provenance"]["device"]
    assert recorded["torch_threads"] == params.TORCH_THREADS
    out = _main("run", "--smoke", "--optimizers", "sgd", "--seeds", "0", "--data-source", "embedded", "--quiet",
                "--results-dir", str(tmp_path / "runner"))
    assert out.returncode == 0, out.stdout + out.stderr
    out = _main("compare", str(tmp_path / "notebook"), str(tmp_path / "runner"))
    assert out.returncode == 0 and out.stdout.strip().endswith("reproduced bit for bit (1 runs)"), out.stdout


def test_a_raised_thread_count_is_said_and_recorded():
    """What the notebook's first cell does with THREADS = 2, and what open_run then records (device_info)."""
    import torch

    import helpers
    before = torch.get_num_threads()
    try:
        assert helpers.set_threads(2).startswith("torch threads: 2 (asked for; params.TORCH_THREADS is 1")
        assert helpers.device_info("cpu")["torch_threads"] == 2
        assert helpers.set_threads(None).startswith("torch threads: 1 (params.TORCH_THREADS")
        with pytest.raises(runs.StudyError, match="threads must be a positive integer, got 0"):
            helpers.set_threads(0)
    finally:
        torch.set_num_threads(before)
