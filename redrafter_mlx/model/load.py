"""Loading MLX model and drafter directories (config.json + *.safetensors)."""

import json
from copy import deepcopy
from pathlib import Path
from typing import Optional, Tuple

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map_with_path

from .config import ConfigError, DrafterConfig, ModelConfig
from .draft_vocab import read_token_ids
from .drafter import Drafter
from ..errors import UserError, log, read_json
from .linear import Linear, use_cpu_kernels
from .llm import Model
from .quantized_rows import four_bit_affine, use_rows_kernel
from ..policy import DecodePolicy

DTYPES = {"float16": mx.float16, "bfloat16": mx.bfloat16, "float32": mx.float32}


class LoadError(UserError):
    """A model or drafter directory that cannot be loaded; the message says why."""


def read_config(path: Path, kind: str = "model") -> dict:
    """The config.json of a model (kind "model") or drafter directory, as a dict."""
    path = Path(path)
    if not path.is_dir():
        raise LoadError(f"{path}: no such {kind} directory")
    config_file = path / "config.json"
    if not config_file.is_file():
        hint = "an MLX model directory? see `python -m convert`" if kind == "model" else "a drafter directory?"
        raise LoadError(f"{path}: no config.json (is this {hint})")
    raw = read_json(config_file, LoadError)
    if not isinstance(raw, dict):
        raise LoadError(f"{config_file}: must hold a JSON object, got {type(raw).__name__}")
    return raw


def read_model_config(path) -> ModelConfig:
    """The checked ModelConfig of a model directory (LoadError naming its config.json)."""
    raw = read_config(path)
    try:
        return ModelConfig.from_dict(raw)
    except ConfigError as error:
        raise LoadError(f"{Path(path) / 'config.json'}: {error}") from None


def read_drafter_config(path) -> DrafterConfig:
    """The checked DrafterConfig of a drafter directory (LoadError naming its config.json)."""
    raw = read_config(path, "drafter")
    try:
        return DrafterConfig.from_dict(raw)
    except ConfigError as error:
        raise LoadError(f"{Path(path) / 'config.json'}: {error}") from None


SAFETENSORS_INDEX = "model.safetensors.index.json"


def safetensors_files(path: Path, error=UserError) -> list:
    """A checkpoint directory's *.safetensors files: those its model.safetensors.index.json
    maps weights to where it has one, else all of them but consolidated*.safetensors when
    there are others (Mistral's repositories hold every weight again in those, under
    Mistral's own names); `error` names a bad index."""
    path = Path(path)
    index = path / SAFETENSORS_INDEX
    if not index.is_file():
        files = sorted(path.glob("*.safetensors"))
        return [f for f in files if not f.name.startswith("consolidated")] or files
    weight_map = read_json(index, error)
    weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise error(f"{index}: no weight_map of weight names to file names")
    missing = sorted({name for name in weight_map.values() if not (path / name).is_file()})
    if missing:
        raise error(f"{index}: names {missing[0]}, which is not in {path}")
    return sorted({path / name for name in weight_map.values()})


def read_weights(path: Path) -> dict:
    files = safetensors_files(path, LoadError)
    if not files:
        raise LoadError(f"{path}: no *.safetensors weights")
    weights = {}
    for file in files:
        try:
            weights.update(mx.load(str(file)))
        except Exception as error:  # mlx raises RuntimeError/ValueError on corrupt files
            raise LoadError(f"{file}: cannot read safetensors ({error})") from None
    return weights


def layer_quantization(quantization: dict, name: str) -> dict:
    """group_size/bits of layer `name` in mlx-lm's format: per-layer dicts over the defaults."""
    default = {"group_size": quantization.get("group_size", 64), "bits": quantization.get("bits", 4)}
    return quantization.get(name, default)


def _quantize_like(module: nn.Module, quantization: dict, weights: dict):
    """Turns the layers that the checkpoint stores quantized into quantized layers."""

    def settings(name, _):
        return f"{name}.scales" in weights and layer_quantization(quantization, name)

    nn.quantize(module, class_predicate=settings)


