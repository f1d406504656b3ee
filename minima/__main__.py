"""``python -m minima VERB``: the study's command line.

    python -m minima run [--optimizers sgd adam] [--seeds 0 1 2] [--smoke] [--epochs N] [--set KEY=VALUE ...]
                         [--results-dir runs] [--force]
    python -m minima status [--results-dir runs]
    python -m minima report [--results results] [--report-dir report]
    python -m minima facts [--results results]
    python -m minima compare runs results [--optimizers sgd] [--seeds 0]
    python -m minima sweep launch | status | collect --name NAME ...
    python -m minima projected [--groups check early final refresh] [--results-dir runs]
    python -m minima flatness [--batch-sizes 32 100 500] [--seeds 0 1] [--results-dir runs]
    python -m minima measures [--results results] [--out results/measures]
    python -m minima notebooks [--force]
    python -m minima reanalyse RUN_DIR [RUN_DIR ...] [--data-dir data]

New runs go to ``runs/`` (git-ignored); ``results/`` is the committed study,
written only when ``--results-dir results`` says so. Bad input is one line
on stderr and exit status 2.
"""

import argparse
import sys

import params
from minima import optimizers, runs
from minima.cli import OneLineParser, dispatch, seed_arg
from minima.runner import cmd_run

DEFAULT_RUNS = str(runs.REPO_ROOT / params.RUNS_DIR)
DEFAULT_RESULTS = str(runs.REPO_ROOT / params.RESULTS_DIR)


def cmd_status(args) -> int:
    from pathlib import Path
    if not Path(args.results_dir).is_dir():
        raise runs.StudyError(f"no study folder {args.results_dir} (runs go to {DEFAULT_RUNS} by default)")
    runs.print_status(args.results_dir)
    return 0


def cmd_report(args) -> int:
    from minima.report.build import build
    build(results_dir=args.results, report_dir=args.report_dir, tuned_dir=args.tuned, sweep_dir=args.sweep)
    return 0


def cmd_facts(args) -> int:
    from minima.report.facts import print_facts
    print_facts(args.results)
    return 0


def cmd_compare(args) -> int:
    from minima.compare import compare_studies, print_comparison
    diffs = compare_studies(args.first, args.second, args.optimizers, args.seeds)
    return 0 if print_comparison(diffs, args.first, args.second).startswith("reproduced") else 1


def cmd_measures(args) -> int:
    from pathlib import Path

    import torch

    from minima.measures_study import run
    if not Path(args.results).is_dir():
        raise runs.StudyError(f"no results folder {args.results}")
    k, n = args.shard
    torch.set_num_threads(args.threads)
    out = Path(args.out or Path(args.results) / "measures")
    if args.rho_check:
        from minima import schema
        from minima.measures_study import rho_sensitivity
        print(f"wrote {rho_sensitivity(args.results, out / schema.RHO_CHECK_FILE)}")
        return 0
    if args.gather:
        from minima.measures_study import gather
        print(f"wrote {gather(out)}")
    else:
        print(f"wrote {run(args.results, out, shard=(k, n))}")
    if out.resolve() == (Path(args.results) / "measures").resolve():
        from minima.report.flatness import write_scores
        print(f"wrote {write_scores(args.results)}")
    return 0


def shard_arg(text) -> tuple[int, int]:
    """K/N with 0 <= K < N, for ``measures --shard``."""
    try:
        k, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected K/N such as 0/2, got {text!r}") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"need 0 <= K < N, got {text!r}")
    return k, n


