"""Text in and out: chat messages to prompt tokens, accepted tokens to streamed text."""

from typing import Iterable, Iterator, List

from .errors import UsageError


def decode_text(data: bytes, source: str) -> str:
    """Bytes of a prompt -> text; UsageError naming `source` unless it is UTF-8 (a BOM is dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(f"{source}: not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                         "pass the prompt as UTF-8") from None


def check_text(text: str, source: str) -> str:
    """UsageError naming `source` when text is empty, or holds bytes that were not UTF-8 (a
    command line argument's such bytes arrive as lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise UsageError(f"{source}: not UTF-8 text (at character {error.start})") from None
    if not text.strip():
        raise UsageError(f"{source}: the prompt is empty")
    return text


def encode_messages(tokenizer, messages: List[dict], use_template: bool = True) -> List[int]:
    """Chat messages ({"role", "content"}) -> prompt tokens through the tokenizer's chat
    template (with the assistant's turn opened), or the last message's plain tokens where
    there is no template or use_template is off."""
    if use_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return tokenizer.encode(messages[-1]["content"])


def encode_prompt(tokenizer, text: str, use_template: bool = True) -> List[int]:
    """One user message -> prompt tokens (encode_messages)."""
    return encode_messages(tokenizer, [{"role": "user", "content": text}], use_template)


def detokenize(chunks: Iterable[List[int]], detokenizer, eos_ids) -> Iterator[List[int]]:
    """Feeds each chunk's non-EOS tokens to a streaming detokenizer (mlx-lm's), yields the
    chunk after each (the new text is then detokenizer.last_segment), and finalizes the
    detokenizer when the chunks run out."""
    detokenizer.reset()
    for chunk in chunks:
        for token in chunk:
            if token not in eos_ids:
                detokenizer.add_token(token)
        yield chunk
    detokenizer.finalize()