def fill(module: nn.Module, weights: dict, quantization: dict, source) -> nn.Module:
    """Loads weights into module strictly (names and shapes checked), first quantizing the
    layers that the weights store quantized."""
    weights = module.sanitize(weights)
    if quantization:
        _quantize_like(module, quantization, weights)
    try:
        module.load_weights(list(weights.items()), strict=True)
    except ValueError as error:
        raise LoadError(f"{source}: weights do not match the config ({error})") from None
    return module


def _fill(module: nn.Module, weights: dict, config: dict, path: Path, dtype):
    fill(module, weights, config.get("quantization"), path)
    if dtype is not None:
        module.set_dtype(dtype)
    mx.eval(module.parameters())
    return module


def load_model(path, dtype=None, *, policy: DecodePolicy = None) -> Model:
    """Loads a target LLM directory; dtype (an mx float type) casts its float weights; policy
    (default: this device's) picks its kernels, whether its projections are joined
    (Model.fuse_projections) and whether its weights are made dense (fastest_form)."""
    policy = policy or DecodePolicy.for_device()
    raw = read_config(path)
    config = read_model_config(path)
    model = _fill(Model(config), read_weights(path), raw, Path(path), dtype)
    fastest_form(model, dtype, policy, path)
    if policy.fuse_projections:
        mx.eval(model.fuse_projections().parameters())
    use_cpu_kernels(model, policy.cpu_kernels)
    return model


