"""checkpoints/safetensors_writer.py: a file written header first, tensor by tensor, is one safetensors reads exactly."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ossft.checkpoints.safetensors_writer import StreamedSafetensorsWriter


def tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "b.weight": torch.randn(3, 5, generator=generator).to(torch.bfloat16),
        "a.bias": torch.randn(7, generator=generator),  # float32, 28 bytes: the next offset is not 8-aligned
        "c.half": torch.randn(2, 2, 2, generator=generator).half(),
        "d.mask": torch.tensor([True, False, True]),
        "e.ids": torch.arange(4, dtype=torch.int64),
        "f.empty": torch.empty(0, 4),
        "g.double": torch.randn(2, generator=generator).double(),
        "h.transposed": torch.arange(6.0).reshape(2, 3).t(),  # not contiguous
    }


def specs(data):
    return [(name, tuple(t.shape), t.dtype) for name, t in data.items()]


def test_round_trip_through_safetensors(tmp_path):
    data = tensors()
    path = tmp_path / "model.safetensors"
    with StreamedSafetensorsWriter(path, specs(data), {"format": "pt"}) as writer:
        for name, tensor in data.items():
            writer.write(name, tensor)
    loaded = load_file(path)
    assert set(loaded) == set(data) and all(
        loaded[k].dtype == v.dtype and torch.equal(loaded[k], v) for k, v in data.items()
    )
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "pt"}
    header_length = int.from_bytes(path.read_bytes()[:8], "little")
    assert header_length % 8 == 0


def test_a_tensor_out_of_order_is_refused(tmp_path):
    data = tensors()
    with pytest.raises(ValueError, match="the header says b.weight"):
        with StreamedSafetensorsWriter(tmp_path / "x.safetensors", specs(data), {}) as writer:
            writer.write("a.bias", data["a.bias"])


def test_a_tensor_of_another_dtype_is_refused(tmp_path):
    data = tensors()
    with pytest.raises(ValueError, match=r"got b.weight \(3, 5\) torch.float32"):
        with StreamedSafetensorsWriter(tmp_path / "x.safetensors", specs(data), {}) as writer:
            writer.write("b.weight", data["b.weight"].float())


def test_a_missing_tensor_is_an_error_at_close(tmp_path):
    data = tensors()
    writer = StreamedSafetensorsWriter(tmp_path / "x.safetensors", specs(data), {})
    writer.write("b.weight", data["b.weight"])
    with pytest.raises(ValueError, match="7 tensors announced in the header were never written"):
        writer.close()
