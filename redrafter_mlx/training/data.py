"""Training data for the drafter: ShareGPT prompts, token shards on disk."""

import itertools
import json
import zlib
from pathlib import Path
from typing import Iterator, List

import numpy as np

from ..atomic import atomic_file
from ..errors import UsageError

SETTINGS_FILE = "settings.json"  # what decided a data directory's shards: a resumed run must have the same


def check_file(path, flag: str) -> Path:
    """path as a Path; UsageError naming `flag` unless it is an existing file."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{flag} {path}: no such file")
    if not path.is_file():
        raise UsageError(f"{flag} {path}: not a file")
    return path


def sharegpt_conversations(path) -> Iterator[tuple]:
    """Yields (id or None, turns [{"from": ..., "value": text}, ...]) of each ShareGPT
    conversation (a long one is split into pieces "ID_N" that begin at its turn N). The
    packaged JSON is truncated, so the list is streamed object by object and the incomplete
    tail dropped (its bytes too: a character cut in two is replaced)."""
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    decoder = json.JSONDecoder()
    if not text.lstrip("\ufeff \r\n\t").startswith("["):
        raise UsageError(f"{path}: not a ShareGPT JSON list (nor a .jsonl file of {{\"prompt\": text}} lines)")
    position = text.index("[") + 1
    for number in itertools.count():
        while position < len(text) and text[position] in " \r\n\t,":
            position += 1
        try:
            item, position = decoder.raw_decode(text, position)
        except (json.JSONDecodeError, RecursionError):
            return  # truncated tail
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(turns, list) or not all(isinstance(t, dict) and isinstance(t.get("value", ""), str)
                                                  for t in turns):
            raise UsageError(f"{path}: item {number} is not a ShareGPT conversation "
                             "({\"conversations\": [{\"from\": ..., \"value\": text}, ...]})")
        yield item.get("id"), turns


def sharegpt_prompts(path, limit: int, all_turns: bool = False) -> List[str]:
    """Human turns of ShareGPT conversations (sharegpt_conversations), each as a standalone
    prompt: the first turns, then (all_turns) the later ones; duplicates dropped, at most `limit`."""
    first, later = [], []
    for _, turns in sharegpt_conversations(path):
        human = [t["value"].strip() for t in turns if t.get("from") == "human" and t.get("value", "").strip()]
        if turns and turns[0].get("from") == "human" and turns[0].get("value", "").strip():
            first.append(human[0])
            later += human[1:]
        if not all_turns and len(first) >= limit:
            break
    prompts = first + later if all_turns else first
    return list(dict.fromkeys(prompts))[:limit]


def read_jsonl(path, opener=open) -> Iterator[tuple]:
    """Yields (line number, value) of each non-empty line of a JSON-lines file; UsageError
    naming the file and line when it is not UTF-8 JSON."""
    number = 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    yield number, json.loads(line)
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: not UTF-8 text ({error.reason} after line {number})") from None
    except (json.JSONDecodeError, RecursionError) as error:
        raise UsageError(f"{path}: line {number}: invalid JSON ({error})") from None
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise UsageError(f"{path}: cannot read it ({error})") from None


def jsonl_text(path, number: int, row, keys) -> str:
    """The text of a JSON-lines row: row[key] for the first of `keys` it has ("turns": its
    first item); UsageError naming the file and line otherwise."""
    for key in keys:
        if isinstance(row, dict) and key in row:
            value = row[key][0] if key == "turns" and isinstance(row[key], list) and row[key] else row[key]
            if isinstance(value, str) and value.strip():
                return value
    wanted = " or ".join(f'"{k}"' for k in keys)
    raise UsageError(f"{path}: line {number}: expected an object with a non-empty text {wanted}")


def read_prompts(path, limit: int, all_turns: bool = False) -> List[str]:
    """Prompts from a ShareGPT JSON file (sharegpt_prompts) or a .jsonl file of {"prompt": text}
    lines (at most `limit`, duplicates dropped); UsageError when there are none."""
    path = check_file(path, "--prompts")
    if path.suffix != ".jsonl":
        prompts = sharegpt_prompts(path, limit, all_turns)
    else:
        prompts = [jsonl_text(path, number, row, ("prompt",)) for number, row in read_jsonl(path)]
        prompts = list(dict.fromkeys(prompts))[:limit]
    if not prompts:
        raise UsageError(f"{path}: no prompts in it")
    return prompts


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.npz"


def save_sequences(path, sequences: List[List[int]], prompt_lengths: List[int]):
    """Writes one shard atomically: flat tokens, offsets (N+1,), prompt lengths (N,)."""
    tokens = np.array([t for s in sequences for t in s], dtype=np.int32)
    offsets = np.cumsum([0] + [len(s) for s in sequences]).astype(np.int64)
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, tokens=tokens, offsets=offsets, prompt_lengths=np.array(prompt_lengths, dtype=np.int32))


def load_sequences(*directories, flag: str = "--data") -> Iterator[tuple]:
    """Yields (sequence, prompt_length) from every shard-*.npz in each directory (errors name
    `flag`, the option that gave them)."""
    for directory in directories:
        if not Path(directory).is_dir():
            raise UsageError(f"{flag} {directory}: no such directory")
    shards = [sorted(Path(d).glob("shard-[0-9]*.npz")) for d in directories]
    for directory, found in zip(directories, shards):
        if not found:
            raise UsageError(f"{directory}: no shard-*.npz (run `python -m redrafter_mlx.train data` first)")
    for shard in sum(shards, []):
        tokens, offsets, prompt_lengths = read_shard(shard)
        for i, prompt_length in enumerate(prompt_lengths):
            yield tokens[offsets[i]:offsets[i + 1]], int(prompt_length)  # views of one array per shard


def read_shard(shard: Path):
    """(tokens, offsets, prompt_lengths) of a shard, checked; UsageError naming it otherwise."""
    try:
        with np.load(shard) as data:  # each data[...] reads the file again: read each array once
            tokens, offsets, prompt_lengths = data["tokens"], data["offsets"], data["prompt_lengths"]
    except Exception as error:  # zipfile, pickle and numpy errors of a corrupt file
        raise UsageError(f"{shard}: cannot read the shard ({type(error).__name__}: {error})") from None
    ok = (tokens.ndim == offsets.ndim == prompt_lengths.ndim == 1 and len(offsets) == len(prompt_lengths) + 1
          and np.issubdtype(tokens.dtype, np.integer) and np.issubdtype(offsets.dtype, np.integer)
          and np.issubdtype(prompt_lengths.dtype, np.integer) and (len(offsets) == 0 or offsets[0] == 0)
          and bool(np.all(np.diff(offsets) >= 0)) and (len(offsets) == 0 or offsets[-1] == len(tokens))
          and bool(np.all((prompt_lengths >= 0) & (prompt_lengths <= np.diff(offsets))))
          and (tokens.size == 0 or tokens.min() >= 0))
    if not ok:
        raise UsageError(f"{shard}: not a shard of `python -m redrafter_mlx.train data` (inconsistent arrays)")
    return tokens, offsets, prompt_lengths


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


def write_settings(out: Path, settings: dict):
    """Records what decided the shards of out (its SETTINGS_FILE), for check_settings."""
    with atomic_file(out / SETTINGS_FILE) as tmp:
        tmp.write_text(json.dumps(settings, indent=2))


def check_settings(out: Path, settings: dict):
    """UsageError when out holds shards of other settings (its SETTINGS_FILE; none: a
    directory of no shards yet, or of shards written before the file was)."""
    path = out / SETTINGS_FILE
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UsageError(f"--out {out}: cannot read {SETTINGS_FILE} ({error})") from None
    changed = [f"{key} {before.get(key)!r} -> {value!r}" for key, value in settings.items() if before.get(key) != value]
    if changed:
        raise UsageError(f"--out {out}: holds shards made with other settings ({', '.join(changed)}); "
                         "give another --out")
