"""LoRA on the experts, applied to the routed tokens: `x·W + s·(x·A)·B` per (token, expert) pair.

PEFT's `target_parameters` (docs/traps.md#trap-5) adds the LoRA delta to the whole expert stack before
every forward: `W' = W + s·A·B`, a second [experts, in, out] tensor per targeted weight (1.06 GB for
one gpt-oss-20b layer's gate_up_proj in bf16). Autograd keeps W' for the backward and computes its
full gradient, one more GEMM as large as the forward, only to reduce it to the small A and B. Routed,
the base GEMM never needs a weight gradient and the LoRA part costs `tokens·r·(in + out)`.

The adapter stays PEFT's: the same `lora_A`/`lora_B` parameters and names, so saving, loading,
merging and the trainer see no difference. Only the forward of the outermost `ParamWrapper` around
each `GptOssExperts` changes; with adapters merged, disabled or several active it is PEFT's again.
tests/test_expert_lora.py proves the two equal; scripts/bench/expert_lora.py measures them.
"""

from __future__ import annotations

from peft.tuners.lora.layer import ParamWrapper

from ossft.model import expert_kernels

# CUDA's grouped GEMM wants every row stride 16-byte aligned: a rank of 8 in bf16. The factors are
# padded with zero columns up to that, which changes no product.
RANK_ALIGNMENT = 8


class RoutedExpertsLora(ParamWrapper):
    """The outermost PEFT wrapper of a `GptOssExperts`, with the LoRA applied per routed token."""

    def forward(self, hidden_states, router_indices=None, routing_weights=None):
        chain = wrapper_chain(self)
        if not routed_applies(chain):
            if any(hasattr(self.get_base_layer(), f"{name}_blocks") for name in chain):
                raise RuntimeError(
                    "experts kept in MXFP4 run only through ossft's routed LoRA: one active adapter, unmerged "
                    "(model.mxfp4_experts: false for anything else)."
                )
            return super().forward(hidden_states, router_indices, routing_weights)
        return routed_experts_forward(chain, hidden_states, router_indices, routing_weights)


def wrapper_chain(outer) -> dict[str, ParamWrapper]:
    """parameter name -> its wrapper, from the outermost down to the experts module itself."""
    chain, layer = {}, outer
    while isinstance(layer, ParamWrapper):
        chain[layer.parameter_name] = layer
        layer = layer.base_layer
    return chain


def routed_applies(chain: dict[str, ParamWrapper]) -> bool:
    """One active adapter, unmerged, on weights stored [experts, in, out]; anything else goes to PEFT."""
    experts = next(iter(chain.values())).get_base_layer()
    # transformers' experts decorator records the layout; gpt-oss has always been [experts, in, out]
    if not getattr(experts, "is_transposed", True):
        return False
    for wrapper in chain.values():
        active = [a for a in wrapper.active_adapters if a in wrapper.lora_A]
        if wrapper.disable_adapters or wrapper.merged or len(active) != 1 or wrapper._did_swap_in_out_features:
            return False
    return True


def routed_experts_forward(chain: dict[str, ParamWrapper], hidden_states, router_indices, routing_weights):
    experts = next(iter(chain.values())).get_base_layer()
    adapters = {}
    for name, wrapper in chain.items():
        adapter = next(a for a in wrapper.active_adapters if a in wrapper.lora_A)
        adapters[name] = lora_factors(wrapper, adapter)
    return expert_kernels.routed_experts_forward(experts, hidden_states, router_indices, routing_weights, adapters)


def lora_factors(wrapper: ParamWrapper, adapter: str):
    """(A [experts, in, r'], B [experts, r', out], scaling) in the weight's dtype, r' = r rounded up to
    RANK_ALIGNMENT with zeros. PEFT keeps A as [experts·r, in] and B as [out, r·experts]."""
    import torch.nn.functional as F

    down, up, scaling = wrapper.get_delta_factors(adapter)  # PEFT's own reshape of its parameters
    pad = -down.shape[-1] % RANK_ALIGNMENT
    if pad:
        down, up = F.pad(down, (0, pad)), F.pad(up, (0, 0, 0, pad))
    return down.contiguous(), up.contiguous(), scaling


def use_routed_expert_lora(model) -> int:
    """Switch every experts module that carries LoRA to the routed forward; returns how many."""
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

    switched = 0
    inner = {id(m.base_layer) for m in model.modules() if isinstance(m, ParamWrapper)}
    for module in model.modules():
        if isinstance(module, ParamWrapper) and id(module) not in inner:
            if isinstance(module.get_base_layer(), GptOssExperts):
                module.__class__ = RoutedExpertsLora
                switched += 1
    return switched
