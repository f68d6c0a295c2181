"""Prompts for self-distilled answers (`train data`) that share nothing with the held-out set of
a `train text` directory: the standard library's coding prompts (code_prompts), less those
about a module whose source it holds out, then the user turns of the ShareGPT conversations
it trains on (the same split: its --hold-out), in a fixed shuffled order. --exclude leaves out
the prompts of earlier files (to answer only new prompts, e.g. after widening the coding
prompts with --all-modules and --every-form).

  python -m redrafter_mlx.training.distill_prompts --sharegpt FILE --text-data DATA --out prompts.jsonl
"""

import json
import random
import re
from pathlib import Path
from typing import List

from ..atomic import atomic_file
from ..errors import ArgumentParser, HelpFormatter, UsageError, read_json, run_cli
from .code_prompts import stdlib_code_prompts
from .data import check_file, jsonl_text, read_jsonl
from .text_data import HELD_OUT_FILE, MIN_PROMPT_CHARS, read_sharegpt

HELD_MODULE = re.compile(r"the source of the Python module `([^`]+)`")  # text_data.stdlib_prompt's wording


def held_out_of(text_data: Path) -> tuple:
    """(the number of ShareGPT conversations held out, the held-out prompts) of a `train text`
    directory made from ShareGPT; UsageError where it is not one."""
    info, held = text_data / "info.json", text_data / HELD_OUT_FILE
    check_file(info, "--text-data")
    check_file(held, "--text-data")
    settings = read_json(info, UsageError)
    settings = settings if isinstance(settings, dict) else {}
    hold_out, sharegpt = settings.get("hold_out"), settings.get("sharegpt")
    if not isinstance(hold_out, int):
        raise UsageError(f"--text-data {text_data}: info.json has no hold_out (not a `train text` directory)")
    if not sharegpt:
        raise UsageError(f"--text-data {text_data}: made without --sharegpt (no split of a ShareGPT file to follow)")
    prompts = [row.get("prompt") if isinstance(row, dict) else None for _, row in read_jsonl(held)]
    if not all(isinstance(p, str) for p in prompts):
        raise UsageError(f"--text-data {text_data}: {HELD_OUT_FILE} is not a list of {{\"prompt\": text}} lines")
    return hold_out, prompts


def chat_prompts(sharegpt, hold_out: int, held: List[str]) -> List[str]:
    """The user turns (at least MIN_PROMPT_CHARS long) of the conversations `train text`
    trains on, duplicates dropped; UsageError unless the file splits into exactly the held-out
    ShareGPT prompts of `held` (which lists them first, then the standard library's)."""
    conversations, held_here = read_sharegpt(sharegpt, hold_out)
    rest = held[len(held_here):]
    if held_here != held[:len(held_here)] or not all(HELD_MODULE.search(p) for p in rest):
        raise UsageError(f"--sharegpt {sharegpt}: not the file the --text-data directory was made from "
                         "(its held-out prompts differ)")
    turns = (m["content"].strip() for messages in conversations for m in messages if m["role"] == "user")
    return list(dict.fromkeys(t for t in turns if len(t) >= MIN_PROMPT_CHARS))


def main(argv=None):
    p = ArgumentParser(prog="python -m redrafter_mlx.training.distill_prompts", description=__doc__,
                       formatter_class=HelpFormatter)
    p.add_argument("--sharegpt", required=True, help="the ShareGPT JSON file `train text` read")
    p.add_argument("--text-data", required=True, help="a `train text` output directory: its held-out set is left out")
    p.add_argument("--out", required=True, help=".jsonl file to write ({\"prompt\": text} per line)")
    p.add_argument("--seed", type=int, default=0, help="of the shuffle within each source")
    p.add_argument("--all-modules", action="store_true", help="coding prompts from every standard-library module")
    p.add_argument("--every-form", action="store_true", help="coding prompts in every form, not one per object")
    p.add_argument("--exclude", nargs="+", default=[], help="prompt files (.jsonl) whose prompts are left out")
    args = p.parse_args(argv)

    def run():
        hold_out, held = held_out_of(Path(args.text_data))
        modules = {m.group(1) for m in map(HELD_MODULE.search, held) if m}
        excluded = {jsonl_text(path, number, row, ("prompt",))
                    for path in args.exclude for number, row in read_jsonl(check_file(path, "--exclude"))}
        chat = chat_prompts(args.sharegpt, hold_out, held)
        code = stdlib_code_prompts(skip=modules, all_stdlib=args.all_modules, every_form=args.every_form)
        rng = random.Random(args.seed)
        rng.shuffle(code)
        rng.shuffle(chat)
        code, chat = [t for t in code if t not in excluded], [t for t in chat if t not in excluded]
        with atomic_file(args.out) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"prompt": text}) + "\n" for text in code + chat)
        print(f"{len(code)} coding prompts, then {len(chat)} chat prompts -> {args.out}")

    run_cli(run)


if __name__ == "__main__":
    main()
