"""Prompts for self-distilled answers (`train data`) that share nothing with the held-out set of
a `train text` directory: the standard library's coding prompts (code_prompts), less those
about a module whose source it holds out, then the user turns of the ShareGPT conversations
it trains on (the same split: its --hold-out), in a fixed shuffled order.

  python -m redrafter_mlx.training.distill_prompts --sharegpt FILE --text-data DATA --out prompts.jsonl
"""

import argparse
import json
import random
import re
from pathlib import Path
from typing import List

from ..atomic import atomic_file
from ..errors import UsageError, run_cli
from .code_prompts import stdlib_code_prompts
from .data import check_file, read_jsonl
from .text_data import HELD_OUT_FILE, MIN_PROMPT_CHARS, read_sharegpt

HELD_MODULE = re.compile(r"the source of the Python module `([^`]+)`")  # text_data.stdlib_prompt's wording


def held_out_of(text_data: Path) -> tuple:
    """(ShareGPT conversations held out, modules whose source is held out) of a `train text` directory."""
    info, held = text_data / "info.json", text_data / HELD_OUT_FILE
    check_file(info, "--text-data")
    check_file(held, "--text-data")
    hold_out = json.loads(info.read_text()).get("hold_out")
    if not isinstance(hold_out, int):
        raise UsageError(f"--text-data {text_data}: info.json has no hold_out (not a `train text` directory)")
    modules = {m.group(1) for _, row in read_jsonl(held) for m in [HELD_MODULE.search(str(row.get("prompt", "")))] if m}
    return hold_out, modules


def chat_prompts(sharegpt, hold_out: int) -> List[str]:
    """The user turns (at least MIN_PROMPT_CHARS long) of the conversations `train text`
    trains on, duplicates dropped."""
    conversations, _ = read_sharegpt(sharegpt, hold_out)
    turns = (m["content"].strip() for messages in conversations for m in messages if m["role"] == "user")
    return list(dict.fromkeys(t for t in turns if len(t) >= MIN_PROMPT_CHARS))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m redrafter_mlx.training.distill_prompts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sharegpt", required=True, help="the ShareGPT JSON file `train text` read")
    p.add_argument("--text-data", required=True, help="a `train text` output directory: its held-out set is left out")
    p.add_argument("--out", required=True, help=".jsonl file to write ({\"prompt\": text} per line)")
    p.add_argument("--seed", type=int, default=0, help="of the shuffle within each source")
    args = p.parse_args(argv)

    def run():
        hold_out, modules = held_out_of(Path(args.text_data))
        rng = random.Random(args.seed)
        code, chat = stdlib_code_prompts(skip=modules), chat_prompts(args.sharegpt, hold_out)
        rng.shuffle(code)
        rng.shuffle(chat)
        with atomic_file(args.out) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"prompt": text}) + "\n" for text in code + chat)
        print(f"{len(code)} coding prompts, then {len(chat)} chat prompts -> {args.out}")

    run_cli(run)


if __name__ == "__main__":
    main()
