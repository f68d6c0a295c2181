"""What one operation of each kind a decoding step uses costs the host and the device: on GPUs
a step is bound by the host's work per operation dispatched (H100, 2026-12-06: host time
81-97% of every part of a step but the target head, beam search ~7 us per operation against
~3-4 in a forward; docs/perf.md), so the kinds that cost most are the ones to remove first.

  python -m experiments.op_costs [--model NAME|DIR] [--rows 13] [--chain 200] [--repeats 20] [--only product]

(a directory needs only its config.json: nothing else is read)

Each kind runs as a chain of --chain operations, each reading the previous one's result (so
none is pruned and none overlaps another), at the model's shapes (only its config is read:
hidden size, heads, head size; random float16 inputs, the draft vocabulary at 8,192 tokens).
Reported per operation: host time (building the chain and handing it to the device,
experiments.common.timed_split) and total, for the chain built op by op and compiled (the
form of a decoding step: mx.compile replays it without Python). Views (reshape, transpose) are operations too:
they launch no kernel but are dispatched like one."""

import redrafter_mlx  # noqa: F401  (first: loads OpenBLAS on Linux before mlx.core is imported)
from pathlib import Path

import mlx.core as mx
from experiments.common import parser, timed_split
from redrafter_mlx import ModelFiles
from redrafter_mlx.model.load import read_model_config
from redrafter_mlx.model.quantized_rows import MAX_ROWS, quantized_rows_matmul

DRAFT_VOCAB = 8192  # Qwen2.5-Coder-1.5B's drafter


