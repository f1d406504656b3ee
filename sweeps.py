"""Hyperparameter sweeps: optimizers x learning rates x seeds, run as submitit jobs, resumable.

    python sweeps.py launch --name NAME [--optimizers sgd adam] [--seeds 0 1 2] [--lr-grid [VALUES | none]]
                            [--launcher local|slurm|debug] [--max-parallel N] [--smoke] [--epochs N]
                            [--partition P --time MIN --gpus N --cpus N --mem-gb G] [--dry-run]
    python sweeps.py status --name NAME
    python sweeps.py collect --name NAME

A sweep is a named set of runs. Each run is one ``runner.execute_run(config)``,
the same notebook execution as ``python runner.py run``, with its overrides
recorded in its config and its folder at
``results/sweeps/<name>/<optimizer>-<override>/seed<k>/``. Sweep runs hold out
``params.VALIDATION_SIZE`` training samples, so that a learning rate is chosen
on validation accuracy and the test split stays untouched.

``sweep.json`` in the sweep folder lists the planned runs; launching again
submits only the runs without ``done`` (incomplete ones resume from their
checkpoint) and adds any new ones. Launchers: ``local`` (subprocesses on this
machine, at most N at once, the cores shared between them), ``slurm`` (one job
array; a job that reaches its time limit is requeued and resumes) and ``debug``
(in-process, one run after the other, for stepping through). Each run's log is
``job.log`` in its folder; submitit's own files are in ``results/sweeps/<name>/.submitit/``.
``collect`` writes the sweep's summary table through ``sweep_summary.py``.
"""

import argparse
import contextlib
import json
import logging
import math
import os
import re
import shlex
import socket
import sys
import threading
import time
from pathlib import Path

import submitit
from tqdm import tqdm

import helpers
import params
import runner
import sweep_summary

# ---------------------------------------------------------------- sweep defaults
SEEDS = (0, 1, 2)                # three seeds per setting: enough for a mean ± sd
POLL_S = 1.0                     # how often the launcher looks at its jobs
HEARTBEAT_S = 30                 # a job touches its job.log this often: well inside run_status's 2-minute "running"
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit's local default (2 minutes) would kill every real run
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")  # torch reads these when the notebook's kernel starts

# ---------------------------------------------------------------- Slurm defaults (each has a flag)
SLURM_PARTITION = None           # None: the cluster's default partition
SLURM_TIME_MIN = 240             # a full 150-epoch run with its Hessian analysis, with room to spare
SLURM_GPUS = 1
SLURM_CPUS = 4                   # also each job's torch thread count
SLURM_MEM_GB = 16
SLURM_REQUEUES = 3               # a run that reaches its time limit is requeued (and resumes) this often

LAUNCHERS = ("local", "slurm", "debug")


# ---------------------------------------------------------------- planning

def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def params_lr_grid(optimizer) -> list[float]:
    """``params.LR_GRID_FACTORS`` times the optimizer's original learning rate, to 6 significant digits."""
    base = params.OPTIMIZERS[optimizer]["lr"]
    return [float(f"{base * f:.6g}") for f in params.LR_GRID_FACTORS]


