"""Atomic outputs: written into a temporary sibling, renamed into place when complete.

Temporary files and directories are named `.NAME.tmp-PID-XXXX` after the process writing
them, so that a later run can remove those of a run that was killed (its PID gone) and
leave alone those of a run still in progress. Every writer of this package goes through
here: converted models, fetched files and their downloads, checkpoints, drafters, data
shards, the beam calibration cache.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


class OutputExistsError(UserError, ValueError):
    """An output path that exists, without --force."""


def check_output_dir(path: Path, flag: str):
    """UserError when path exists and is not a directory (checked before any work)."""
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path}: exists and is not a directory")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except OSError:
            pass


def temporary_name(name: str) -> str:
    """The prefix of this process's temporary siblings of `name`."""
    return f".{name}.tmp-{os.getpid()}-"


def _stale(path: Path) -> bool:
    """Whether a temporary `.NAME.tmp-PID-*` was left by a process that is gone."""
    pid = path.name.rpartition(".tmp-")[2].split("-")[0]
    return pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid))


def remove_stale(parent: Path, name: str):
    """Removes the temporary files and directories `.NAME.tmp-PID-*` in parent whose process
    is gone (NAME may be a glob pattern, e.g. shard-*.npz)."""
    for path in Path(parent).glob(f".{name}.tmp-*"):
        if _stale(path):
            _remove(path)


def _make_parents(parent: Path) -> list:
    """Creates parent and its missing ancestors; returns those it created, deepest first."""
    created = []
    for directory in [parent, *parent.parents]:
        if directory.exists():
            break
        created.append(directory)
    parent.mkdir(parents=True, exist_ok=True)
    return created


def _remove_empty(directories: list):
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            break


@contextmanager
def temporary_directory(parent: Path, name: str):
    """A directory `.NAME.tmp-PID-XXXX` in parent (created, with its ancestors), removed on
    exit; stale ones of killed runs are removed first. Ancestors it created are removed
    again when the body fails."""
    parent = Path(parent)
    created = _make_parents(parent)
    remove_stale(parent, name)
    tmp = Path(tempfile.mkdtemp(prefix=temporary_name(name), dir=parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def recover(out):
    """Cleans up after runs killed while writing `out`: when one was killed while replacing it
    (the old `out` moved aside, the new one not yet in place), the old one is put back; then
    their temporary siblings are removed."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    for old in out.parent.glob(f".{out.name}.tmp-*-old"):
        if not out.exists() and _stale(old):
            old.rename(out)
    remove_stale(out.parent, out.name)


@contextmanager
def atomic_directory(out, force: bool):
    """Yields a temporary directory that replaces `out` on success and vanishes on failure
    (recover() first)."""
    out = Path(out)
    recover(out)
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a directory")
    with temporary_directory(out.parent, out.name) as tmp:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0o700 otherwise
        yield tmp
        if out.exists():
            old = out.parent / f"{temporary_name(out.name)}old"
            out.rename(old)
            tmp.rename(out)
            _remove(old)  # a directory, or a link to one (the directory it names is left as it is)
        else:
            tmp.rename(out)


@contextmanager
def atomic_file(path):
    """Yields a temporary path `.NAME.tmp-PID-XXXX` beside `path` to write; it replaces
    `path` on success and vanishes on failure; stale ones of killed runs are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent, path.name)
    handle, name = tempfile.mkstemp(prefix=temporary_name(path.name), dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    tmp.chmod(0o666 & ~_umask())  # mkstemp's 0o600 otherwise
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
