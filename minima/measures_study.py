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
from minima import landscape, measures, runs, schema, training
from minima.data import load_mnist

FINAL, STOPPED = "final", "stop"


LATER = ("tuned/", "fashion-mnist/", "sweeps/", "projected/")   # after the study's runs, in this order


def _order(entry) -> tuple:
    """The flatness population first (its equal-loss stops, then its final weights), then the study's runs, then
    the tuned, full-size, sweep and projected-update runs: a pass stopped part way has measured the models the
    protocol's scores need most."""
    key = entry["key"]
    if key.startswith("flatness/"):
        return (0, entry["stop"] != STOPPED, key)
    later = [i for i, prefix in enumerate(LATER) if key.startswith(prefix)]
    return (2 + later[0] if later else 1, False, key)


def population(results_dir) -> list[dict]:
    """(run folder, stopping point) for every complete run with weights, at its final weights and, where the run
    kept one, at its equal-loss stop; in `_order`."""
    root = Path(results_dir)
    out = []
    for run_dir in runs.find_runs(root):
        if not runs.is_done(run_dir) or not (run_dir / runs.MODEL).exists():
            continue
        if runs.load_json(run_dir / runs.FINAL)["train_loss"] is None:    # diverged: no minimum to measure
            continue
        rel = run_dir.relative_to(root).as_posix()
        out.append({"run_dir": run_dir, "key": rel, "stop": FINAL})
        stop = run_dir / runs.STOP
        if stop.exists() and runs.load_json(stop)["reached"]:
            out.append({"run_dir": run_dir, "key": rel, "stop": STOPPED})
    return sorted(out, key=_order)


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


def _load(entry, data_cache):
    """(model at this stopping point, the run's config, its data, its numbers there), the data loaded once per
    dataset."""
    config = runs.load_json(entry["run_dir"] / runs.CONFIG)
    d = config["data"]
    key = (d.get("dataset", "mnist"), d.get("source"), d.get("train_size"), d.get("test_size"),
           d.get("validation_size"))
    if key not in data_cache:
        data_cache[key] = load_mnist(d.get("source") or "embedded", d.get("data_dir"), dataset=key[0],
                                     train_size=key[2], test_size=key[3], validation_size=key[4] or 0,
                                     verbose=False)
    model = training.build_model(config["seed"], "cpu", config["model"]["activation"])
    state, at = _state(entry)
    model.load_state_dict(state)
    return model, config, data_cache[key], at


def measure(entry, data_cache, subset=None) -> dict:
    """One row: the run's hyperparameters, its gap at this stopping point and every measure."""
    rho_worst, rho_average = params.MEASURES_RHO_WORST, params.MEASURES_RHO_AVERAGE
    subset = subset or params.MEASURES_SUBSET
    model, config, data, at = _load(entry, data_cache)
    initial = training.build_model(config["seed"], "cpu", config["model"]["activation"])
    seed = params.MEASURES_SEED
    x1, y1 = _subset(data.x_train, data.y_train, subset, seed)
    x2, y2 = _subset(data.x_train, data.y_train, subset + 24, seed + 1)
    hutch = measures.hutchinson(model, F.cross_entropy, x1, y1, n_probes=params.MEASURES_PROBES, seed=seed)
    average = measures.adaptive_average_case(model, F.cross_entropy, x2, y2, rho_average, seed=seed,
                                             n_samples=params.MEASURES_AVERAGE_SAMPLES)
    pac = measures.pac_bayes_flatness(model, F.cross_entropy, x2, y2, seed=seed,
                                      sigma_max=params.MEASURES_PAC_BAYES_SIGMA_MAX)
    directions = [landscape.filter_normalized_direction(model, seed=seed + i) for i in range(5)]
    row = {
        "run": entry["key"], "stop": entry["stop"], "dataset": config["data"].get("dataset", "mnist"),
        "optimizer": config["optimizer"],
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
        "adaptive_worst": measures.adaptive_worst_case(model, F.cross_entropy, x2, y2, rho_worst, seed=seed),
        "adaptive_average": average["mean"], "adaptive_average_se": average["se"],
        "pac_bayes_sigma": pac["sigma"], "pac_bayes_flatness": pac["flatness"],
        "random_direction": measures.random_direction_sharpness(model, F.cross_entropy, x2, y2, directions),
        "weight_norm": measures.weight_norm(model), "distance_from_init": measures.distance_from_init(model, initial),
        "margin": measures.output_margin(model, data.x_train, data.y_train),
        "rho_worst": rho_worst, "rho_average": rho_average, "code_commit": runs.git_commit(),
    }
    return schema.MEASURES.written({k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                                    for k, v in row.items()})


