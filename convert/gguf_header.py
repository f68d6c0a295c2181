"""The tensor types listed in a GGUF header, read without any GGUF library.

MLX's own GGUF loader reads F32/F16/Q4_0/Q4_1/Q8_0 correctly, but it returns other types
(e.g. the K-quant Q4_K) as float16 arrays with wrong values instead of failing, so the
types must be checked before trusting it.
"""

import os
import struct
from pathlib import Path
from typing import Dict

NATIVE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 8: "Q8_0"}  # read correctly by mx.load

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TYPE = 64  # GGML type ids are below this (39 in 2025)


class _Cursor:
    """Reads a GGUF header, every length checked against the bytes left in the file (a
    corrupt length fails as a truncated header instead of allocating or seeking wildly)."""

    def __init__(self, f):
        self.f = f
        self.size = os.fstat(f.fileno()).st_size

    def left(self) -> int:
        return self.size - self.f.tell()

    def skip(self, count: int):
        if count > self.left():
            raise ValueError("truncated or corrupt GGUF header")
        self.f.seek(count, 1)

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated or corrupt GGUF header")
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        length = self.unpack("Q")
        if length > self.left():
            raise ValueError("truncated or corrupt GGUF header")
        return self.f.read(length).decode("utf-8", errors="replace")

    def skip_value(self, kind: int):
        if kind == _STRING:
            self.skip(self.unpack("Q"))
        elif kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALARS:
                self.skip(struct.calcsize("<" + _SCALARS[item]) * count)
            elif item in (_STRING, _ARRAY):
                if count * 8 > self.left():  # each item takes at least 8 bytes
                    raise ValueError("truncated or corrupt GGUF header")
                for _ in range(count):
                    self.skip_value(item)
            else:
                raise ValueError(f"unknown GGUF value type {item}")
        elif kind in _SCALARS:
            self.skip(struct.calcsize("<" + _SCALARS[kind]))
        else:
            raise ValueError(f"unknown GGUF value type {kind}")


def tensor_types(path) -> Dict[str, int]:
    """{tensor name: GGML type id} from the header of a GGUF (version 2 or 3) file; ValueError
    when it is not one or is cut short or corrupt."""
    with open(Path(path), "rb") as f:
        cursor = _Cursor(f)
        if f.read(4) != b"GGUF":
            raise ValueError("not a GGUF file")
        version = cursor.unpack("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
        tensors, fields = cursor.unpack("Q"), cursor.unpack("Q")
        if (tensors + fields) * 8 > cursor.left():
            raise ValueError("truncated or corrupt GGUF header")
        for _ in range(fields):
            cursor.string()
            cursor.skip_value(cursor.unpack("I"))
        types = {}
        for _ in range(tensors):
            name = cursor.string()
            dims = cursor.unpack("I")
            if not 1 <= dims <= MAX_DIMS:
                raise ValueError(f"tensor {name!r} has {dims} dimensions (corrupt header?)")
            cursor.skip(8 * dims)
            types[name] = cursor.unpack("I")
            if types[name] >= MAX_TYPE:
                raise ValueError(f"tensor {name!r} has unknown type {types[name]} (corrupt header?)")
            cursor.unpack("Q")  # data offset
        return types
