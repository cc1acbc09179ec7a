"""Which token may attend to which in a training batch: its document, causality, gpt-oss's sliding
window and padding, built once per forward for every layer.

gpt-oss builds its masks without `position_ids` (docs/traps.md#trap-2), so under every built-in
attention the documents TRL packs into one row attend to each other. ossft supplies the masks itself:
a forward pre-hook on `GptOssModel` turns the batch's documents into the prepared
`{"full_attention": mask, "sliding_attention": mask}` the model accepts in place of its own (the same
path `generate` uses), as float masks for eager attention and as BlockMasks for ossft's flex attention
(ossft/model/sink_attention.py).

Documents come from TRL's `cu_seq_lens_q` when given (padding-free and packed batches), else from where
`position_ids` stop counting up by one (the rule of transformers' `find_packed_sequence_indices`), else
one per row.
"""

from __future__ import annotations

from collections import OrderedDict

from ossft.gptoss.facts import DOCUMENT_AWARE_ATTENTIONS, FLEX_ATTENTION

LAYER_KINDS = ("full_attention", "sliding_attention")  # gpt-oss's config.layer_types
BLOCK_MASKS_KEPT = 8  # a few batch layouts: repeated ones (eval, the self-check) reuse their BlockMask


def document_ids(length: int, position_ids=None, cu_seq_lens=None, batch: int = 1):
    """[batch, length] ints, equal for tokens of the same document."""
    import torch

    if cu_seq_lens is not None:
        # TRL flattens a micro-batch into one row; cu_seq_lens holds each document's start, then the end.
        tokens = torch.arange(length, device=cu_seq_lens.device)
        return torch.searchsorted(cu_seq_lens[1:-1].to(tokens.dtype), tokens, right=True).unsqueeze(0)
    if position_ids is None:
        return torch.zeros(batch, length, dtype=torch.long)
    position_ids = position_ids.expand(batch, -1)
    restarts = torch.diff(position_ids, prepend=position_ids[:, :1] - 1, dim=-1) != 1
    return restarts.cumsum(-1)


def allowed_keys(documents, padding=None, window: int | None = None):
    """mask_mod(batch, head, query, key) -> may the query attend to the key."""

    def allowed(b, h, q, k):
        keep = (q >= k) & (documents[b, q] == documents[b, k])
        if window is not None:
            keep = keep & (q - k < window)  # gpt-oss's window: the token itself and the 127 before it
        if padding is not None:
            keep = keep & padding[b, k]
        return keep

    return allowed


def dense_allowed(documents, padding=None, window: int | None = None):
    """The same rule as a bool [batch, 1, length, length] tensor: what eager attention adds as -inf."""
    import torch

    length = documents.shape[-1]
    index = torch.arange(length, device=documents.device)
    query, key = index[:, None], index[None, :]
    b = torch.arange(documents.shape[0], device=documents.device)[:, None, None]
    return allowed_keys(documents, padding, window)(b, None, query, key).unsqueeze(1)


def eager_mask(documents, padding, window, dtype):
    import torch

    allowed = dense_allowed(documents, padding, window)
    return torch.zeros((), dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


class BlockMasks:
    """BlockMasks by batch layout, the last few kept. The compiled builder (`_compile=True`) scans the
    mask block by block; the uncompiled one holds the whole [length, length] mask (10 GiB at 32k tokens)."""

    def __init__(self, kept: int = BLOCK_MASKS_KEPT):
        self.kept = kept
        self.masks: OrderedDict = OrderedDict()

    def get(self, documents, padding, window):
        from torch.nn.attention.flex_attention import create_block_mask

        key = layout_key(documents, padding, window)
        if key in self.masks:
            self.masks.move_to_end(key)
            return self.masks[key]
        batch, length = documents.shape
        mask = create_block_mask(
            allowed_keys(documents, padding, window), batch, None, length, length,
            device=documents.device, _compile=documents.device.type != "cpu",
        )  # fmt: skip
        self.masks[key] = mask
        while len(self.masks) > self.kept:
            self.masks.popitem(last=False)
        return mask


def layout_key(documents, padding, window) -> tuple:
    """What a BlockMask depends on, as bytes: the document of each token, the padding and the window."""
    pad = None if padding is None else padding.cpu().numpy().tobytes()
    return documents.shape, str(documents.device), documents.cpu().numpy().tobytes(), pad, window


def prepared_masks(module, kwargs: dict, block_masks: BlockMasks) -> dict | None:
    """The masks for one forward of GptOssModel, or None to leave the model to build its own."""
    config = module.config
    if config._attn_implementation not in DOCUMENT_AWARE_ATTENTIONS:
        return None
    attention_mask = kwargs.get("attention_mask")
    cache = kwargs.get("cache", kwargs.get("past_key_values"))
    if isinstance(attention_mask, dict) or (cache is not None and cache.get_seq_length() > 0):
        return None  # prepared already, or a generation step past the prompt: the model's own masks hold
    tokens = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
    batch, length = tokens.shape[:2]
    documents = document_ids(length, kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q"), batch)
    documents = documents.to(tokens.device)
    padding = None if attention_mask is None else attention_mask.to(device=tokens.device, dtype=bool)
    windows = {"full_attention": None, "sliding_attention": config.sliding_window}
    if config._attn_implementation == FLEX_ATTENTION:
        return {kind: block_masks.get(documents, padding, windows[kind]) for kind in LAYER_KINDS}
    dtype = tokens.dtype if tokens.is_floating_point() else module.get_input_embeddings().weight.dtype
    return {kind: eager_mask(documents, padding, windows[kind], dtype) for kind in LAYER_KINDS}


def use_document_masks(model) -> None:
    """Make every forward of this gpt-oss model attend within documents (eager and ossft's flex)."""
    inner = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    if getattr(inner, "_ossft_document_masks", None) is not None:
        return
    block_masks = BlockMasks()

    def supply_masks(module, args, kwargs):
        masks = prepared_masks(module, kwargs, block_masks)
        if masks is None:
            return None
        return args, {**kwargs, "attention_mask": masks}

    inner._ossft_document_masks = inner.register_forward_pre_hook(supply_masks, with_kwargs=True)
