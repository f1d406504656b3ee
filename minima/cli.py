"""What every command line of the study shares: one-line errors, seeds as integers, KEY=VALUE values."""

import argparse
import json
import sys

from minima.runs import StudyError


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


MAX_SEED = 2 ** 32 - 1  # numpy's generators take seeds in [0, 2**32); torch's take more


def check_seed(seed) -> int:
    """A seed numpy and torch both accept, as an int; StudyError naming the valid range otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) and not (hasattr(seed, "__index__")
                                                                   and not isinstance(seed, float)):
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
