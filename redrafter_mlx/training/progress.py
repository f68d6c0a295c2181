"""A progress bar over an iterable for the training commands (tqdm on stderr, when installed)."""

import sys


def progress(iterable, total: int, desc: str, shown: bool = True):
    """iterable, with a tqdm bar of `total` steps on stderr when shown (and tqdm is installed)."""
    if not shown:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, file=sys.stderr, dynamic_ncols=True)
