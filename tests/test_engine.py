"""The Engine: one loading and dispatch chain behind every entry point."""

from dataclasses import replace

import mlx.core as mx
import mlx.nn as nn
import pytest

from redrafter_mlx import CPU, GPU, BeamShape, DecodeOptions, Engine, ModelFiles, SamplingParams, Stats
from redrafter_mlx.decode import generate_ar
from redrafter_mlx.errors import UsageError
from redrafter_mlx.model.load import save_module
from helpers.tiny import tiny_drafter, tiny_model, write_drafter_dir, write_model_dir, write_tokenizer


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    model = tiny_model(3, "llama", vocab=16)
    return write_model_dir(root / "model", model), write_drafter_dir(root / "drafter", tiny_drafter(model, 4))


@pytest.mark.parametrize("policy", [CPU, GPU])
def test_redrafter_equals_ar_through_the_engine(dirs, policy):
    engine = Engine.load(str(dirs[0]), str(dirs[1]), policy=policy)
    prompt = engine.encode("w3 w4 w5", chat_template=False)
    ar = sum(engine.generate(prompt, max_tokens=24, options=DecodeOptions(mode="ar")), [])
    stats = Stats()
    rd = sum(engine.generate(prompt, max_tokens=24, options=DecodeOptions(beam=BeamShape(3, 4)), stats=stats), [])
    assert rd == ar == sum(generate_ar(engine.model, prompt, max_tokens=24, eos_ids=engine.eos_ids), [])
    assert stats.steps < len(rd) or stats.tokens_per_step == 1.0


def test_compiled_steps_are_kept_between_requests(dirs):
    engine = Engine.load(str(dirs[0]), str(dirs[1]), policy=GPU)
    prompt = engine.encode("w3 w4", chat_template=False)
    options = DecodeOptions(beam=BeamShape(2, 3))
    for _ in range(3):
        sum(engine.generate(prompt, max_tokens=8, options=options), [])
    assert len(engine.compiled.steps) == 1  # traced once, used by all three requests
    sum(engine.generate(prompt, max_tokens=8, options=DecodeOptions(beam=BeamShape(1, 3))), [])
    assert len(engine.compiled.steps) == 2


def test_one_request_check(dirs):
    files = ModelFiles.open(str(dirs[0]), str(dirs[1]))
    window = files.config.max_position_embeddings
    assert files.check([1, 2], 10 ** 9, DecodeOptions()) == window - 2  # cut to the context window
    with pytest.raises(UsageError, match="the prompt is empty"):
        files.check([], 5, DecodeOptions())
    with pytest.raises(UsageError, match="beam width must be in 1..16"):
        files.check([1], 5, DecodeOptions(beam=BeamShape(17, 3)))
    with pytest.raises(UsageError, match="no room to generate"):
        files.check([1] * window, 5, DecodeOptions())
    ar_only = Engine.load(str(dirs[0]), need_drafter=False)
    assert ar_only.drafter is None
    with pytest.raises(UsageError, match="mode redrafter needs a drafter"):
        ar_only.check([1], 5, DecodeOptions())
    assert ar_only.check([1], 5, DecodeOptions(mode="ar")) == 5


@pytest.mark.parametrize("bad,message", [(dict(mode="fast"), "mode must be one of"),
                                         (dict(lookup=-1), "lookup .* must be an integer in 0..4"),
                                         (dict(lookup=5), "lookup .* must be an integer in 0..4"),
                                         (dict(sampled_drafts="beam"), "sampled_drafts must be one of")])
def test_options_name_the_parameter(bad, message):
    with pytest.raises(UsageError, match=message):
        DecodeOptions(**bad)


def test_warm_up_only_where_shapes_are_fixed_and_once_per_shape(dirs):
    prompt = [3, 4, 5]
    cpu = Engine.load(str(dirs[0]), str(dirs[1]), policy=CPU)
    assert cpu.warm_up(prompt, DecodeOptions()) is None
    gpu = Engine.load(str(dirs[0]), str(dirs[1]), policy=GPU)
    options = DecodeOptions(sampling=SamplingParams(0.8))
    assert gpu.warm_up(prompt, options) is not None
    assert gpu.warm_up(prompt, options) is None  # the same shape and prompt bucket: done
    mx.random.seed(5)
    mx.random.uniform()  # a conversation's earlier turns drew from the state
    expected = mx.random.uniform(shape=(3,)).tolist()
    mx.random.seed(5)
    mx.random.uniform()
    gpu.warm_up(prompt, DecodeOptions(beam=BeamShape(2, 3), sampling=SamplingParams(0.8)))
    assert mx.random.uniform(shape=(3,)).tolist() == expected  # the state put back as it was
    interrupted = DecodeOptions(beam=BeamShape(3, 3), sampling=SamplingParams(0.8))

    def ctrl_c(*args, **kwargs):
        mx.random.uniform()
        raise KeyboardInterrupt

    mx.random.seed(5)
    mx.random.uniform()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gpu, "generate", ctrl_c)
        with pytest.raises(KeyboardInterrupt):
            gpu.warm_up(prompt, interrupted)
    assert mx.random.uniform(shape=(3,)).tolist() == expected  # put back after an interrupted warm-up too
    assert gpu.warm_up(prompt, interrupted) is not None  # and that shape still to warm up


