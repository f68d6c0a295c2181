"""Training data from real text, without generation: ShareGPT replies and the Python
standard library's source, each as the answer to a chat prompt. `train fit` runs the target
teacher-forced over them, so with --distill it learns the target's own next-token
distribution at every answer position.

  python -m redrafter_mlx.train text --model DIR --out DATA --sharegpt FILE --stdlib
"""

import json
import sys
import sysconfig
import time
from pathlib import Path
from typing import List, Optional

from .. import models
from ..atomic import atomic_file, remove_stale
from .data import (SETTINGS_FILE, check_file, check_settings, read_shard, save_sequences, shard_name,
                   sharegpt_conversations, write_settings)
from ..errors import UsageError, int_at_least
from ..model.load import load_tokenizer, read_model_config

MAX_PROMPT_TOKENS = 512
MIN_ANSWER_TOKENS = 8  # shorter replies ("Thanks!", "Continue") are skipped
MIN_PROMPT_CHARS = 20  # a held-out prompt's length at least
CHUNK_TOKENS = 900  # a standard-library file is cut at line ends into answers of about this many tokens
HELD_OUT_EVERY = 50  # every 50th standard-library file is held out
CONVERSATIONS_PER_SHARD = 256
FILES_PER_SHARD = 16
EXCLUDED_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "__pycache__"}
ROLES = {"human": "user", "gpt": "assistant"}
HELD_OUT_FILE = "heldout_prompts.jsonl"


# ---------------------------------------------------------------- tokens
def encode_texts(tokenizer, texts: List[str]) -> List[List[int]]:
    """Plain tokens of each text (no special tokens added), in one batched call."""
    if not texts:
        return []
    return tokenizer._tokenizer(texts, add_special_tokens=False)["input_ids"]


