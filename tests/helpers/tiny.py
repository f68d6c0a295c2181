"""Tiny random-weight models for the tests."""

from dataclasses import replace

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map

from redrafter_mlx.model.config import DrafterConfig, ModelConfig
from redrafter_mlx.model.drafter import Drafter
from redrafter_mlx.model.llm import Model
from redrafter_mlx.policy import CPU, DecodePolicy


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
                 scale: float = 0.3, head: str = "own", context_layers=()) -> Drafter:
    hidden = model.config.hidden_size
    default_exit = hidden if head == "target" else 2 * hidden
    config = DrafterConfig(hidden_size=hidden, vocab_size=model.config.vocab_size, exit_dim=exit_dim or default_exit,
                           num_draft_layers=layers, rnn=rnn, head=head, context_layers=list(context_layers))
    drafter = Drafter(config)
    _randomize(drafter, seed, scale)
    drafter.bind_target(model)
    return drafter


def cast(module: nn.Module, dtype):
    module.update(tree_map(lambda p: p.astype(dtype), module.parameters()))
    return module


def write_tokenizer(path, vocab_size: int):
    """A word-level tokenizer over words w0..w{V-1}, with w0 as EOS, saved as tokenizer.json."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, decoders

    vocab = {f"w{i}": i for i in range(vocab_size)}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="w1"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer.save(str(path / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "w0", "unk_token": "w1"}
    (path / "tokenizer_config.json").write_text(json.dumps(config))


def write_model_dir(path, model: Model):
    from redrafter_mlx.model.load import save_module

    path.mkdir(parents=True, exist_ok=True)
    save_module(model, model.config.to_dict(), path)
    write_tokenizer(path, model.config.vocab_size)
    return path


def write_drafter_dir(path, drafter: Drafter):
    from redrafter_mlx.model.load import save_module

    path.mkdir(parents=True, exist_ok=True)
    save_module(drafter, drafter.config.to_dict(), path)
    return path


def cpu_policy(fixed_shapes: bool = None) -> DecodePolicy:
    """The CPU policy (None), or it with every tree verified at a fixed size in a compiled step
    as on GPUs (True), or with width-1 trees verified exactly too (False)."""
    if fixed_shapes is None:
        return CPU
    return replace(CPU, fixed_shapes=True) if fixed_shapes else replace(CPU, fixed_single_beam=False)


def write_tiny_setup(root) -> dict:
    """A tiny model directory, a drafter for it and three chat prompts (.jsonl) under root,
    for the command lines that take --model, --drafter and --prompts."""
    import json

    model = tiny_model(2, vocab=16)
    prompts = root / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"turns": [f"w{3 + i} w{4 + i}"]}) for i in range(3)) + "\n")
    return {"model": write_model_dir(root / "model", model),
            "drafter": write_drafter_dir(root / "drafter", tiny_drafter(model, 3)), "prompts": prompts, "root": root}
