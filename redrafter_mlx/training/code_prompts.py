"""Coding prompts written from the docstrings and sources of Python's standard library.

Training prompts for a code model's drafter that share nothing with the evaluation sets
(HumanEval, MT-Bench): each public function or class of a fixed list of standard-library
modules (or of every module: --all-modules) becomes one prompt, in one of three forms picked
by a hash of its name (or in each form that applies: --every-form): an instruction ("Write a
Python function ..."), a stub to complete (signature and docstring, as HumanEval's prompts
look) or a request to explain its source.

  python -m redrafter_mlx.training.code_prompts --out code_prompts.jsonl
"""

import argparse
import importlib
import inspect
import json
import pkgutil
import re
import sys
import warnings
import zlib
from typing import Iterator, List

from ..errors import UsageError

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
# Left out of every module: they open windows or a browser, print when imported, are test suites,
# or are not the standard library's own (distutils: setuptools' copy where setuptools is installed).
EXCLUDED = frozenset(
    "antigravity this idlelib tkinter turtle turtledemo test lib2to3 ensurepip venv pydoc_data distutils".split())


def all_modules() -> List[str]:
    """Every public module of the standard library that imports here, with its public
    submodules, sorted; EXCLUDED and test suites (ctypes.test, unittest.test, ...) left out."""
    if not hasattr(sys, "stdlib_module_names"):
        raise UsageError("--all-modules needs Python 3.10 or later (sys.stdlib_module_names)")
    names = set()
    for name in sorted(sys.stdlib_module_names - EXCLUDED):
        module = None if name.startswith("_") else imported(name)
        if module is None:
            continue
        names.add(name)
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=name + ".", onerror=lambda _: None):
            if not any(part.startswith(("_", "test")) or part == "idle_test" for part in info.name.split(".")):
                names.add(info.name)
    return sorted(names)


def imported(name: str):
    """Module `name`, imported; None where it does not import on this platform."""
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - platform modules fail in many ways (ImportError, OSError, ...)
        return None


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


def prompts_for(qualified: str, obj, every_form: bool) -> List[str]:
    """The prompts about `obj`: in the form a hash of its name picks, or in each form that
    applies (a stub only for functions)."""
    kind = "class" if inspect.isclass(obj) else "function"
    if not every_form:
        return [prompt_in(zlib.crc32(qualified.encode()) % 3, qualified, obj)]
    return [prompt_in(form, qualified, obj) for form in (0, 1, 2) if form != 1 or kind == "function"]


def prompt_in(form: int, qualified: str, obj) -> str:
    """One prompt about `obj` in form 0 (instruction), 1 (stub; classes get form 2) or 2 (explain)."""
    name, doc = qualified.rsplit(".", 1)[1], inspect.getdoc(obj)
    kind = "class" if inspect.isclass(obj) else "function"
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


def stdlib_code_prompts(limit: int = 1_000_000, skip=frozenset(), all_stdlib: bool = False,
                        every_form: bool = False) -> List[str]:
    """The prompts of MODULES (all_stdlib: of all_modules()) but those named in `skip` (by the
    name listed or the name it imports as: os.path is posixpath), at most `limit`."""
    prompts = []
    warnings.simplefilter("ignore", DeprecationWarning)  # deprecated aliases (typing.io) warn when read
    for module_name in all_modules() if all_stdlib else MODULES:
        module = imported(module_name)
        if module is None or module_name in skip or module.__name__ in skip:
            continue
        for name, obj in public_objects(module):
            prompts += prompts_for(name, obj, every_form)
    return list(dict.fromkeys(prompts))[:limit]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m redrafter_mlx.training.code_prompts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help=".jsonl file to write ({\"prompt\": text} per line)")
    p.add_argument("--limit", type=int, default=1_000_000)
    p.add_argument("--all-modules", action="store_true", help="every module of the standard library, not MODULES")
    p.add_argument("--every-form", action="store_true", help="each object in every form, not one")
    args = p.parse_args(argv)
    prompts = stdlib_code_prompts(args.limit, all_stdlib=args.all_modules, every_form=args.every_form)
    with open(args.out, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"prompt": text}) + "\n" for text in prompts)
    print(f"{len(prompts)} prompts -> {args.out}")


if __name__ == "__main__":
    main()
