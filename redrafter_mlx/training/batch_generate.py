"""Generation for many prompts at once, for self-distillation data: greedy answers, or sampled
ones (more varied answers to the same prompts).

`rows` sequences decode together, each at its own slots of one cache: a row whose answer has
ended takes the next prompt (prefilled with others, 1/REFILL_SHARE of the rows at a time), so
that a batch does not run as long as its longest answer (with 256 new tokens, half of the
coder's answers ran to the limit and the mean was 175: batches that wait for their longest
answer leave ~1/3 of their rows idle). Greedy answers are each prompt's answer decoded alone
(tests/test_train.py)."""

from itertools import islice
from typing import Iterable, Iterator, List, Tuple

import mlx.core as mx

from ..model.kv_cache import Slots
from ..model.llm import Model
from ..decode.sampling import SamplingParams, sample

REFILL_SHARE = 32  # rows // REFILL_SHARE rows are prefilled at once, once that many are free
CHECK_EVERY = 8  # decoding steps between host reads of which answers have ended


def left_pad(prompts: List[List[int]], width: int = 0):
    """-> tokens (B, P) int32, pad (B, P) bool (True on padding), positions (B, P) int32.

    P = max(width, longest prompt): a fixed width keeps shapes (and GPU kernels) the same."""
    width = max([width] + [len(p) for p in prompts])
    pads = [width - len(p) for p in prompts]
    tokens = mx.array([[0] * n + p for n, p in zip(pads, prompts)], dtype=mx.int32)
    pad = mx.arange(width)[None, :] < mx.array(pads)[:, None]
    positions = mx.maximum(mx.arange(width)[None, :] - mx.array(pads)[:, None], 0)
    return tokens, pad, positions


def generate_batch(model: Model, prompts: List[List[int]], max_new: int, eos_ids, width: int = 0,
                   params: SamplingParams = SamplingParams()) -> List[List[int]]:
    """Answers (without the prompt; EOS kept when produced) for each prompt, in order, every
    prompt in a row of its own (answer_stream)."""
    if not prompts:
        return []
    width = max([width] + [len(p) for p in prompts])
    answers = dict(answer_stream(model, enumerate(prompts), rows=len(prompts), max_new=max_new, eos_ids=eos_ids,
                                 width=width, params=params))
    return [answers[i] for i in range(len(prompts))]


def answer_stream(model: Model, prompts: Iterable[Tuple[object, List[int]]], *, rows: int, max_new: int, eos_ids,
                  width: int, params: SamplingParams = SamplingParams()) -> Iterator[Tuple[object, List[int]]]:
    """(key, answer) for each (key, prompt) of `prompts`, prompts of at most `width` tokens,
    taken as rows free up; yielded in the order the answers end (without the prompt, EOS kept)."""
    if rows < 1:
        raise ValueError(f"rows must be at least 1, got {rows}")
    state = RowState(model, rows, width, width + max_new, params)
    pending, owners, answers, eos = iter(prompts), [None] * rows, [[] for _ in range(rows)], set(eos_ids)
    exhausted = False

    def ended(row: int) -> bool:
        return len(answers[row]) == max_new or answers[row][-1] in eos

    while True:
        for row in range(rows):  # rows ended in the last steps (or at their first token) free up
            if owners[row] is not None and ended(row):
                yield owners[row], answers[row]
                owners[row] = None
        free = [row for row in range(rows) if owners[row] is None]
        if not exhausted and len(free) >= state.rows_at_once:
            chunk = list(islice(pending, state.rows_at_once))
            exhausted = len(chunk) < state.rows_at_once
            if chunk:
                if max(len(prompt) for _, prompt in chunk) > width:
                    raise ValueError(f"a prompt is longer than width {width}")
                targets = free[:len(chunk)]
                for row, (key, _), first in zip(targets, chunk, state.prefill([p for _, p in chunk], targets)):
                    owners[row], answers[row] = key, [first]
            continue
        live = [row for row in range(rows) if owners[row] is not None]
        if not live:
            return
        steps = min(CHECK_EVERY, max(max_new - len(answers[row]) for row in live))
        for row, tokens in enumerate(state.decode(steps)):
            if owners[row] is None:
                continue
            for token in tokens:
                if ended(row):
                    break
                answers[row].append(token)


