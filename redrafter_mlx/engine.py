"""One engine behind every entry point: a model, its drafter and tokenizer and the device
policy, bound once; `generate` streams a request's tokens and fills its statistics.

  engine = Engine.load("qwen2.5-coder-1.5b")              # a name, an MLX directory
  prompt = engine.encode("Write a function that ...")
  for tokens in engine.generate(prompt, max_tokens=200, options=DecodeOptions(beam=BeamShape(2, 5))):
      ...

The command line, the chat, the server, `--beam auto`, the demos and the experiments all
decode through it. Loading happens in two steps so that a command line can check a request
against the configs and the tokenizer before any weights are read: ModelFiles.open, then
Engine.from_files.
"""

import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import mlx.core as mx

from .model.config import ConfigError, DrafterConfig, ModelConfig
from .decode import CompiledSteps, DecodeOptions, check_request, generate_ar, generate_redrafter
from .model.drafter import Drafter
from .errors import UsageError
from .model.llm import Model
from .model.load import (LoadError, load_drafter, load_model, load_tokenizer, read_drafter_config, read_model_config,
                         verifying_form)
from .policy import DecodePolicy
from .decode.stats import Stats
from .text import encode_messages, encode_prompt

WARM_UP_TOKENS = 4  # decoded once before the first timed request on fixed-shape policies (GPUs)


@dataclass
class ModelFiles:
    """A model's resolved directories, checked configs and tokenizer (loaded when first
    used): what a request is checked against, before any weights load."""

    model_dir: Path
    drafter_dir: Optional[Path]
    config: ModelConfig
    drafter_config: Optional[DrafterConfig]

    @cached_property
    def tokenizer(self):
        return load_tokenizer(self.model_dir, self.config.eos_ids)

    @classmethod
    def open(cls, model: Optional[str] = None, drafter: Optional[str] = None, *, need_drafter: bool = True,
             policy: DecodePolicy = None) -> "ModelFiles":
        """model: a name (models.MODELS, fetched on first use; default models.DEFAULT), an MLX
        directory, a .gguf file or a Hugging Face repo id (models.resolve); drafter: a
        directory (default: the shipped drafter whose target fingerprint is the model's, or
        none where need_drafter is off)."""
        from . import models  # here, not at the top: `python -m redrafter_mlx.models` runs that module as __main__

        model_dir, drafter_dir = models.resolve(model, drafter, need_drafter=need_drafter, policy=policy)
        config = read_model_config(model_dir)
        drafter_config = None
        if drafter_dir is not None:
            drafter_config = read_drafter_config(drafter_dir)
            try:
                drafter_config.check_matches(config)
            except ConfigError as error:
                raise LoadError(f"{drafter_dir}: does not fit the model: {error}") from None
        return cls(Path(model_dir), drafter_dir and Path(drafter_dir), config, drafter_config)

    def drop_drafter(self):
        """Decoding auto-regressively: the drafter found is not loaded."""
        self.drafter_dir, self.drafter_config = None, None

    def encode(self, text: str, chat_template: bool = True) -> List[int]:
        """One user message -> prompt tokens (through the chat template where there is one)."""
        return encode_prompt(self.tokenizer, text, chat_template)

    def encode_messages(self, messages: List[dict], chat_template: bool = True) -> List[int]:
        return encode_messages(self.tokenizer, messages, chat_template)

    def draft_vocab_size(self, draft_vocab: Optional[int] = None) -> int:
        """Tokens the drafter scores with draft_vocab (None: its config's; 0: all); UsageError
        for another size than a head holding only its draft vocabulary's rows scores."""
        config = self.drafter_config
        if config.head_rows and draft_vocab is not None and draft_vocab != config.head_rows:
            raise UsageError(f"--draft-vocab {draft_vocab}: the drafter's head holds only the rows of its "
                             f"{config.head_rows}-token draft vocabulary; leave --draft-vocab out")
        size = config.draft_vocab_size if draft_vocab is None else draft_vocab
        return size or config.vocab_size

    def check(self, prompt: List[int], max_tokens: int, options: DecodeOptions,
              draft_vocab: Optional[int] = None) -> int:
        """The one check of a request; returns max_tokens cut to the context window."""
        if options.mode == "redrafter":
            if self.drafter_config is None:
                raise UsageError("mode redrafter needs a drafter (or use mode ar)")
            options.beam.check(self.draft_vocab_size(draft_vocab))
        return check_request(prompt, max_tokens, self.config.context_window)


