"""What every command line of the study shares: one-line errors, seeds as integers, KEY=VALUE values."""

import argparse
import json
import sys

import params
from minima.runs import StudyError


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


MAX_SEED = 2 ** 32 - 1  # numpy's generators take seeds in [0, 2**32); torch's take more


def check_seed(seed) -> int:
    """A seed numpy and torch both accept, as an int; StudyError naming the valid range otherwise."""
    if isinstance(seed, bool) or not hasattr(seed, "__index__"):  # ints and numpy ints; not floats, not bools
        raise StudyError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise StudyError(f"seed must be an integer from 0 to {MAX_SEED}, got {int(seed)}")
    return int(seed)


def seed_arg(text):
    try:
        return check_seed(int(text))
    except (ValueError, StudyError):
        raise argparse.ArgumentTypeError(f"seed must be an integer from 0 to {MAX_SEED}, got {text!r}") from None


def parse_value(text):
    """``0.05`` -> 0.05, ``true`` -> True, ``[0.9,0.99]`` -> [0.9, 0.99], anything else stays a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def dispatch(args) -> int:
    """Run the chosen command, ``args.func(args)``; bad input is one line on stderr and exit 2."""
    try:
        return args.func(args)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def add_run_options(p, default_results) -> None:
    """The options every verb that plans and executes runs shares (``projected``, ``flatness``)."""
    p.add_argument("--smoke", action="store_true", help="seconds-long runs on a subset")
    p.add_argument("--data-source", help=f"one of: {', '.join(params.DATA_SOURCES)}")
    p.add_argument("--data-dir", help="where torchvision keeps MNIST (default: data/)")
    p.add_argument("--results-dir", default=default_results, help="where the runs go (default: runs/)")
    p.add_argument("--jobs", type=int, help="runs at once (default: one per core)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: 1)")
    p.add_argument("--force", action="store_true", help="redo complete runs")
    p.add_argument("--quiet", action="store_true", help="do not echo the notebooks' output")