def cmd_notebooks(args) -> int:
    from minima.notebooks import write_notebooks
    return 1 if write_notebooks(force=args.force) else 0


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m minima", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="train and analyse optimizer x seed runs")
    run.add_argument("--optimizers", nargs="+", default=optimizers.names(), metavar="NAME",
                     help=f"any of: {', '.join(optimizers.names(everything=True))} (default: the study's "
                          f"{', '.join(optimizers.names())})")
    run.add_argument("--seeds", nargs="+", type=seed_arg, default=[params.SEED])
    run.add_argument("--epochs", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--data-source", help=f"one of: {', '.join(params.DATA_SOURCES)}")
    run.add_argument("--dataset", help=f"one of: {', '.join(params.DATASETS)} (default: params.DATASET)")
    run.add_argument("--data-dir", help="where torchvision keeps MNIST (default: data/)")
    run.add_argument("--set", nargs="*", metavar="KEY=VALUE",
                     help="optimizer hyperparameter overrides, any keyword its constructor takes, e.g. lr=0.05")
    run.add_argument("--tuned", metavar="SWEEP",
                     help="each optimizer at the learning rate selected by this sweep (its summary.csv)")
    run.add_argument("--sweeps-dir", default=DEFAULT_RESULTS,
                     help="the results folder that holds sweeps/<SWEEP>/ (default: results/)")
    run.add_argument("--smoke", action="store_true", help="a seconds-long run on a subset")
    run.add_argument("--force", action="store_true", help="redo complete runs")
    run.add_argument("--quiet", action="store_true", help="do not echo the notebooks' output")
    run.add_argument("--results-dir", default=DEFAULT_RUNS, help="where the runs go (default: runs/)")
    run.add_argument("--jobs", type=int, help="runs at once (default: one per core, at most one per run)")
    run.add_argument("--threads", type=int, help="torch threads per run (default: params.TORCH_THREADS = 1)")
    run.set_defaults(func=cmd_run)
    status = sub.add_parser("status", help="list every run as done, running, incomplete, failed or diverged")
    status.add_argument("--results-dir", default=DEFAULT_RUNS)
    status.set_defaults(func=cmd_status)
    rep = sub.add_parser("report", help="figures and tables from a study folder")
    rep.add_argument("--results", default=DEFAULT_RESULTS, help="the study to report (default: results/)")
    rep.add_argument("--report-dir", default="report", help="where figures and tables go (default: report/)")
    rep.add_argument("--tuned", help="the study at the sweep's selected learning rates, beside --results "
                                      "(default: <results>/tuned)")
    rep.add_argument("--sweep", help="the collected learning-rate sweep (default: <results>/sweeps/tuning)")
    rep.set_defaults(func=cmd_report)
    facts = sub.add_parser("facts", help="every number the report's and README's prose quote, recomputed")
    facts.add_argument("--results", default=DEFAULT_RESULTS)
    facts.set_defaults(func=cmd_facts)
    cmp = sub.add_parser("compare", help="every number of study A's runs against the same runs in study B")
    cmp.add_argument("first", help="a study folder, e.g. runs")
    cmp.add_argument("second", help="the study to compare it with, e.g. results")
    cmp.add_argument("--optimizers", nargs="+", metavar="NAME", help="only these optimizers' runs")
    cmp.add_argument("--seeds", nargs="+", type=seed_arg, help="only these seeds")
    cmp.set_defaults(func=cmd_compare)
    mea = sub.add_parser("measures", help="every committed minimum's generalization measures, one row each")
    mea.add_argument("--results", default=DEFAULT_RESULTS, help="the results folder to measure (default: results/)")
    mea.add_argument("--out", help="where the rows go (default: <results>/measures)")
    mea.add_argument("--shard", type=shard_arg, default=(0, 1), metavar="K/N",
                     help="measure every N-th model from the K-th (0-based), to share a pass among N processes")
    mea.add_argument("--gather", action="store_true",
                     help="measure nothing: gather the rows measured so far into measures.csv and score them")
    mea.add_argument("--rho-check", action="store_true",
                     help="instead: the adaptive sharpness at params.MEASURES_RHO_CHECK's radii on the study's "
                          "seed-0 runs (rho_sensitivity.csv), which chose params.MEASURES_RHO_WORST and _AVERAGE")
    mea.add_argument("--threads", type=int, default=params.TORCH_THREADS, help="torch threads (default: %(default)s)")
    mea.set_defaults(func=cmd_measures)
    nbs = sub.add_parser("notebooks", help="stamp every registered optimizer's notebook from the template")
    nbs.add_argument("--force", action="store_true", help="overwrite notebooks that were edited by hand")
    nbs.set_defaults(func=cmd_notebooks)
    from minima.flatness_study import add_parser as add_flatness
    from minima.projected_study import add_parser as add_projected
    from minima.reanalyse import add_parser as add_reanalyse
    add_projected(sub, DEFAULT_RUNS)
    add_flatness(sub, DEFAULT_RUNS, DEFAULT_RESULTS)
    add_reanalyse(sub)
    sub.add_parser("sweep", help="optimizer x setting x seed sweeps (python -m minima sweep --help)", add_help=False)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sweep"]:
        from minima.sweeps.cli import main as sweep_main
        return sweep_main(argv[1:])
    return dispatch(parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
