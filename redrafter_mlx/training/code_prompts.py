"""Coding prompts written from the docstrings and sources of Python's standard library.

Training prompts for a code model's drafter that share nothing with the evaluation sets
(HumanEval, MT-Bench): each public function or class of a fixed list of standard-library
modules becomes one prompt, in one of three forms picked by a hash of its name: an
instruction ("Write a Python function ..."), a stub to complete (signature and docstring, as
HumanEval's prompts look) or a request to explain its source.

  python -m redrafter_mlx.training.code_prompts --out code_prompts.jsonl
"""

import argparse
import importlib
import inspect
import json
import re
import warnings
import zlib
from typing import Iterator, List

MODULES = (
    "abc argparse ast base64 bisect calendar cmd codecs collections colorsys configparser contextlib copy csv "
    "dataclasses datetime decimal difflib dis email.utils enum filecmp fileinput fnmatch fractions ftplib "
    "functools getopt gettext glob graphlib gzip hashlib heapq hmac html html.parser http.cookies imaplib "
    "inspect ipaddress json keyword linecache locale logging lzma mailbox mimetypes netrc numbers operator "
    "optparse os.path pathlib pickle pkgutil plistlib poplib pprint profile pstats queue quopri random re "
    "reprlib sched secrets selectors shelve shlex shutil smtplib socketserver statistics string stringprep "
    "struct subprocess tabnanny tarfile tempfile textwrap threading timeit tokenize tomllib trace traceback "
    "types typing urllib.parse urllib.request uuid warnings wave weakref xml.dom.minidom zipfile zipimport"
).split()
MAX_SOURCE_LINES = 40


def public_objects(module) -> Iterator[tuple]:
    """(qualified name, object) for the module's own public functions, classes and their
    methods, each with a docstring of its own."""
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if obj.__doc__:
            yield f"{module.__name__}.{name}", obj
        if inspect.isclass(obj):
            for method_name, method in sorted(vars(obj).items()):
                if not method_name.startswith("_") and inspect.isfunction(method) and method.__doc__:
                    yield f"{module.__name__}.{name}.{method_name}", method


def signature(obj) -> str:
    """obj's signature, default values' memory addresses left out (the same text in every run)."""
    try:
        return re.sub(r" at 0x[0-9a-fA-F]+", "", str(inspect.signature(obj)))
    except (TypeError, ValueError):
        return "(...)"


def prompt_for(qualified: str, obj) -> str:
    """One prompt about `obj`, in the form a hash of its name picks."""
    name, doc = qualified.rsplit(".", 1)[1], inspect.getdoc(obj)
    kind = "class" if inspect.isclass(obj) else "function"
    form = zlib.crc32(qualified.encode()) % 3
    if form == 0:
        return (f"Write a Python {kind} `{name}` (signature `{name}{signature(obj)}`) from scratch, without "
                f"importing `{qualified}`. It should behave as documented:\n\n{doc}")
    if form == 1 and kind == "function":
        body = "\n".join("    " + line if line else "" for line in doc.splitlines())
        return f"def {name}{signature(obj)}:\n    \"\"\"\n{body}\n    \"\"\"\n"
    try:
        source = inspect.getsource(obj).splitlines()[:MAX_SOURCE_LINES]
    except (OSError, TypeError):
        return f"Explain what Python's `{qualified}` does and show how to use it in a short example."
    code = "\n".join(source)
    return f"Explain what this Python code does, step by step, and suggest one improvement:\n\n```python\n{code}\n```"


def stdlib_code_prompts(limit: int = 1_000_000, skip=frozenset()) -> List[str]:
    """The prompts of MODULES but those named in `skip` (by the name listed or the name it
    imports as: os.path is posixpath), at most `limit`."""
    prompts = []
    warnings.simplefilter("ignore", DeprecationWarning)  # deprecated aliases (typing.io) warn when read
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if module_name in skip or module.__name__ in skip:
            continue
        prompts += [prompt_for(name, obj) for name, obj in public_objects(module)]
    return list(dict.fromkeys(prompts))[:limit]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m redrafter_mlx.training.code_prompts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help=".jsonl file to write ({\"prompt\": text} per line)")
    p.add_argument("--limit", type=int, default=1_000_000)
    args = p.parse_args(argv)
    prompts = stdlib_code_prompts(args.limit)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"prompt": text}) + "\n" for text in prompts)
    print(f"{len(prompts)} prompts -> {args.out}")


if __name__ == "__main__":
    main()
