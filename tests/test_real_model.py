"""The real default model (SmolLM2-135M-Instruct, float32) with the shipped drafter.

Skipped unless the model is cached: `python -m redrafter_mlx.models` fetches it (CI does)."""

import pytest

from redrafter_mlx import models
from redrafter_mlx.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.stats import Stats

MODEL = models.cache_dir() / f"{models.DEFAULT}-float32"
pytestmark = pytest.mark.skipif(not (MODEL / "config.json").is_file(),
                                reason="default model not fetched (python -m redrafter_mlx.models)")


@pytest.fixture(scope="module")
def real():
    model = load_model(MODEL)
    return model, load_drafter(models.MODELS[models.DEFAULT].drafter_dir, model), load_tokenizer(MODEL, model.config.eos_ids)


def test_tokenizer_round_trip(real):
    _, _, tokenizer = real
    for text in ["Hello world, 12345!", "  two  spaces\n\nnew lines", "ünïcödé 🙂", "def f(x):\n    return x"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    assert tokenizer.encode("<|im_start|>")[-1] == 1  # special tokens stay whole


@pytest.mark.parametrize("question,width,length", [
    ("What is the capital of France? Answer in one sentence.", 1, 4),
    ("Write a Python function that reverses a string.", 2, 4),
    ("List three benefits of regular exercise.", 4, 5),
])
def test_redrafter_equals_ar_on_real_model(real, question, width, length):
    model, drafter, tokenizer = real
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    eos = set(tokenizer.eos_token_ids)
    ar = sum(generate_ar(model, prompt, max_tokens=48, eos_ids=eos), [])
    stats = Stats()
    rd = sum(generate_redrafter(model, drafter, prompt, max_tokens=48, beam=BeamShape(width, length), eos_ids=eos, stats=stats), [])
    assert rd == ar
    assert stats.tokens_per_step > 1.05  # the shipped drafter does get drafts accepted
