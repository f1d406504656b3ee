"""The projected-update experiment's runs, read from their folders (the collection layer of its report).

``collect(results_dir)`` reads the complete run folders of ``<results>/projected/<group>/`` (planned by
``minima.projected_study``) and, as the final regime's plain-SGD baseline, the study's own
``<results>/sgd/seed<k>/``. Each run is labelled by its ``setting``: ``sgd`` (plain SGD at the original lr),
``sgd lr/2`` (the check's), or ``λ=<lam>`` (with ``R=<refresh_every>`` where that is not the default).
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

import params
from minima import projected, runs
from minima.projected_study import EXPERIMENT

BASE = "sgd"
HALF = "sgd lr/2"


def setting_of(config) -> str:
    """The run's label within its group: sgd, sgd lr/2 or λ=<lam> (R=<r> when not the default)."""
    h = config["hyperparameters"]
    if config["optimizer"] == "sgd":
        if h["lr"] == params.SGD["lr"]:
            return BASE
        return HALF if h["lr"] == params.SGD["lr"] / 2 else f"sgd lr={h['lr']:g}"
    label = f"λ={h['lam']:g}"
    return label if h["refresh_every"] == params.PROJECTED["refresh_every"] else f"{label} R={h['refresh_every']}"


def _order(r) -> tuple:
    """A run's place in its group's tables: plain SGD, other SGD, then by λ and R."""
    if r["optimizer"] == "sgd":
        return (0 if r["setting"] == BASE else 1, r["lr"], 0)
    return (2, r["lam"], r["refresh_every"])


def _run(run_dir, group) -> dict | None:
    run = runs.load_run(run_dir)
    if "config" not in run or "final" not in run or "history" not in run:
        return None
    c = run["config"]
    h = c["hyperparameters"]
    return dict(group=group, setting=setting_of(c), seed=c["seed"], run_dir=str(run_dir),
                optimizer=c["optimizer"], lam=h.get("lam", np.nan), refresh_every=h.get("refresh_every", np.nan),
                start_step=h.get("start_step", 0), lr=h["lr"], epochs=c["epochs"], status=run["final"]["status"],
                history=run["history"], final=run["final"], spectrum=run.get("spectrum"),
                equal_loss=run.get("equal_loss"), projection=_read_projection(run_dir))


def _read_projection(run_dir):
    path = Path(run_dir) / projected.PROJECTION
    return pd.read_csv(path) if path.exists() and path.stat().st_size > 1 else None


def collect(results_dir) -> list[dict]:
    """Every complete run of the experiment, and the study's SGD runs as the final regime's baseline."""
    root = Path(results_dir)
    found = []
    for run_dir in runs.find_runs(root / EXPERIMENT):
        if runs.is_done(run_dir):
            row = _run(run_dir, run_dir.relative_to(root / EXPERIMENT).parts[0])
            if row is not None:
                found.append(row)
    final = [r for r in found if r["group"] == "final"]
    if final:  # the study's SGD runs of the experiment's seeds, trained as long
        for run_dir in sorted((root / BASE).glob("seed*")):
            if runs.is_done(run_dir):
                row = _run(run_dir, "final")
                if row is not None and row["epochs"] == max(r["epochs"] for r in final) and \
                        row["seed"] in {r["seed"] for r in final}:
                    found.append(row)
    return sorted(found, key=lambda r: (r["group"], _order(r), r["seed"]))


def has_experiment(results_dir) -> bool:
    return any(runs.is_done(d) for d in runs.find_runs(Path(results_dir) / EXPERIMENT))


def _group(found, group):
    return [r for r in found if r["group"] == group]


def _settings(members):
    """The members' settings, in table order (``_order``)."""
    order = {r["setting"]: _order(r) for r in members}
    return sorted(order, key=order.get)


def _weights(run_dir):
    return torch.load(Path(run_dir) / runs.MODEL, map_location="cpu", weights_only=True)
