"""The same-process A/B harness of compile_ab.py and fuse_ab.py: chat prompts from a JSONL
file, every method run on each prompt in turn (so slow drifts of the machine hit all of
them alike), two passes (pass 1 includes tracing and kernel compilation)."""

from demos.prompts import load_prompts
from redrafter_mlx.generate import encode


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
