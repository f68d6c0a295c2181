"""Configs, directly: what loads, what is refused and why (the files' errors are tests/test_robustness.py)."""

import pytest

from redrafter_mlx.model.config import ConfigError, DrafterConfig, ModelConfig
from helpers.tiny import model_config

LLAMA = dict(model_type="llama", hidden_size=32, num_hidden_layers=2, intermediate_size=48, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=24, rms_norm_eps=1e-5, rope_theta=10000.0)


def test_a_llama_config_and_its_defaults():
    config = ModelConfig.from_dict(LLAMA)
    assert config.head_dim == 8 and config.num_key_value_heads == 2 and config.vocab_size == 24
    assert ModelConfig.from_dict({k: v for k, v in LLAMA.items() if k != "num_key_value_heads"}).num_key_value_heads == 4


@pytest.mark.parametrize("change,window", [
    ({}, 32768),
    ({"model_type": "mistral", "sliding_window": 4096}, 4096),  # Mistral v0.1
    ({"model_type": "mistral", "sliding_window": None}, 32768),  # v0.2 on
    ({"model_type": "mistral"}, 32768),  # none named: a v0.2 config written again (to_dict drops its null)
    ({"model_type": "mistral", "sliding_window": 65536}, 32768),
    ({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": False}, 32768),  # Qwen2's configs
    ({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": True, "max_window_layers": 1}, 4096),
    ({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": True}, 32768),  # layers 28 on: none of 2
    ({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": True,
      "layer_types": ["full_attention", "sliding_attention"]}, 4096),
    ({"model_type": "qwen2", "sliding_window": 4096, "use_sliding_window": True, "max_window_layers": 1,
      "layer_types": ["full_attention", "full_attention"]}, 32768),
    ({"sliding_window": 4096}, 32768),  # Llama has none
])
def test_the_context_window_is_the_sliding_window_where_the_model_attends_within_one(change, window):
    assert ModelConfig.from_dict({**LLAMA, "max_position_embeddings": 32768, **change}).context_window == window


@pytest.mark.parametrize("change,fragment", [
    ({"hidden_size": "32"}, "hidden_size"), ({"hidden_size": -1}, "hidden_size"),
    ({"num_hidden_layers": True}, "num_hidden_layers"), ({"rope_theta": float("nan")}, "rope_theta"),
    ({"num_attention_heads": 5}, "num_attention_heads"), ({"model_type": "gpt2"}, "model_type"),
])
def test_bad_model_configs_name_the_key(change, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ModelConfig.from_dict({**LLAMA, **change})


def test_a_drafter_must_fit_its_model():
    model = model_config("llama", vocab=24)
    drafter = DrafterConfig.from_dict(dict(hidden_size=32, vocab_size=24, exit_dim=64, num_draft_layers=2, rnn=True))
    drafter.check_matches(model)
    wide = DrafterConfig.from_dict(dict(hidden_size=48, vocab_size=24, exit_dim=96, num_draft_layers=2, rnn=True))
    with pytest.raises(ConfigError, match="hidden_size 48 != model hidden_size 32"):
        wide.check_matches(model)
