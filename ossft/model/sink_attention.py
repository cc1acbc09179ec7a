"""ossft's flex attention for gpt-oss (`model.attn_implementation: ossft_flex`): the sinks exact, the
window and the documents in one block mask, and a check of the compiled kernel before a run trusts it.

Each gpt-oss head has a learned sink logit that joins the softmax, takes probability mass and adds no
value. With lse = log Σ_j exp(s_j) over the keys a query may see (flex returns it),

    out = Σ_j exp(s_j) v_j / (Σ_j exp(s_j) + exp(sink)) = flex_out * sigmoid(lse - sink),

computed here with the lse in fp32. transformers' own flex path casts the lse to bf16 first (3x the error
at 1k tokens) and refuses sinks on CPU; its mask ignores documents (docs/traps.md#trap-2). The sink's
gradient flows through the lse, which flex differentiates.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from types import SimpleNamespace

from ossft.gptoss.facts import FLEX_ATTENTION
from ossft.model.documents import BlockMasks, document_ids, eager_mask

# Compiled kernels are specialised to each length; bucketed lengths (train.pad_to_multiple_of) keep
# their number small, but above dynamo's default of 8 recompiles flex would silently run unfused.
RECOMPILES_ALLOWED = 64

# The self-check on the user's GPU: bf16 kernel vs eager attention in fp32 on the same bf16 inputs,
# largest difference over the reference's largest magnitude. Fixed before any GPU run: bf16 keeps 8
# bits (eps 7.8e-3), and the kernel's bf16 output and its bf16 gradients each round once or twice more
# than the reference. A missing sink factor or a leaking window is off by 0.3 to 1 on this batch.
CHECK_TOLERANCE = {"output": 2e-2, "gradients": 5e-2}
CHECK_DOCUMENTS = (200, 57, 1, 150, 104)  # 512 tokens: long and short documents, and a lone token
CHECK_WINDOW = 128  # gpt-oss's sliding window


@functools.cache
def flex_kernel(compiled: bool):
    import torch
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return flex_attention  # the unfused reference: every score held in memory
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILES_ALLOWED)
    return torch.compile(flex_attention, dynamic=False)


def sink_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, s_aux=None, **kwargs):
    """gpt-oss attention through flex: [batch, heads, seq, head_dim] in, [batch, seq, heads, head_dim] out."""
    import torch
    from torch.nn.attention.flex_attention import AuxRequest, BlockMask

    if not isinstance(attention_mask, BlockMask):
        raise RuntimeError(
            f"{FLEX_ATTENTION} attends through a BlockMask and got {type(attention_mask).__name__}: "
            "load the model with ossft.model.load.load_model, which supplies the document masks."
        )
    if dropout:
        raise ValueError(f"{FLEX_ATTENTION} has no attention dropout; gpt-oss trains with attention_dropout 0.")
    kernel = flex_kernel(compiled=query.device.type != "cpu")
    out, aux = kernel(
        query, key, value, block_mask=attention_mask, scale=scaling, enable_gqa=True,
        return_aux=AuxRequest(lse=True),
    )  # fmt: skip
    if s_aux is not None:
        precise = torch.promote_types(query.dtype, torch.float32)  # fp32 for bf16, float64 stays
        factor = torch.sigmoid(aux.lse.to(precise) - s_aux.to(precise).view(1, -1, 1))
        out = (out.to(precise) * factor.unsqueeze(-1)).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `attn_implementation="ossft_flex"` known to transformers. The mask builder registered with it
    (transformers' BlockMask builder) serves a model used without ossft's document masks: padding and
    window, one document per row."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flex_attention_mask

    AttentionInterface.register(FLEX_ATTENTION, sink_attention)
    AttentionMaskInterface.register(FLEX_ATTENTION, flex_attention_mask)


@dataclass
class KernelCheck:
    passed: bool
    output_error: float
    gradient_error: float
    seconds: float
    device: str

    def describe(self) -> str:
        verdict = "agrees with" if self.passed else "differs from"
        return (
            f"{FLEX_ATTENTION} on {self.device} {verdict} eager attention on a packed bf16 batch: output off by "
            f"{self.output_error:.1e}, gradients by {self.gradient_error:.1e} of their largest value "
            f"(allowed {CHECK_TOLERANCE['output']:.0e}, {CHECK_TOLERANCE['gradients']:.0e}; {self.seconds:.1f} s)"
        )


def check_batch(device, heads: int = 8, kv_heads: int = 1, head_dim: int = 64, seed: int = 0):
    """A small packed batch with gpt-oss's head layout (8 query heads per kv head) and its sink logits."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    length = sum(CHECK_DOCUMENTS)

    def normal(*shape):
        return torch.randn(*shape, generator=generator).to(device)

    tensors = {
        "query": normal(1, heads, length, head_dim), "key": normal(1, kv_heads, length, head_dim),
        "value": normal(1, kv_heads, length, head_dim), "sinks": normal(heads),
    }  # fmt: skip
    starts = [0, *torch.tensor(CHECK_DOCUMENTS).cumsum(0).tolist()]
    cu_seq_lens = torch.tensor(starts, dtype=torch.int32, device=device)
    return tensors, document_ids(length, cu_seq_lens=cu_seq_lens)


