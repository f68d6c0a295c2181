"""The tensor types listed in a GGUF header, read without any GGUF library.

MLX's own GGUF loader reads F32/F16/Q4_0/Q4_1/Q8_0 correctly, but it returns other types
(e.g. the K-quant Q4_K) as float16 arrays with wrong values instead of failing, so the
types must be checked before trusting it.
"""

import struct
from pathlib import Path
from typing import Dict

NATIVE_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 8: "Q8_0"}  # read correctly by mx.load

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Cursor:
    def __init__(self, f):
        self.f = f

    def unpack(self, fmt: str):
        size = struct.calcsize("<" + fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise ValueError("truncated GGUF header")
        return struct.unpack("<" + fmt, data)[0]

    def string(self) -> str:
        return self.f.read(self.unpack("Q")).decode("utf-8", errors="replace")

    def skip_value(self, kind: int):
        if kind == _STRING:
            self.f.seek(self.unpack("Q"), 1)
        elif kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALARS:
                self.f.seek(struct.calcsize("<" + _SCALARS[item]) * count, 1)
            else:
                for _ in range(count):
                    self.skip_value(item)
        elif kind in _SCALARS:
            self.f.seek(struct.calcsize("<" + _SCALARS[kind]), 1)
        else:
            raise ValueError(f"unknown GGUF value type {kind}")


def tensor_types(path) -> Dict[str, int]:
    """{tensor name: GGML type id} from the header of a GGUF (version 2 or 3) file."""
    with open(Path(path), "rb") as f:
        cursor = _Cursor(f)
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version = cursor.unpack("I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        tensors, fields = cursor.unpack("Q"), cursor.unpack("Q")
        for _ in range(fields):
            cursor.string()
            cursor.skip_value(cursor.unpack("I"))
        types = {}
        for _ in range(tensors):
            name = cursor.string()
            dims = cursor.unpack("I")
            f.seek(8 * dims, 1)
            types[name] = cursor.unpack("I")
            cursor.unpack("Q")  # data offset
        return types
