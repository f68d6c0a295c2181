import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