def gather(out_dir) -> Path:
    """``<out>/measures.csv`` from every row measured so far (each checked against ``schema.MEASURES``)."""
    paths = sorted((Path(out_dir) / "rows").glob("*.json"))
    if not paths:
        raise runs.StudyError(f"no measured rows in {Path(out_dir) / 'rows'}; run python -m minima measures first")
    rows = [schema.MEASURES.written(runs.load_json(p)) for p in paths]
    table = Path(out_dir) / schema.MEASURES_FILE
    runs.save_csv(table, rows)
    return table


def run(results_dir, out_dir, progress=True, shard=(0, 1)) -> Path:
    """Measure every model of the population not measured yet; then gather the rows into ``measures.csv``.

    ``shard=(k, n)`` takes every n-th model of the population from the k-th, so n processes share a pass (each
    row is its own file; whichever finishes last gathers them all). A model that cannot be measured (its data
    missing, say) is reported and skipped, so the others still get their rows; the pass then fails naming it."""
    from tqdm import tqdm

    k, n = shard
    todo = [e for i, e in enumerate(population(results_dir)) if i % n == k and not _row_path(out_dir, e).exists()]
    cache, failed = {}, []
    bar = tqdm(todo, desc="measures", unit="model", disable=not progress)
    for entry in bar:
        try:
            row = measure(entry, cache)
        except (runs.StudyError, RuntimeError, OSError) as e:
            failed.append(f"{entry['key']} ({entry['stop']}): {e}")
            bar.write(f"not measured: {failed[-1]}")
            continue
        runs.save_json(_row_path(out_dir, entry), row)
    table = gather(out_dir)
    if failed:
        raise runs.StudyError(f"{len(failed)} model(s) not measured (the others' rows are in {table}): "
                              + "; ".join(failed))
    return table


RHO_CHECK_RUNS = ("sgd/seed0", "adam/seed0", "adagrad/seed0", "adahessian/seed0", "sam/seed0")


def rho_sensitivity(results_dir, out_csv, rhos=None, run_keys=RHO_CHECK_RUNS, progress=True) -> Path:
    """The adaptive sharpness at several radii on a few models, to choose ``params.MEASURES_RHO_WORST`` and
    ``params.MEASURES_RHO_AVERAGE``.

    For each model and rho: the worst-case and average-case increase in float32 (as the population pass computes
    them) and the worst case's rise recomputed in float64 at the same perturbed point, so ``rounding`` (their
    difference) shows whether the float32 increase is resolved above rounding. The report reads the table."""
    from tqdm import tqdm

    rhos = list(params.MEASURES_RHO_CHECK if rhos is None else rhos)
    root = Path(results_dir)
    entries = [{"run_dir": root / k, "key": k, "stop": FINAL} for k in run_keys]
    missing = [e["key"] for e in entries if not runs.is_done(e["run_dir"])]
    if missing:
        raise runs.StudyError(f"the rho check needs complete runs {', '.join(missing)} under {root}")
    cache, rows = {}, []
    for entry in tqdm(entries, desc="rho check", unit="model", disable=not progress):
        model, config, data, _ = _load(entry, cache)
        x2, y2 = _subset(data.x_train, data.y_train, params.MEASURES_SUBSET + 24, params.MEASURES_SEED + 1)
        sigma = measures.pac_bayes_flatness(model, F.cross_entropy, x2, y2, seed=params.MEASURES_SEED,
                                            sigma_max=params.MEASURES_PAC_BAYES_SIGMA_MAX)["sigma"]
        for rho in rhos:
            worst, rounding = measures.adaptive_worst_case(model, F.cross_entropy, x2, y2, rho,
                                                           seed=params.MEASURES_SEED, rounding=True)
            average = measures.adaptive_average_case(model, F.cross_entropy, x2, y2, rho, seed=params.MEASURES_SEED,
                                                     n_samples=params.MEASURES_AVERAGE_SAMPLES)
            rows.append({"run": entry["key"], "optimizer": config["optimizer"], "pac_bayes_sigma": sigma, "rho": rho,
                         "worst": worst,
                         "worst_rounding": rounding, "average": average["mean"], "average_se": average["se"],
                         "code_commit": runs.git_commit()})
    runs.save_csv(out_csv, schema.RHO_CHECK.written(rows))
    return Path(out_csv)
