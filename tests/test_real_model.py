"""The real models (SmolLM2-135M-Instruct, Qwen2.5-Coder-1.5B-Instruct; float32, as on CPUs)
with their shipped drafters.

Each is skipped unless the model is cached: `python -m redrafter_mlx.models NAME` fetches it
(CI fetches both)."""

import pytest

from redrafter_mlx import models
from redrafter_mlx.decode.beam_search import BeamShape
from redrafter_mlx.decode import generate_ar, generate_redrafter
from redrafter_mlx.model.load import load_drafter, load_model, load_tokenizer
from redrafter_mlx.decode.stats import Stats

pytestmark = [pytest.mark.real_model, pytest.mark.slow]

def cached(name: str):
    path = models.cache_dir() / f"{name}-float32"
    return pytest.mark.skipif(not (path / "config.json").is_file(),
                              reason=f"{name} not fetched (python -m redrafter_mlx.models {name})")


def load_real(name: str):
    path = models.cache_dir() / f"{name}-float32"
    model = load_model(path)
    return model, load_drafter(models.MODELS[name].drafter_dir, model), load_tokenizer(path, model.config.eos_ids)


@pytest.fixture(scope="module")
def real():
    return load_real(models.DEFAULT)


@cached(models.DEFAULT)
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
@cached(models.DEFAULT)
def test_redrafter_equals_ar_on_real_model(real, question, width, length):
    model, drafter, tokenizer = real
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    eos = set(tokenizer.eos_token_ids)
    ar = sum(generate_ar(model, prompt, max_tokens=48, eos_ids=eos), [])
    stats = Stats()
    rd = sum(generate_redrafter(model, drafter, prompt, max_tokens=48, beam=BeamShape(width, length), eos_ids=eos, stats=stats), [])
    assert rd == ar
    assert stats.tokens_per_step > 1.05  # the shipped drafter does get drafts accepted


@cached("qwen2.5-coder-1.5b")
def test_qwen_coder_drafter_equals_ar():
    """The shipped Qwen2.5-Coder-1.5B drafter (4-bit head) on two coding prompts: greedy
    ReDrafter equals AR token for token, and drafts are accepted."""
    model, drafter, tokenizer = load_real("qwen2.5-coder-1.5b")
    eos = set(tokenizer.eos_token_ids)
    for question, beam in [("def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n", BeamShape(1, 4)),
                           ("Write a Python function that checks whether a string is a palindrome.", BeamShape(4, 4))]:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
        ar = sum(generate_ar(model, prompt, max_tokens=24, eos_ids=eos), [])
        stats = Stats()
        assert sum(generate_redrafter(model, drafter, prompt, max_tokens=24, beam=beam, eos_ids=eos,
                                      stats=stats), []) == ar
        assert stats.tokens_per_step > 1.2
