"""Linux CPU speed fix: make MLX's CPU matmuls use OpenBLAS.

MLX's Linux CPU wheel links the reference BLAS (about 5 GFLOP/s for fp32 matmul on
this project's 2-core test machine). Loading Debian's OpenBLAS into the global symbol
scope *before* `mlx.core` is imported makes MLX resolve `cblas_*` to OpenBLAS instead
(about 180 GFLOP/s on the same machine). This is the in-process equivalent of
`LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0`.

Opt out with REDRAFTER_NO_OPENBLAS=1; point at another library with REDRAFTER_OPENBLAS=path.
Where none is found, the first CPU decoding policy chosen (policy.DecodePolicy.for_device)
says so in one line (note_if_missing), since everything still runs, only ~30x slower.
"""

import ctypes
import os
import sys

DEFAULT_PATHS = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
)


def wanted() -> bool:
    """Whether OpenBLAS is to be loaded here: on Linux, unless REDRAFTER_NO_OPENBLAS=1."""
    return sys.platform.startswith("linux") and os.environ.get("REDRAFTER_NO_OPENBLAS") != "1"


def openblas_path():
    """Returns the OpenBLAS library to load, or None."""
    if not wanted():
        return None
    candidates = [os.environ.get("REDRAFTER_OPENBLAS")] + list(DEFAULT_PATHS)
    return next((p for p in candidates if p and os.path.exists(p)), None)


def load_openblas():
    """Loads OpenBLAS globally if it helps and still can; returns the path loaded or None."""
    path = openblas_path()
    if path is None or path in os.environ.get("LD_PRELOAD", ""):
        return None
    if "mlx.core" in sys.modules:
        print(f"redrafter_mlx: mlx was imported first, so OpenBLAS is not used (CPU matmuls ~30x slower); "
              f"import redrafter_mlx before mlx, or set LD_PRELOAD={path}", file=sys.stderr)
        return None
    ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    return path


def not_found() -> bool:
    """Whether Linux runs MLX's CPU matmuls on the reference BLAS because no OpenBLAS was
    found (not because it was turned off or preloaded)."""
    return wanted() and "openblas" not in os.environ.get("LD_PRELOAD", "") and openblas_path() is None


_noted = False


def note_if_missing():
    """One line on stderr, once per process, where decoding on this CPU runs without OpenBLAS."""
    global _noted
    if not _noted and not_found():
        _noted = True
        print("redrafter_mlx: OpenBLAS not found, so MLX's CPU matmuls run on the reference BLAS (~30x slower): "
              "apt-get install libopenblas0-pthread, or set REDRAFTER_OPENBLAS to its path", file=sys.stderr)


LOADED = load_openblas()
