"""Tiny random-weight models for the tests."""

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from redrafter_mlx.config import DrafterConfig, ModelConfig
from redrafter_mlx.drafter import Drafter
from redrafter_mlx.llm import Model


def model_config(kind: str = "llama", vocab: int = 24, **overrides) -> ModelConfig:
    raw = dict(model_type=kind, hidden_size=32, num_hidden_layers=2, intermediate_size=48,
               num_attention_heads=4, num_key_value_heads=2, vocab_size=vocab, rms_norm_eps=1e-5,
               rope_theta=10000.0, tie_word_embeddings=kind == "llama")
    raw.update(overrides)
    return ModelConfig.from_dict(raw)


def _randomize(module: nn.Module, seed: int, scale: float):
    """Replaces every parameter by N(0, scale^2) noise (norm weights around 1)."""
    mx.random.seed(seed)
    params = tree_flatten(module.parameters())
    new = [(k, (1 + 0.1 * mx.random.normal(v.shape)) if k.endswith("norm.weight") else
            scale * mx.random.normal(v.shape)) for k, v in params]
    module.load_weights(new)
    mx.eval(module.parameters())


def tiny_model(seed: int = 0, kind: str = "llama", vocab: int = 24, scale: float = 0.3, **overrides) -> Model:
    model = Model(model_config(kind, vocab, **overrides))
    _randomize(model, seed, scale)
    return model


def tiny_drafter(model: Model, seed: int = 1, rnn: bool = True, exit_dim=None, layers: int = 2,
                 scale: float = 0.3) -> Drafter:
    config = DrafterConfig(hidden_size=model.config.hidden_size, vocab_size=model.config.vocab_size,
                           exit_dim=exit_dim or 2 * model.config.hidden_size, num_draft_layers=layers, rnn=rnn)
    drafter = Drafter(config)
    _randomize(drafter, seed, scale)
    return drafter


def cast(module: nn.Module, dtype):
    module.update(tree_map(lambda p: p.astype(dtype), module.parameters()))
    return module
