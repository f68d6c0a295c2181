"""Import PyTorch (Hugging Face), Apple ReDrafter and GGUF weights into MLX directories."""

import redrafter_mlx  # noqa: F401,E402  (loads OpenBLAS on Linux before mlx.core)
