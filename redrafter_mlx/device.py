"""Which device MLX runs on: GPUs get fixed shapes and padded trees, CPUs exact ones."""

import platform

import mlx.core as mx


def on_gpu() -> bool:
    return mx.default_device() == mx.gpu


def device_kind() -> str:
    return "gpu" if on_gpu() else "cpu"


def device_name() -> str:
    """e.g. 'gpu: NVIDIA H100 80GB HBM3' or 'cpu: AMD EPYC'."""
    name = mx.device_info().get("device_name", platform.processor() or platform.machine())
    return f"{device_kind()}: {name}"
