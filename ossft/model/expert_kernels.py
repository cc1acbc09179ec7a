"""How gpt-oss's expert layer computes for the tokens routed to it: the tokens sorted by expert, each
projection one grouped GEMM (as transformers' grouped_mm path), on dense weights or on MXFP4 ones
dequantized a chunk of experts at a time, with LoRA factors added per routed token.

Used by ossft/model/expert_lora.py (LoRA on the experts) and ossft/model/mxfp4_experts.py (experts kept
in MXFP4 while LoRA trains).
"""

from __future__ import annotations

import torch

from ossft.gptoss import facts
from ossft.gptoss.mxfp4 import BLOCK, unpack


def routed_experts_forward(experts, hidden_states, router_indices, routing_weights, adapters: dict | None = None):
    """gpt-oss's expert MLP (transformers' GptOssExperts: interleaved gate/up, biases, clamped SwiGLU).
    `adapters`: projection name -> (A [experts, in, r], B [experts, r, out], scaling), added as s·(x·A)·B."""
    adapters = adapters or {}
    tokens, hidden = hidden_states.shape
    top_k = router_indices.shape[-1]
    expert_ids, order = torch.sort(router_indices.reshape(-1))
    rows = hidden_states[order // top_k]
    counts = tokens_per_expert(expert_ids, experts.num_experts)

    def project(x, name: str):
        out = experts_matmul(experts, name, x, counts) + getattr(experts, f"{name}_bias")[expert_ids]
        if name in adapters:
            down, up, scaling = adapters[name]
            out = out + scaling * grouped_matmul(grouped_matmul(x, down, counts), up, counts)
        return out

    gated = experts._apply_gate(project(rows, "gate_up_proj"))
    weighted = project(gated, "down_proj") * routing_weights.reshape(-1)[order].unsqueeze(-1)
    unsorted = torch.empty_like(weighted).index_copy_(0, order, weighted)
    return unsorted.view(tokens, top_k, hidden).sum(dim=1).to(hidden_states.dtype)


def experts_matmul(experts, name: str, x, counts):
    """The projection `name` of the sorted rows: dense weights as they are, MXFP4 ones (`{name}_blocks`
    and `{name}_scales` buffers) through Mxfp4GroupedMatmul."""
    blocks = getattr(experts, f"{name}_blocks", None)
    if blocks is None:
        return grouped_matmul(x, getattr(experts, name), counts)
    return Mxfp4GroupedMatmul.apply(x, blocks, getattr(experts, f"{name}_scales"), counts, experts.mxfp4_dtype)


def tokens_per_expert(expert_ids, num_experts: int):
    # histc, as transformers does: bincount breaks CUDA graphs, and histc takes floats only on CPU.
    values = expert_ids.float() if expert_ids.device.type in ("cpu", "mps") else expert_ids.int()
    return torch.histc(values, bins=num_experts, min=0, max=num_experts - 1).to(torch.int64)


def grouped_matmul(x, weight, counts):
    """Rows of `x`, sorted by expert with `counts[e]` rows for expert e, each times `weight[e]`."""
    x = x.to(weight.dtype)  # under autocast the input may still be fp32; the grouped GEMM does not cast
    if grouped_mm_usable(weight):
        offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
        return torch.nn.functional.grouped_mm(x, weight, offs=offsets)
    parts = x.split(counts.tolist())
    return torch.cat([part @ weight[e] for e, part in enumerate(parts)])


def grouped_mm_usable(weight) -> bool:
    if not hasattr(torch.nn.functional, "grouped_mm"):
        return False
    if weight.device.type == "cuda":
        # the CUDA kernel is bf16 only, SM80 and newer
        return weight.dtype == torch.bfloat16 and torch.cuda.get_device_capability(weight.device) >= (8, 0)
    return weight.device.type == "cpu" and weight.dtype in (torch.float32, torch.bfloat16)


def expert_chunks(num_experts: int, expert_bytes: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of experts whose dequantized weights fit facts.DEQUANTIZED_CHUNK_BYTES (one at least)."""
    per_chunk = max(1, facts.DEQUANTIZED_CHUNK_BYTES // max(expert_bytes, 1))
    return [(start, min(start + per_chunk, num_experts)) for start in range(0, num_experts, per_chunk)]


def dequantized_grouped_matmul(x, blocks, scales, counts, dtype, transpose: bool):
    """Sorted rows times each expert's MXFP4 weight [in, out] (its transpose with `transpose`), dequantized
    one chunk of experts at a time and dropped after its GEMM; experts no row reached are skipped."""
    num_experts, n_out, groups, _ = blocks.shape
    n_in = groups * BLOCK
    expert_bytes = n_in * n_out * torch.finfo(dtype).bits // 8
    rows = counts.tolist()
    outputs, first_row = [], 0
    for start, stop in expert_chunks(num_experts, expert_bytes):
        taken = sum(rows[start:stop])
        if taken == 0:
            continue
        weight = unpack(blocks[start:stop], scales[start:stop], dtype)  # [chunk, in, out]
        if transpose:
            weight = weight.transpose(1, 2).contiguous()
        outputs.append(grouped_matmul(x[first_row : first_row + taken], weight, counts[start:stop]))
        del weight
        first_row += taken
    if not outputs:
        return x.new_zeros(0, n_in if transpose else n_out, dtype=dtype)
    return torch.cat(outputs)


class Mxfp4GroupedMatmul(torch.autograd.Function):
    """x @ W_e per expert with W held as MXFP4. Saved for the backward: the uint8 blocks and scales (the
    module's own buffers, no copy) and the counts; the frozen W gets no gradient."""

    @staticmethod
    def forward(ctx, x, blocks, scales, counts, dtype):
        ctx.save_for_backward(blocks, scales, counts)
        ctx.dtype = dtype
        return dequantized_grouped_matmul(x, blocks, scales, counts, dtype, transpose=False)

    @staticmethod
    def backward(ctx, grad_output):
        blocks, scales, counts = ctx.saved_tensors
        grad_input = dequantized_grouped_matmul(grad_output, blocks, scales, counts, ctx.dtype, transpose=True)
        return grad_input, None, None, None, None