def kinds(config, rows: int) -> dict:
    """{name: (start array, one link: array -> array of the same shape, operations per link)}."""
    dim, heads, kv_heads, head_dim = (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                                      config.head_dim)
    x = mx.random.normal((rows, dim)).astype(mx.float16)
    weight = (mx.random.normal((dim, dim)) * dim ** -0.5).astype(mx.float16)
    group = 64 if dim % 64 == 0 else 32
    packed, scales, biases = mx.quantize(weight, group_size=group, bits=4)
    norm = mx.ones((dim,), dtype=mx.float16)
    q = mx.random.normal((1, heads, rows, head_dim)).astype(mx.float16)
    keys = mx.random.normal((1, kv_heads, 512, head_dim)).astype(mx.float16)
    mask = mx.random.uniform(shape=(1, 1, rows, 512)) > 0.3
    positions = mx.arange(rows) + 300
    cache = mx.zeros((1, kv_heads, 512, head_dim), dtype=mx.float16)
    offset = mx.array([300])
    update = keys[:, :, :rows]
    slots = mx.broadcast_to((offset + mx.arange(rows))[None, None, :, None], update.shape)
    additive = mx.where(mask, 0.0, -mx.inf).astype(mx.float16)
    scores = mx.random.normal((1, 8 * DRAFT_VOCAB))
    index = mx.random.randint(0, dim, (rows, dim))

    def layer_pair(first: int, middle: int, form: str):
        """x @ (dim, first), its first `middle` columns @ (middle, dim): a layer's two products
        (attention: q/k/v then o; MLP: gate/up then down), float16, 4-bit by MLX's kernels or
        4-bit by the few-row kernel (model.quantized_rows, CUDA)."""
        weights = [(mx.random.normal(shape) * shape[0] ** -0.5).astype(mx.float16)
                   for shape in ((first, dim), (dim, middle))]
        if form == "float16":
            return lambda a: (a @ weights[0].T)[:, :middle] @ weights[1].T
        quantized = [mx.quantize(w, group_size=group, bits=4) for w in weights]
        if form == "4-bit":
            product = lambda a, w: mx.quantized_matmul(a, *w, group_size=group, bits=4)  # noqa: E731
        else:
            product = lambda a, w: quantized_rows_matmul(a, *w, group_size=group)  # noqa: E731
        return lambda a: product(product(a, quantized[0])[:, :middle], quantized[1])

    qkv, inner = (heads + 2 * kv_heads) * head_dim, heads * head_dim
    kernel = mx.cuda.is_available() and 2 <= rows <= MAX_ROWS and dim % 64 == 0  # the few-row kernel takes it
    forms = ("float16", "4-bit", "4-bit, few-row kernel") if kernel else ("float16", "4-bit")
    pairs = {f"{part}, {form}": (x, layer_pair(first, middle, form), 2)
             for part, first, middle in (("layer products q/k/v + o", qkv, inner),
                                         ("layer products gate/up + down", 2 * config.intermediate_size,
                                          config.intermediate_size))
             for form in forms
             if form == "float16" or middle % (64 if "kernel" in form else group) == 0}  # (else float16 only)

    def written_where(c):  # the rows written by a select over the whole cache
        inside = (mx.arange(512) >= offset) & (mx.arange(512) < offset + rows)
        spread = mx.take(update, mx.clip(mx.arange(512) - offset, 0, rows - 1), axis=2)
        return mx.where(inside[:, None], spread, c)

    def written_static(c):
        c[:, :, 300:300 + rows] = update
        return c

    return {
        "add (elementwise)": (x, lambda a: a + 1, 1),
        "reshape there and back (views)": (x, lambda a: a.reshape(dim, rows).reshape(rows, dim), 2),
        f"matmul {rows}x{dim} @ {dim}x{dim}, float16": (x, lambda a: a @ weight, 1),
        f"quantized matmul {rows}x{dim} @ {dim}x{dim}, 4-bit": (
            x, lambda a: mx.quantized_matmul(a, packed, scales, biases, group_size=group, bits=4), 1),
        **({f"few-row kernel {rows}x{dim} @ {dim}x{dim}, 4-bit": (
            x, lambda a: quantized_rows_matmul(a, packed, scales, biases, group_size=group), 1)}
           if kernel else {}),
        **pairs,
        "rms_norm (fused)": (x, lambda a: mx.fast.rms_norm(a, norm, 1e-6), 1),
        "take_along_axis (gather)": (x, lambda a: mx.take_along_axis(a, index, axis=1), 1),
        f"rope (fused), {rows} tokens at their own positions": (
            q.reshape(rows, heads, 1, head_dim),
            lambda a: mx.fast.rope(a, head_dim, traditional=False, base=1e6, scale=1.0, offset=positions), 1),
        f"attention (fused), {rows} queries over 512 keys, boolean mask": (
            q, lambda a: mx.fast.scaled_dot_product_attention(a, keys, keys, scale=head_dim ** -0.5, mask=mask), 1),
        f"attention (fused), {rows} queries over 512 keys, additive mask": (
            q, lambda a: mx.fast.scaled_dot_product_attention(a, keys, keys, scale=head_dim ** -0.5, mask=additive), 1),
        f"attention (fused), {rows} queries over 512 keys, no mask": (
            q, lambda a: mx.fast.scaled_dot_product_attention(a, keys, keys, scale=head_dim ** -0.5), 1),
        "cache write: slice_update at a device offset": (
            cache, lambda c: mx.slice_update(c, update, offset, axes=(2,)), 1),
        "cache write: put_along_axis at device slots (scatter)": (
            cache, lambda c: mx.put_along_axis(c, slots, update, axis=2), 1),
        "cache write: select over the cache (gather, select)": (cache, written_where, 2),
        "cache write: slice assignment at a host offset": (cache, written_static, 1),
        "log-softmax (logsumexp, subtract)": (scores, lambda s: s - mx.logsumexp(s, axis=-1, keepdims=True), 2),
        f"sort of {8 * DRAFT_VOCAB} (negate, sort)": (scores, lambda s: mx.sort(-s, axis=-1), 2),
        f"sort of {DRAFT_VOCAB} in 8 rows (negate, sort)": (
            scores.reshape(8, DRAFT_VOCAB), lambda s: mx.sort(-s, axis=-1), 2),
    }


def main():
    args_parser = parser(__doc__, drafter=False)
    args_parser.add_argument("--rows", type=int, default=13, help="tokens per forward (default: a 2x5 tree)")
    args_parser.add_argument("--chain", type=int, default=200, help="operations per timed chain")
    args_parser.add_argument("--repeats", type=int, default=20)
    args_parser.add_argument("--only", help="time only the kinds whose names hold one of these words, comma separated")
    args = args_parser.parse_args()
    model = Path(args.model)
    config = read_model_config(model) if model.is_dir() else ModelFiles.open(args.model, need_drafter=False).config
    print(f"{config.hidden_size} wide, {config.num_attention_heads}/{config.num_key_value_heads} heads of "
          f"{config.head_dim}, {args.rows} rows; per operation:")
    words = [w for w in (args.only or "").split(",") if w]
    for name, (start, link, per_link) in kinds(config, args.rows).items():
        if words and not any(w in name for w in words):
            continue
        mx.eval(start)

        def chain(start=start, link=link):
            out = start
            for _ in range(args.chain):
                out = link(out)
            return out

        operations = args.chain * per_link
        costs = []
        for fn in (chain, mx.compile(chain)):
            host, total = timed_split(fn, args.repeats, warmup=2)
            costs.append(f"host {host / operations * 1e3:6.2f} us, total {total / operations * 1e3:6.2f} us")
        print(f"{name:62s} {costs[0]}; compiled: {costs[1]}", flush=True)


if __name__ == "__main__":
    main()
