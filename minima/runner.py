"""Runs headless: one optimizer notebook executed by papermill per optimizer x seed, and the ``run`` verb.

``execute_run`` holds the run's lock while the notebook executes (the
kernel inherits the lock's token, so it knows the lock is its own), writes
the executed notebook into the run folder, and leaves ``error.txt`` there on
failure. Bad input is refused before anything starts, with one line naming
the problem and the valid choices. A run folder is complete only once its
notebook wrote ``done``; finished runs are skipped unless ``--force``.
"""

import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import params
from minima import notebooks, optimizers, runs
from minima.cli import parse_value
from minima.config import make_config, usable_cores
from minima.data import resolve_data_source
from minima.lock import RunLock


def execute_run(config, *, force=False, progress=True, log_output=False, threads=None) -> str:
    """Execute the optimizer's notebook for one config; returns done, skipped, diverged or ``failed: <why>``.

    A run that another process is executing is refused (``failed: ... is
    being run by pid ... on ... since ...``) and left alone. ``threads``: the
    kernel's torch threads (default: ``$OMP_NUM_THREADS`` as the runner or a sweep's
    launcher set it, else ``params.TORCH_THREADS``, as a notebook).
    """
    import papermill

    run_dir = runs.run_dir_for(config)
    if runs.is_done(run_dir) and not force:
        return "skipped"
    runs.ensure_writable(run_dir)
    try:
        lock = RunLock(run_dir).acquire()
    except runs.StudyError as e:
        return f"failed: {e}"
    try:
        (run_dir / runs.ERROR).unlink(missing_ok=True)
        # the validated config travels whole; the kernel's threads: asked for, else what the launcher set
        threads = threads or int(os.environ.get("OMP_NUM_THREADS") or params.TORCH_THREADS)
        parameters = {"OPTIMIZER": config["optimizer"], "SEED": config["seed"], "CONFIG": config,
                      "FORCE": force, "PROGRESS": progress, "THREADS": threads}
        source = notebooks.optimizer_notebook(config["optimizer"], run_dir)
        os.environ[RunLock.ENV] = lock.token   # the kernel papermill starts inherits it
        try:
            papermill.execute_notebook(str(source), str(run_dir / runs.NOTEBOOK), parameters=parameters,
                                       cwd=str(notebooks.NOTEBOOKS), kernel_name="python3", progress_bar=False,
                                       log_output=log_output, stderr_file=None, **notebooks.KERNEL_OPTIONS)
        finally:
            os.environ.pop(RunLock.ENV, None)
    except papermill.PapermillExecutionError as e:
        message = f"{e.ename}: {e.evalue}"
        runs.save_text(run_dir / runs.ERROR, message + "\n")
        return "failed: " + message
    except Exception as e:  # noqa: BLE001 - a kernel that dies, a notebook that cannot be written
        message = f"{type(e).__name__}: {e}".strip()
        runs.save_text(run_dir / runs.ERROR, message + "\n")
        return "failed: " + message
    finally:
        lock.release()
    final = run_dir / runs.FINAL
    return "diverged" if final.exists() and runs.load_json(final)["status"] == "diverged" else "done"


def preflight(configs) -> None:
    """Check the data source and the results folders of all runs; raise StudyError on the first problem."""
    for source, data_dir, dataset in {(c["data"]["source_requested"], c["data"]["data_dir"], c["data"]["dataset"])
                                      for c in configs}:
        used, why = resolve_data_source(source, data_dir, dataset=dataset)
        print(f"data source: {used}" + (f" (full MNIST unavailable: {why})" if why else ""))
    for results_dir in {c["results_dir"] for c in configs}:
        runs.ensure_writable(results_dir)


