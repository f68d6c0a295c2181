"""ReDrafter (arXiv 2403.09919) speculative decoding on Apple MLX."""

from . import _blas  # noqa: F401  (must run before mlx.core is imported)

__version__ = "0.1.0"
