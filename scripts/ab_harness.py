"""The same-process A/B harness of compile_ab.py, fuse_ab.py and attention_ab.py: chat
prompts from a JSONL file, every method run on each prompt in turn (so slow drifts of the
machine hit all of them alike), two passes (pass 1 includes tracing and kernel compilation)."""

from demos.prompts import load_prompts
from redrafter_mlx import decode
from redrafter_mlx.generate import encode
from redrafter_mlx.load import load_tokenizer
from redrafter_mlx.stats import Stats


def chat_prompts(tokenizer, path, count: int):
    """The first `count` prompts of a JSONL file, in the tokenizer's chat template."""
    return [encode(tokenizer, [{"role": "user", "content": p}], use_template=True) for p in load_prompts(path)[:count]]


def interleaved_passes(labels, prompts, run):
    """run(label, prompt) -> (tokens, seconds, steps) for each label on each prompt, twice;
    prints per label and pass tok/s, ms per step, tokens per step and how many outputs
    differ from the first label's (float16 GPU numerics can differ; float32 CPU outputs
    must not)."""
    for number in (1, 2):
        totals = {label: [0, 0.0, 0, 0] for label in labels}  # tokens, seconds, steps, differing
        for prompt in prompts:
            reference = None
            for label in labels:
                tokens, seconds, steps = run(label, prompt)
                reference = reference or tokens
                total = totals[label]
                total[0], total[1], total[2] = total[0] + len(tokens), total[1] + seconds, total[2] + steps
                total[3] += tokens != reference
        for label, (tokens, seconds, steps, differing) in totals.items():
            print(f"pass {number} {label:28s} {tokens / seconds:7.1f} tok/s {seconds / steps * 1e3:7.2f} ms/step "
                  f"{tokens / steps:5.2f} tokens/step, outputs != {labels[0]}: {differing}", flush=True)


def compare_models(models: dict, drafter, model_dir, shapes: str, prompts_path, num_prompts: int, max_tokens: int,
                   before=None):
    """AR and ReDrafter at each of `shapes` ("8x4,1x4") with each of `models` ({kind: Model}),
    interleaved per prompt, two passes; outputs compared with the first kind's AR.
    before(kind), if given, runs ahead of each generation."""
    tokenizer = load_tokenizer(model_dir)
    prompts = chat_prompts(tokenizer, prompts_path, num_prompts)
    eos = set(tokenizer.eos_token_ids)
    labels = [f"{method} {kind}" for method in ["ar"] + shapes.split(",") for kind in models]

    def run(label, prompt):
        """One generation for a label "METHOD KIND" (e.g. "8x4 separate"); returns (tokens,
        seconds, steps)."""
        method, kind = label.split()
        if before is not None:
            before(kind)
        model, stats = models[kind], Stats()
        if method == "ar":
            chunks = decode.generate_ar(model, prompt, max_tokens, eos_ids=eos, stats=stats)
        else:
            width, length = map(int, method.split("x"))
            chunks = decode.generate_redrafter(model, drafter, prompt, max_tokens, width, length, eos, stats)
        return sum(chunks, []), stats.generation_time, stats.steps

    interleaved_passes(labels, prompts, run)