def dequantize_layers(module: nn.Module, dtype=None) -> set:
    """Replaces every quantized Linear and Embedding of module by a dense one of the same values
    in dtype (default: their scales' dtype); returns the bit widths it found (MLX's CPU
    kernels for quantized products are slow: DecodePolicy.dense_weights)."""
    bits = set()

    def dense(_, layer):
        if not isinstance(layer, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            return layer
        bits.add(layer.bits)
        weight = mx.dequantize(layer.weight, layer.scales, layer.biases, group_size=layer.group_size,
                               bits=layer.bits, mode=layer.mode).astype(dtype or layer.scales.dtype)
        if isinstance(layer, nn.QuantizedEmbedding):
            out = nn.Embedding(*weight.shape)
        else:
            out = Linear(weight.shape[1], weight.shape[0], bias="bias" in layer)
        out.update({"weight": weight, **({"bias": layer.bias.astype(weight.dtype)} if "bias" in layer else {})})
        return out

    module.update_modules(tree_map_with_path(dense, module.leaf_modules(), is_leaf=nn.Module.is_module))
    return bits


def dequantized_copy(module: nn.Module, dtype=None):
    """A copy of module whose quantized layers are dense (dequantize_layers), sharing every
    other weight with it (nothing is read again from disk); None where module has none."""
    shared = {id(array): array for _, array in tree_flatten(module.parameters())}
    copy = deepcopy(module, shared)
    return copy if dequantize_layers(copy, dtype) else None


def verifying_form(model: Model, form: str) -> Tuple[Model, Optional[Model]]:
    """(the target trees verify on, the one AR decodes on where it differs, else None) for a
    DecodePolicy.verify_form: "dense" verifies on a dense copy (dequantized_copy) where model
    is quantized, "rows_kernel" gives its 4-bit layers the few-row kernel (the same weights),
    and makes a dense copy as "dense" does where other widths are quantized (8-bit, mixed)."""
    if form == "rows_kernel" and any(isinstance(layer, nn.QuantizedLinear) and not four_bit_affine(layer)
                                     for layer in model.modules()):
        form = "dense"
    if form == "dense":
        dense = dequantized_copy(model, model.dtype)
        if dense is not None:
            mx.eval(dense.parameters())
            return dense, model
    elif form == "rows_kernel":
        use_rows_kernel(model)
    return model, None


def fastest_form(model: Model, dtype, policy: DecodePolicy, source):
    """On policies with dense weights (CPUs), the form that decodes fastest there: quantized
    layers made dense and half-precision weights cast, in policy.float_dtype (or dtype when
    given); one line on stderr says what changed, and one that a given dtype is slow there."""
    names = {value: name for name, value in DTYPES.items()}
    slow = dict(policy.slow_dtypes).get(names.get(dtype))
    if slow:
        log(f"--dtype {names[dtype]} decodes about {slow:g}x slower than {policy.float_dtype} on this device "
            "(docs/perf.md)")
    if not policy.dense_weights:
        return
    stored, target = model.dtype, dtype or DTYPES[policy.float_dtype]
    bits = dequantize_layers(model, target)
    if dtype is None and stored != target:
        model.set_dtype(target)
    mx.eval(model.parameters())
    if bits or dtype is None and stored != target:
        was = f"{'/'.join(map(str, sorted(bits)))}-bit" if bits else names.get(stored, str(stored))
        log(f"{source}: {was} weights made dense {names[target]} on this device (the form that decodes fastest "
            "here; docs/perf.md)")


def load_drafter(path, model: Model, dtype=None, draft_vocab: int = None, *, policy: DecodePolicy = None) -> Drafter:
    """Loads a drafter directory for `model`: checks hidden/vocab sizes, binds its LM head.

    dtype: cast its float weights (None: the model's activation dtype, so that no weight is
    converted at every draft step); draft_vocab: score only that many frequent tokens (0: all;
    None: the config's default); policy (default: this device's): its kernels, and whether a
    quantized head is made dense or gets the few-row kernel."""
    raw = read_config(path, "drafter")
    config = read_drafter_config(path)
    try:
        config.check_matches(model.config)
    except ConfigError as error:
        raise LoadError(f"{path}: does not fit the model: {error}") from None
    policy = policy or DecodePolicy.for_device()
    drafter = _fill(Drafter(config), read_weights(path), raw, Path(path), dtype or model.dtype)
    if policy.dense_weights:
        dequantize_layers(drafter)
        mx.eval(drafter.parameters())  # the dense weights now, not inside the first draft
    if policy.verify_form == "rows_kernel":
        use_rows_kernel(drafter)  # its 4-bit head scores the beams' rows
    use_cpu_kernels(drafter, policy.cpu_kernels)
    drafter.bind_target(model)
    size = config.draft_vocab_size if draft_vocab is None else draft_vocab
    if config.head_rows and size != config.head_rows:
        raise LoadError(f"{path}: its head scores only its {config.head_rows}-token draft vocabulary "
                        f"(--draft-vocab {size} asked)")
    if size:
        try:
            token_ids = read_token_ids(path, size, always=model.config.eos_ids, vocab_size=model.config.vocab_size)
        except UserError as error:
            if draft_vocab is None:  # the config's size, not a flag
                error = f"{error} (draft_vocab_size {size} in {Path(path) / 'config.json'})"
            raise LoadError(str(error)) from None
        drafter.restrict_vocab(token_ids)
    return drafter


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer.tiktoken")  # any one of


def load_tokenizer(path, eos_ids=None):
    """mlx-lm's TokenizerWrapper (streaming detokenizer, chat template) for a model directory."""
    from mlx_lm.tokenizer_utils import load as load_mlx_lm_tokenizer

    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise LoadError(f"{path}: no tokenizer files ({' or '.join(TOKENIZER_FILES[:2])}); `python -m convert` "
                        "copies them from the source checkpoint (or --tokenizer DIR)")
    try:
        return load_mlx_lm_tokenizer(Path(path), eos_token_ids=eos_ids or None)
    except Exception as error:
        raise LoadError(f"{path}: cannot load the tokenizer ({error})") from None


def save_module(module: nn.Module, config: dict, path):
    """Writes config.json + model.safetensors into an existing directory."""
    from mlx.utils import tree_flatten

    path = Path(path)
    mx.save_safetensors(str(path / "model.safetensors"), dict(tree_flatten(module.parameters())))
    (path / "config.json").write_text(json.dumps(config, indent=2))
