"""The runs of a sweep: planning them, the manifest ``sweep.json`` that records them, and their status."""

import json
from pathlib import Path

import params
from minima.config import make_config, usable_cores  # noqa: F401 - usable_cores is the launcher's too
from minima.optimizers import get as optimizer_entry
from minima.runs import (
    REPO_ROOT,
    STATUSES,
    StudyError,
    check_sweep_name,
    find_runs,
    load_json,
    run_dir_for,
    save_json,
    status,
)

# ---------------------------------------------------------------- sweep defaults
SEEDS = (0, 1, 2)                # three seeds per setting: enough for a mean ± sd
POLL_S = 1.0                     # how often the launcher looks at its jobs
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 minutes) would kill every real run
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch reads these when the notebook's kernel starts
# the selection reads validation accuracy only: sweep runs train, evaluate and save, with no Hessian work
TRAIN_ONLY = {"tracking": params.SWEEP_TRACKING, "final_analysis": params.SWEEP_FINAL_ANALYSIS}


# ---------------------------------------------------------------- planning

def params_lr_grid(optimizer) -> list[float]:
    """``params.LR_GRID_FACTORS`` times the optimizer's original learning rate, to 6 significant digits."""
    base = optimizer_entry(optimizer).defaults["lr"]
    return [float(f"{base * f:.6g}") for f in params.LR_GRID_FACTORS]


def sweep_dir(name, results_dir=None) -> Path:
    check_sweep_name(name)
    return Path(results_dir or REPO_ROOT / params.RUNS_DIR).resolve() / "sweeps" / name


def plan_sweep(name, optimizers, seeds=SEEDS, *, lr_grid=True, settings=None, smoke=False, epochs=None,
               data_source=None, data_dir=None, validation_size=None, results_dir=None) -> list[dict]:
    """The validated configs of a sweep, one per optimizer x setting x seed (raises StudyError).

    ``lr_grid``: True for the params grid, False/None for none, a list of
    learning rates for every optimizer, or {optimizer: [lr, ...]} (the others
    get the params grid). ``settings``: {optimizer: [overrides, ...]}, more
    settings on top of the learning rates. An optimizer left with no setting
    runs with its default hyperparameters.
    """
    optimizers, seeds = list(optimizers), list(seeds)
    if not optimizers or not seeds:
        raise StudyError("a sweep needs at least one optimizer and one seed")
    for opt in optimizers:
        optimizer_entry(opt)  # an unknown name: one line with the valid choices
    if isinstance(lr_grid, dict):
        unknown = sorted(set(lr_grid) - set(optimizers))
        if unknown:
            raise StudyError(f"learning rates given for {', '.join(unknown)}, which is not in the sweep's "
                                     f"optimizers ({', '.join(optimizers)})")
    if validation_size is None:
        validation_size = params.SMOKE["validation_size"] if smoke else params.VALIDATION_SIZE
    configs = {}
    for opt in optimizers:
        if lr_grid is True or (isinstance(lr_grid, dict) and opt not in lr_grid):
            lrs = params_lr_grid(opt)
        elif isinstance(lr_grid, dict):
            lrs = lr_grid[opt]
        else:
            lrs = list(lr_grid or [])
        overrides = [{"lr": lr} for lr in lrs] + list((settings or {}).get(opt, []))
        for ov in overrides or [{}]:
            for seed in seeds:
                cfg = make_config(opt, seed, smoke=smoke, epochs=epochs, data_source=data_source,
                                  data_dir=data_dir, overrides=ov, sweep=name, validation_size=validation_size,
                                  results_dir=results_dir, **TRAIN_ONLY)
                configs.setdefault(run_dir_for(cfg), cfg)  # a repeated value is one run
    return list(configs.values())


def sweep_settings(config) -> dict:
    """What every run of a sweep shares, checked on every launch (the data folder may move)."""
    return {"epochs": config["epochs"], "batch_size": config["batch_size"], "smoke": config["smoke"],
            "data": {k: v for k, v in config["data"].items() if k != "data_dir"}}


