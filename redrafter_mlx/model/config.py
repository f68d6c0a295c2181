"""Model and drafter configurations, read from a config.json dict.

Every value is checked when a config is read (type, range, finite), so that a config of
the wrong shape fails with one line naming the key instead of deep inside the model.
"""

import math
from dataclasses import dataclass, field, fields
from typing import Optional

from ..errors import UserError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")
ROPE_TYPES = ("default", "linear", "llama3")
QUANTIZATION_BITS = (2, 3, 4, 5, 6, 8)
QUANTIZATION_GROUPS = (32, 64, 128)
# Upper bounds far above any supported model, below sizes that only a corrupt file holds.
MAX_WIDTH = 1 << 16  # hidden_size, exit_dim
MAX_FFN = 1 << 20
MAX_LAYERS = 1024
MAX_HEADS = 1024
MAX_VOCAB = 1 << 22
MAX_POSITIONS = 1 << 26


class ConfigError(UserError, ValueError):
    """A configuration that this package cannot run."""


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_int(raw: dict, key: str, low: int, high: int, optional: bool = False):
    """Raises ConfigError unless raw[key] is an integer in low..high (or absent/null if optional)."""
    value = raw.get(key)
    if value is None and optional:
        return
    if key not in raw:
        raise ConfigError(f"lacks {key}")
    if not is_int(value) or not low <= value <= high:
        raise ConfigError(f"{key} must be an integer in {low}..{high}, got {value!r}")


def check_number(raw: dict, key: str, positive: bool = True):
    """Raises ConfigError unless raw[key] (when present) is a finite number (> 0 if positive)."""
    if key in raw and not (is_number(raw[key]) and (raw[key] > 0 or not positive)):
        raise ConfigError(f"{key} must be a finite number{' > 0' if positive else ''}, got {raw[key]!r}")


def check_bool(raw: dict, key: str):
    if key in raw and not isinstance(raw[key], bool):
        raise ConfigError(f"{key} must be true or false, got {raw[key]!r}")


def check_object(raw, what: str = "config.json") -> dict:
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} must hold a JSON object, got {type(raw).__name__}")
    return raw


def check_quantization(quantization):
    """mlx-lm's quantization entry: group_size and bits, and per-layer entries of the same form."""
    if quantization is None:
        return
    check_object(quantization, "quantization")
    allowed = {"group_size": QUANTIZATION_GROUPS, "bits": QUANTIZATION_BITS}
    for key, value in quantization.items():
        if key in allowed and not (is_int(value) and value in allowed[key]):
            raise ConfigError(f"quantization {key} must be one of {allowed[key]}, got {value!r}")
        if key not in allowed and isinstance(value, dict):
            if not allowed.keys() <= value.keys():
                raise ConfigError(f"quantization of {key} needs group_size and bits")
            check_quantization({k: v for k, v in value.items() if k in allowed})


