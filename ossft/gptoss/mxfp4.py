"""MXFP4 pack / unpack for gpt-oss expert weights, in the layout of the released checkpoints.

A checkpoint stores each expert weight as two uint8 tensors:
  `..._blocks` [E, out, in/32, 16]: 32 FP4 (E2M1) codes per block, two per byte, low nibble = even element;
  `..._scales` [E, out, in/32]:     one e8m0 exponent per block, value = code * 2**(scale - 127).
The model's bf16 parameter is the transpose, [E, in, out] (`gate_up_proj` [E, H, 2I], `down_proj` [E, I, H]):
the blocks run along `in`, the axis the matmul contracts. This is what transformers'
`convert_moe_packed_tensors` (the `Mxfp4Config(dequantize=True)` load path) reads, and
tests/test_mxfp4.py checks our bytes against it.

Used to build MXFP4 test fixtures and to export a fine-tuned model back to MXFP4. Torch only; work is done
one expert at a time, so a 120b tensor never needs a float32 copy of the whole stack.
"""

from __future__ import annotations

import torch

from ossft.gptoss.facts import EXPERT_PROJECTIONS

FP4_VALUES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
BLOCK = 32  # values per shared scale
SCALE_BIAS = 127  # e8m0: scale byte s means 2**(s - 127); 255 is NaN
# The released gpt-oss-20b / 120b config.json, word for word: only the expert weights are MXFP4.
QUANTIZATION_CONFIG = {
    "quant_method": "mxfp4",
    "modules_to_not_convert": [
        "model.layers.*.self_attn",
        "model.layers.*.mlp.router",
        "model.embed_tokens",
        "lm_head",
    ],
}

# Rounding |x| / 2**k to the nearest E2M1 magnitude: the midpoints between neighbouring codes 0..7, and how a value
# exactly on a midpoint goes. Ties go to the even code (the one whose mantissa bit is 0), as IEEE roundTiesToEven
# does: a fixed rule, so the same weights always give the same bytes.
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)
_TIE_GOES_UP = (False, True, False, True, False, True, False)  # lower code of midpoint j is j: even -> stay


