"""Rebuilds a Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) from a GGUF
file's vocabulary and merges, so the converted model tokenizes offline.

Supports GGUF tokenizer model 'gpt2' (byte-level BPE: SmolLM, Qwen2, Llama 3 ...).
"""

import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from redrafter_mlx.errors import UserError


# Pre-tokenizer split patterns by `tokenizer.ggml.pre` (facts of each model family's tokenizer).
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
CONTROL, USER_DEFINED = 3, 4  # GGUF token types of special tokens


class TokenizerError(UserError, ValueError):
    pass


def _pre_tokenizer(pre: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    split = lambda pattern: pre_tokenizers.Split(Regex(pattern), behavior="isolated")  # noqa: E731
    if pre == "smollm":  # digits one by one, then GPT-2 splitting
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    if pre == "qwen2":
        return pre_tokenizers.Sequence([split(QWEN2_PATTERN), byte_level])
    if pre in ("llama3", "llama-bpe"):
        return pre_tokenizers.Sequence([split(LLAMA3_PATTERN), byte_level])
    if pre in ("gpt2", "default", None):
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    raise TokenizerError(f"GGUF pre-tokenizer {pre!r} is not supported; pass --tokenizer DIR with HF tokenizer files")


def build_tokenizer(metadata: dict) -> Tokenizer:
    kind = metadata.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise TokenizerError(f"GGUF tokenizer model {kind!r} is not supported (only byte-level BPE 'gpt2'); "
                             "pass --tokenizer DIR with HF tokenizer files")
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise TokenizerError("GGUF tokenizer.ggml.tokens is missing or not a list of strings; "
                             "pass --tokenizer DIR with HF tokenizer files")
    merges = metadata.get("tokenizer.ggml.merges", [])
    if not isinstance(merges, list) or not all(isinstance(m, str) and " " in m for m in merges):
        raise TokenizerError("GGUF tokenizer.ggml.merges is not a list of 'a b' pairs")
    merges = [tuple(m.split(" ", 1)) for m in merges]
    vocab = {token: i for i, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(metadata.get("tokenizer.ggml.pre"))
    tokenizer.decoder = decoders.ByteLevel()
    types = metadata.get("tokenizer.ggml.token_type", [])
    if not isinstance(types, list) or len(types) > len(tokens):
        raise TokenizerError("GGUF tokenizer.ggml.token_type does not list one type per token")
    specials = [tokens[i] for i, t in enumerate(types) if t in (CONTROL, USER_DEFINED)]
    tokenizer.add_special_tokens(specials)
    for key in ("bos", "eos", "padding", "unknown"):
        index = metadata.get(f"tokenizer.ggml.{key}_token_id")
        if index is not None and not (isinstance(index, int) and 0 <= index < len(tokens)):
            raise TokenizerError(f"GGUF tokenizer.ggml.{key}_token_id {index!r} is not a token of its vocabulary")
    bos = metadata.get("tokenizer.ggml.bos_token_id")
    if metadata.get("tokenizer.ggml.add_bos_token") and bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B", special_tokens=[(tokens[bos], bos)])
    return tokenizer


def write_tokenizer(metadata: dict, out: Path):
    """Writes tokenizer.json and tokenizer_config.json (special tokens, chat template) into out."""
    tokenizer = build_tokenizer(metadata)
    tokenizer.save(str(out / "tokenizer.json"))
    tokens = metadata["tokenizer.ggml.tokens"]

    def token(key):
        index = metadata.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[index] if index is not None else None

    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": token("bos"),
              "eos_token": token("eos"), "pad_token": token("padding"), "unk_token": token("unknown"),
              "add_bos_token": bool(metadata.get("tokenizer.ggml.add_bos_token", False)),
              "clean_up_tokenization_spaces": False}
    if metadata.get("tokenizer.chat_template"):
        config["chat_template"] = metadata["tokenizer.chat_template"]
    (out / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None},
                                                          indent=2))