def load_manifest(name, results_dir=None) -> dict:
    path = sweep_dir(name, results_dir) / "sweep.json"
    if not path.exists():
        root = path.parent.parent
        known = sorted(p.name for p in root.iterdir() if (p / "sweep.json").exists()) if root.is_dir() else []
        raise StudyError(f"no sweep named {name!r} in {root}; sweeps there: {', '.join(known) or 'none'}")
    return load_json(path)


def planned_configs(name, results_dir=None) -> list[dict]:
    """Every run the sweep's launches have planned, as configs."""
    manifest = load_manifest(name, results_dir)
    s, d = manifest["settings"], manifest["settings"]["data"]
    return [make_config(r["optimizer"], r["seed"], smoke=s["smoke"], epochs=s["epochs"],
                        batch_size=s["batch_size"], data_source=d["source_requested"],
                        data_dir=manifest["data_dir"], overrides=r["overrides"], sweep=name,
                        validation_size=d["validation_size"], results_dir=results_dir, **TRAIN_ONLY)
            for r in manifest["runs"]]


def record_plan(name, configs, launch_info) -> Path:
    """Record the plan in sweep.json, merged with earlier launches; refuses a change of epochs, data or scale."""
    folder = run_dir_for(configs[0]).parent.parent
    path = folder / "sweep.json"
    settings = sweep_settings(configs[0])
    key = lambda r: (r["optimizer"], r["seed"], json.dumps(r["overrides"], sort_keys=True))  # noqa: E731
    manifest = {"name": name, "settings": settings, "data_dir": configs[0]["data"]["data_dir"], "runs": [],
                "launches": []}
    if path.exists():
        manifest = load_json(path)
        old = manifest["settings"]
        old["data"].setdefault("dataset", "mnist")  # sweeps launched before datasets were recorded
        differs = [k for k in settings if json.dumps(old[k], sort_keys=True) != json.dumps(settings[k], sort_keys=True)]
        if differs:
            raise StudyError(f"sweep {name!r} was launched with a different {' and '.join(differs)} "
                                     f"(epochs {old['epochs']}, smoke {old['smoke']}, data source "
                                     f"{old['data']['source_requested']}); relaunch it as it was, "
                                     f"or choose another --name")
    seen = {key(r) for r in manifest["runs"]}
    manifest["runs"] += [r for r in ({"optimizer": c["optimizer"], "seed": c["seed"], "overrides": c["overrides"]}
                                     for c in configs) if key(r) not in seen]
    manifest["data_dir"] = configs[0]["data"]["data_dir"]
    manifest["launches"].append(launch_info)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_json(path, manifest)
    except OSError as e:
        raise StudyError(f"sweep folder {folder} is not writable ({e.strerror}); "
                                 f"choose another results folder") from None
    return path


# ---------------------------------------------------------------- status

def sweep_runs(name, results_dir=None) -> list[Path]:
    """Run folders of the sweep: every planned one, and any other found in the sweep folder."""
    planned = [run_dir_for(c) for c in planned_configs(name, results_dir)]
    found = find_runs(sweep_dir(name, results_dir))
    return planned + [p for p in found if p not in set(planned)]


def sweep_status(name, results_dir=None) -> list[tuple[str, str, str]]:
    """(run, status, detail) for every run of the sweep; run is ``<optimizer>-<setting>/seed<k>``."""
    root = sweep_dir(name, results_dir)
    return [(str(p.relative_to(root)), *status(p)) for p in sweep_runs(name, results_dir)]


def print_status(name, results_dir=None) -> dict:
    rows = sweep_status(name, results_dir)
    counts = dict.fromkeys(STATUSES, 0)
    width = max((len(r) for r, _, _ in rows), default=0)
    print(f"sweep {name}: {len(rows)} runs in {sweep_dir(name, results_dir)}")
    for run, state, detail in rows:
        counts[state] += 1
        print(f"{state:<10} {run:<{width}}  {detail}")
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return counts
