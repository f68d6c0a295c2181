"""The name of the device MLX runs on, for benchmark records and calibration keys."""

import platform

import mlx.core as mx


def device_name() -> str:
    """e.g. 'gpu: NVIDIA H100 80GB HBM3' or 'cpu: AMD EPYC'."""
    kind = "gpu" if mx.default_device() == mx.gpu else "cpu"
    name = mx.device_info().get("device_name", platform.processor() or platform.machine())
    return f"{kind}: {name}"