class RowState:
    """The device state of `rows` sequences decoding at once: per-layer keys and values (rows,
    kv_heads, capacity, head_dim); per row (rows,) its prompt's first slot (pad: prompts are
    left-padded to `width` slots), the slot its next token goes to (end) and that token.
    Attention reads all `capacity` slots, masked to [pad, end] per row: fixed shapes."""

    def __init__(self, model: Model, rows: int, width: int, capacity: int, params: SamplingParams):
        c = model.config
        shape = (rows, c.num_key_value_heads, capacity, c.head_dim)
        self.keys = [mx.zeros(shape, model.dtype) for _ in range(c.num_hidden_layers)]
        self.values = [mx.zeros(shape, model.dtype) for _ in range(c.num_hidden_layers)]
        self.pad, self.end, self.token = (mx.zeros((rows,), mx.int32) for _ in range(3))
        self.model, self.width, self.capacity, self.params = model, width, capacity, params
        self.rows_at_once = max(1, rows // REFILL_SHARE)
        self.step = mx.compile(decode_step(model, params, capacity), inputs=mx.random.state, outputs=mx.random.state)

    def prefill(self, prompts: List[List[int]], targets: List[int]) -> List[int]:
        """Puts prompts (at most rows_at_once, of at most `width` tokens) in rows `targets`;
        returns each one's first answer token. Always prefills rows_at_once prompts (the last
        repeated): one shape. The rows' answer slots are zeroed: what an earlier sequence left
        there is masked, but a NaN in it would still reach attention's output."""
        chunk = prompts + [prompts[-1]] * (self.rows_at_once - len(prompts))
        tokens, pad, positions = left_pad(chunk, self.width)
        cache = self.model.new_cache(len(chunk), step=self.width, fixed_shapes=True)
        causal = mx.tril(mx.ones((self.width, self.width), dtype=mx.bool_))
        # Padding rows attend to themselves only, so that no row is all -inf (NaN-free).
        block = (causal[None] & ~pad[:, None, :]) | mx.eye(self.width, dtype=mx.bool_)[None]
        hidden = self.model(tokens, positions, cache, block)
        first = sample(self.model.logits(hidden[:, -1]), self.params)[:len(prompts)]
        rows, count = mx.array(targets), len(prompts)
        batch, kv_heads, _, head_dim = cache.keys[0].shape
        answer_slots = mx.zeros((count, kv_heads, self.capacity - self.width, head_dim), cache.keys[0].dtype)
        for layer, (keys, values) in enumerate(zip(cache.keys, cache.values)):
            self.keys[layer][rows] = mx.concatenate([keys[:count], answer_slots], axis=2)
            self.values[layer][rows] = mx.concatenate([values[:count], answer_slots], axis=2)
        self.pad[rows] = mx.array([self.width - len(p) for p in prompts], dtype=mx.int32)
        self.end[rows] = self.width
        self.token[rows] = first.astype(mx.int32)
        return first.tolist()

    def decode(self, steps: int) -> List[List[int]]:
        """`steps` decoding steps of every row; returns each row's new tokens (rows, steps)."""
        columns = []
        for _ in range(steps):
            self.token, self.end, self.keys, self.values = self.step(self.token, self.pad, self.end, self.keys,
                                                                     self.values)
            mx.async_eval(self.token, self.end, self.keys, self.values)  # runs while the next step is built
            columns.append(self.token)
        return mx.stack(columns, axis=1).tolist()


def decode_step(model: Model, params: SamplingParams, capacity: int):
    """step(token, pad, end, keys, values) -> (next token, next end, keys, values): each row's
    token (rows,) written at its slot `end` and attending to its slots [pad, end]. An ended
    row goes on decoding until it is refilled; its end stops at the last slot."""
    slots = mx.arange(capacity)

    def step(token, pad, end, keys, values):
        mask = ((slots[None] >= pad[:, None]) & (slots[None] <= end[:, None]))[:, None, None, :]
        cache = Slots(keys, values, end)
        hidden = model.forward(token[:, None], (end - pad)[:, None], mask, cache, capacity)
        next_token = sample(model.logits(hidden[:, -1]), params).astype(mx.int32)
        return next_token, mx.minimum(end + 1, capacity - 1), cache.keys, cache.values

    return step
