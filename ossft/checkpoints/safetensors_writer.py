"""Write a safetensors file one tensor at a time, the header first.

safetensors' own `save_file` takes every tensor of the file at once: a 5 GB shard is 5 GB in memory.
Its maintainers keep it that way on purpose (safetensors/safetensors#291, #458: the header must know
every tensor before the data starts). Here the names, shapes and dtypes are all known in advance (from
a checkpoint's metadata), so the header is written first and each tensor's bytes follow as they arrive.
The file is the standard format (8-byte little-endian header length, JSON header padded with spaces
to 8 bytes, then the data in header order with no gaps); every file written here is read back with
safetensors' own `safe_open` before it is used (ossft/checkpoints/verify.py).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

# safetensors' dtype names (its format spec) for the dtypes a model checkpoint holds
DTYPE_NAMES = {
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
}


class StreamedSafetensorsWriter:
    """`specs` is [(name, shape, torch dtype)] in the order the tensors will be written."""

    def __init__(self, path: Path, specs: list[tuple[str, tuple[int, ...], object]], metadata: dict[str, str]):
        self.path = Path(path)
        self._pending = list(specs)
        header: dict[str, object] = {"__metadata__": dict(metadata)}
        offset = 0
        for name, shape, dtype in specs:
            size = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": _dtype_name(dtype), "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * (-len(text) % 8)
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close(), after the last tensor
        self._file.write(struct.pack("<Q", len(text)) + text)

    def write(self, name: str, tensor) -> None:
        import torch

        expected_name, shape, dtype = self._pending.pop(0)
        if (name, tuple(tensor.shape), tensor.dtype) != (expected_name, tuple(shape), dtype):
            raise ValueError(f"{self.path}: got {name} {tuple(tensor.shape)} {tensor.dtype}, the header says "
                             f"{expected_name} {tuple(shape)} {dtype} comes next")  # fmt: skip
        data = tensor.detach().to("cpu").contiguous()
        if data.numel():
            self._file.write((data.view(torch.uint8) if data.dtype != torch.uint8 else data).numpy().data)

    def close(self) -> None:
        self._file.close()
        if self._pending:
            raise ValueError(f"{self.path}: {len(self._pending)} tensors announced in the header were never written")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._file.close()


def _dtype_name(dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise ValueError(f"no safetensors name for {dtype}")
    return DTYPE_NAMES[name]
