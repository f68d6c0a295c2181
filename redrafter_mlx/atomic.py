"""Atomic output directories: written into a temporary sibling, renamed into place when complete."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


class OutputExistsError(ValueError):
    pass


@contextmanager
def atomic_directory(out, force: bool):
    """Yields a temporary directory that replaces `out` on success and vanishes on failure."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    try:
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
