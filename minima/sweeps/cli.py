"""``python -m minima sweep launch | status | collect``: the sweep's command line."""

import math
import sys

import params
from minima.cli import OneLineParser, dispatch, seed_arg
from minima.optimizers import names as optimizer_names
from minima.runs import REPO_ROOT, StudyError, run_dir_for, status
from minima.sweeps.launch import launch_sweep
from minima.sweeps.plan import SEEDS, planned_configs, print_status, sweep_dir
from minima.sweeps.slurm import LAUNCHERS, SLURM_CPUS, SLURM_GPUS, SLURM_MEM_GB, SLURM_PARTITION, SLURM_TIME_MIN
from minima.sweeps.summary import extensions, summarize

MAX_EXTENSIONS = 4  # rounds of --extend: each adds one grid step on the side where a selection sits at the edge


def parse_lr_grid(tokens, optimizers):
    """``None`` -> the params grid; ``none`` -> no grid; numbers -> for every optimizer; ``OPT=v1,v2`` -> for one."""
    if tokens is None:
        return True
    if [t.lower() for t in tokens] in (["none"], ["off"]):
        return None
    if not tokens:
        raise StudyError("--lr-grid needs values (e.g. 0.01 0.1, or sgd=0.05,0.1), or 'none'")

    def number(text):
        try:
            value = float(text)
        except ValueError:
            raise StudyError(f"learning rate must be a number, got {text!r}") from None
        if not math.isfinite(value) or value <= 0:
            raise StudyError(f"learning rate must be a positive number, got {text!r}")
        return value

    plain = [number(t) for t in tokens if "=" not in t]
    grid = {opt: plain for opt in optimizers} if plain else {}
    for token in (t for t in tokens if "=" in t):
        opt, values = token.split("=", 1)
        if opt not in optimizer_names(everything=True):
            raise StudyError(f"unknown optimizer {opt!r} in --lr-grid; "
                                     f"valid choices: {', '.join(optimizer_names(everything=True))}")
        grid[opt] = [number(v) for v in values.split(",") if v]
    return grid


def cmd_launch(args) -> int:
    slurm = {"partition": args.partition, "time_min": args.time, "gpus": args.gpus, "cpus": args.cpus,
             "mem_gb": args.mem_gb}
    lr_grid = parse_lr_grid(args.lr_grid, args.optimizers)
    common = dict(smoke=args.smoke, epochs=args.epochs, data_source=args.data_source, data_dir=args.data_dir,
                  results_dir=args.results_dir, launcher=args.launcher, max_parallel=args.max_parallel,
                  slurm=slurm, dry_run=args.dry_run)
    outcomes = launch_sweep(args.name, args.optimizers, args.seeds, lr_grid=lr_grid, **common)
    if args.extend and not args.dry_run:
        outcomes.update(extend(args.name, args.optimizers, args.seeds, common))
    if not args.dry_run:
        print(f"status: python -m minima sweep status --name {args.name}; "
              f"table: python -m minima sweep collect --name {args.name}")
    return 1 if any(o.startswith("failed") for o in outcomes.values()) else 0


def extend(name, optimizers, seeds, common, rounds=MAX_EXTENSIONS) -> dict:
    """Add a grid point wherever a selection sits at the grid's edge, run it, and repeat until none does."""
    outcomes = {}
    for _ in range(rounds):
        more = {opt: lr for opt, lr in extensions(collect(name, common["results_dir"], echo=False)).items()
                if opt in optimizers}
        if not more:
            return outcomes
        print("extending the grid: " + ", ".join(f"{opt} lr {lr:g}" for opt, lr in more.items()))
        outcomes.update(launch_sweep(name, list(more), seeds, lr_grid={o: [lr] for o, lr in more.items()}, **common))
    print(f"stopped after {rounds} extensions; a selection may still sit at an edge: "
          f"python -m minima sweep collect --name {name}", file=sys.stderr)
    return outcomes


def cmd_status(args) -> int:
    print_status(args.name, args.results_dir)
    return 0


def collect(name, results_dir=None, echo=True):
    """The sweep's summary table (see summarize), written into its folder."""
    runs = [(cfg, status(run_dir_for(cfg))[0]) for cfg in planned_configs(name, results_dir)]
    return summarize(name, sweep_dir(name, results_dir), runs, echo=echo)


def cmd_collect(args) -> int:
    collect(args.name, args.results_dir)
    return 0


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m minima sweep", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    default_results = str(REPO_ROOT / params.RUNS_DIR)
    launch = sub.add_parser("launch", help="run every run of the sweep that is not done")
    launch.add_argument("--name", required=True, help="the sweep's name: results/sweeps/<name>/")
    launch.add_argument("--optimizers", nargs="+", default=list(optimizer_names()), metavar="NAME",
                        help=f"any of: {', '.join(optimizer_names(everything=True))}")
    launch.add_argument("--seeds", nargs="+", type=seed_arg, default=list(SEEDS))
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
    launch.add_argument("--extend", action="store_true",
                        help="then add grid points where a selected learning rate sits at an edge, until none does")
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
    return dispatch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
