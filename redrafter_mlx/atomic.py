"""Atomic outputs: written into a temporary sibling, renamed into place when complete.

Temporary directories are named `.NAME.tmp-PID-XXXX` after the process writing them, so
that a later run can remove those of a run that was killed (its PID gone) and leave alone
those of a run still in progress.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


class OutputExistsError(UserError, ValueError):
    """An output path that exists, without --force."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale(parent: Path, name: str):
    """Removes the temporary directories `.NAME.tmp-PID-*` in parent whose process is gone."""
    for path in Path(parent).glob(f".{name}.tmp-*"):
        pid = path.name[len(f".{name}.tmp-"):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


@contextmanager
def temporary_directory(parent: Path, name: str):
    """A directory `.NAME.tmp-PID-XXXX` in parent (created), removed on exit; stale ones of
    killed runs are removed first."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    remove_stale(parent, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_directory(out, force: bool):
    """Yields a temporary directory that replaces `out` on success and vanishes on failure."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
    with temporary_directory(out.parent, out.name) as tmp:
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
        yield tmp
        if out.exists():
            old = out.parent / f".{out.name}.tmp-{os.getpid()}-old"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
