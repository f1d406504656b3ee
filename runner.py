"""Run the study headless: execute the optimizer notebooks with papermill, list run status, build the report.

    python runner.py run --optimizers sgd adam --seeds 0 1 2 [--smoke] [--epochs N] [--force]
    python runner.py status [--results-dir results]
    python runner.py report

Bad input is refused before anything starts, with one line naming the problem
and the valid choices. A run folder is complete only once its notebook wrote
``done``; finished runs are skipped unless ``--force``.
"""

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import helpers
import params

NOTEBOOKS = helpers.REPO_ROOT / "notebooks"
STATUSES = ("done", "diverged", "failed", "running", "incomplete")


def parse_value(text):
    """``0.05`` -> 0.05, ``[0.9,0.99]`` -> [0.9, 0.99], anything else stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_config(optimizer, seed, *, smoke=False, epochs=None, batch_size=None, data_source=None, data_dir=None,
               overrides=None, sweep=None, validation_size=0, results_dir=None):
    """The validated config of one run (raises StudyError on bad input)."""
    return helpers.make_config(optimizer, seed, epochs=epochs, batch_size=batch_size, data_source=data_source, smoke=smoke,
                               overrides=overrides, sweep=sweep, validation_size=validation_size, data_dir=data_dir,
                               results_dir=str(Path(results_dir or helpers.REPO_ROOT / params.RESULTS_DIR).resolve()))


def execute_run(config, *, force=False, progress=True, log_output=False) -> str:
    """Execute ``notebooks/<optimizer>.ipynb`` for one config; returns done, skipped, diverged or failed.

    The executed notebook is written into the run folder; a failure leaves
    ``error.txt`` there (no ``done``), so it is never mistaken for a result.
    """
    import papermill

    run_dir = helpers.run_dir_for(config)
    if helpers.is_done(run_dir) and not force:
        return "skipped"
    helpers.ensure_writable(run_dir)
    (run_dir / "error.txt").unlink(missing_ok=True)
    parameters = {"OPTIMIZER": config["optimizer"], "SEED": config["seed"], "EPOCHS": config["epochs"],
                  "BATCH_SIZE": config["batch_size"],
                  "DATA_SOURCE": config["data"]["source_requested"], "SMOKE": config["smoke"],
                  "OVERRIDES": config["overrides"], "SWEEP": config["sweep"],
                  "VALIDATION_SIZE": config["data"]["validation_size"], "RESULTS_DIR": config["results_dir"],
                  "DATA_DIR": config["data"]["data_dir"], "FORCE": force, "PROGRESS": progress}
    try:
        papermill.execute_notebook(str(NOTEBOOKS / f"{config['optimizer']}.ipynb"), str(run_dir / "notebook.ipynb"),
                                   parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
                                   progress_bar=False, log_output=log_output, stderr_file=None)
    except papermill.PapermillExecutionError as e:
        message = f"{e.ename}: {e.evalue}"
        (run_dir / "error.txt").write_text(message + "\n")
        return "failed: " + message
    except Exception as e:  # noqa: BLE001 - a kernel that dies, a notebook that cannot be written
        message = f"{type(e).__name__}: {e}".strip()
        with open(run_dir / "error.txt", "w") as f:
            f.write(message + "\n")
        return "failed: " + message
    final = run_dir / "final.json"
    return "diverged" if final.exists() and helpers.load_json(final)["status"] == "diverged" else "done"


def _mtime(path) -> float:
    """When ``path`` last changed; 0 for a file that vanished meanwhile or a dangling link."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0