def cmd_run(args) -> int:
    bad = [kv for kv in args.set or [] if "=" not in kv]
    if bad:
        raise runs.StudyError(f"--set takes KEY=VALUE pairs, got {' '.join(bad)!r}")
    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set or [])}
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill echoes the notebooks' output
    per_optimizer = {opt: dict(overrides) for opt in args.optimizers}
    if getattr(args, "tuned", None):
        for opt, lr in tuned_learning_rates(args.tuned, args.sweeps_dir, args.optimizers).items():
            if lr == optimizers.get(opt).defaults.get("lr") and not overrides:
                print(f"{opt}: the selected lr {lr:g} is the original one, so its tuned runs are the original "
                      f"study's runs (the report takes them from there); nothing to run")
                del per_optimizer[opt]
            else:
                per_optimizer[opt]["lr"] = lr
    configs = [make_config(opt, seed, smoke=args.smoke, epochs=args.epochs, batch_size=args.batch_size,
                           data_source=args.data_source, data_dir=args.data_dir, dataset=args.dataset,
                           overrides=per_optimizer[opt], results_dir=args.results_dir)
               for seed in args.seeds for opt in per_optimizer]  # seed by seed: a stopped study has whole seeds
    return run_configs(configs, jobs=args.jobs, threads=args.threads, force=args.force, quiet=args.quiet)


def run_configs(configs, *, jobs=None, threads=None, force=False, quiet=True) -> int:
    """Execute every config, ``jobs`` at a time (default: one per core); 1 if any failed, else 0.

    Everything is checked before anything starts; complete runs are skipped unless ``force``.
    """
    if not configs:
        return 0
    for flag, value in (("--jobs", jobs), ("--threads", threads)):
        if value is not None and value < 1:
            raise runs.StudyError(f"{flag} must be a positive integer, got {value}")
    preflight(configs)  # everything is checked before anything starts
    # each run gets params.TORCH_THREADS threads whatever the core count, so its numbers do not depend on the
    # machine's size; up to one run per that many cores runs at once
    jobs = jobs or max(1, min(len(configs), usable_cores() // params.TORCH_THREADS))
    os.environ["OMP_NUM_THREADS"] = str(threads or params.TORCH_THREADS)  # the kernels read it when they start
    failures = 0
    if jobs == 1:
        for cfg in configs:
            print(f"[{_label(cfg)}] running -> {runs.run_dir_for(cfg)}", flush=True)
            outcome, seconds = _timed_run(cfg, force, not quiet, threads)
            failures += outcome.startswith("failed")
            print(f"[{_label(cfg)}] {outcome} ({seconds:.0f} s)", flush=True)
        return 1 if failures else 0
    print(f"{len(configs)} runs, {jobs} at a time, {os.environ['OMP_NUM_THREADS']} torch thread(s) each", flush=True)
    # spawn, not fork: a forked copy of a process with threads running (zmq's, a lock's heartbeat) can deadlock
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:  # output not echoed
        futures = {pool.submit(_timed_run, cfg, force, False, threads): cfg for cfg in configs}
        for future in as_completed(futures):
            outcome, seconds = future.result()
            failures += outcome.startswith("failed")
            print(f"[{_label(futures[future])}] {outcome} ({seconds:.0f} s) -> {runs.run_dir_for(futures[future])}",
                  flush=True)
    return 1 if failures else 0


def tuned_learning_rates(sweep, results_dir, names) -> dict[str, float]:
    """The learning rate a collected sweep selected for each optimizer; StudyError when one has none."""
    from minima.sweeps.plan import sweep_dir
    from minima.sweeps.summary import selected_learning_rates

    selected = selected_learning_rates(sweep_dir(sweep, results_dir))
    missing = [opt for opt in names if opt not in selected]
    if missing:
        raise runs.StudyError(f"sweep {sweep!r} selected no learning rate for {', '.join(missing)} "
                              f"(selected: {', '.join(f'{o} {v:g}' for o, v in selected.items()) or 'none'})")
    print("tuned learning rates from sweep " + sweep + ": " + ", ".join(f"{o} {selected[o]:g}" for o in names))
    return {opt: selected[opt] for opt in names}


def _label(config) -> str:
    where = f"{config['experiment']} {config['optimizer']}-{runs.setting_tag(config['overrides'])}" \
        if config.get("experiment") else config["optimizer"]
    return f"{where} seed {config['seed']}"


def _timed_run(config, force, log_output, threads=None) -> tuple[str, float]:
    t0 = time.time()
    return execute_run(config, force=force, log_output=log_output, threads=threads), time.time() - t0