def check_rope_scaling(scaling):
    if scaling is None:
        return
    check_object(scaling, "rope_scaling")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ConfigError(f"unsupported rope_scaling type {kind!r} (supported: {', '.join(ROPE_TYPES[1:])})")
    if kind != "default":
        if "factor" not in scaling:
            raise ConfigError("rope_scaling lacks factor")
        check_number(scaling, "factor")
    for key in ("low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
        check_number(scaling, key)
    if kind == "llama3" and scaling.get("low_freq_factor", 1.0) == scaling.get("high_freq_factor", 4.0):
        raise ConfigError("rope_scaling low_freq_factor and high_freq_factor must differ")


def _known_keys(cls, raw: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _rope_parameters_to_legacy(raw: dict) -> dict:
    """transformers >= 5 writes rope_theta and scaling inside `rope_parameters`."""
    params = raw.get("rope_parameters")
    if not params:
        return raw
    check_object(params, "rope_parameters")
    raw = {k: v for k, v in raw.items() if k != "rope_parameters"}
    raw.setdefault("rope_theta", params.get("rope_theta", 10000.0))
    if params.get("rope_type", "default") != "default":
        raw.setdefault("rope_scaling", {k: v for k, v in params.items() if k != "rope_theta"})
    return raw


@dataclass
class ModelConfig:
    """Target LLM of the LLaMA family (Llama 1/2/3, Vicuna, Mistral, SmolLM, Qwen2)."""

    model_type: str
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: Optional[int] = None
    head_dim: Optional[int] = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: Optional[dict] = None
    rope_traditional: bool = False  # True for GGUF layouts (interleaved rotary pairs)
    max_position_embeddings: int = 4096
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # q/k/v bias (Qwen2 always has it)
    mlp_bias: bool = False
    quantization: Optional[dict] = None
    eos_token_id: object = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        """Checks every value it uses; raises ConfigError naming the first wrong key."""
        check_object(raw)
        model_type = raw.get("model_type")
        if "model_type" not in raw:
            raise ConfigError("lacks model_type (is this a model directory?)")
        if model_type == DrafterConfig.model_type:
            raise ConfigError("is a drafter's config, not a model's (pass the drafter as --drafter)")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        missing = [k for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                               "num_attention_heads", "vocab_size") if k not in raw]
        if missing:
            raise ConfigError(f"lacks {', '.join(missing)}")
        raw = _rope_parameters_to_legacy(raw)
        cls.check_values(raw)
        config = cls(**_known_keys(cls, raw))
        config.extra = {k: v for k, v in raw.items() if k not in {f.name for f in fields(cls)}}
        if model_type == "qwen2":
            config.attention_bias = True
        if config.num_key_value_heads is None:
            config.num_key_value_heads = config.num_attention_heads
        if config.head_dim is None:
            config.head_dim = config.hidden_size // config.num_attention_heads
        if config.max_position_embeddings is None:
            config.max_position_embeddings = 4096
        if config.num_attention_heads % config.num_key_value_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        if config.head_dim < 2 or config.head_dim % 2:
            raise ConfigError(f"head_dim (hidden_size / num_attention_heads) must be even and >= 2, "
                              f"got {config.head_dim}")
        return config

    @staticmethod
    def check_values(raw: dict):
        """Types and ranges of the values a model config holds."""
        check_int(raw, "hidden_size", 1, MAX_WIDTH)
        check_int(raw, "num_hidden_layers", 1, MAX_LAYERS)
        check_int(raw, "intermediate_size", 1, MAX_FFN)
        check_int(raw, "num_attention_heads", 1, MAX_HEADS)
        check_int(raw, "vocab_size", 1, MAX_VOCAB)
        check_int(raw, "num_key_value_heads", 1, MAX_HEADS, optional=True)
        check_int(raw, "head_dim", 2, MAX_WIDTH, optional=True)
        check_int(raw, "max_position_embeddings", 1, MAX_POSITIONS, optional=True)
        check_number(raw, "rms_norm_eps")
        check_number(raw, "rope_theta")
        for key in ("rope_traditional", "tie_word_embeddings", "attention_bias", "mlp_bias"):
            check_bool(raw, key)
        check_rope_scaling(raw.get("rope_scaling"))
        check_quantization(raw.get("quantization"))
        eos = raw.get("eos_token_id")
        eos_list = eos if isinstance(eos, list) else [eos]
        if eos is not None and not all(is_int(e) and 0 <= e < raw["vocab_size"] for e in eos_list):
            raise ConfigError(f"eos_token_id must be a token id or a list of token ids in 0..{raw['vocab_size'] - 1}, "
                              f"got {eos!r}")

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}

    @property
    def context_window(self) -> int:
        """The positions a sequence may fill: max_position_embeddings, or the sliding attention
        window where the model has one and it is shorter (Mistral v0.1: 4,096 of 32,768). Our
        attention sees every earlier position, which is the model's own attention only within
        its window; past it the output would differ, so the window bounds the context."""
        window = self.extra.get("sliding_window")  # none named: none (to_dict drops v0.2's null)
        if self._slides() and is_int(window) and 0 < window < self.max_position_embeddings:
            return window
        return self.max_position_embeddings

    def _slides(self) -> bool:
        """Whether some layer attends within the sliding window, as Hugging Face reads the
        config: every Mistral layer; Qwen2's with use_sliding_window, those that layer_types
        names "sliding_attention", else those from max_window_layers (default 28) on."""
        if self.model_type == "mistral":
            return True
        if self.model_type != "qwen2" or self.extra.get("use_sliding_window") is not True:
            return False
        layer_types = self.extra.get("layer_types")
        if isinstance(layer_types, list):
            return "sliding_attention" in layer_types
        first = self.extra.get("max_window_layers", 28)
        return not is_int(first) or first < self.num_hidden_layers

    @property
    def eos_ids(self) -> list:
        eos = self.eos_token_id
        if eos is None:
            return []
        return list(eos) if isinstance(eos, (list, tuple)) else [eos]