def pack(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a model-layout expert weight [E, in, out] to (blocks [E, out, in/32, 16], scales [E, out, in/32]).

    Scale: per block, the smallest exponent k with max|x| <= 6 * 2**k, so the largest value lands in (3, 6] and
    nothing clips. The OCP MX spec takes k = floor(log2(max|x|)) - 2 instead, which puts the largest value in
    [4, 8) and clips everything in (6, 8) * 2**k to 6: up to a quarter of the block's largest weight lost, on
    the weights that matter most. The two differ only on the blocks where the spec clips; there ours uses a grid
    twice as coarse. On Gaussian weights the relative RMS error is nearly the same (measured 0.1155 vs 0.1151
    for the spec's rule), so we take the choice whose worst case is bounded per element.

    Error bound (then round to nearest, ties to even): with q the result and k the block's exponent,
    |q - x| <= |x| / 5 where |x| >= 2**k, and |q - x| <= 2**k / 4 below that, which is < max|x| / 12 (unless
    the block is so small, below 2**-125, that k clamps at -127).
    """
    experts, n_in, n_out = _check_weight(weight)
    weight = weight.detach()
    blocks = torch.empty(experts, n_out, n_in // BLOCK, BLOCK // 2, dtype=torch.uint8, device=weight.device)
    scales = torch.empty(experts, n_out, n_in // BLOCK, dtype=torch.uint8, device=weight.device)
    for e in range(experts):
        blocks[e], scales[e] = _pack_one(weight[e])
    return blocks, scales


def _pack_one(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Work in the parameter's own [in, out] order, where each block of 32 runs down a column and every
    # elementwise op reads contiguous memory; only the uint8 result is transposed to the checkpoint's order.
    # float32 holds bf16 / fp16 exactly; float64 input is rounded to it first, which can only change the result
    # for a value within 2**-24 (relative) of a rounding midpoint.
    n_in, n_out = w.shape
    x = w.to(torch.float32).contiguous().reshape(n_in // BLOCK, BLOCK, n_out)
    amax = x.abs().amax(dim=1)  # [in/32, out]; amax propagates NaN
    if not torch.isfinite(amax).all():
        raise ValueError("cannot pack an expert weight holding inf or NaN; MXFP4 has no code for them.")
    # amax = m * 2**p with m in [0.5, 1) exactly, so amax <= 6 * 2**k  <=>  k >= p - 3 (m <= 0.75) or p - 2.
    mantissa, exponent = torch.frexp(amax)
    k = exponent - 3 + (mantissa > 0.75).to(exponent.dtype)
    # An all-zero block takes the smallest scale (any would do); tiny blocks clamp to it and round toward 0.
    # The top never clamps: float32 tops out below 6 * 2**126.
    k = torch.where(amax > 0, k, -SCALE_BIAS).clamp(-SCALE_BIAS, 254 - SCALE_BIAS)
    # Scaling by an exact power of two is exact (a value that underflows would round to code 0 anyway).
    magnitude = x.abs().mul_(_e8m0_powers(x.device)[SCALE_BIAS - k.long()].unsqueeze(1))
    code = torch.bucketize(magnitude, _bounds(x.device), out_int32=True).to(torch.uint8)
    # The sign bit follows the float's, so -0.0 (and a small negative that rounds to 0) keeps code 8: unpack
    # then gives back the same bytes' value, and pack(unpack(b, s)) reproduces every code, not just 15 of 16.
    code |= torch.signbit(x).to(torch.uint8) << 3
    packed = code[:, 0::2] | (code[:, 1::2] << 4)  # low nibble = even element; [in/32, 16, out]
    return packed.permute(2, 0, 1), (k + SCALE_BIAS).to(torch.uint8).T


def _bounds(device) -> torch.Tensor:
    """Boundaries for `bucketize` (code = how many lie strictly below the magnitude) that round to nearest E2M1
    magnitude, ties to even: a tie that goes up has its boundary moved one float32 step down."""
    mids = torch.tensor(_MIDPOINTS, dtype=torch.float32, device=device)
    lower = torch.nextafter(mids, torch.zeros_like(mids))
    return torch.where(torch.tensor(_TIE_GOES_UP, device=device), lower, mids)


def unpack(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Dequantize (blocks [E, out, in/32, 16], scales [E, out, in/32]) to the model layout [E, in, out]."""
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise ValueError(f"blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}.")
    if blocks.dim() != 4 or blocks.shape[-1] != BLOCK // 2 or blocks.shape[:-1] != scales.shape:
        raise ValueError(
            f"expected blocks [E, out, in/32, 16] and scales [E, out, in/32], got {tuple(blocks.shape)} and "
            f"{tuple(scales.shape)}."
        )
    experts, n_out, groups, _ = blocks.shape
    values = torch.tensor(FP4_VALUES, dtype=torch.float32, device=blocks.device)
    powers = _e8m0_powers(blocks.device)
    out = torch.empty(experts, groups * BLOCK, n_out, dtype=dtype, device=blocks.device)
    for e in range(experts):
        b = blocks[e].long()
        codes = torch.stack((b & 0x0F, b >> 4), dim=-1).reshape(n_out, groups, BLOCK)
        # code * 2**k is exact in float32 (a code has at most two significant bits), so the cast to bf16 is the
        # only rounding and there is none for bf16, which spans float32's exponent range.
        dense = values[codes] * powers[scales[e].long()].unsqueeze(-1)
        out[e] = dense.reshape(n_out, groups * BLOCK).T.to(dtype)
    return out


def _e8m0_powers(device) -> torch.Tensor:
    """The 256 e8m0 values, 2**(s - 127), built from float32 bit patterns so each one is exact."""
    s = torch.arange(256, dtype=torch.int32, device=device)
    bits = torch.where(s > 0, s << 23, torch.full_like(s, 1 << 22))  # s = 0: 2**-127 is a float32 subnormal
    bits[255] = 0x7FC00000  # the spec's NaN
    return bits.view(torch.float32)


def quantize_error(weight: torch.Tensor) -> float:
    """Relative RMS error of MXFP4 on `weight` [E, in, out]: ||unpack(pack(w)) - w|| / ||w|| (0 for all zeros)."""
    _check_weight(weight)
    blocks, scales = pack(weight)
    err = norm = 0.0
    for e in range(weight.shape[0]):
        w = weight[e].detach().to(torch.float64)
        q = unpack(blocks[e : e + 1], scales[e : e + 1], dtype=torch.float64)[0]
        err += float(((q - w) ** 2).sum())
        norm += float((w**2).sum())
    return (err / norm) ** 0.5 if norm else 0.0


def expert_tensor_names(num_layers: int) -> list[str]:
    """The checkpoint names of the packed expert tensors, layer by layer, in gpt-oss's own spelling."""
    if num_layers < 0:
        raise ValueError(f"num_layers must be >= 0, got {num_layers}.")
    return [
        f"model.layers.{i}.mlp.experts.{proj}_{part}"
        for i in range(num_layers)
        for proj in EXPERT_PROJECTIONS
        for part in ("blocks", "scales")
    ]


def _check_weight(weight: torch.Tensor) -> tuple[int, int, int]:
    if weight.dim() != 3 or not weight.is_floating_point():
        raise ValueError(
            f"expected a float expert weight [experts, in, out], got {weight.dtype} of shape {tuple(weight.shape)}."
        )
    experts, n_in, n_out = weight.shape
    if n_in % BLOCK:
        raise ValueError(
            f"cannot pack a weight of shape {tuple(weight.shape)}: its input dimension ({n_in}, dim 1 of the "
            f"[experts, in, out] layout) must be a multiple of {BLOCK}, the MXFP4 block size."
        )
    return experts, n_in, n_out
