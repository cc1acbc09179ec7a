"""Real FSDP2 on machines without an accelerator: the one patch ossft makes to accelerate.

accelerate 1.16 turns an FSDP plugin into `DistributedType.FSDP` only inside the branch of
`AcceleratorState.__init__` for GPU-like process types (accelerate/state.py, the `elif
self.distributed_type in [MULTI_GPU, MULTI_MLU, ..., MULTI_NEURON]` branch). A CPU run over gloo is
`MULTI_CPU`, so an FSDP recipe silently trained as plain DDP (docs/traps.md#trap-6): the `--smoke` of
every FSDP recipe, and every test, never ran FSDP2. `torch.distributed.fsdp.fully_shard` itself works
over gloo, and so does the rest of accelerate's FSDP2 path once the state says FSDP.

`enable_fsdp_without_accelerator()` wraps `AcceleratorState.__init__`: after the original, a
`MULTI_CPU` state given an fsdp_plugin does what the GPU branch does (distributed type FSDP, the
plugin's mixed precision, the plugin kept). FSDP2 offload's default `CPUOffloadPolicy()` pins host
memory, which needs a CUDA device; without one it becomes `CPUOffloadPolicy(pin_memory=False)`.
Nothing changes where torch sees an accelerator: there accelerate's own branch decides.
"""

from __future__ import annotations

import functools

_MARK = "_ossft_fsdp_without_accelerator"


def accelerator_present() -> bool:
    import torch

    return torch.cuda.is_available() or torch.accelerator.is_available()


def enable_fsdp_without_accelerator() -> bool:
    """Install the patch in this process, only where no accelerator exists; True when it is installed.
    Idempotent. Call it before the Trainer builds its Accelerator."""
    if accelerator_present():
        return False
    from accelerate.state import AcceleratorState

    if not getattr(AcceleratorState.__init__, _MARK, False):
        AcceleratorState.__init__ = _fsdp_on_cpu(AcceleratorState.__init__)
    return True


def _fsdp_on_cpu(original_init):
    @functools.wraps(original_init)
    def init(self, *args, fsdp_plugin=None, **kwargs):
        original_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        from accelerate.state import PartialState
        from accelerate.utils import DistributedType

        if fsdp_plugin is None or self.distributed_type != DistributedType.MULTI_CPU:
            return
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        _unpinned_offload(fsdp_plugin)
        self.fsdp_plugin = fsdp_plugin
        # The original records the type for PartialState too, so later AcceleratorState() calls and
        # PartialState users (wait_for_everyone, ...) see FSDP.
        PartialState._shared_state["distributed_type"] = self.distributed_type

    setattr(init, _MARK, True)
    return init


def _unpinned_offload(fsdp_plugin) -> None:
    from torch.distributed.fsdp import CPUOffloadPolicy

    if isinstance(fsdp_plugin.cpu_offload, CPUOffloadPolicy) and fsdp_plugin.cpu_offload.pin_memory:
        fsdp_plugin.cpu_offload = CPUOffloadPolicy(pin_memory=False)
