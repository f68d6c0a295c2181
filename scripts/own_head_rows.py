"""Moves an own-head (Apple layout) drafter off the device within the 16 MiB-per-file limit.

  python scripts/own_head_rows.py export MODEL DRAFTER OUT   # on the device: only the rows
      of the vocab head for the drafter's default draft vocabulary, split in two files
  python scripts/own_head_rows.py import PARTS OUT           # here: a loadable drafter whose
      head is zero outside those rows (valid only with that draft vocabulary or a smaller one)
"""

import shutil
import sys
from pathlib import Path

import redrafter_mlx  # noqa: F401  (first: preloads OpenBLAS on Linux CPUs)
import mlx.core as mx
from mlx.utils import tree_flatten

from redrafter_mlx.load import load_drafter, load_model, read_config


def head_name(drafter_dir) -> str:
    return f"lm_head.{read_config(drafter_dir)['num_draft_layers']}.weight"


def export(model_dir, drafter_dir, out):
    drafter = load_drafter(drafter_dir, load_model(model_dir))
    head = head_name(drafter_dir)
    token_ids = drafter.token_of(mx.arange(drafter.draft_vocab_size))
    weights = dict(tree_flatten(drafter.parameters()))
    rows = weights.pop(head)[token_ids]
    mx.save_safetensors(str(Path(out) / "head_rows.safetensors"), {"rows": rows, "token_ids": token_ids})
    mx.save_safetensors(str(Path(out) / "rest.safetensors"), weights)


def import_(parts, out):
    parts, out = Path(parts), Path(out)
    config = read_config(parts)
    saved = mx.load(str(parts / "head_rows.safetensors"))
    head = mx.zeros((config["vocab_size"], saved["rows"].shape[1]), dtype=saved["rows"].dtype)
    head[saved["token_ids"]] = saved["rows"]
    out.mkdir(parents=True)
    mx.save_safetensors(str(out / "model.safetensors"), {**mx.load(str(parts / "rest.safetensors")),
                                                        head_name(parts): head})
    for name in ("config.json", "draft_vocab.json", "training.json"):
        shutil.copy(parts / name, out / name)


if __name__ == "__main__":
    command, *paths = sys.argv[1:]
    export(*paths) if command == "export" else import_(*paths)
