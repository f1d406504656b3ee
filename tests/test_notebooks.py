"""The committed notebooks: no outputs, no definitions, a papermill parameters cell, in sync with their builder."""

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_design_card_notebooks_exist():
    names = {p.stem for p in NOTEBOOKS}
    assert {"sgd", "adam", "adagrad", "adahessian", "plotting_results"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    assert nb.metadata["kernelspec"]["name"] == "python3"
    params_cells = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params_cells) == 1 and code.index(params_cells[0]) == 0
    for cell in code:  # narrative plus calls: functions belong in modules
        assert not any(line.lstrip().startswith(("def ", "class ")) for line in cell.source.splitlines())


def test_optimizer_notebooks_match_their_builder(tmp_path):
    sys.path.insert(0, str(ROOT / "notebooks"))
    try:
        import build_notebooks
    finally:
        sys.path.pop(0)
    for name in build_notebooks.ABOUT:
        built = build_notebooks.build(name)
        committed = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
        assert [c.source for c in built.cells] == [c.source for c in committed.cells], \
            f"notebooks/{name}.ipynb is stale: run `make notebooks`"
