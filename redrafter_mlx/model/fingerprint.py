"""What a drafter depends on in its target model, the same for every form of that model.

A drafter reads the target's hidden states and predicts its token ids, so it fits a model
whose architecture sizes and vocabulary are those it was trained with, however the weights
are stored (mlx-community 4/8-bit, float16, converted from a GGUF). The fingerprint holds
exactly that: the sizes from config.json, and a hash of the tokenizer's vocabulary. Each
shipped drafter stores its target's fingerprint in target.json; a model finds its drafter
by comparing fingerprints, never by a name.

The vocabulary hash covers, for a BPE tokenizer, the ids of the tokens its merges build, in
merge order: the same whether tokenizer.json comes from Hugging Face or is rebuilt from a
GGUF (which adds special and padding tokens to the vocabulary, but keeps the merges and
their ids). Other tokenizers hash their vocabulary without the added tokens.
"""

import hashlib
import json
from pathlib import Path
from typing import Optional

from ..errors import read_json
from .load import LoadError, read_model_config

FILE = "target.json"  # in a drafter directory: the fingerprint of the model it was trained for
SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
         "vocab_size")


def _merge_pair(merge) -> tuple:
    return tuple(merge.split(" ", 1)) if isinstance(merge, str) else tuple(merge)


def vocabulary_hash(model_dir) -> Optional[str]:
    """sha256 of the token ids a model's tokenizer.json defines (module docstring); None
    without a tokenizer.json."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    tokenizer = read_json(path, LoadError)
    model = tokenizer.get("model") or {}
    vocab = model.get("vocab") or {}
    if model.get("type") == "BPE" and model.get("merges"):
        ids = [vocab.get("".join(_merge_pair(merge)), -1) for merge in model["merges"]]
    else:
        added = {token.get("id") for token in tokenizer.get("added_tokens") or []}
        items = vocab.items() if isinstance(vocab, dict) else ((token, i) for i, (token, _) in enumerate(vocab))
        ids = sorted([token, i] for token, i in items if i not in added)
    return hashlib.sha256(json.dumps(ids).encode()).hexdigest()


def fingerprint(model_dir) -> dict:
    """{size name: value, "vocabulary": hash} of a model directory (LoadError for a bad config)."""
    config = read_model_config(model_dir)
    return {**{name: getattr(config, name) for name in SIZES}, "vocabulary": vocabulary_hash(model_dir)}


def trained_for(drafter_dir) -> Optional[dict]:
    """The fingerprint a drafter directory was trained for (its target.json), or None."""
    path = Path(drafter_dir) / FILE
    return read_json(path, LoadError) if path.is_file() else None


def differences(expected: dict, actual: dict) -> list:
    """The names whose values differ between two fingerprints."""
    return [name for name in (*SIZES, "vocabulary") if expected.get(name) != actual.get(name)]


def write(drafter_dir, model_dir):
    """Writes the fingerprint of model_dir into drafter_dir/target.json."""
    (Path(drafter_dir) / FILE).write_text(json.dumps(fingerprint(model_dir), indent=2) + "\n")
