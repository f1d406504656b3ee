"""Every committed minimum measured: one row per model and stopping point, written as computed (``make measures``).

The population is every complete run folder under a results folder (the study, tuned, sweep, projected-update,
full-size and flatness runs) at its final weights (``model.pt``), and, where the run kept one, at its equal-loss
stopping point (``model_at_stop.pt``, ``stop.json``). Each row holds the run's hyperparameters, its generalization
gap at that point (test error − train error, test loss − train loss) and every measure of ``minima.measures``,
computed on training subsets fixed by ``params.MEASURES_SEED`` (the same for every model of a dataset).

Rows go to ``<out>/rows/<key>.json`` one file each, written atomically with the code's commit, so a stopped pass
resumes and a complete row is never computed twice; ``<out>/measures.csv`` gathers them.
"""

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F

import params
from minima import landscape, measures, runs, training
from minima.data import load_mnist

FINAL, STOPPED = "final", "stop"


def population(results_dir) -> list[dict]:
    """(run folder, stopping point) for every complete run with weights, final first, then its stop if kept."""
    root = Path(results_dir)
    out = []
    for run_dir in runs.find_runs(root):
        if not runs.is_done(run_dir) or not (run_dir / runs.MODEL).exists():
            continue
        rel = run_dir.relative_to(root).as_posix()
        out.append({"run_dir": run_dir, "key": rel, "stop": FINAL})
        stop = run_dir / runs.STOP
        if stop.exists() and runs.load_json(stop)["reached"]:
            out.append({"run_dir": run_dir, "key": rel, "stop": STOPPED})
    return out


def _row_path(out_dir, entry) -> Path:
    return Path(out_dir) / "rows" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", entry["key"]) + f"__{entry['stop']}.json")


def _subset(x, y, n, seed):
    """A fixed subset of n samples (all of them when there are fewer), drawn by ``seed``."""
    if len(y) <= n:
        return x, y
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def _state(entry):
    """The weights and the numbers of this stopping point: (state_dict, train/test loss and accuracy)."""
    run_dir = entry["run_dir"]
    if entry["stop"] == STOPPED:
        at = runs.load_json(run_dir / runs.STOP)
        return runs.load_torch(run_dir / runs.STOP_MODEL), at
    final = runs.load_json(run_dir / runs.FINAL)
    return runs.load_torch(run_dir / runs.MODEL), final


def measure(entry, data_cache, rho=None, subset=None) -> dict:
    """One row: the run's hyperparameters, its gap at this stopping point and every measure."""
    rho = params.MEASURES_RHO if rho is None else rho
    subset = subset or params.MEASURES_SUBSET
    config = runs.load_json(entry["run_dir"] / runs.CONFIG)
    d = config["data"]
    key = (d.get("dataset", "mnist"), d.get("source"), d.get("train_size"), d.get("test_size"),
           d.get("validation_size"))
    if key not in data_cache:
        data_cache[key] = load_mnist(d.get("source") or "embedded", d.get("data_dir"), dataset=key[0],
                                     train_size=key[2], test_size=key[3], validation_size=key[4] or 0,
                                     verbose=False)
    data = data_cache[key]
    state, at = _state(entry)
    model = training.build_model(config["seed"], "cpu", config["model"]["activation"])
    model.load_state_dict(state)
    initial = training.build_model(config["seed"], "cpu", config["model"]["activation"])
    seed = params.MEASURES_SEED
    x1, y1 = _subset(data.x_train, data.y_train, subset, seed)
    x2, y2 = _subset(data.x_train, data.y_train, subset + 24, seed + 1)
    hutch = measures.hutchinson(model, F.cross_entropy, x1, y1, n_probes=params.MEASURES_PROBES, seed=seed)
    average = measures.adaptive_average_case(model, F.cross_entropy, x2, y2, rho, seed=seed)
    pac = measures.pac_bayes_flatness(model, F.cross_entropy, x2, y2, seed=seed)
    directions = [landscape.filter_normalized_direction(model, seed=seed + i) for i in range(5)]
    row = {
        "run": entry["key"], "stop": entry["stop"], "dataset": key[0], "optimizer": config["optimizer"],
        "lr": config["hyperparameters"].get("lr"), "batch_size": config["batch_size"], "seed": config["seed"],
        "experiment": config.get("experiment") or (f"sweeps/{config['sweep']}" if config.get("sweep") else "study"),
        "epoch": at.get("epoch", at.get("epochs_completed")),
        "train_loss": at["train_loss"], "test_loss": at["test_loss"],
        "train_accuracy": at["train_accuracy"], "test_accuracy": at["test_accuracy"],
        "gap_error": (1 - at["test_accuracy"]) - (1 - at["train_accuracy"]),
        "gap_loss": at["test_loss"] - at["train_loss"],
        "lambda1": measures.lambda_max(model, F.cross_entropy, x1, y1, seed=seed),
        "trace": hutch["trace"], "trace_se": hutch["trace_se"],
        "sqrt_diag_trace": hutch["sqrt_diag_trace"], "sqrt_diag_trace_se": hutch["sqrt_diag_trace_se"],
        "adaptive_worst": measures.adaptive_worst_case(model, F.cross_entropy, x2, y2, rho, seed=seed),
        "adaptive_average": average["mean"], "adaptive_average_se": average["se"],
        "pac_bayes_sigma": pac["sigma"], "pac_bayes_flatness": pac["flatness"],
        "random_direction": measures.random_direction_sharpness(model, F.cross_entropy, x2, y2, directions),
        "weight_norm": measures.weight_norm(model), "distance_from_init": measures.distance_from_init(model, initial),
        "margin": measures.output_margin(model, data.x_train, data.y_train),
        "rho": rho, "code_commit": runs.git_commit(),
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}


def run(results_dir, out_dir, progress=True) -> Path:
    """Measure every model of the population not measured yet; then gather the rows into ``measures.csv``."""
    import pandas as pd
    from tqdm import tqdm

    todo = [e for e in population(results_dir) if not _row_path(out_dir, e).exists()]
    cache = {}
    for entry in tqdm(todo, desc="measures", unit="model", disable=not progress):
        runs.save_json(_row_path(out_dir, entry), measure(entry, cache))
    rows = [runs.load_json(p) for p in sorted((Path(out_dir) / "rows").glob("*.json"))]
    table = Path(out_dir) / "measures.csv"
    runs.save_csv(table, pd.DataFrame(rows).to_dict("records"))
    return table
