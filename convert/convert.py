"""Conversion of a target LLM (HF dir or GGUF file) and of a ReDrafter drafter to MLX."""

import shutil
import sys
from pathlib import Path
from typing import Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from redrafter_mlx.atomic import OutputExistsError, atomic_directory, recover
from redrafter_mlx.model.config import ConfigError, DrafterConfig, ModelConfig
from redrafter_mlx.model.drafter import Drafter
from redrafter_mlx.model.llm import Model
from redrafter_mlx.model.load import DTYPES, LoadError, fill, layer_quantization, read_config

from . import gguf_reader, gguf_tokenizer
from .hf_reader import CheckpointError, check_finite, read_json, read_weights
from .output import write_config, write_weights

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "generation_config.json")


def _progress(items, desc):
    if not sys.stderr.isatty():  # no carriage returns in logs
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, unit="file", leave=False)


def _cast_and_quantize(module: nn.Module, dtype, q_bits, q_group_size, quantization: dict) -> dict:
    """Casts float weights; quantizes the remaining Linear/Embedding layers when q_bits is set.

    Returns the quantization config entries (mlx-lm format) for config.json."""
    module.set_dtype(DTYPES[dtype])
    if q_bits:
        chosen = []

        def predicate(name, layer):
            fits = hasattr(layer, "to_quantized") and layer.weight.shape[-1] % q_group_size == 0
            if fits and not hasattr(layer, "scales"):
                chosen.append(name)
                return True
            return False

        nn.quantize(module, group_size=q_group_size, bits=q_bits, class_predicate=predicate)
        quantization = with_layers(quantization, chosen, {"group_size": q_group_size, "bits": q_bits})
    mx.eval(module.parameters())
    return quantization


def with_layers(quantization: dict, names: list, settings: dict) -> dict:
    """The quantization config (mlx-lm format) once the layers `names` are quantized with
    `settings`: the default when nothing else was quantized, else one entry per layer, so
    that layers the source stored quantized keep theirs (a Q4_1 GGUF's group 32 under -q 4's
    group 64)."""
    if not names:
        return quantization
    if not quantization or all(quantization.get(k, v) == v for k, v in settings.items()):
        return {**quantization, **settings}
    return {**quantization, **{name: settings for name in names}}


def check_output(out, force: bool):
    """Refuses an existing output without force before anything is read (atomic_directory
    checks again when writing), after cleaning up what killed runs left (atomic.recover)."""
    recover(out)
    if Path(out).exists() and not force:
        raise OutputExistsError(f"{out} exists; pass --force to overwrite it")


def model_config(config: dict, source) -> ModelConfig:
    """The checked ModelConfig of a source's config; CheckpointError naming the source."""
    try:
        return ModelConfig.from_dict(config)
    except ConfigError as error:
        raise CheckpointError(f"{source}: {error}") from None


