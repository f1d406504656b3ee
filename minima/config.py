"""One run's configuration: every setting, validated, as a JSON-able dict; and the device.

``make_config`` turns "the values in params.py, these overrides" into the
dict that a run records in its config.json and that every later step reads.
Bad input raises StudyError with one line naming the problem and the choices.
"""

import os
import platform
from pathlib import Path

import numpy as np
import torch

import params
from minima import optimizers
from minima.cli import check_seed
from minima.data import check_dataset
from minima.runs import REPO_ROOT, StudyError, check_experiment_name, check_sweep_name


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_positive(name, value, kind=float):
    ok = _is_int(value) if kind is int else isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
    if not ok or not np.isfinite(value) or value <= 0:
        what = "a positive integer" if kind is int else "a positive number"
        raise StudyError(f"{name} must be {what}, got {value!r}")


def make_config(optimizer, seed=params.SEED, *, epochs=None, batch_size=None, data_source=None,
                smoke=False, overrides=None, validation_size=0, results_dir=None, data_dir=None, sweep=None,
                tracking=None, final_analysis=None, dataset=None, experiment=None, stop_loss=None):
    """Everything one run needs, validated, as a JSON-able dict: the one object that the runner, the sweeps,
    the experiments and the notebook pass on whole (it becomes the run's config.json).

    Adding a setting: its default in params.py, its key here, and the code that reads it; nothing else.
    ``None`` means "the value in params.py"; ``dataset`` is ``mnist`` or
    ``fashion-mnist`` (``config["data"]["dataset"]``; it names the run folder
    of a Fashion-MNIST run, ``runs.run_dir_for``); ``overrides`` replaces optimizer
    hyperparameters (any keyword its constructor takes, e.g. ``{"lr": 0.05}``);
    ``smoke`` shrinks the run to seconds; ``tracking=False`` switches the
    instruments off (sweeps), which trains to the same weights;
    ``final_analysis=False`` skips the final weights' Hessian analysis and
    landscapes (sweeps): the run is then training, history and weights only;
    ``experiment`` (e.g. ``projected/early``) puts the run in
    ``<results>/<experiment>/<optimizer>-<setting>/seed<k>/`` (``runs.run_dir_for``);
    ``stop_loss`` keeps the weights at the first epoch end whose full training loss is below it
    (``model_at_stop.pt`` and ``stop.json``: ``training.train``); None keeps none.
    Fashion-MNIST and the torchvision source are 60,000 training images: their
    ``config["hessian"]`` takes ``params.FULL_SIZE`` (smoke values still win).
    """
    optimizers.get(optimizer)
    check_seed(seed)
    overrides = dict(overrides or {})
    hyper = optimizers.hyperparameters(optimizer, overrides)
    smoke_cfg = params.SMOKE if smoke else {}
    epochs = smoke_cfg.get("epochs", params.EPOCHS) if epochs is None else epochs
    batch_size = params.BATCH_SIZE if batch_size is None else batch_size
    _check_positive("epochs", epochs, int)
    _check_positive("batch size", batch_size, int)
    data_source = params.DATA_SOURCE if data_source is None else data_source
    if data_source not in params.DATA_SOURCES:
        raise StudyError(f"unknown data source {data_source!r}; valid choices: {', '.join(params.DATA_SOURCES)}")
    dataset = check_dataset(params.DATASET if dataset is None else dataset, data_source)
    if stop_loss is not None:
        _check_positive("stop loss", stop_loss)
    if not _is_int(validation_size) or validation_size < 0:
        raise StudyError(f"validation size must be a non-negative integer, got {validation_size!r}")
    if sweep is not None:
        check_sweep_name(sweep)
    if experiment is not None:
        check_experiment_name(experiment)
        if sweep is not None:
            raise StudyError(f"a run is in a sweep or in an experiment, not both (sweep {sweep!r}, "
                             f"experiment {experiment!r})")
    get = lambda key, default: smoke_cfg.get(key, default)  # noqa: E731
    config = {
        "optimizer": optimizer,
        "seed": int(seed),
        "hyperparameters": {k: list(v) if isinstance(v, tuple) else v for k, v in hyper.items()},
        "overrides": overrides,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "eval_batch_size": params.EVAL_BATCH_SIZE,
        "smoke": bool(smoke),
        "model": {"name": "LeNet5", "activation": params.ACTIVATION},
        "data": {
            "dataset": dataset,
            "source_requested": data_source,
            "data_dir": str(data_dir or REPO_ROOT / params.DATA_DIR),
            "train_size": get("train_size", None),
            "test_size": get("test_size", None),
            "validation_size": int(validation_size),
        },
        "hessian": {
            "batch_size": params.HESSIAN_BATCH_SIZE,
            "spectral_steps": get("spectral_steps", params.SPECTRAL_STEPS),
            "sharpness_every": get("sharpness_every", params.SHARPNESS_EVERY),
            "tol": params.EIG_TOL,
            "final_top_k": get("final_top_k", params.FINAL_TOP_K),
            "trace_samples": get("trace_samples", params.TRACE_SAMPLES),
            "density_runs": get("density_runs", params.DENSITY_RUNS),
            "density_steps": get("density_steps", params.DENSITY_STEPS),
            "sensitivity_batches": list(get("sensitivity_batches", params.SENSITIVITY_BATCHES)),
            "sensitivity_trace_samples": get("sensitivity_trace_samples", params.SENSITIVITY_TRACE_SAMPLES),
            "outlier_top": get("outlier_top", params.OUTLIER_TOP),
            "full_data_precision": params.FULL_DATA_PRECISION,
            "full_data_chunk": params.FULL_DATA_CHUNK,
        },
        "tracking": {
            "on": bool(params.TRACKING if tracking is None else tracking),
            "subspace_k": get("subspace_k", params.SUBSPACE_K),
            "equal_loss_thresholds": list(get("equal_loss_thresholds", params.EQUAL_LOSS_THRESHOLDS)),
            "equal_loss_trace_samples": get("equal_loss_trace_samples", params.EQUAL_LOSS_TRACE_SAMPLES),
        },
        "landscape": {
            "points": get("landscape_points", params.LANDSCAPE_POINTS),
            "radius": params.LANDSCAPE_RADIUS,
        },
        "final_analysis": bool(params.FINAL_ANALYSIS if final_analysis is None else final_analysis),
        "results_dir": str(Path(results_dir or REPO_ROOT / params.RUNS_DIR).resolve()),
        "sweep": sweep,
        "experiment": experiment,
        "stop_loss": None if stop_loss is None else float(stop_loss),
    }
    if dataset == "fashion-mnist" or data_source == "torchvision":  # 60,000 training images (auto: unknown here)
        config["hessian"].update({key: get(key, value) for key, value in params.FULL_SIZE.items()})
    if smoke_cfg.get("pyhessian_max_hvps"):  # smoke runs cap PyHessian's iterations; full runs keep its own cap
        config["hessian"]["pyhessian_max_hvps"] = smoke_cfg["pyhessian_max_hvps"]
    if smoke_cfg.get("guard_steps"):  # and shorten the missed-eigenvalue search; full runs keep krylov.GUARD_STEPS
        config["hessian"]["guard_steps"] = smoke_cfg["guard_steps"]
    return config


def pick_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def set_threads(threads=None) -> str:
    """Set torch's thread count (None: ``params.TORCH_THREADS``, the runner's); returns a line saying so and why."""
    wanted = params.TORCH_THREADS if threads is None else threads
    if not _is_int(wanted) or wanted < 1:
        raise StudyError(f"threads must be a positive integer, got {wanted!r}")
    torch.set_num_threads(int(wanted))
    why = ("params.TORCH_THREADS, as python -m minima run uses: runs at the same count agree bit for bit"
           if threads is None or wanted == params.TORCH_THREADS else
           f"asked for; params.TORCH_THREADS is {params.TORCH_THREADS}, and this run reproduces bit for bit only "
           f"at {wanted}")
    return f"torch threads: {torch.get_num_threads()} ({why})"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":")[0].strip() in ("model name", "Model", "cpu model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info(device) -> dict:
    """What a run records about where it ran: type, name, CPU model and torch's CPU capability (the SIMD kernels
    it picked, which change the rounding of sums), torch threads, cores."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    return {"type": device.type, "name": name, "cpu_model": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
