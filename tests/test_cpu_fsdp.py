"""launch/cpu_fsdp.py: the patch that runs accelerate's FSDP2 over gloo acts only where no accelerator exists."""

from __future__ import annotations

import pytest
import torch
from accelerate.state import AcceleratorState

from ossft.launch import cpu_fsdp

pytestmark = pytest.mark.unit


@pytest.fixture
def original_init(monkeypatch):
    # accelerate's own __init__, even where a trainer built earlier in this process installed the patch;
    # monkeypatch puts back whatever was there after the test.
    init = AcceleratorState.__init__
    if getattr(init, cpu_fsdp._MARK, False):
        init = init.__wrapped__
    monkeypatch.setattr(AcceleratorState, "__init__", init)
    return init


def test_the_patch_stays_out_where_cuda_is_available(monkeypatch, original_init):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert cpu_fsdp.accelerator_present()
    assert cpu_fsdp.enable_fsdp_without_accelerator() is False
    assert AcceleratorState.__init__ is original_init


def test_the_patch_is_installed_once_without_an_accelerator(monkeypatch, original_init):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    assert cpu_fsdp.enable_fsdp_without_accelerator() is True
    patched = AcceleratorState.__init__
    assert patched is not original_init and patched.__wrapped__ is original_init
    assert cpu_fsdp.enable_fsdp_without_accelerator() is True
    assert AcceleratorState.__init__ is patched  # idempotent: not wrapped twice


def test_offload_stops_pinning_host_memory():
    from accelerate import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import CPUOffloadPolicy

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_offload=True)
    assert isinstance(plugin.cpu_offload, CPUOffloadPolicy) and plugin.cpu_offload.pin_memory
    cpu_fsdp._unpinned_offload(plugin)
    assert isinstance(plugin.cpu_offload, CPUOffloadPolicy) and not plugin.cpu_offload.pin_memory
