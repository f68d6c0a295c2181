"""How decoding runs on a device, decided once (where a model is loaded or a generation
starts) and passed down, so that no layer asks which device it is on.

GPUs (Metal, CUDA) compile kernels per shape, and a step of a small model is dominated by
kernel launches: there trees are padded to a fixed size, attention reads the cache's whole
capacity under a mask, each ReDrafter step is one compiled function and prompts are padded
to a few lengths, and projections that read the same input are joined (fewer kernels).
On CUDA a quantized target verifies trees through a 4-bit kernel of its own that reads each
weight once for all of a tree's rows (model/quantized_rows.py; MLX's own reads them again
per row below 8 rows). CPUs pay for every verified token and build graphs cheaply: there trees are verified
exactly as packed, few-row products of small layers use kernels of their own (linear.py,
llm.attention), and projections stay apart (a joined 17,920 x 1,536 product is slower
there than its two halves), and weights are dense float32 (MLX's CPU kernels for quantized
and half-precision weights are slow: a quantized directory gets a dense copy, models.dense_copy,
and what is loaded otherwise is made dense in memory). docs/perf.md has the measurements
behind each choice.
"""

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import mlx.core as mx

from ._blas import note_if_missing

VERIFY_FORMS = {
    "as_loaded": "the weights as loaded",
    "dense": "a quantized target made dense (in its activations' dtype) for trees, kept quantized for AR",
    "rows_kernel": "4-bit products over 2-128 rows by a kernel that reads each weight once (CUDA: model.quantized_rows); "
                   "a target quantized at other widths verifies as dense",
}
SLOW_BF16, SLOW_F16 = 2.1, 4.4  # decoding slowdown of bfloat16 and float16 weights vs float32 on CPUs (docs/perf.md)


@dataclass(frozen=True)
class DecodePolicy:
    fixed_shapes: bool  # resident steps: fixed trees over the whole cache capacity, built on the device
    compile_ar: bool  # each AR step one compiled function over the cache's capacity
    prefill_bucket: int  # prompt chunks padded to a multiple of this many tokens
    cpu_kernels: bool  # few-row products and grouped attention for CPUs (chosen when a model is loaded)
    fuse_projections: bool  # q/k/v and gate/up joined into one product each (fewer kernels; when loaded)
    dense_weights: bool  # quantized layers made dense when loaded (slow quantized CPU kernels)
    float_dtype: Optional[str] = None  # what quantized and half-precision weights become when loaded (no --dtype)
    slow_dtypes: Tuple[Tuple[str, float], ...] = ()  # (dtype, measured decoding slowdown vs float_dtype)
    verify_form: str = "as_loaded"  # the target's weights trees verify on, where a drafter is loaded
    # (VERIFY_FORMS): CUDA's own few-row 4-bit products cost nearly a product per row (docs/perf.md)
    fixed_single_beam: bool = True  # width-1 trees too (always L tokens: nothing to pad)
    prefill_chunk: int = None  # prompt tokens run per forward pass (None: decode.PREFILL_CHUNK); a server's
    # smaller chunks let it stop a prefill sooner (its progress callback runs between chunks)

    def __post_init__(self):
        if self.verify_form not in VERIFY_FORMS:
            raise ValueError(f"verify_form {self.verify_form!r}: one of {', '.join(VERIFY_FORMS)}")

    @classmethod
    def for_device(cls, device=None) -> "DecodePolicy":
        """The policy for `device` (default: MLX's default device): CUDA's GPU policy verifies
        trees through the few-row 4-bit kernel, Apple GPUs (Metal) on the weights as loaded."""
        if (device or mx.default_device()) != mx.gpu:
            note_if_missing()
            return CPU
        return CUDA if mx.cuda.is_available() else GPU

    def fixed_tree(self, width: int) -> bool:
        """Whether trees of beams this wide are verified at a fixed size in a compiled step:
        always on GPUs, and at width 1 everywhere (its tree is always L tokens, 1 + N with
        N best nodes, before the lookup beam)."""
        return self.fixed_shapes or (width == 1 and self.fixed_single_beam)

    @property
    def device_kind(self) -> str:
        return "gpu" if self.fixed_shapes else "cpu"


GPU = DecodePolicy(fixed_shapes=True, compile_ar=False, prefill_bucket=64, cpu_kernels=False,
                   fuse_projections=True, dense_weights=False)
CUDA = replace(GPU, verify_form="rows_kernel")  # H100, 2026-12-06, 80 HumanEval x 128 at 8x5: 1.40x our AR on
# float16 trees ("dense"), 1.56x on the 4-bit weights through the few-row kernel; at 16x5 (69 rows) 1.68x against
# 1.62x on float16 trees (another H100, drafter v5; docs/perf.md)
CPU = DecodePolicy(fixed_shapes=False, compile_ar=True, prefill_bucket=1, cpu_kernels=True,
                   fuse_projections=False, dense_weights=True, float_dtype="float32",
                   slow_dtypes=(("bfloat16", SLOW_BF16), ("float16", SLOW_F16)))
