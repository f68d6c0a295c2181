"""The command lines run in-process, as a user runs them, with their exit code and output."""

import io
import sys

from redrafter_mlx import generate


class Stdin(io.TextIOWrapper):
    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data), encoding="utf-8")


def run_generate(monkeypatch, capfd, *args, stdin: bytes = None):
    """generate.main in-process -> (exit code, stdout, stderr); stdin: its bytes (default none)."""
    monkeypatch.setattr(sys, "stdin", Stdin(stdin or b""))
    capfd.readouterr()
    code = 0
    try:
        generate.main([str(a) for a in args])
    except SystemExit as exit_info:
        code = exit_info.code
    out, err = capfd.readouterr()
    return code, out, err