def tokenizer_files(directory: Path) -> list:
    """The tokenizer files to copy from directory; CheckpointError when it holds none."""
    files = [name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not files:
        raise CheckpointError(f"{directory}: no tokenizer files")
    return files


def read_target(src: Path, allow_pickle: bool, tokenizer_src: Optional[Path]):
    """Returns (config dict, weights, quantization entries, GGUF metadata or None); the
    tokenizer files of tokenizer_src (None: the GGUF's own tokenizer) are checked once the
    config is, before the weights are read (a GGUF's: with its header)."""
    if src.is_file() and src.suffix == ".gguf":
        metadata, weights = gguf_reader.read_gguf(src)
        config = gguf_reader.model_config(metadata, src)
        model_config(config, src)  # checked before its sizes shape the weights
        if tokenizer_src is not None:
            tokenizer_files(tokenizer_src)
        weights = check_finite(gguf_reader.hf_weights(metadata, weights, config, src), src)
        return config, weights, gguf_reader.quantization_config(weights), metadata
    if not src.exists():
        raise CheckpointError(f"{src}: not a checkpoint directory or .gguf file (no such file or directory)")
    if not src.is_dir():
        raise CheckpointError(f"{src}: not a checkpoint directory or .gguf file")
    config = read_json(src / "config.json")
    model_config(config, src / "config.json")  # checked before the weights are read
    tokenizer_files(tokenizer_src)
    weights = read_weights(src, allow_pickle, lambda files: _progress(files, "reading"))
    return config, weights, dict(config.get("quantization") or {}), None


def dequantize_all(weights: dict, quantization: dict) -> dict:
    """Replaces every quantized (weight, scales, biases) triple by a dense float32 weight."""
    for scales_name in [k for k in weights if k.endswith(".scales")]:
        prefix = scales_name[: -len(".scales")]
        settings = layer_quantization(quantization, prefix)
        weights[prefix + ".weight"] = mx.dequantize(
            weights[prefix + ".weight"], weights.pop(scales_name), weights.pop(prefix + ".biases"),
            group_size=settings["group_size"], bits=settings["bits"]).astype(mx.float32)
    return weights


def convert_target(src, out, dtype="float16", q_bits=None, q_group_size=64, force=False,
                   allow_pickle=False, tokenizer=None, dequantize=False, progress=None):
    """progress(stage): called as each stage starts ("reading", "converting", "writing")."""
    progress = progress or (lambda stage: None)
    src = Path(src)
    check_output(out, force)
    if tokenizer and not Path(tokenizer).is_dir():
        raise CheckpointError(f"--tokenizer {tokenizer}: no such directory")
    tokenizer_src = Path(tokenizer) if tokenizer else (src if src.is_dir() else None)  # None: a GGUF's own
    progress("reading")
    config, weights, quantization, metadata = read_target(src, allow_pickle, tokenizer_src)
    progress("converting")
    if dequantize and quantization:
        weights, quantization = dequantize_all(weights, quantization), {}
    model = fill(Model(model_config(config, src)), weights, quantization, src)
    del weights
    quantization = _cast_and_quantize(model, dtype, q_bits, q_group_size, quantization)
    progress("writing")
    config = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config", "torch_dtype")}
    if quantization:
        config["quantization"] = quantization
    config["torch_dtype"] = dtype
    with atomic_directory(out, force) as tmp:
        write_weights(dict(tree_flatten(model.parameters())), tmp)
        write_config(config, tmp)
        if tokenizer_src is not None:
            for name in tokenizer_files(tokenizer_src):
                shutil.copy(tokenizer_src / name, tmp / name)
        else:
            try:
                gguf_tokenizer.write_tokenizer(metadata, tmp)
            except gguf_tokenizer.TokenizerError as error:
                raise gguf_tokenizer.TokenizerError(f"{src}: {error}") from None
    return Path(out)


def convert_drafter(src, out, target, dtype="float16", q_bits=None, q_group_size=64, force=False,
                    allow_pickle=False):
    """Converts a drafter from Apple's PyTorch layout; `target` is the MLX (or HF) target dir."""
    src = Path(src)
    check_output(out, force)
    raw = read_json(src / "config.json")
    try:
        target_config = ModelConfig.from_dict(read_config(target))
    except (LoadError, ConfigError) as error:
        raise CheckpointError(f"--target {target}: {error}") from None
    try:
        config = DrafterConfig.from_dict(raw)
    except ConfigError as error:
        raise CheckpointError(f"{src / 'config.json'}: {error}") from None
    try:
        config.check_matches(target_config)
    except ConfigError as error:
        raise CheckpointError(f"{src}: does not fit --target {target}: {error}") from None
    weights = read_weights(src, allow_pickle)
    drafter = fill(Drafter(config), weights, {}, src)
    quantization = _cast_and_quantize(drafter, dtype, q_bits, q_group_size, {})
    out_config = {k: v for k, v in config.to_dict().items() if k != "extra"}
    if quantization:
        out_config["quantization"] = quantization
    with atomic_directory(out, force) as tmp:
        write_weights(dict(tree_flatten(drafter.parameters())), tmp)
        write_config(out_config, tmp)
    return Path(out)