def has_template(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def render_prompt(tokenizer, messages: List[dict]) -> List[int]:
    """Chat messages -> prompt tokens with the assistant's turn opened (the last message's
    plain tokens where the tokenizer has no chat template)."""
    if has_template(tokenizer):
        return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    return encode_texts(tokenizer, [messages[-1]["content"]])[0]


def end_of_turn(tokenizer) -> int:
    """The token the chat template closes an assistant turn with (EOS without a template)."""
    if has_template(tokenizer):
        messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        after = text[text.rindex("Hello") + len("Hello"):]
        closing = encode_texts(tokenizer, [after])[0] if after.strip() else []
        if closing:
            return closing[0]
    return tokenizer.eos_token_id


def fit_prompt(tokenizer, messages: List[dict], lengths: List[int]) -> Optional[List[int]]:
    """Prompt tokens of the conversation so far, its oldest turns dropped (the kept ones start
    with a user turn) so that it keeps <= MAX_PROMPT_TOKENS; a last user turn too long alone
    keeps its end. lengths: each message's plain token count. None when nothing fits."""
    starts = [i for i, m in enumerate(messages) if m["role"] == "user"]
    overhead = 8  # the template's tokens around one message, about
    starts = [s for s in starts if sum(lengths[s:]) + overhead * (len(messages) - s) <= MAX_PROMPT_TOKENS] or starts[-1:]
    for start in starts:
        prompt = render_prompt(tokenizer, messages[start:])
        if len(prompt) <= MAX_PROMPT_TOKENS:
            return prompt
    if not starts or starts[-1] != len(messages) - 1:
        return None
    last = messages[-1]
    content = encode_texts(tokenizer, [last["content"]])[0]
    keep = len(content) - (len(prompt) - MAX_PROMPT_TOKENS) - overhead
    if keep < MIN_ANSWER_TOKENS:
        return None
    prompt = render_prompt(tokenizer, [{"role": "user", "content": tokenizer.decode(content[-keep:])}])
    return prompt if len(prompt) <= MAX_PROMPT_TOKENS else None


def windows(prompt: List[int], answer: List[int], max_length: int, overlap: int) -> List[tuple]:
    """prompt + answer -> (sequence, prompt length) pairs of at most max_length tokens: the
    first holds the prompt and the answer's start; with overlap > 0, the rest of a longer
    answer continues in further ones whose "prompt" is the `overlap` tokens before it."""
    tokens = prompt + answer
    pairs = [(tokens[:max_length], len(prompt))]
    done = max_length
    while overlap and done < len(tokens) and len(tokens) - done >= MIN_ANSWER_TOKENS:
        pairs.append((tokens[done - overlap:done - overlap + max_length], overlap))
        done += max_length - overlap
    return pairs


# ---------------------------------------------------------------- ShareGPT
def conversation_messages(turns: List[dict]) -> List[dict]:
    """ShareGPT turns -> chat messages, up to the first turn of another role than human/gpt."""
    messages = []
    for turn in turns:
        role = ROLES.get(turn.get("from"))
        if role is None:
            break
        messages.append({"role": role, "content": turn.get("value", "")})
    return messages


def first_user_text(messages: List[dict]) -> str:
    return messages[0]["content"].strip() if messages and messages[0]["role"] == "user" else ""


def sharegpt_sequences(tokenizer, conversations: List[List[dict]], max_length: int, overlap: int, eot: int):
    """Each assistant turn of each conversation (chat messages) -> (sequence, prompt length)
    pairs of its prompt + reply + end of turn (windows)."""
    contents = [m["content"] for messages in conversations for m in messages]
    encoded = iter(encode_texts(tokenizer, contents))
    pairs = []
    for messages in conversations:
        tokens = [next(encoded) for _ in messages]
        lengths = [len(t) for t in tokens]
        for i, message in enumerate(messages):
            if message["role"] != "assistant" or lengths[i] < MIN_ANSWER_TOKENS or i == 0:
                continue
            prompt = fit_prompt(tokenizer, messages[:i], lengths[:i])
            if prompt is not None and len(prompt) < max_length:
                pairs += windows(prompt, tokens[i] + [eot], max_length, overlap)
    return pairs


def joined_conversations(path) -> List[tuple]:
    """(id, chat messages) of each ShareGPT conversation, its pieces ("ID_0", "ID_N": from
    turn N) joined again where they follow each other, leading assistant turns dropped."""
    conversations, previous, expected = [], None, None
    for name, turns in sharegpt_conversations(check_file(path, "--sharegpt")):
        base, _, start = str(name).rpartition("_")
        messages = conversation_messages(turns)
        if conversations and base and (base, start) == (previous, expected):
            conversations[-1][1].extend(messages)
        else:
            conversations.append((base or None, messages))
        previous, expected = base, str(int(start) + len(turns)) if start.isdigit() else None
    conversations = [(base, messages[next((i for i, m in enumerate(messages) if m["role"] == "user"), len(messages)):])
                     for base, messages in conversations]
    return [(base, messages) for base, messages in conversations if first_user_text(messages)]


def read_sharegpt(path, hold_out: int):
    """-> (training conversations, held-out prompts): the last `hold_out` conversations are
    held out, their first user turns of at least MIN_PROMPT_CHARS characters ("hi" and
    "continue" make no evaluation prompt) are the prompts, and any other conversation with a
    user turn that is one of them (ShareGPT repeats some) or another piece of a held-out
    conversation is held out too."""
    conversations = joined_conversations(path)
    if not conversations:
        raise UsageError(f"--sharegpt {path}: no conversation with a human turn")
    split = len(conversations) - min(hold_out, len(conversations))
    held_prompts = list(dict.fromkeys(text for text in (first_user_text(m) for _, m in conversations[split:])
                                      if len(text) >= MIN_PROMPT_CHARS))
    held_ids = {base for base, _ in conversations[split:] if base}
    taken = set(held_prompts)

    def kept(base, messages):
        return base not in held_ids and not any(m["role"] == "user" and m["content"].strip() in taken for m in messages)

    return [messages for base, messages in conversations[:split] if kept(base, messages)], held_prompts


# ---------------------------------------------------------------- standard library
def default_stdlib() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(root: Path) -> List[tuple]:
    """(module name, path) of each *.py under root outside tests, idlelib, lib2to3 and
    site-packages, sorted by module name."""
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if EXCLUDED_DIRS.intersection(parts[:-1]) or not path.is_file():
            continue
        names = list(parts[:-1]) + ([] if parts[-1] == "__init__.py" else [path.stem])
        if names:
            files.append((".".join(names), path))
    return sorted(files)


def stdlib_prompt(module: str, part: int = 1, parts: int = 1) -> str:
    if parts == 1:
        return f"Show the source of the Python module `{module}`."
    return f"Show part {part} of {parts} of the source of the Python module `{module}`."


def source_chunks(tokenizer, text: str) -> List[str]:
    """A source text cut at line ends into pieces of about CHUNK_TOKENS tokens (a longer line
    stays whole)."""
    lines = text.splitlines(keepends=True)
    chunks, current, size = [], [], 0
    for line, length in zip(lines, map(len, encode_texts(tokenizer, lines))):
        if current and size + length > CHUNK_TOKENS:
            chunks.append("".join(current))
            current, size = [], 0
        current.append(line)
        size += length
    return chunks + ["".join(current)] if current else chunks


def stdlib_sequences(tokenizer, files: List[tuple], max_length: int, overlap: int, eot: int):
    """Each file's source (in chunks, each fenced as Python) as the answer to a user prompt
    naming its module -> (sequence, prompt length) pairs of prompt + answer + end of turn
    (windows)."""
    prompts, answers = [], []
    for module, path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        chunks = source_chunks(tokenizer, text) if text.strip() else []
        for part, chunk in enumerate(chunks, 1):
            prompts.append(render_prompt(tokenizer, [{"role": "user", "content": stdlib_prompt(module, part, len(chunks))}]))
            answers.append(f"```python\n{chunk}```")
    pairs = []
    for prompt, answer in zip(prompts, encode_texts(tokenizer, answers)):
        if len(answer) >= MIN_ANSWER_TOKENS and len(prompt) < max_length:
            pairs += windows(prompt, answer + [eot], max_length, overlap)
    return pairs


# ---------------------------------------------------------------- the command
def plan(args):
    """-> (groups [(source, items)], one per shard in order, held-out prompts)."""
    groups, held = [], []
    if args.sharegpt:
        conversations, held_prompts = read_sharegpt(args.sharegpt, args.hold_out)
        groups += [("sharegpt", conversations[k:k + CONVERSATIONS_PER_SHARD])
                   for k in range(0, len(conversations), CONVERSATIONS_PER_SHARD)]
        held += held_prompts
    if args.stdlib:
        root = Path(args.stdlib)
        if not root.is_dir():
            raise UsageError(f"--stdlib {root}: no such directory")
        files = stdlib_files(root)
        if not files:
            raise UsageError(f"--stdlib {root}: no Python files in it")
        kept = [f for i, f in enumerate(files) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
        held += [stdlib_prompt(module) for i, (module, _) in enumerate(files) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
        groups += [("stdlib", kept[k:k + FILES_PER_SHARD]) for k in range(0, len(kept), FILES_PER_SHARD)]
    return groups, held


def settings_of(args, vocab_size: int) -> dict:
    """What decides the shards' contents (a resumed run must have the same)."""
    return {"sharegpt": args.sharegpt and Path(args.sharegpt).name, "stdlib": args.stdlib,
            "max_length": args.max_length, "overlap": args.overlap, "hold_out": args.hold_out,
            "vocab_size": vocab_size}


def text_data(args):
    """Writes the shards of --sharegpt and --stdlib (resumable: existing shards of the same
    settings are kept), the held-out prompts and info.json with the counts per source."""
    if not args.sharegpt and not args.stdlib:
        raise UsageError("give --sharegpt FILE, --stdlib or both")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    args.model = models.resolve_model(args.model)
    config = read_model_config(args.model)
    tokenizer = load_tokenizer(args.model, config.eos_ids)
    start = time.perf_counter()
    groups, held = plan(args)
    settings = settings_of(args, config.vocab_size)
    check_settings(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("shard-*.npz", "info.json", HELD_OUT_FILE, SETTINGS_FILE):
        remove_stale(out, name)
    write_settings(out, settings)
    with atomic_file(out / HELD_OUT_FILE) as tmp:
        tmp.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in held), encoding="utf-8")
    eot = end_of_turn(tokenizer)
    counts = {source: {"sequences": 0, "answer_tokens": 0, "prompt_tokens": 0} for source, _ in groups}
    for number, (source, items) in enumerate(groups):
        if args.max_answer_tokens and sum(c["answer_tokens"] for c in counts.values()) >= args.max_answer_tokens:
            break
        shard = out / shard_name(number)
        if not shard.exists():  # resumable
            build = sharegpt_sequences if source == "sharegpt" else stdlib_sequences
            pairs = build(tokenizer, items, args.max_length, args.overlap, eot)
            save_sequences(shard, [s for s, _ in pairs], [p for _, p in pairs])
        tokens, offsets, prompt_lengths = read_shard(shard)
        counts[source]["sequences"] += len(prompt_lengths)
        counts[source]["prompt_tokens"] += int(prompt_lengths.sum())
        counts[source]["answer_tokens"] += int(len(tokens) - prompt_lengths.sum())
        print(json.dumps({"shard": number, "source": source, **counts[source]}), file=sys.stderr, flush=True)
    summary = {"sources": counts, "held_out_prompts": len(held), "vocab_size": config.vocab_size,
               "end_of_turn": eot, "seconds": round(time.perf_counter() - start, 1)}
    with atomic_file(out / "info.json") as tmp:
        tmp.write_text(json.dumps({**vars(args), **summary}, indent=2))
    print(json.dumps(summary))


def add_parser(sub):
    """The `text` subcommand's flags."""
    t = sub.add_parser("text", help="data from real text (ShareGPT replies, the standard library's source)")
    t.add_argument("--model", required=True, help="the target (its tokenizer and chat template): a model name, an "
                   "MLX model directory, a .gguf file or a Hugging Face repo id (ORG/NAME)")
    t.add_argument("--out", required=True)
    t.add_argument("--sharegpt", help="ShareGPT JSON file (a truncated one is read up to its last whole conversation)")
    t.add_argument("--stdlib", nargs="?", const=str(default_stdlib()), default=None, metavar="DIR",
                   help=f"Python standard-library sources (default DIR: this Python's, {default_stdlib()})")
    t.add_argument("--max-answer-tokens", type=int_at_least(0), default=0,
                   help="stop starting shards once this many answer tokens are written (0: no limit)")
    t.add_argument("--max-length", type=int_at_least(MAX_PROMPT_TOKENS + MIN_ANSWER_TOKENS + 1), default=1024,
                   help="tokens per sequence (prompt + answer), the rest of an answer cut")
    t.add_argument("--overlap", type=int_at_least(0, MAX_PROMPT_TOKENS), default=256,
                   help="an answer longer than a sequence goes on in further sequences, each after this many "
                        "tokens of what precedes it (0: the rest is cut)")
    t.add_argument("--hold-out", type=int_at_least(0), default=300,
                   help=f"the last this many ShareGPT conversations (and every {HELD_OUT_EVERY}th standard-library "
                        f"file) go to no shard; their prompts are written to DATA/{HELD_OUT_FILE}")
    return t
