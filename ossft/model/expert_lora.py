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

# CUDA's grouped GEMM wants every row stride 16-byte aligned: a rank of 8 in bf16. The factors are
# padded with zero columns up to that, which changes no product.
RANK_ALIGNMENT = 8


class RoutedExpertsLora(ParamWrapper):
    """The outermost PEFT wrapper of a `GptOssExperts`, with the LoRA applied per routed token."""

    def forward(self, hidden_states, router_indices=None, routing_weights=None):
        chain = wrapper_chain(self)
        if not routed_applies(chain):
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
    """gpt-oss's expert MLP (transformers' GptOssExperts: interleaved gate/up, biases, clamped SwiGLU) with
    the tokens sorted by expert and each projection one grouped GEMM, as transformers' grouped_mm path."""
    import torch

    experts = next(iter(chain.values())).get_base_layer()
    tokens, hidden = hidden_states.shape
    top_k = router_indices.shape[-1]
    expert_ids, order = torch.sort(router_indices.reshape(-1))
    rows = hidden_states[order // top_k]
    counts = tokens_per_expert(expert_ids, experts.num_experts)

    def project(x, name: str):
        weight = getattr(experts, name)
        out = grouped_matmul(x, weight, counts) + getattr(experts, f"{name}_bias")[expert_ids]
        wrapper = chain.get(name)
        if wrapper is not None:
            adapter = next(a for a in wrapper.active_adapters if a in wrapper.lora_A)
            down, up, scaling = lora_factors(wrapper, adapter)
            out = out + scaling * grouped_matmul(grouped_matmul(x, down, counts), up, counts)
        return out

    gated = experts._apply_gate(project(rows, "gate_up_proj"))
    weighted = project(gated, "down_proj") * routing_weights.reshape(-1)[order].unsqueeze(-1)
    unsorted = torch.empty_like(weighted).index_copy_(0, order, weighted)
    return unsorted.view(tokens, top_k, hidden).sum(dim=1).to(hidden_states.dtype)


def tokens_per_expert(expert_ids, num_experts: int):
    import torch

    # histc, as transformers does: bincount breaks CUDA graphs, and histc takes floats only on CPU.
    values = expert_ids.float() if expert_ids.device.type in ("cpu", "mps") else expert_ids.int()
    return torch.histc(values, bins=num_experts, min=0, max=num_experts - 1).to(torch.int64)


def lora_factors(wrapper: ParamWrapper, adapter: str):
    """(A [experts, in, r'], B [experts, r', out], scaling) in the weight's dtype, r' = r rounded up to
    RANK_ALIGNMENT with zeros. PEFT keeps A as [experts·r, in] and B as [out, r·experts]."""
    import torch.nn.functional as F

    down, up, scaling = wrapper.get_delta_factors(adapter)  # PEFT's own reshape of its parameters
    pad = -down.shape[-1] % RANK_ALIGNMENT
    if pad:
        down, up = F.pad(down, (0, pad)), F.pad(up, (0, 0, 0, pad))
    return down.contiguous(), up.contiguous(), scaling


def grouped_matmul(x, weight, counts):
    """Rows of `x`, sorted by expert with `counts[e]` rows for expert e, each times `weight[e]`."""
    import torch

    x = x.to(weight.dtype)  # under autocast the input may still be fp32; the grouped GEMM does not cast
    if grouped_mm_usable(weight):
        offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
        return torch.nn.functional.grouped_mm(x, weight, offs=offsets)
    parts = x.split(counts.tolist())
    return torch.cat([part @ weight[e] for e, part in enumerate(parts)])


def grouped_mm_usable(weight) -> bool:
    import torch

    if not hasattr(torch.nn.functional, "grouped_mm"):
        return False
    if weight.device.type == "cuda":
        # the CUDA kernel is bf16 only, SM80 and newer
        return weight.dtype == torch.bfloat16 and torch.cuda.get_device_capability(weight.device) >= (8, 0)
    return weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)


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
