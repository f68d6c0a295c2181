"""mlx-lm's own decoders on the same MLX directories, shaped like our decode loops."""

import functools
import importlib

import mlx.core as mx

from redrafter_mlx.model.load import DTYPES
from redrafter_mlx.decode.sampling import SamplingParams


@functools.lru_cache(maxsize=4)
def _load(model_dir, dtype):
    """mlx-lm's model for a directory, loaded once per process (AR and speculative decoding
    share it: a 1.5B float32 model is 6 GB)."""
    from mlx_lm import load

    model, _ = load(str(model_dir))
    if dtype is not None:
        model.set_dtype(DTYPES[dtype])
    mx.eval(model.parameters())
    return model


def _sampler(params: SamplingParams):
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(temp=params.temp, top_p=0.0 if params.top_p == 1 else params.top_p, top_k=params.top_k)


def mlx_lm_ar(model_dir, dtype, params: SamplingParams):
    """mlx-lm's AR: returns run(prompt, max_tokens, eos) yielding one-token lists."""
    step = importlib.import_module("mlx_lm.generate").generate_step
    model, sampler = _load(model_dir, dtype), _sampler(params)

    def run(prompt, max_tokens, eos):
        for token, _ in step(mx.array(prompt), model, max_tokens=max_tokens, sampler=sampler):
            yield [int(token)]
            if int(token) in eos:
                return
    return run


def mlx_lm_speculative(model_dir, draft_dir, dtype, params: SamplingParams, num_draft: int):
    """mlx-lm's draft-model speculative decoding: run(prompt, max_tokens, eos, stats)."""
    step = importlib.import_module("mlx_lm.generate").speculative_generate_step
    model, draft, sampler = _load(model_dir, dtype), _load(draft_dir, dtype), _sampler(params)

    def run(prompt, max_tokens, eos, stats):
        drafted = 0
        for token, _, from_draft in step(mx.array(prompt), model, draft, num_draft_tokens=num_draft,
                                         max_tokens=max_tokens, sampler=sampler):
            if from_draft:
                drafted += 1
            else:
                stats.steps += 1
                stats.accepted_histogram[drafted] += 1
                drafted = 0
            yield [int(token)]
            if int(token) in eos:
                return
    return run
