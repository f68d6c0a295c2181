"""Errors a user can act on: bad input files, flags, downloads. The command lines print
these as one line and exit with status 2; any other exception is a bug and keeps its
traceback."""

import sys
from typing import Callable


class UserError(Exception):
    """Base of the errors whose message tells the user what to fix."""


class UsageError(UserError, ValueError):
    """An argument value out of range or of the wrong form."""


def run_cli(main: Callable[[], object]):
    """Runs a command line's body and returns what it returns: user errors become one line on
    stderr and exit 2, Ctrl-C exits 130."""
    try:
        return main()
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
