"""Training data for the drafter: ShareGPT prompts, token shards on disk."""

import json
import os
import zlib
from pathlib import Path
from typing import Iterator, List

import numpy as np

from .errors import UsageError


def sharegpt_prompts(path, limit: int, all_turns: bool = False) -> List[str]:
    """Human turns of ShareGPT conversations, each as a standalone prompt: the first turns,
    then (all_turns) the later ones; duplicates dropped, at most `limit`. The packaged JSON
    is truncated, so the list is streamed object by object and the incomplete tail dropped."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    first, later = [], []
    while True:
        while position < len(text) and text[position] in " \r\n\t,":
            position += 1
        try:
            item, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            break  # truncated tail
        turns = item.get("conversations") or []
        human = [t["value"].strip() for t in turns if t.get("from") == "human" and t.get("value", "").strip()]
        if turns and turns[0].get("from") == "human" and turns[0].get("value", "").strip():
            first.append(human[0])
            later += human[1:]
        if not all_turns and len(first) >= limit:
            break
    prompts = first + later if all_turns else first
    return list(dict.fromkeys(prompts))[:limit]


def read_prompts(path, limit: int, all_turns: bool = False) -> List[str]:
    """Prompts from a ShareGPT JSON file (sharegpt_prompts) or a .jsonl file of {"prompt": text}
    lines (at most `limit`, duplicates dropped)."""
    if Path(path).suffix != ".jsonl":
        return sharegpt_prompts(path, limit, all_turns)
    with open(path, encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    return list(dict.fromkeys(prompts))[:limit]


def save_sequences(path, sequences: List[List[int]], prompt_lengths: List[int]):
    """Writes one shard atomically: flat tokens, offsets (N+1,), prompt lengths (N,)."""
    path = Path(path)
    tokens = np.array([t for s in sequences for t in s], dtype=np.int32)
    offsets = np.cumsum([0] + [len(s) for s in sequences]).astype(np.int64)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, tokens=tokens, offsets=offsets, prompt_lengths=np.array(prompt_lengths, dtype=np.int32))
    os.replace(tmp, path)


def load_sequences(*directories) -> Iterator[tuple]:
    """Yields (sequence, prompt_length) from every shard-*.npz in each directory."""
    shards = [sorted(Path(d).glob("shard-*.npz")) for d in directories]
    for directory, found in zip(directories, shards):
        if not found:
            raise UsageError(f"{directory}: no shard-*.npz (run `python -m redrafter_mlx.train data` first)")
    for shard in sum(shards, []):
        with np.load(shard) as data:  # each data[...] reads the file again: read each array once
            tokens, offsets, prompt_lengths = data["tokens"], data["offsets"], data["prompt_lengths"]
        for i, prompt_length in enumerate(prompt_lengths):
            yield tokens[offsets[i]:offsets[i + 1]], int(prompt_length)  # views of one array per shard


def split_by_prompt(sequences: list, fraction: float):
    """(sequence, prompt_length) pairs -> (train, held_out): held_out holds every answer to a
    `fraction` of the distinct prompts (at least one), picked by a hash of their tokens, so
    that several answers to one prompt (greedy and sampled) never sit on both sides."""
    def key(sequence, prompt_length):
        return zlib.crc32(np.ascontiguousarray(sequence[:prompt_length], dtype=np.int32).tobytes())

    keys = [key(*pair) for pair in sequences]
    prompts = sorted(set(keys))
    chosen = set(prompts[:max(1, round(fraction * len(prompts)))])
    held = [k in chosen for k in keys]
    return ([pair for pair, h in zip(sequences, held) if not h],
            [pair for pair, h in zip(sequences, held) if h])


def make_batches(sequences: list, batch_tokens: int, max_length: int, rng: np.random.Generator,
                 bucket: int = 64):
    """Groups (sequence, prompt_length) pairs of similar length into padded batches.

    Widths are rounded up to a multiple of `bucket` and each width always gets the same
    number of rows (batch_tokens // width), so only a few batch shapes ever occur.
    Yields tokens (B, T) int32 and loss_mask (B, T) bool: True where a token is an answer
    token (a valid prediction target)."""
    def width_of(i):
        return min(-(-len(sequences[i][0]) // bucket) * bucket, max_length)

    groups = {}
    for i in sorted(range(len(sequences)), key=lambda i: len(sequences[i][0])):
        groups.setdefault(width_of(i), []).append(i)
    batches = []
    for width, members in groups.items():
        rows = max(1, batch_tokens // width)
        batches += [(width, members[k:k + rows], rows) for k in range(0, len(members), rows)]
    for b in rng.permutation(len(batches)):
        width, members, rows = batches[b]
        tokens = np.zeros((rows, width), dtype=np.int32)
        mask = np.zeros((rows, width), dtype=bool)
        for r, i in enumerate(members):
            seq, prompt_length = sequences[i]
            seq = seq[:width]
            tokens[r, :len(seq)] = seq
            mask[r, prompt_length:len(seq)] = True
        yield tokens, mask
