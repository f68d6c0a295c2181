"""Errors a user can act on: bad input files, flags, downloads. The command lines print
these as one line and exit with status 2; any other exception is a bug and keeps its
traceback."""

import argparse
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Callable


class UserError(Exception):
    """Base of the errors whose message tells the user what to fix."""


class UsageError(UserError, ValueError):
    """An argument value out of range or of the wrong form."""


def one_line(message: str) -> str:
    """A message on one line (messages quoting other libraries' errors may span several)."""
    return re.sub(r"\s*\n\s*", " ", str(message).strip())


def run_cli(main: Callable[[], object]):
    """Runs a command line's body and returns what it returns: user errors become one line on
    stderr and exit 2, Ctrl-C exits 130, and a reader that stops reading stdout (`| head`)
    ends the run quietly with status 1 (as Python's documentation on SIGPIPE has it)."""
    try:
        return main()
    except UserError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that exiting flushes nothing
        sys.exit(1)


def log(message: str):
    """A line on stderr for the user, apart from the output."""
    print(f"[redrafter_mlx] {message}", file=sys.stderr)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line, 'error: argument --flag: ...', exit status 2 (the
    usage stays in --help). Subparsers are of the same class."""

    def error(self, message):
        print(f"error: {one_line(message)} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """--help that keeps the description's line breaks and shows each flag's default, where
    it has one and its help does not already say it."""

    def _get_help_string(self, action):
        no_default = any(action.default is value for value in (None, False, argparse.SUPPRESS))
        if no_default or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


MAX_SEED = 2 ** 32 - 1


def int_at_least(minimum: int, maximum: int = None):
    """An argparse type: an integer >= minimum (and <= maximum)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be in {minimum}..{maximum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def finite_float(minimum: float = -math.inf, maximum: float = math.inf, open_minimum: bool = False):
    """An argparse type: a finite number in [minimum, maximum] ((minimum, maximum] when open_minimum)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        low_ok = value > minimum if open_minimum else value >= minimum
        if not math.isfinite(value) or not low_ok or value > maximum:
            low = "(" if open_minimum else "["
            raise argparse.ArgumentTypeError(f"must be a finite number in {low}{minimum:g}, {maximum:g}], got {text}")
        return value

    parse.__name__ = "number"
    return parse


def read_json(path, error=UserError):
    """A JSON file's value; `error` (a UserError class) naming the file when it cannot be
    read as UTF-8 JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as cause:
        raise error(f"{path}: not UTF-8 text ({cause.reason} at byte {cause.start})") from None
    except json.JSONDecodeError as cause:
        raise error(f"{path}: invalid JSON ({cause})") from None
    except RecursionError:
        raise error(f"{path}: invalid JSON (nested too deeply)") from None
    except OSError as cause:
        raise error(f"{path}: cannot read it ({cause.strerror})") from None
