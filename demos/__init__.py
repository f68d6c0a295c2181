"""Demos and benchmarks for redrafter_mlx."""

import redrafter_mlx  # noqa: F401,E402  (loads OpenBLAS on Linux before mlx.core)
