"""Launching a sweep: plan it, skip what is done or alive, submit the rest, wait with a progress bar."""

import contextlib
import os
import sys
import time

import submitit
from tqdm import tqdm

from minima.data import resolve_data_source
from minima.optimizers import names as optimizer_names
from minima.runs import StudyError, load_json, run_dir_for, status
from minima.sweeps.jobs import SweepJob, _record_failure, job_outcome
from minima.sweeps.plan import POLL_S, SEEDS, THREAD_VARIABLES, plan_sweep, record_plan, usable_cores
from minima.sweeps.slurm import LAUNCHERS, _make_executor, sbatch_script, slurm_parameters


def launch_sweep(name, optimizers=tuple(optimizer_names()), seeds=SEEDS, *, lr_grid=True, settings=None,
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
        raise StudyError(f"unknown launcher {launcher!r}; valid choices: {', '.join(LAUNCHERS)}")
    if max_parallel is not None and (not isinstance(max_parallel, int) or max_parallel < 1):
        raise StudyError(f"--max-parallel must be a positive integer, got {max_parallel!r}")
    slurm_params = slurm_parameters(name, max_parallel=max_parallel, **(slurm or {})) if launcher == "slurm" else None
    if launcher == "slurm" and not dry_run and submitit.SlurmExecutor.affinity() < 0:
        raise StudyError("the slurm launcher needs Slurm (srun was not found on PATH); "
                                 "use --launcher local, or add --dry-run to see the sbatch script")
    plan = dict(lr_grid=lr_grid, settings=settings, smoke=smoke, epochs=epochs, data_dir=data_dir,
                validation_size=validation_size, results_dir=results_dir)
    configs = plan_sweep(name, optimizers, seeds, data_source=data_source, **plan)  # validates everything
    folder = run_dir_for(configs[0]).parent.parent
    source = configs[0]["data"]["source_requested"]
    if data_source is None and (folder / "sweep.json").exists():
        source = load_json(folder / "sweep.json")["settings"]["data"]["source_requested"]
    elif source != "embedded" and not dry_run:
        source, why = resolve_data_source(source, configs[0]["data"]["data_dir"])
        print(f"data source: {source}" + (f" (full MNIST unavailable: {why})" if why else ""))
    if source != configs[0]["data"]["source_requested"]:
        configs = plan_sweep(name, optimizers, seeds, data_source=source, **plan)
    label = {run_dir_for(c): str(run_dir_for(c).relative_to(folder)) for c in configs}
    outcomes, todo = {}, []
    for cfg in configs:
        state, _ = status(run_dir_for(cfg))
        if state in ("done", "diverged", "running"):
            outcomes[label[run_dir_for(cfg)]] = "running" if state == "running" else "skipped"
        else:
            todo.append(cfg)
    submitit_dir = folder / ".submitit"
    if dry_run:
        print(f"sweep {name}: {len(configs)} runs, {len(todo)} to launch with the {launcher} launcher")
        for cfg in todo:
            print("  " + label[run_dir_for(cfg)])
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
              f"see: python -m minima sweep status --name {name}", file=sys.stderr)
    if todo:
        executor = _make_executor(launcher, submitit_dir, slurm_params)
        bar = tqdm(total=len(configs) - running, initial=len(outcomes) - running, desc=f"sweep {name}", unit="run",
                   disable=not progress, dynamic_ncols=True)

        def finished(cfg, outcome):
            outcomes[label[run_dir_for(cfg)]] = outcome
            if outcome != "done":
                bar.write(f"{label[run_dir_for(cfg)]}: {outcome}")
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
                _record_failure(run_dir_for(cfg), outcome)
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
                _record_failure(run_dir_for(cfg), "failed: interrupted (the launcher was stopped); "
                                                          "relaunch to resume")
            log("stopped; launch the sweep again to resume it")
        elif as_array:
            log("detached: the submitted jobs keep running; see: python -m minima sweep status --name <sweep>")
        raise