def attention_and_gradients(attend, tensors: dict, dtype, mask, cotangent):
    """Output and the gradients of query, key, value and sinks, all as fp32."""
    import torch

    leaves = {name: t.detach().to(dtype).requires_grad_() for name, t in tensors.items()}
    module = SimpleNamespace(
        sinks=leaves["sinks"], num_key_value_groups=tensors["query"].shape[1] // tensors["key"].shape[1], training=True
    )
    scaling = tensors["query"].shape[-1] ** -0.5
    q, k, v = leaves["query"], leaves["key"], leaves["value"]
    out, _ = attend(module, q, k, v, mask, scaling=scaling, dropout=0.0, s_aux=leaves["sinks"])
    (out.float() * cotangent).sum().backward()
    # A kernel that ignores an input (the sinks, say) leaves its gradient None: zero, and far off.
    grads = {name: torch.zeros_like(t) if t.grad is None else t.grad for name, t in leaves.items()}
    return out.detach().float(), {name: g.float() for name, g in grads.items()}


def relative_error(got, want) -> float:
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-30))


def check_kernel(device, attend=sink_attention, dtype=None) -> KernelCheck:
    """Run the attention once on a packed batch in bf16, forward and backward, against transformers'
    eager gpt-oss attention in fp32 with ossft's document mask: the sliding and the full window."""
    import torch
    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    dtype = dtype or torch.bfloat16
    started = time.perf_counter()
    tensors, documents = check_batch(device)
    tensors = {name: t.to(dtype) for name, t in tensors.items()}  # both sides see the same rounded inputs
    output_error = gradient_error = 0.0
    for window in (CHECK_WINDOW, None):
        cotangent = torch.randn(1, documents.shape[1], tensors["query"].shape[1], tensors["query"].shape[3],
                                generator=torch.Generator().manual_seed(1)).to(device)  # fmt: skip
        block_mask = BlockMasks().get(documents, None, window)
        out, grads = attention_and_gradients(attend, tensors, dtype, block_mask, cotangent)
        dense = eager_mask(documents, None, window, torch.float32)
        want, want_grads = attention_and_gradients(eager_attention_forward, tensors, torch.float32, dense, cotangent)
        output_error = max(output_error, relative_error(out, want))
        gradient_error = max([gradient_error] + [relative_error(grads[n], want_grads[n]) for n in grads])
    passed = output_error <= CHECK_TOLERANCE["output"] and gradient_error <= CHECK_TOLERANCE["gradients"]
    passed = passed and math.isfinite(output_error) and math.isfinite(gradient_error)
    return KernelCheck(passed, output_error, gradient_error, time.perf_counter() - started, str(device))


def choose_attention(model, device, attend=sink_attention) -> dict:
    """Before a run on `device` with ossft_flex: keep it if the kernel agrees with eager attention here,
    else switch the model to eager attention (with ossft's document masks: packing stays exact).
    What was chosen, and why, for the run's summary."""
    chosen = model.config._attn_implementation
    if chosen != FLEX_ATTENTION:
        return {"attention": chosen}
    check = check_kernel(device, attend)
    if check.passed:
        return {"attention": chosen, "check": asdict(check), "note": check.describe()}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation("eager")
    note = f"{check.describe()}: falls back to eager attention with document masks (O(seq^2) memory)"
    return {"attention": "eager", "check": asdict(check), "note": note}