@dataclass
class DrafterConfig:
    """Recurrent drafter (Apple's checkpoint layout, model_type recurrent_drafting_drafter)."""

    hidden_size: int
    vocab_size: int
    exit_dim: int
    num_draft_layers: int
    rnn: bool = True
    emb_norm: bool = False  # kept for compatibility; the norm is not applied
    rms_norm_eps: float = 1e-6
    head: str = "own"  # "own": lm_head.{N} Linear(exit_dim -> V) (Apple); "target": the LLM's frozen head
    draft_vocab_size: int = 0  # > 0: score only this many frequent tokens (draft_vocab.json); 0: all
    head_rows: int = 0  # own head only: > 0 when it holds just the rows of its draft_vocab_size tokens
    context_layers: list = field(default_factory=list)  # target layers read besides the last (ours; Apple: none)
    model_type: str = "recurrent_drafting_drafter"
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict) -> "DrafterConfig":
        """Checks every value it uses; raises ConfigError naming the first wrong key."""
        check_object(raw)
        missing = [k for k in ("hidden_size", "vocab_size", "exit_dim", "num_draft_layers") if k not in raw]
        if missing:
            raise ConfigError(f"lacks {', '.join(missing)} (is this a drafter directory?)")
        check_int(raw, "hidden_size", 1, MAX_WIDTH)
        check_int(raw, "vocab_size", 1, MAX_VOCAB)
        check_int(raw, "exit_dim", 1, MAX_WIDTH)
        check_int(raw, "num_draft_layers", 0, MAX_LAYERS)
        check_int(raw, "draft_vocab_size", 0, raw["vocab_size"], optional=True)
        check_int(raw, "head_rows", 0, raw["vocab_size"], optional=True)
        check_bool(raw, "rnn")
        check_bool(raw, "emb_norm")
        check_number(raw, "rms_norm_eps")
        check_quantization(raw.get("quantization"))
        if not isinstance(raw.get("context_layers", []), list):
            raise ConfigError(f"context_layers must be a list of layer indices, got {raw['context_layers']!r}")
        config = cls(**_known_keys(cls, raw))
        config.extra = {k: v for k, v in raw.items() if k not in {f.name for f in fields(cls)}}
        if config.head not in ("own", "target"):
            raise ConfigError(f"drafter head must be 'own' or 'target', got {config.head!r}")
        if config.head == "target" and config.exit_dim != config.hidden_size:
            raise ConfigError("a drafter using the target's head needs exit_dim == hidden_size")
        if config.head_rows and (config.head != "own" or config.head_rows != config.draft_vocab_size):
            raise ConfigError("head_rows is for an own head holding exactly its draft_vocab_size rows")
        layers = config.context_layers
        if any(not is_int(i) or i < 0 for i in layers) or list(layers) != sorted(set(layers)):
            raise ConfigError(f"drafter context_layers must be ascending layer indices >= 0, got {layers}")
        return config

    @property
    def context_size(self) -> int:
        """Width of the context the drafter reads: the last hidden state and each context layer's."""
        return self.hidden_size * (1 + len(self.context_layers))

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return out

    def check_matches(self, model: ModelConfig):
        """Raises ConfigError when this drafter cannot read `model`'s hidden states/tokens."""
        if self.hidden_size != model.hidden_size:
            raise ConfigError(
                f"drafter hidden_size {self.hidden_size} != model hidden_size {model.hidden_size}"
            )
        if self.vocab_size != model.vocab_size:
            raise ConfigError(f"drafter vocab_size {self.vocab_size} != model vocab_size {model.vocab_size}")
        if self.context_layers and self.context_layers[-1] >= model.num_hidden_layers:
            raise ConfigError(f"drafter context_layers {self.context_layers} name layers beyond the model's "
                              f"{model.num_hidden_layers}")
