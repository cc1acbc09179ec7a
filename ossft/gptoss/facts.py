"""Facts of the gpt-oss family that ossft's code relies on (docs/gpt-oss.md): shapes, parameter names,
and how a checkpoint says its experts are MXFP4. No torch, no transformers: anything may import it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# The experts' two weight stacks, as GptOssExperts names them: gate_up_proj [E, H, 2I], down_proj [E, I, H].
EXPERT_PROJECTIONS = ("gate_up_proj", "down_proj")
# Their parameter names under a decoder layer, the suffix every full name ends with.
EXPERT_PARAMETERS = tuple(f"mlp.experts.{projection}" for projection in EXPERT_PROJECTIONS)
# The attention projections LoRA targets by default.
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")

# ossft's flex attention (ossft/model/sink_attention.py), registered with transformers under this name.
FLEX_ATTENTION = "ossft_flex"
# The attentions ossft gives document masks (ossft/model/documents.py): the only ones packing is exact with.
# transformers' own flex_attention and the hub's flash kernels get gpt-oss's mask, which ignores documents.
DOCUMENT_AWARE_ATTENTIONS = ("eager", FLEX_ATTENTION)
# What a recipe may name: sdpa is not here, it cannot add gpt-oss's per-head sink logit.
ATTENTIONS = (*DOCUMENT_AWARE_ATTENTIONS, "flex_attention", "kernels-community/vllm-flash-attn3")

# MXFP4 expert weights: 16 bytes of FP4 codes and one e8m0 scale byte per block of 32 weights (4.25 bits).
MXFP4_BYTES_PER_WEIGHT = 17 / 32
# Experts kept in MXFP4 while training dequantize at most this many bytes of weights at once
# (ossft/model/expert_kernels.py): one 120b layer's gate_up_proj is 3.4 GB in bf16, 20b's 1.06 GB.
DEQUANTIZED_CHUNK_BYTES = 512 * 2**20

# Shapes of the released models (their config.json), so a plan needs no download.
PUBLISHED = {
    "openai/gpt-oss-20b": {"layers": 24, "experts": 32, "top_k": 4},
    "openai/gpt-oss-120b": {"layers": 36, "experts": 128, "top_k": 4},
}
SHARED = {"hidden": 2880, "intermediate": 2880, "heads": 64, "kv_heads": 8, "head_dim": 64, "vocab": 201_088}
# `ossft init --model 20b` and the recipes' short names.
MODEL_IDS = {"20b": "openai/gpt-oss-20b", "120b": "openai/gpt-oss-120b"}


def is_mxfp4(config) -> bool:
    """Does this config (a dict from config.json, or a transformers config) store its experts as MXFP4?"""
    quantization = config.get("quantization_config") if isinstance(config, dict) else getattr(
        config, "quantization_config", None
    )
    if quantization is not None and not isinstance(quantization, dict):
        quantization = quantization.to_dict()
    return (quantization or {}).get("quant_method") == "mxfp4"


def checkpoint_is_mxfp4(base_model: str) -> bool:
    """Are this model's experts stored as MXFP4: a released id (both are), or a local folder whose
    config.json says so. An unknown Hub id: False (nothing to read offline)."""
    if base_model in PUBLISHED:
        return True
    config_file = Path(base_model).expanduser() / "config.json"
    try:
        return is_mxfp4(json.loads(config_file.read_text()))
    except (OSError, ValueError):
        return False


@dataclass(frozen=True)
class Shape:
    layers: int
    experts: int
    top_k: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int

    @property
    def attention_params(self) -> int:
        q = self.heads * self.head_dim
        kv = self.kv_heads * self.head_dim
        return self.hidden * (q + 2 * kv) + q + 2 * kv + q * self.hidden + self.hidden + self.heads

    @property
    def expert_params(self) -> int:
        """One layer's experts: gate_up [E, H, 2I] + bias, down [E, I, H] + bias."""
        gate_up = self.experts * (self.hidden * 2 * self.intermediate + 2 * self.intermediate)
        down = self.experts * (self.intermediate * self.hidden + self.hidden)
        return gate_up + down

    @property
    def total_params(self) -> int:
        router = self.hidden * self.experts + self.experts
        per_layer = self.attention_params + self.expert_params + router + 2 * self.hidden
        return self.layers * per_layer + 2 * self.vocab * self.hidden + self.hidden


def model_shape(base_model: str) -> Shape:
    """The shape of a released model id, or of a local folder's config.json."""
    if base_model in PUBLISHED:
        return Shape(**PUBLISHED[base_model], **SHARED)
    config_file = Path(base_model) / "config.json"
    if not config_file.is_file():
        from ossft.errors import UserError

        raise UserError(
            f"model.base_model: {base_model} is neither a released gpt-oss id ({', '.join(PUBLISHED)}) nor a "
            "local folder with config.json, so its size is unknown."
        )
    c = json.loads(config_file.read_text())
    return Shape(
        layers=c["num_hidden_layers"],
        experts=c["num_local_experts"],
        top_k=c.get("num_experts_per_tok", c.get("experts_per_token", 4)),
        hidden=c["hidden_size"],
        intermediate=c["intermediate_size"],
        heads=c["num_attention_heads"],
        kv_heads=c["num_key_value_heads"],
        head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
        vocab=c["vocab_size"],
    )
