"""Writes converted weights and configs (into the atomic directory of redrafter_mlx.atomic)."""

import json
from pathlib import Path

import mlx.core as mx

SHARD_BYTES = 5 * 1024 ** 3


def write_weights(weights: dict, out: Path, progress=None):
    """model.safetensors, or model-0000i-of-0000n.safetensors + index above SHARD_BYTES."""
    shards, current, size = [], {}, 0
    for name in sorted(weights):
        nbytes = weights[name].nbytes
        if current and size + nbytes > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = weights[name]
        size += nbytes
    shards.append(current)
    if len(shards) == 1:
        mx.save_safetensors(str(out / "model.safetensors"), shards[0], metadata={"format": "mlx"})
        return
    index = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        mx.save_safetensors(str(out / name), shard, metadata={"format": "mlx"})
        index.update({k: name for k in shard})
        if progress:
            progress(i + 1, len(shards))
    (out / "model.safetensors.index.json").write_text(json.dumps({"weight_map": index}, indent=2))


def write_config(config: dict, out: Path):
    (out / "config.json").write_text(json.dumps(config, indent=2))