def test_cuda_policy_verifies_on_dense_weights_and_ar_keeps_them_quantized(tmp_path):
    """DecodePolicy.verify_form "dense" (CUDA): an engine with a drafter verifies on a dense copy of a
    quantized target (made in memory, its other weights shared) and decodes AR on the quantized
    one; an engine without a drafter keeps only the quantized one; ReDrafter's output still
    equals AR's."""
    model = tiny_model(5, "llama", vocab=16, hidden_size=64, intermediate_size=128)
    drafter = tiny_drafter(model, 6)
    nn.quantize(model, group_size=32, bits=8)
    path = tmp_path / "q8"
    path.mkdir()
    save_module(model, {**model.config.to_dict(), "quantization": {"group_size": 32, "bits": 8}}, path)
    write_tokenizer(path, 16)
    write_drafter_dir(tmp_path / "drafter", drafter)
    policy = replace(GPU, verify_form="dense")
    dense = Engine.load(str(path), str(tmp_path / "drafter"), policy=policy)
    quantized = Engine.load(str(path), need_drafter=False, policy=policy)
    kinds = [{type(m).__name__ for _, m in model.named_modules()} for model in (dense.model, dense.ar_model,
                                                                                  quantized.model)]
    assert "QuantizedLinear" not in kinds[0] and "QuantizedLinear" in kinds[1] and "QuantizedLinear" in kinds[2]
    assert quantized.ar_model is None
    assert dense.model.model.norm.weight is dense.ar_model.model.norm.weight  # shared, not loaded twice
    prompt = [3, 4, 5]
    ar = sum(quantized.generate(prompt, max_tokens=16, options=DecodeOptions(mode="ar")), [])
    assert sum(dense.generate(prompt, max_tokens=16, options=DecodeOptions(mode="ar")), []) == ar
    assert sum(dense.generate(prompt, max_tokens=16, options=DecodeOptions(beam=BeamShape(2, 3))), []) == ar


@pytest.mark.parametrize("bits", [4, 8])
def test_rows_kernel_form_verifies_on_the_4_bit_weights(tmp_path, bits):
    """DecodePolicy.verify_form "rows_kernel": a 4-bit target verifies trees on itself (no copy;
    its layers get the few-row kernel, which runs on CUDA: elsewhere they keep MLX's), an 8-bit
    one on a dense copy as "dense" does; ReDrafter's output still equals AR's."""
    from redrafter_mlx.model.quantized_rows import RowsQuantizedLinear

    model = tiny_model(5, "llama", vocab=64, hidden_size=64, intermediate_size=128)
    drafter = tiny_drafter(model, 6)
    nn.quantize(model, group_size=32, bits=bits)
    model.set_dtype(mx.float16)
    path = tmp_path / "q"
    path.mkdir()
    save_module(model, {**model.config.to_dict(), "quantization": {"group_size": 32, "bits": bits}}, path)
    write_tokenizer(path, 64)
    write_drafter_dir(tmp_path / "drafter", drafter)
    engine = Engine.load(str(path), str(tmp_path / "drafter"), policy=replace(GPU, verify_form="rows_kernel"))
    kernels = [isinstance(m, RowsQuantizedLinear) for m in engine.model.modules()]
    assert (engine.ar_model is None and any(kernels)) if bits == 4 else (engine.ar_model is not None and not any(kernels))
    prompt = [3, 4, 5]
    ar = sum(engine.generate(prompt, max_tokens=16, options=DecodeOptions(mode="ar")), [])
    assert sum(engine.generate(prompt, max_tokens=16, options=DecodeOptions(beam=BeamShape(4, 3))), []) == ar


def test_policy_names_a_known_verify_form():
    with pytest.raises(ValueError, match="verify_form"):
        replace(GPU, verify_form="fp8")
