"""The optimizer notebooks: stamped from one template, paired with percent-format scripts by jupytext.

``notebooks/templates/optimizer.py`` is the one source of every optimizer
notebook. ``stamp(name)`` fills in the registry entry's name, label and
description; ``write_notebooks`` (``make notebooks``) writes
``notebooks/<name>.py`` and its paired ``<name>.ipynb`` for every registered
optimizer. A notebook whose text differs from its stamp (someone edited it)
is left alone and named, unless ``force``: edits belong in the template.
An optimizer registered without a committed notebook (``$MINIMA_EXTRA_OPTIMIZERS``)
gets its stamp written next to its run when it runs.

``KERNEL_OPTIONS`` makes papermill start kernels on the IPC transport:
local sockets that only this machine can reach, so ipykernel has no
unencrypted TCP port to warn about.
"""

import os
import subprocess
import tempfile
import uuid
from pathlib import Path

import jupytext
from jupyter_client.manager import KernelManager
from traitlets import default

from minima import optimizers
from minima.runs import REPO_ROOT, atomic_write, save_text

NOTEBOOKS = REPO_ROOT / "notebooks"
TEMPLATE = NOTEBOOKS / "templates" / "optimizer.py"
FORMAT = "py:percent"


class IPCKernelManager(KernelManager):
    """A kernel manager whose kernels listen on local IPC sockets instead of TCP ports.

    Each kernel's sockets get a path of their own: jupyter_client's default for
    IPC ("kernel-ipc" in the working folder) would let two kernels started at once
    from the same folder (parallel runs) answer each other's messages.
    """

    @default("transport")
    def _default_transport(self):
        return "ipc"

    @default("ip")
    def _default_ip(self):
        return os.path.join(tempfile.gettempdir(), f"minima-kernel-{uuid.uuid4().hex[:16]}")


KERNEL_OPTIONS = {"kernel_manager_class": IPCKernelManager}


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def committed_template() -> str | None:
    """The template as git's HEAD holds it (None outside a git checkout): the stamps the notebooks were made from."""
    rel = TEMPLATE.relative_to(REPO_ROOT).as_posix()
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"HEAD:{rel}"], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def stamp(name, template=None) -> str:
    """The template's text (``template``, default the template file) for one registered optimizer."""
    entry = optimizers.get(name)
    text = TEMPLATE.read_text() if template is None else template
    for key, value in (("<<NAME>>", entry.name), ("<<LABEL>>", entry.label), ("<<ABOUT>>", entry.description),
                       ("<<PARAMS>>", entry.name.upper())):
        text = text.replace(key, value)
    return text


def _write_pair(text, py_path: Path) -> None:
    save_text(py_path, text)
    notebook = jupytext.reads(text, fmt=FORMAT)
    for i, cell in enumerate(notebook.cells):  # stable ids, numbered as nbstripout (the git filter) numbers them
        cell.id = str(i)
    ipynb = jupytext.writes(notebook, fmt="ipynb") + "\n"  # the final newline nbstripout writes too
    atomic_write(py_path.with_suffix(".ipynb"), lambda f: f.write(ipynb.encode()))


def optimizer_notebook(name, run_dir) -> Path:
    """The notebook that runs ``name``: the committed one, or its stamp written into ``run_dir``."""
    committed = NOTEBOOKS / f"{name}.ipynb"
    if committed.exists():
        return committed
    py_path = Path(run_dir) / f".{name}-source.py"
    _write_pair(stamp(name), py_path)
    return py_path.with_suffix(".ipynb")


def write_notebooks(names=None, force=False) -> list[str]:
    """Stamp every registered optimizer's notebook pair; returns the names left alone because they were edited."""
    edited, before = [], committed_template()
    for name in names or optimizers.names():
        py_path, text = NOTEBOOKS / f"{name}.py", stamp(name)
        # unedited: the stamp of the template now, or of the committed one (the template was edited since)
        stamps = {text} | ({stamp(name, before)} if before is not None else set())
        if py_path.exists() and py_path.read_text() not in stamps and not force:
            edited.append(name)
            continue
        _write_pair(text, py_path)
        print("wrote", py_path, "and", py_path.with_suffix(".ipynb"))
    for name in edited:
        print(f"left alone: notebooks/{name}.py differs from its stamp of {_shown(TEMPLATE)}; "
              f"move the edit into the template (or pass --force to overwrite it)")
    return edited
