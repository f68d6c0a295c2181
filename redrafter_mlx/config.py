"""Model and drafter configurations, read from a config.json dict."""

from dataclasses import dataclass, field, fields
from typing import Optional

from .errors import UserError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2")


class ConfigError(UserError, ValueError):
    """A configuration that this package cannot run."""


def _known_keys(cls, raw: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _rope_parameters_to_legacy(raw: dict) -> dict:
    """transformers >= 5 writes rope_theta and scaling inside `rope_parameters`."""
    params = raw.get("rope_parameters")
    if not params:
        return raw
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
        model_type = raw.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unsupported model_type {model_type!r}; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        missing = [k for k in ("hidden_size", "num_hidden_layers", "intermediate_size",
                               "num_attention_heads", "vocab_size") if k not in raw]
        if missing:
            raise ConfigError(f"config.json lacks {', '.join(missing)}")
        raw = _rope_parameters_to_legacy(raw)
        config = cls(**_known_keys(cls, raw))
        config.extra = {k: v for k, v in raw.items() if k not in {f.name for f in fields(cls)}}
        if model_type == "qwen2":
            config.attention_bias = True
        if config.num_key_value_heads is None:
            config.num_key_value_heads = config.num_attention_heads
        if config.head_dim is None:
            config.head_dim = config.hidden_size // config.num_attention_heads
        if config.num_attention_heads % config.num_key_value_heads:
            raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
        return config

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}

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
        missing = [k for k in ("hidden_size", "vocab_size", "exit_dim", "num_draft_layers") if k not in raw]
        if missing:
            raise ConfigError(f"drafter config.json lacks {', '.join(missing)}")
        config = cls(**_known_keys(cls, raw))
        config.extra = {k: v for k, v in raw.items() if k not in {f.name for f in fields(cls)}}
        if config.head not in ("own", "target"):
            raise ConfigError(f"drafter head must be 'own' or 'target', got {config.head!r}")
        if config.head == "target" and config.exit_dim != config.hidden_size:
            raise ConfigError("a drafter using the target's head needs exit_dim == hidden_size")
        if config.head_rows and (config.head != "own" or config.head_rows != config.draft_vocab_size):
            raise ConfigError("head_rows is for an own head holding exactly its draft_vocab_size rows")
        layers = config.context_layers
        if any(not isinstance(i, int) or i < 0 for i in layers) or list(layers) != sorted(set(layers)):
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