def run_status(run_dir) -> tuple[str, str]:
    """(status, detail) of one run folder; a folder that does not exist is incomplete."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return "incomplete", "no folder yet"
    final = run_dir / "final.json"
    if helpers.is_done(run_dir):
        info = helpers.load_json(final) if final.exists() else {}
        if info.get("status") == "diverged":
            at = info.get("diverged_at") or {}
            return "diverged", f"epoch {at.get('epoch')}, step {at.get('step')}"
        acc = info.get("test_accuracy")
        return "done", "" if acc is None else f"test accuracy {acc:.4f}"
    if (run_dir / "error.txt").exists():
        return "failed", (run_dir / "error.txt").read_text().strip().splitlines()[-1]
    marker = run_dir / "checkpoint.pt"
    try:
        recent = max((_mtime(f) for f in run_dir.iterdir()), default=0)
    except FileNotFoundError:  # the folder itself went away meanwhile
        return "incomplete", "no folder yet"
    if time.time() - recent < 120:
        return "running", "updated in the last 2 minutes"
    return "incomplete", "resumes from its checkpoint" if marker.exists() else "no checkpoint yet"


def find_runs(results_dir) -> list[Path]:
    """Every run folder (one holding config.json, notebook.ipynb or error.txt) under ``results_dir``."""
    root = Path(results_dir)
    found = {p.parent for pattern in ("config.json", "notebook.ipynb", "error.txt") for p in root.rglob(pattern)}
    return sorted(found)


def print_status(results_dir) -> dict:
    counts = dict.fromkeys(STATUSES, 0)
    for run_dir in find_runs(results_dir):
        status, detail = run_status(run_dir)
        counts[status] += 1
        print(f"{status:<10} {run_dir.relative_to(results_dir)}  {detail}")
    print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return counts


def preflight(configs) -> None:
    """Check the data source and the results folders of all runs; raise StudyError on the first problem."""
    for source, data_dir in {(c["data"]["source_requested"], c["data"]["data_dir"]) for c in configs}:
        used, why = helpers.resolve_data_source(source, data_dir)
        print(f"data source: {used}" + (f" (full MNIST unavailable: {why})" if why else ""))
    for results_dir in {c["results_dir"] for c in configs}:
        helpers.ensure_writable(results_dir)


def cmd_run(args) -> int:
    bad = [kv for kv in args.set or [] if "=" not in kv]
    if bad:
        raise helpers.StudyError(f"--set takes KEY=VALUE pairs, got {' '.join(bad)!r}")
    overrides = {k: parse_value(v) for k, v in (kv.split("=", 1) for kv in args.set or [])}
    if not args.quiet:
        logging.basicConfig(level=logging.INFO, format="%(message)s")  # papermill echoes the notebooks' output
    configs = [run_config(opt, seed, smoke=args.smoke, epochs=args.epochs, batch_size=args.batch_size,
                          data_source=args.data_source, data_dir=args.data_dir,
                          overrides=overrides, results_dir=args.results_dir)
               for opt in args.optimizers for seed in args.seeds]
    preflight(configs)  # everything is checked before anything starts
    failures = 0
    for cfg in configs:
        t0 = time.time()
        label = f"{cfg['optimizer']} seed {cfg['seed']}"
        print(f"[{label}] running -> {helpers.run_dir_for(cfg)}", flush=True)
        outcome = execute_run(cfg, force=args.force, log_output=not args.quiet)
        failures += outcome.startswith("failed")
        print(f"[{label}] {outcome} ({time.time() - t0:.0f} s)", flush=True)
    return 1 if failures else 0


def cmd_status(args) -> int:
    print_status(Path(args.results_dir))
    return 0


def cmd_report(args) -> int:
    import report
    report.build(results_dir=args.results_dir)
    return 0


def seed_arg(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed must be an integer, got {text!r}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and analyse optimizer x seed runs")
    run.add_argument("--optimizers", nargs="+", default=list(params.OPTIMIZERS), metavar="NAME",
                     help=f"any of: {', '.join(params.OPTIMIZERS)}")
    run.add_argument("--seeds", nargs="+", type=seed_arg, default=[params.SEED])
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--data-source", help=f"one of: {', '.join(params.DATA_SOURCES)}")
    run.add_argument("--data-dir", help="where torchvision keeps MNIST (default: data/)")
    run.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="optimizer hyperparameter overrides, e.g. lr=0.05")
    run.add_argument("--smoke", action="store_true", help="a seconds-long run on a subset")
    run.add_argument("--force", action="store_true", help="redo complete runs")
    run.add_argument("--quiet", action="store_true", help="do not echo the notebooks' output")
    run.add_argument("--results-dir", default=str(helpers.REPO_ROOT / params.RESULTS_DIR))
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="list every run as done, running, incomplete, failed or diverged")
    status.add_argument("--results-dir", default=str(helpers.REPO_ROOT / params.RESULTS_DIR))
    status.set_defaults(func=cmd_status)
    rep = sub.add_parser("report", help="regenerate report/ figures and tables from results/")
    rep.add_argument("--results-dir", default=str(helpers.REPO_ROOT / params.RESULTS_DIR))
    rep.set_defaults(func=cmd_report)
    return dispatch(parser.parse_args(argv))


def dispatch(args) -> int:
    """Run the command line's chosen command, ``args.func(args)``; bad input is one line on stderr and exit 2."""
    try:
        return args.func(args)
    except helpers.StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
