"""Text in and out: chat messages to prompt tokens, accepted tokens to streamed text."""

from typing import Iterable, Iterator, List

from .errors import UsageError

CONTENT_MARK = "\ue000"  # a private-use character: stands around a message's index in a rendered template


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


def encode_messages(tokenizer, messages: List[dict], use_template: bool = True,
                    content_as_text: bool = False) -> List[int]:
    """Chat messages ({"role", "content"}) -> prompt tokens through the tokenizer's chat
    template (with the assistant's turn opened), or the last message's plain tokens where
    there is no template or use_template is off.

    content_as_text: a special token's text inside a message ('<|im_end|>') is encoded as
    text, as a tokenizer's split_special_tokens does, so that no message can end its turn or
    open another (a server's clients); only the template's own special tokens are control
    tokens. Messages holding no special token's text are encoded exactly as without it."""
    if content_as_text and any(_holds_special(tokenizer, m["content"]) for m in messages):
        if use_template and getattr(tokenizer, "chat_template", None):
            return _encode_contents_as_text(tokenizer, messages)
        return tokenizer.encode(messages[-1]["content"], split_special_tokens=True)
    if use_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    return tokenizer.encode(messages[-1]["content"])


def _holds_special(tokenizer, text: str) -> bool:
    return any(token.special and token.content in text for token in tokenizer.added_tokens_decoder.values())


def _encode_contents_as_text(tokenizer, messages: List[dict]) -> List[int]:
    """The chat template rendered around markers in place of the contents (private-use
    characters), its text between them encoded with special tokens, each content without."""
    marked = [{**m, "content": f"{CONTENT_MARK}{i}{CONTENT_MARK}"} for i, m in enumerate(messages)]
    rendered = tokenizer.apply_chat_template(marked, add_generation_prompt=True, tokenize=False)
    tokens = []
    for i, piece in enumerate(rendered.split(CONTENT_MARK)):
        if i % 2 == 0:
            tokens += tokenizer.encode(piece, add_special_tokens=False) if piece else []
        else:
            tokens += tokenizer.encode(messages[int(piece)]["content"], add_special_tokens=False,
                                       split_special_tokens=True)
    return tokens


def encode_prompt(tokenizer, text: str, use_template: bool = True) -> List[int]:
    """One user message -> prompt tokens (encode_messages)."""
    return encode_messages(tokenizer, [{"role": "user", "content": text}], use_template)


def keeping_leading_space(detokenizer):
    """A streaming detokenizer (mlx-lm's) that keeps every character: its SPM and BPE
    detokenizers drop the text's leading space (as a chat answer wants), which a text
    completion must keep (" Paris." after "The capital of France is")."""
    if hasattr(detokenizer, "trim_space"):  # SPMStreamingDetokenizer
        detokenizer.trim_space = False
    if hasattr(detokenizer, "_maybe_trim_space"):  # BPEStreamingDetokenizer
        detokenizer._maybe_trim_space = lambda text: text
    return detokenizer


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


class StopStrings:
    """Cuts streamed text before the first stop string, holding back any end of the text
    that could still become one (so no part of a stop string is ever emitted, also when it
    spans several tokens accepted in one step)."""

    def __init__(self, stops=()):
        self.stops = tuple(stops)
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Adds streamed text; returns what can be emitted now. After a stop string has
        appeared, `stopped` is set and nothing more is ever returned."""
        if self.stopped:
            return ""
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.pending, self.stopped = self.pending[:min(found)], "", True
            return out
        keep = self._held()
        out, self.pending = self.pending[:len(self.pending) - keep], self.pending[len(self.pending) - keep:]
        return out

    def _held(self) -> int:
        """The length of the longest end of the pending text that begins a stop string."""
        longest = max((len(s) for s in self.stops), default=1) - 1
        for size in range(min(len(self.pending), longest), 0, -1):
            end = self.pending[-size:]
            if any(s.startswith(end) for s in self.stops):
                return size
        return 0

    def flush(self) -> str:
        """The held-back text, once the generation has ended without a stop string."""
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out
