"""gpt-oss experts kept in MXFP4 while LoRA trains (`model.mxfp4_experts: true`).

With LoRA the expert weights are frozen, so nothing needs them in bf16 between two uses: 20b's are ~10 GB
as MXFP4 (4.25 bits a weight) against ~38 GB in bf16, 120b's ~61 GB against ~229 GB. Each expert layer
keeps uint8 `*_blocks` [E, out, in/32, 16] and `*_scales` [E, out, in/32] as buffers, and its forward
dequantizes them just in time, a chunk of experts at a time, in a custom autograd function that saves only
the uint8 tensors: the backward dequantizes again for the input's gradient (ossft/model/expert_kernels.py).

The blocks are packed from the weights the MXFP4 checkpoint loaded as, and must unpack to exactly them:
the same values the bf16 path trains with, so logits and LoRA gradients are equal
(tests/test_mxfp4_experts.py). The LoRA adapter is PEFT's as before; only the frozen base changes form.
"""

from __future__ import annotations

import torch
from transformers.models.gpt_oss.modeling_gpt_oss import GptOssExperts

from ossft.errors import UserError
from ossft.gptoss.facts import EXPERT_PROJECTIONS
from ossft.gptoss.mxfp4 import pack, unpack
from ossft.model import expert_kernels


class Mxfp4Weight:
    """Stands where the bf16 expert weight was, for what asks only its facts: PEFT reads the weight's dtype
    to cast the LoRA factors (ParamWrapper.get_delta_factors)."""

    def __init__(self, dtype, shape):
        self.dtype, self.shape = dtype, torch.Size(shape)
        self.requires_grad = False


class Mxfp4Experts(GptOssExperts):
    """GptOssExperts whose weights are MXFP4 buffers: the routed forward, without LoRA."""

    def forward(self, hidden_states, router_indices=None, routing_weights=None):
        return expert_kernels.routed_experts_forward(self, hidden_states, router_indices, routing_weights)


def keep_experts_in_mxfp4(model) -> int:
    """Replace every expert layer's frozen weights by MXFP4 blocks and scales that unpack to exactly them;
    returns how many layers. Refuses weights that train or that MXFP4 cannot hold exactly."""
    layers = 0
    for name, experts in model.named_modules():
        if not isinstance(experts, GptOssExperts):
            continue
        for projection in EXPERT_PROJECTIONS:
            weight = getattr(experts, projection)
            if isinstance(weight, Mxfp4Weight):
                continue
            if weight.requires_grad:
                raise UserError(f"model.mxfp4_experts: {name}.{projection} trains, so it cannot stay in MXFP4.")
            blocks, scales = pack(weight.detach())
            if not torch.equal(unpack(blocks, scales, weight.dtype), weight.detach()):
                raise UserError(
                    f"model.mxfp4_experts: {name}.{projection} holds values MXFP4 cannot represent: it was not "
                    "loaded from an MXFP4 checkpoint. Set model.mxfp4_experts: false."
                )
            del experts._parameters[projection]
            experts.register_buffer(f"{projection}_blocks", blocks)
            experts.register_buffer(f"{projection}_scales", scales)
            setattr(experts, projection, Mxfp4Weight(weight.dtype, weight.shape))
            experts.mxfp4_dtype = weight.dtype
        experts.__class__ = Mxfp4Experts
        layers += 1
    return layers
