"""The support functions the notebooks call: configure a run, load its data, open and close its folder.

Each one forwards to the module of the ``minima`` package that owns the
concern (``minima.config``, ``minima.data``, ``minima.runs``), so the
notebooks read as a short list of calls and the rules live in one place.
"""

from minima import runs
from minima.config import device_info, make_config, pick_device, set_threads  # noqa: F401 - notebook API
from minima.data import Dataset, hessian_batch, load_mnist, load_run_data, write_idx  # noqa: F401 - notebook API
from minima.runs import REPO_ROOT, StudyError, is_done, load_run, mark_done, run_dir_for  # noqa: F401 - notebook API


def open_run(config, data: Dataset, device, force=False):
    """(run folder, complete): ``complete`` when the folder already holds this finished run and ``force`` is off.

    A complete run is then only read (the notebook draws its figures from
    the saved files); otherwise the folder is locked for this process, and
    created or reopened for resume, with its config.json written.
    """
    run_dir = run_dir_for(config)
    if is_done(run_dir) and not force:
        return run_dir, True
    return runs.prepare_run_dir(config, data, device_info(device), force=force), False
