"""Reads Hugging Face / PyTorch checkpoints: *.safetensors (no torch needed) or, with
explicit consent, pytorch_model*.bin pickles through torch's weights_only loader."""

from pathlib import Path

import mlx.core as mx

from redrafter_mlx.errors import UserError, read_json as read_json_value
from redrafter_mlx.model.load import safetensors_files


class CheckpointError(UserError, ValueError):
    pass


def read_json(path: Path) -> dict:
    """A JSON object from a file; CheckpointError naming the file otherwise."""
    if not path.parent.is_dir():
        raise CheckpointError(f"{path.parent}: no such directory")
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: no {path.name}")
    value = read_json_value(path, CheckpointError)
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: must hold a JSON object, got {type(value).__name__}")
    return value


def weight_files(src: Path):
    """The checkpoint's weight files: safetensors preferred (load.safetensors_files), else .bin pickles."""
    files = safetensors_files(src, CheckpointError)
    if files:
        return files
    for pattern in ("pytorch_model*.bin", "*.bin"):
        files = sorted(src.glob(pattern))
        if files:
            return files
    raise CheckpointError(f"{src}: no *.safetensors or pytorch_model*.bin weights")


def _load_safetensors(file: Path) -> dict:
    try:
        return mx.load(str(file))
    except Exception as error:
        raise CheckpointError(f"{file}: cannot read safetensors ({error})") from None


def _load_pickle(file: Path) -> dict:
    try:
        import torch
    except ImportError:
        raise CheckpointError(f"{file}: reading .bin checkpoints needs torch: pip install torch "
                              "(or convert the checkpoint to safetensors)") from None
    try:
        state = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{file}: cannot read the PyTorch checkpoint ({error})") from None
    return {k: mx.array(v.float().numpy() if v.is_floating_point() else v.numpy()) for k, v in state.items()}


def read_weights(src: Path, allow_pickle: bool, progress=lambda files: files) -> dict:
    files = weight_files(src)
    pickles = [f for f in files if f.suffix == ".bin"]
    if pickles and not allow_pickle:
        raise CheckpointError(f"{src}: {pickles[0].name} is a pickle, which can run code when loaded; "
                              "pass --allow-pickle if you trust it")
    weights = {}
    for file in progress(files):
        weights.update(_load_pickle(file) if file.suffix == ".bin" else _load_safetensors(file))
    check_finite(weights, src)
    return weights


def check_finite(weights: dict, source) -> dict:
    """CheckpointError naming the first float tensor holding NaN or infinity (a corrupt file:
    such weights load and then generate nonsense). Conversion only: a pass over the weights."""
    for name, value in weights.items():
        if mx.issubdtype(value.dtype, mx.floating) and not mx.all(mx.isfinite(value)).item():
            raise CheckpointError(f"{source}: tensor {name} holds NaN or infinite values (a corrupt file?)")
    return weights