def sweep_dir(name, results_dir=None) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(name)):  # the rule helpers.make_config applies
        raise helpers.StudyError(f"sweep name {name!r} must be letters, digits, '.', '_' or '-'")
    return Path(results_dir or helpers.REPO_ROOT / params.RESULTS_DIR).resolve() / "sweeps" / name


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
        raise helpers.StudyError("a sweep needs at least one optimizer and one seed")
    for opt in optimizers:
        if opt not in params.OPTIMIZERS:
            raise helpers.StudyError(f"unknown optimizer {opt!r}; valid choices: {', '.join(params.OPTIMIZERS)}")
    if isinstance(lr_grid, dict):
        unknown = sorted(set(lr_grid) - set(optimizers))
        if unknown:
            raise helpers.StudyError(f"learning rates given for {', '.join(unknown)}, which is not in the sweep's "
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
                cfg = runner.run_config(opt, seed, smoke=smoke, epochs=epochs, data_source=data_source,
                                        data_dir=data_dir, overrides=ov, sweep=name, validation_size=validation_size,
                                        results_dir=results_dir)
                configs.setdefault(helpers.run_dir_for(cfg), cfg)  # a repeated value is one run
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
        raise helpers.StudyError(f"no sweep named {name!r} in {root}; sweeps there: {', '.join(known) or 'none'}")
    return helpers.load_json(path)


def planned_configs(name, results_dir=None) -> list[dict]:
    """Every run the sweep's launches have planned, as configs."""
    manifest = load_manifest(name, results_dir)
    s, d = manifest["settings"], manifest["settings"]["data"]
    return [runner.run_config(r["optimizer"], r["seed"], smoke=s["smoke"], epochs=s["epochs"],
                              batch_size=s["batch_size"], data_source=d["source_requested"],
                              data_dir=manifest["data_dir"], overrides=r["overrides"], sweep=name,
                              validation_size=d["validation_size"], results_dir=results_dir)
            for r in manifest["runs"]]


def record_plan(name, configs, launch_info) -> Path:
    """Record the plan in sweep.json, merged with earlier launches; refuses a change of epochs, data or scale."""
    folder = helpers.run_dir_for(configs[0]).parent.parent
    path = folder / "sweep.json"
    settings = sweep_settings(configs[0])
    key = lambda r: (r["optimizer"], r["seed"], json.dumps(r["overrides"], sort_keys=True))  # noqa: E731
    manifest = {"name": name, "settings": settings, "data_dir": configs[0]["data"]["data_dir"], "runs": [],
                "launches": []}
    if path.exists():
        manifest = helpers.load_json(path)
        old = manifest["settings"]
        differs = [k for k in settings if json.dumps(old[k], sort_keys=True) != json.dumps(settings[k], sort_keys=True)]
        if differs:
            raise helpers.StudyError(f"sweep {name!r} was launched with a different {' and '.join(differs)} "
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
        helpers.save_json(path, manifest)
    except OSError as e:
        raise helpers.StudyError(f"sweep folder {folder} is not writable ({e.strerror}); "
                                 f"choose another results folder") from None
    return path


# ---------------------------------------------------------------- status

def run_state(run_dir) -> tuple[str, str]:
    """``runner.run_status`` of a run folder, or incomplete when the run has not started."""
    return runner.run_status(run_dir) if Path(run_dir).is_dir() else ("incomplete", "not started")


def sweep_runs(name, results_dir=None) -> list[Path]:
    """Run folders of the sweep: every planned one, and any other found in the sweep folder."""
    planned = [helpers.run_dir_for(c) for c in planned_configs(name, results_dir)]
    found = runner.find_runs(sweep_dir(name, results_dir))
    return planned + [p for p in found if p not in set(planned)]


def sweep_status(name, results_dir=None) -> list[tuple[str, str, str]]:
    """(run, status, detail) for every run of the sweep; run is ``<optimizer>-<setting>/seed<k>``."""
    root = sweep_dir(name, results_dir)
    return [(str(p.relative_to(root)), *run_state(p)) for p in sweep_runs(name, results_dir)]


def print_status(name, results_dir=None) -> dict:
    rows = sweep_status(name, results_dir)
    counts = dict.fromkeys(runner.STATUSES, 0)
    width = max((len(r) for r, _, _ in rows), default=0)
    print(f"sweep {name}: {len(rows)} runs in {sweep_dir(name, results_dir)}")
    for run, status, detail in rows:
        counts[status] += 1
        print(f"{status:<10} {run:<{width}}  {detail}")
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return counts


# ---------------------------------------------------------------- jobs

@contextlib.contextmanager
def _notebook_log(path):
    """Append papermill's stream of the notebook's output to ``path`` (the run's job.log)."""
    logger = logging.getLogger("papermill")
    try:
        handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:  # an unwritable run folder: execute_run reports it
        yield logger
        return
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield logger
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


class SweepJob(submitit.helpers.Checkpointable):
    """One run as a submitit job: set the job's environment, then ``runner.execute_run(config)``.

    ``environment`` maps variable -> value (None unsets it): thread counts, so
    that parallel jobs share the cores, and the GPUs the launcher saw. Being
    Checkpointable, a Slurm job that reaches its time limit is requeued with
    the same config, and the run resumes from its last epoch checkpoint.
    """

    def __init__(self, environment=None):
        self.environment = dict(environment or {})

    def __call__(self, config) -> str:
        for key, value in self.environment.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = str(value)
        run_dir = helpers.run_dir_for(config)
        with contextlib.suppress(OSError):
            run_dir.mkdir(parents=True, exist_ok=True)
        try:
            job_id = submitit.JobEnvironment().job_id
        except RuntimeError:  # called outside submitit
            job_id = "none"
        t0 = time.time()
        settings = " ".join(f"{k}={v}" for k, v in self.environment.items() if v is not None)
        with _notebook_log(run_dir / "job.log") as log, _heartbeat(run_dir / "job.log"):
            log.info(f"=== job {job_id} on {socket.gethostname()}, pid {os.getpid()}, "
                     f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {settings}")
            try:
                outcome = runner.execute_run(config, progress=False, log_output=True)
            except Exception:
                log.exception("=== the job raised")
                raise
            log.info(f"=== {outcome} after {time.time() - t0:.0f} s")
        return outcome


@contextlib.contextmanager
def _heartbeat(path):
    """Touch ``path`` every HEARTBEAT_S while the run lasts, so that status (and a relaunch) see it alive
    even in a long phase that writes nothing, such as the final Hessian analysis."""
    stop = threading.Event()

    def beat():
        while not stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _failure_line(error: Exception) -> str:
    """The line that says what went wrong, out of submitit's error (which wraps the job's traceback)."""
    text = str(error).strip()
    if "with trace:" in text:  # FailedJobError: the traceback sits between two rules
        parts = text.split("----------------------")
        lines = [ln for ln in (parts[1] if len(parts) > 1 else text).splitlines() if ln.strip()]
        return lines[-1].strip() if lines else text
    state = re.search(r"has not produced any output \(state: ([^)]*)\)", text)
    if state:  # killed by the scheduler: out of memory, cancelled, node failure
        return f"the job ended without a result (state: {state.group(1)}); relaunch to resume it"
    return text.splitlines()[0] if text else type(error).__name__


def job_outcome(job) -> str:
    """done, diverged, skipped or ``failed: <why>`` for a finished job."""
    if isinstance(job, submitit.LocalJob) and not job.paths.result_pickle.exists():
        return (f"failed: the job ended without a result (killed?); its logs: {job.paths.stdout.parent}; "
                f"relaunch to resume it")
    try:
        return job.result()
    except submitit.core.utils.UncompletedJobError as e:  # the job raised, timed out or died
        return "failed: " + _failure_line(e)
    except Exception as e:  # noqa: BLE001 - the debug executor re-raises the run's own exception
        return f"failed: {type(e).__name__}: {e}"


def _record_failure(run_dir, outcome):
    """Leave the failure in the run folder (error.txt) when the run could not, so that status shows it."""
    if outcome.startswith("failed") and run_dir.is_dir() and not helpers.is_done(run_dir) \
            and not (run_dir / "error.txt").exists():
        with contextlib.suppress(OSError):
            (run_dir / "error.txt").write_text(outcome.removeprefix("failed: ") + "\n")


def slurm_parameters(name, *, partition=SLURM_PARTITION, time_min=SLURM_TIME_MIN, gpus=SLURM_GPUS,
                     cpus=SLURM_CPUS, mem_gb=SLURM_MEM_GB, max_parallel=None) -> dict:
    """The SlurmExecutor parameters of a sweep's job array."""
    for label, value, least in (("--time", time_min, 1), ("--cpus", cpus, 1), ("--gpus", gpus, 0)):
        if not isinstance(value, int) or value < least:
            raise helpers.StudyError(f"{label} must be an integer of at least {least}, got {value!r}")
    if mem_gb is not None and not (isinstance(mem_gb, (int, float)) and mem_gb > 0):
        raise helpers.StudyError(f"--mem-gb must be a positive number, got {mem_gb!r}")
    out = {"job_name": f"sweep-{name}", "time": time_min, "cpus_per_task": cpus}
    if partition:
        out["partition"] = partition
    if gpus:
        out["gpus_per_node"] = gpus
    if mem_gb is not None:
        out["mem"] = f"{mem_gb:g}GB"
    if max_parallel:
        out["array_parallelism"] = max_parallel
    return out


def sbatch_script(parameters, folder, n_runs) -> str:
    """The sbatch file submitit writes for this array (rendered here, so no cluster is needed to see it)."""
    from submitit.slurm.slurm import _make_sbatch_string  # submitit 1.5.4 is pinned in requirements.txt
    command = f"{shlex.quote(sys.executable)} -u -m submitit.core._submit {shlex.quote(str(folder))}"
    return _make_sbatch_string(command=command, folder=folder, map_count=n_runs if n_runs > 1 else None,
                               **parameters)


def _make_executor(launcher, folder, slurm):
    if launcher == "local":
        ex = submitit.LocalExecutor(folder)
        ex.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN)
    elif launcher == "debug":
        ex = submitit.DebugExecutor(folder)
    else:
        ex = submitit.SlurmExecutor(folder, max_num_timeout=SLURM_REQUEUES)
        ex.update_parameters(**slurm)
    return ex


# ---------------------------------------------------------------- launch

def launch_sweep(name, optimizers=tuple(params.OPTIMIZERS), seeds=SEEDS, *, lr_grid=True, settings=None,
                 smoke=False, epochs=None, data_source=None, data_dir=None, validation_size=None, results_dir=None,
                 launcher="local", max_parallel=None, slurm=None, dry_run=False, progress=True,
                 poll_s=POLL_S) -> dict[str, str]:
    """Plan the sweep, then run every planned run without ``done``; returns {run: outcome}.

    Outcomes: done, diverged, ``failed: <why>``, skipped (already done) or
    running (files touched in the last 2 minutes, by a job still alive: left
    alone). A failed run never stops the others. ``slurm``: keyword arguments
    of ``slurm_parameters``. With ``dry_run`` nothing is written or submitted.
    The data source is fixed for the whole sweep at its first launch, so that
    ``auto`` cannot give some runs full MNIST and others the embedded subset.
    """
    if launcher not in LAUNCHERS:
        raise helpers.StudyError(f"unknown launcher {launcher!r}; valid choices: {', '.join(LAUNCHERS)}")
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise helpers.StudyError(f"--max-parallel must be a positive integer, got {max_parallel!r}")
    slurm_params = slurm_parameters(name, max_parallel=max_parallel, **(slurm or {})) if launcher == "slurm" else None
    if launcher == "slurm" and not dry_run and submitit.SlurmExecutor.affinity() < 0:
        raise helpers.StudyError("the slurm launcher needs Slurm (srun was not found on PATH); "
                                 "use --launcher local, or add --dry-run to see the sbatch script")
    plan = dict(lr_grid=lr_grid, settings=settings, smoke=smoke, epochs=epochs, data_dir=data_dir,
                validation_size=validation_size, results_dir=results_dir)
    configs = plan_sweep(name, optimizers, seeds, data_source=data_source, **plan)  # validates everything
    folder = helpers.run_dir_for(configs[0]).parent.parent
    source = configs[0]["data"]["source_requested"]
    if data_source is None and (folder / "sweep.json").exists():
        source = helpers.load_json(folder / "sweep.json")["settings"]["data"]["source_requested"]
    elif source != "embedded" and not dry_run:
        source, why = helpers.resolve_data_source(source, configs[0]["data"]["data_dir"])
        print(f"data source: {source}" + (f" (full MNIST unavailable: {why})" if why else ""))
    if source != configs[0]["data"]["source_requested"]:
        configs = plan_sweep(name, optimizers, seeds, data_source=source, **plan)
    label = {helpers.run_dir_for(c): str(helpers.run_dir_for(c).relative_to(folder)) for c in configs}
    outcomes, todo = {}, []
    for cfg in configs:
        status, _ = run_state(helpers.run_dir_for(cfg))
        if status in ("done", "diverged", "running"):
            outcomes[label[helpers.run_dir_for(cfg)]] = "running" if status == "running" else "skipped"
        else:
            todo.append(cfg)
    submitit_dir = folder / ".submitit"
    if dry_run:
        print(f"sweep {name}: {len(configs)} runs, {len(todo)} to launch with the {launcher} launcher")
        for cfg in todo:
            print("  " + label[helpers.run_dir_for(cfg)])
        if launcher == "slurm" and todo:
            print(sbatch_script(slurm_params, submitit_dir, len(todo)))
        return outcomes
    if launcher == "local":
        max_parallel = max_parallel or usable_cores()
        environment = dict.fromkeys(THREAD_VARIABLES, max(1, usable_cores() // max_parallel))
        # submitit's local executor hides the GPUs unless told; the jobs see what the launcher sees
        environment["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES")
    elif launcher == "slurm":
        environment = dict.fromkeys(THREAD_VARIABLES, slurm_params["cpus_per_task"])
    else:
        environment = {}
    record_plan(name, configs, {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "launcher": launcher,
                                "max_parallel": max_parallel, "submitted": len(todo), "slurm": slurm_params})
    running = sum(o == "running" for o in outcomes.values())
    if running:
        print(f"{running} run(s) look alive (files touched in the last 2 minutes) and are left alone; "
              f"see: python sweeps.py status --name {name}", file=sys.stderr)
    if todo:
        executor = _make_executor(launcher, submitit_dir, slurm_params)
        bar = tqdm(total=len(configs) - running, initial=len(outcomes) - running, desc=f"sweep {name}", unit="run",
                   disable=not progress, dynamic_ncols=True)

        def finished(cfg, outcome):
            outcomes[label[helpers.run_dir_for(cfg)]] = outcome
            if outcome != "done":
                bar.write(f"{label[helpers.run_dir_for(cfg)]}: {outcome}")
            bar.update(1)

        with bar:
            run_jobs(executor, SweepJob(environment), todo, finished, max_parallel=max_parallel,
                     as_array=launcher == "slurm", poll_s=poll_s, log=bar.write)
    counts = {k: sum(o.split(":")[0] == k for o in outcomes.values())
              for k in ("done", "skipped", "diverged", "failed", "running")}
    print(f"sweep {name}: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    return outcomes


def run_jobs(executor, job_fn, configs, finished, *, max_parallel=None, as_array=False, poll_s=POLL_S, log=print):
    """Submit ``job_fn(config)`` for every config; call ``finished(config, outcome)`` as each job ends.

    ``as_array``: everything at once in one job array (Slurm throttles it);
    else at most ``max_parallel`` jobs at a time. A failure is written to the
    run's error.txt when the run could not. On Ctrl-C, local jobs are stopped
    (a relaunch resumes them); Slurm jobs keep running.
    """
    pending, jobs = list(configs), {}
    try:
        if as_array:
            with executor.batch():
                for cfg in pending:
                    jobs[executor.submit(job_fn, cfg)] = cfg
            pending = []
            log(f"submitted job array {next(iter(jobs)).job_id.split('_')[0]} ({len(jobs)} runs); "
                f"submitit's logs: {executor.folder}")
        while pending or jobs:
            while pending and len(jobs) < (max_parallel or 1):
                cfg = pending.pop(0)
                jobs[executor.submit(job_fn, cfg)] = cfg
            for job in [j for j in jobs if j.done()]:
                cfg = jobs.pop(job)
                outcome = job_outcome(job)
                _record_failure(helpers.run_dir_for(cfg), outcome)
                finished(cfg, outcome)
            if jobs:
                time.sleep(poll_s)
    except KeyboardInterrupt:
        if isinstance(executor, submitit.LocalExecutor):
            for job in jobs:
                job.cancel()
            for job, cfg in jobs.items():
                with contextlib.suppress(Exception):
                    job.wait()
                _record_failure(helpers.run_dir_for(cfg), "failed: interrupted (the launcher was stopped); "
                                                          "relaunch to resume")
            log("stopped; launch the sweep again to resume it")
        elif as_array:
            log("detached: the submitted jobs keep running; see: python sweeps.py status --name <sweep>")
        raise


# ---------------------------------------------------------------- command line

class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def _seed(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {text!r}") from None


def parse_lr_grid(tokens, optimizers):
    """``None`` -> the params grid; ``none`` -> no grid; numbers -> for every optimizer; ``OPT=v1,v2`` -> for one."""
    if tokens is None:
        return True
    if [t.lower() for t in tokens] in (["none"], ["off"]):
        return None
    if not tokens:
        raise helpers.StudyError("--lr-grid needs values (e.g. 0.01 0.1, or sgd=0.05,0.1), or 'none'")

    def number(text):
        try:
            value = float(text)
        except ValueError:
            raise helpers.StudyError(f"learning rate must be a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise helpers.StudyError(f"learning rate must be a positive number, got {text!r}")
        return value

    plain = [number(t) for t in tokens if "=" not in t]
    grid = {opt: plain for opt in optimizers} if plain else {}
    for token in (t for t in tokens if "=" in t):
        opt, values = token.split("=", 1)
        if opt not in params.OPTIMIZERS:
            raise helpers.StudyError(f"unknown optimizer {opt!r} in --lr-grid; "
                                     f"valid choices: {', '.join(params.OPTIMIZERS)}")
        grid[opt] = [number(v) for v in values.split(",") if v]
    return grid


def cmd_launch(args) -> int:
    slurm = {"partition": args.partition, "time_min": args.time, "gpus": args.gpus, "cpus": args.cpus,
             "mem_gb": args.mem_gb}
    lr_grid = parse_lr_grid(args.lr_grid, args.optimizers)
    outcomes = launch_sweep(args.name, args.optimizers, args.seeds, lr_grid=lr_grid, smoke=args.smoke,
                            epochs=args.epochs, data_source=args.data_source, data_dir=args.data_dir,
                            results_dir=args.results_dir, launcher=args.launcher, max_parallel=args.max_parallel,
                            slurm=slurm, dry_run=args.dry_run)
    if not args.dry_run:
        print(f"status: python sweeps.py status --name {args.name}; "
              f"table: python sweeps.py collect --name {args.name}")
    return 1 if any(o.startswith("failed") for o in outcomes.values()) else 0


def cmd_status(args) -> int:
    print_status(args.name, args.results_dir)
    return 0


def collect(name, results_dir=None):
    """The sweep's summary table (see sweep_summary.summarize), written into its folder."""
    runs = [(cfg, run_state(helpers.run_dir_for(cfg))[0]) for cfg in planned_configs(name, results_dir)]
    return sweep_summary.summarize(name, sweep_dir(name, results_dir), runs)


def cmd_collect(args) -> int:
    collect(args.name, args.results_dir)
    return 0


def main(argv=None) -> int:
    parser = _Parser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    default_results = str(helpers.REPO_ROOT / params.RESULTS_DIR)
    launch = sub.add_parser("launch", help="run every run of the sweep that is not done")
    launch.add_argument("--name", required=True, help="the sweep's name: results/sweeps/<name>/")
    launch.add_argument("--optimizers", nargs="+", default=list(params.OPTIMIZERS), metavar="NAME",
                        help=f"any of: {', '.join(params.OPTIMIZERS)}")
    launch.add_argument("--seeds", nargs="+", type=_seed, default=list(SEEDS))
    launch.add_argument("--lr-grid", nargs="*", metavar="LR",
                        help="learning rates (default: params.LR_GRID_FACTORS x each optimizer's lr); "
                             "numbers for every optimizer, OPT=v1,v2 for one, or 'none' for default hyperparameters")
    launch.add_argument("--launcher", choices=LAUNCHERS, default="local")
    launch.add_argument("--max-parallel", type=int, metavar="N",
                        help="runs at once (local: default one per core, cores shared; slurm: array throttle)")
    launch.add_argument("--smoke", action="store_true", help="seconds-long runs on a subset")
    launch.add_argument("--epochs", type=int)
    launch.add_argument("--data-source", help=f"one of: {', '.join(params.DATA_SOURCES)} "
                                              f"(default: params.DATA_SOURCE at the first launch, then the sweep's)")
    launch.add_argument("--data-dir", help="where torchvision keeps MNIST (default: data/)")
    launch.add_argument("--results-dir", default=default_results)
    launch.add_argument("--dry-run", action="store_true", help="list the runs (and the sbatch script); start nothing")
    slurm = launch.add_argument_group("slurm launcher")
    slurm.add_argument("--partition", default=SLURM_PARTITION)
    slurm.add_argument("--time", type=int, default=SLURM_TIME_MIN, metavar="MIN", help="time limit per run, minutes")
    slurm.add_argument("--gpus", type=int, default=SLURM_GPUS, help="GPUs per run")
    slurm.add_argument("--cpus", type=int, default=SLURM_CPUS, help="CPUs per run (and torch threads)")
    slurm.add_argument("--mem-gb", type=float, default=SLURM_MEM_GB, help="memory per run, GB")
    launch.set_defaults(func=cmd_launch)
    for verb, func, text in (("status", cmd_status, "list every run as done, running, incomplete, failed or diverged"),
                             ("collect", cmd_collect, "write the sweep's summary table (Markdown and CSV)")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("--name", required=True)
        p.add_argument("--results-dir", default=default_results)
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    try:
        return runner.dispatch(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
