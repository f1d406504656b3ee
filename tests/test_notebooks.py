"""The committed notebooks: no outputs, no definitions, a papermill parameters cell, paired with their scripts,
and the optimizer notebooks stamped from their one template."""

import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

from minima import notebooks, optimizers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_every_registered_optimizer_and_the_report_have_a_notebook():
    names = {p.stem for p in NOTEBOOKS}
    assert set(optimizers.names()) | {"plotting_results"} <= names
    assert {"sgd", "adam", "adagrad", "adahessian", "sam"} <= set(optimizers.names())


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_and_its_script_are_in_sync(path):
    script = path.with_suffix(".py")
    assert script.exists(), f"{path.name} has no paired {script.name}: run `jupytext --sync {path}`"
    paired = jupytext.read(script)
    committed = nbformat.read(path, as_version=4)
    assert [(c.cell_type, c.source) for c in paired.cells] == [(c.cell_type, c.source) for c in committed.cells], \
        f"{path.name} and {script.name} differ: run `jupytext --sync notebooks/{path.name}`"


@pytest.mark.parametrize("name", optimizers.names())
def test_optimizer_notebook_is_its_template_stamp(name):
    committed = (ROOT / "notebooks" / f"{name}.py").read_text()
    assert committed == notebooks.stamp(name), \
        f"notebooks/{name}.py differs from the template: edit notebooks/templates/optimizer.py, run `make notebooks`"


def test_stamping_leaves_an_edited_notebook_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(notebooks, "NOTEBOOKS", tmp_path)
    assert notebooks.write_notebooks(["sgd", "adam"]) == []
    edited = tmp_path / "adam.py"
    edited.write_text(edited.read_text() + "\n# %%\nprint('my edit')\n")
    assert notebooks.write_notebooks(["sgd", "adam"]) == ["adam"]
    assert "my edit" in edited.read_text()
    assert "left alone: notebooks/adam.py differs" in capsys.readouterr().out
    notebooks.write_notebooks(["adam"], force=True)
    assert "my edit" not in edited.read_text()
    assert jupytext.read(tmp_path / "adam.ipynb").cells[1].source.startswith("# Parameters")


def test_a_template_edit_restamps_the_notebooks_made_from_the_old_template(tmp_path, monkeypatch):
    """Unedited notebooks are stamps of the committed template: editing the template must not make them 'edited'."""
    old_template = notebooks.TEMPLATE.read_text()
    template = tmp_path / "templates" / "optimizer.py"
    template.parent.mkdir()
    template.write_text(old_template)
    monkeypatch.setattr(notebooks, "NOTEBOOKS", tmp_path)
    monkeypatch.setattr(notebooks, "TEMPLATE", template)
    monkeypatch.setattr(notebooks, "committed_template", lambda: old_template)
    assert notebooks.write_notebooks(["sgd", "adam"]) == []
    edited = tmp_path / "adam.py"
    edited.write_text(edited.read_text() + "\n# %%\nprint('my edit')\n")
    template.write_text(old_template + "\n# %%\nprint('a new cell')\n")  # the template edited, not yet committed
    assert notebooks.write_notebooks(["sgd", "adam"]) == ["adam"]  # the hand edit is still refused
    assert "a new cell" in (tmp_path / "sgd.py").read_text()       # the unedited stamp follows the template


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")
    out = subprocess.run([str(ruff), "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_what_the_nbstripout_filter_would_commit(path):
    """make install sets nbstripout as git's filter: a committed notebook must be its fixed point,
    or every fresh clone shows the notebooks as modified (and `git pull` refuses)."""
    cleaned = subprocess.run([sys.executable, "-m", "nbstripout", "-t"], input=path.read_text(), capture_output=True,
                             text=True, check=True).stdout
    assert cleaned == path.read_text(), f"{path.name}: run `make notebooks` (ids and layout as nbstripout writes them)"
