"""The dtypes a converted model may be written in, by the names users type."""

from __future__ import annotations

from ossft.errors import UserError

# Short names (as in `accelerate` and most trainers) -> torch's names.
FLOAT_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def float_dtype(text):
    """bf16 / fp16 / fp32 (or bfloat16, float16, float32, torch.bfloat16, a torch.dtype) -> the torch.dtype."""
    import torch

    name = str(text).removeprefix("torch.").lower()
    name = FLOAT_DTYPES.get(name, name)
    if name not in FLOAT_DTYPES.values():
        raise UserError(f"--dtype {text}: expected bf16, fp16 or fp32 (or bfloat16, float16, float32).")
    return getattr(torch, name)