@dataclass
class Engine:
    files: ModelFiles
    model: Model
    drafter: Optional[Drafter]
    policy: DecodePolicy
    ar_model: Optional[Model] = None  # AR decodes on this form where it differs (verify_form "dense": 4-bit)
    compiled: CompiledSteps = field(default_factory=CompiledSteps)
    warmed: set = field(default_factory=set)  # (prompt-length bucket, options) warmed up

    @classmethod
    def load(cls, model: Optional[str] = None, drafter: Optional[str] = None, *, dtype=None,
             draft_vocab: Optional[int] = None, policy: DecodePolicy = None, need_drafter: bool = True) -> "Engine":
        """Resolves, checks and loads a model and (need_drafter, or a drafter given) its drafter."""
        files = ModelFiles.open(model, drafter, need_drafter=need_drafter, policy=policy)
        return cls.from_files(files, dtype=dtype, draft_vocab=draft_vocab, policy=policy)

    @classmethod
    def from_files(cls, files: ModelFiles, *, dtype=None, draft_vocab: Optional[int] = None,
                   policy: DecodePolicy = None) -> "Engine":
        """Loads the weights of opened files under `policy` (default: this device's), once."""
        policy = policy or DecodePolicy.for_device()
        files.tokenizer  # noqa: B018  (loaded now, not inside the first request)
        model, ar_model, drafter = load_model(files.model_dir, dtype, policy=policy), None, None
        if files.drafter_dir is not None:
            model, ar_model = verifying_form(model, policy.verify_form)
            drafter = load_drafter(files.drafter_dir, model, dtype, draft_vocab, policy=policy)
        return cls(files, model, drafter, policy, ar_model)

    @property
    def tokenizer(self):
        return self.files.tokenizer

    @property
    def eos_ids(self) -> set:
        return set(self.files.tokenizer.eos_token_ids)

    def encode(self, text: str, chat_template: bool = True) -> List[int]:
        return self.files.encode(text, chat_template)

    def encode_messages(self, messages: List[dict], chat_template: bool = True) -> List[int]:
        return self.files.encode_messages(messages, chat_template)

    def check(self, prompt: List[int], max_tokens: int, options: DecodeOptions) -> int:
        """The one check of a request (ModelFiles.check, against the loaded drafter's draft
        vocabulary); returns max_tokens cut to the context window."""
        return self.files.check(prompt, max_tokens, options, self.drafter and self.drafter.draft_vocab_size)

    def generate(self, prompt: List[int], *, max_tokens: int, options: DecodeOptions = DecodeOptions(),
                 stats: Stats = None, progress: Callable[[int, int], None] = None) -> Iterator[List[int]]:
        """Decodes a prompt; yields the tokens accepted at each step and fills stats.
        max_tokens is cut to the room the prompt leaves in the context window; progress:
        called after each prefill chunk with (done, total) (it may raise to stop)."""
        self.check(prompt, max_tokens, options)
        common = dict(max_tokens=max_tokens, sampling=options.sampling, eos_ids=self.eos_ids, policy=self.policy,
                      stats=stats, progress=progress, compiled=self.compiled)
        if options.mode == "ar":
            return generate_ar(self.ar_model or self.model, prompt, **common)
        return generate_redrafter(self.model, self.drafter, prompt, beam=options.beam, lookup=options.lookup,
                                  sampled_drafts=options.sampled_drafts, **common)

    def warm_up(self, prompt: List[int], options: DecodeOptions) -> Optional[float]:
        """On fixed-shape policies (GPUs) the first request of a shape compiles kernels (~2
        tokens/s for a first run on an H200, 150-270 warm): a few tokens of the same request
        (same options, same prompt-length bucket) compile most of them. Returns the seconds
        it took, or None where nothing was needed. The random state is put back as it was
        (mid-conversation too), so that sampling draws as without the warm-up."""
        bucket = -(-len(prompt) // self.policy.prefill_bucket)
        if not self.policy.fixed_shapes or (bucket, options) in self.warmed:
            return None
        start = time.perf_counter()
        high, low = mx.random.state[0].tolist()  # the key: seed() makes it from these 64 bits
        try:
            for _ in self.generate(prompt, max_tokens=WARM_UP_TOKENS, options=options):
                pass
        finally:  # also when interrupted
            mx.random.seed((high << 32) | low)
        self.warmed.add((bucket, options))
        return time.perf_counter() - start
