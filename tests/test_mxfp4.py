"""MXFP4 pack / unpack: exact on representable values, byte-for-byte what transformers reads, bounded error."""

from __future__ import annotations

import json

import pytest
import torch

from ossft.gptoss import mxfp4


def _random_packed(experts=3, n_out=48, n_in=96, seed=0, spread=20):
    """Random blocks and scales in canonical form: each block's largest |code| is 4 or 6.

    Canonical because pack picks the smallest exponent with max|x| <= 6 * 2**k: a block topping at 4 or 6
    keeps its exponent, while one topping at, say, 3 would be stored as 6 at half the scale (same values,
    other bytes). Scales stay in 2**-spread .. 2**spread: with the default every value is a normal bf16.
    """
    g = torch.Generator().manual_seed(seed)
    groups = n_in // 32
    codes = torch.randint(0, 16, (experts, n_out, groups, 32), generator=g, dtype=torch.uint8)
    # Force one element per block to +-4 or +-6 (codes 6, 7, 14, 15).
    top = torch.tensor([6, 7, 14, 15], dtype=torch.uint8)[torch.randint(0, 4, (experts, n_out, groups), generator=g)]
    where = torch.randint(0, 32, (experts, n_out, groups, 1), generator=g)
    codes.scatter_(-1, where, top.unsqueeze(-1))
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    scales = torch.randint(127 - spread, 127 + spread + 1, (experts, n_out, groups), generator=g, dtype=torch.uint8)
    return codes, blocks, scales


def _dense(codes, scales):
    """The test's own decode, straight from the spec: [E, out, in] values, transposed to [E, in, out]."""
    table = torch.tensor(mxfp4.FP4_VALUES, dtype=torch.float64)
    values = table[codes.long()] * torch.pow(2.0, scales.double() - 127).unsqueeze(-1)
    e, n_out, groups, _ = codes.shape
    return values.reshape(e, n_out, groups * 32).transpose(1, 2)


def test_fp4_table():
    assert mxfp4.FP4_VALUES[:8] == (0, 0.5, 1, 1.5, 2, 3, 4, 6)
    assert mxfp4.FP4_VALUES[8:] == tuple(-v for v in mxfp4.FP4_VALUES[:8])


def test_round_trip_exact_and_pack_reproduces_the_bytes():
    codes, blocks, scales = _random_packed()
    w = _dense(codes, scales).to(torch.bfloat16)
    assert torch.equal(w.double(), _dense(codes, scales))  # all representable in bf16, so nothing rounded yet

    assert torch.equal(mxfp4.unpack(blocks, scales), w)
    assert torch.equal(mxfp4.unpack(blocks, scales, dtype=torch.float32), w.float())
    packed_blocks, packed_scales = mxfp4.pack(w)
    assert torch.equal(packed_scales, scales)
    assert torch.equal(packed_blocks, blocks)  # -0.0 included: its sign bit survives
    for dtype in (torch.float32, torch.float64):  # any float input, same bytes
        b, s = mxfp4.pack(mxfp4.unpack(blocks, scales, dtype=dtype))
        assert torch.equal(b, blocks) and torch.equal(s, scales)
    codes, blocks, scales = _random_packed(seed=3, spread=8)  # fp16 holds 2**-9 .. 6 * 2**8 exactly
    b, s = mxfp4.pack(mxfp4.unpack(blocks, scales, dtype=torch.float16))
    assert torch.equal(b, blocks) and torch.equal(s, scales)


def test_transformers_dequantizes_our_bytes_to_the_packed_values():
    """The acceptance test: transformers' own MXFP4 -> dense conversion reads our bytes as the values we packed."""
    from transformers.integrations.mxfp4 import convert_moe_packed_tensors

    codes, blocks, scales = _random_packed(experts=2, n_out=80, n_in=64, seed=1)  # in != out: catches a transpose
    w = _dense(codes, scales).to(torch.bfloat16)
    theirs = convert_moe_packed_tensors(*mxfp4.pack(w), dtype=torch.bfloat16)
    assert theirs.shape == w.shape == (2, 64, 80)
    assert torch.equal(theirs, w)

    # And on weights that are not representable: they decode our rounding exactly as we do.
    g = torch.Generator().manual_seed(2)
    w = torch.randn(2, 96, 40, generator=g).to(torch.bfloat16)
    blocks, scales = mxfp4.pack(w)
    assert torch.equal(convert_moe_packed_tensors(blocks, scales, dtype=torch.bfloat16), mxfp4.unpack(blocks, scales))


def test_checkpoint_with_our_tensors_loads_through_mxfp4_dequantize(tmp_path):
    """End to end: a gpt-oss checkpoint whose experts we packed loads with Mxfp4Config(dequantize=True) to our values."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM, GptOssConfig, GptOssForCausalLM, Mxfp4Config

    config = GptOssConfig(
        num_hidden_layers=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        hidden_size=64,
        intermediate_size=96,  # gate_up [E, 64, 192], down [E, 96, 64]: no square shape to hide a transpose
        head_dim=16,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        layer_types=["sliding_attention", "full_attention"],
    )
    torch.manual_seed(0)
    GptOssForCausalLM(config).to(torch.bfloat16).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    expected = {}
    for name in [n for n in state if n.endswith(mxfp4.EXPERT_PROJECTIONS)]:
        blocks, scales = mxfp4.pack(state.pop(name))
        state[f"{name}_blocks"], state[f"{name}_scales"] = blocks, scales
        expected[name] = mxfp4.unpack(blocks, scales)
    assert sorted(n for n in state if n.endswith(("_blocks", "_scales"))) == sorted(mxfp4.expert_tensor_names(2))
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config_path = tmp_path / "config.json"
    config_json = json.loads(config_path.read_text())
    config_json["quantization_config"] = {"quant_method": "mxfp4"}
    config_path.write_text(json.dumps(config_json))

    model, info = AutoModelForCausalLM.from_pretrained(
        tmp_path, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.bfloat16, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    params = dict(model.named_parameters())
    for name, value in expected.items():
        assert torch.equal(params[name], value), name


def test_error_bound_on_gaussian_weights():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 2880, 64, generator=g).to(torch.bfloat16)
    error = mxfp4.quantize_error(w)
    assert 0.10 < error < 0.125  # measured 0.1154 (seeds 0-2: 0.1151-0.1154)
    assert mxfp4.quantize_error(w * 1e-3) == pytest.approx(error, rel=0.01)  # scale-free
    first, again = mxfp4.pack(w), mxfp4.pack(w.clone())
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])

    # The per-element bound from pack's docstring: |q - x| <= max(|x| / 5, 2**k / 4).
    blocks, scales = first
    x = w.double()
    q = mxfp4.unpack(blocks, scales, dtype=torch.float64)
    step = torch.pow(2.0, scales.double() - 127).repeat_interleave(32, dim=-1).transpose(1, 2)
    assert ((q - x).abs() <= torch.maximum(x.abs() / 5, step / 4)).all()
    assert (q.abs().amax() <= x.abs().amax()) and (x.abs() <= 6 * step).all()  # nothing clipped


def test_rounding_is_nearest_with_ties_to_even():
    w = torch.zeros(1, 32, 1)
    ties = [0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]
    w[0, : len(ties), 0] = torch.tensor(ties)
    w[0, 7:10, 0] = torch.tensor([0.2499, 0.7501, -5.01])
    w[0, 10, 0] = 6.0  # sets the scale to 2**0
    blocks, scales = mxfp4.pack(w)
    assert scales.item() == 127
    got = mxfp4.unpack(blocks, scales, dtype=torch.float32)[0, :11, 0].tolist()
    assert got == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 0.0, 1.0, -6.0, 6.0]


def test_scale_is_the_smallest_that_does_not_clip():
    for amax, scale in [(6.0, 127), (4.0, 127), (6.01, 128), (3.0, 126), (3.01, 127), (0.75, 124), (1e-3, 115)]:
        w = torch.zeros(1, 32, 1)
        w[0, 3, 0] = -amax
        assert mxfp4.pack(w)[1].item() == scale, amax
    assert mxfp4.pack(torch.zeros(1, 32, 2))[1].tolist() == [[[0], [0]]]  # all zero: smallest scale


def test_nibble_order_low_nibble_is_the_even_element():
    codes = [7, 1, 0, 15, 9, 2, 8, 14] + [0] * 24  # +6, +0.5, 0, -6, -0.5, +1, -0, -4, zeros
    w = torch.tensor([mxfp4.FP4_VALUES[c] for c in codes]).reshape(1, 32, 1)
    blocks, scales = mxfp4.pack(w)
    assert blocks.shape == (1, 1, 1, 16) and scales.shape == (1, 1, 1)
    assert scales.item() == 127
    assert blocks[0, 0, 0, :4].tolist() == [0x17, 0xF0, 0x29, 0xE8]
    assert blocks[0, 0, 0, 4:].tolist() == [0] * 12


def test_layout_blocks_run_along_the_input_dimension():
    # One nonzero weight at [expert 1, in 37, out 2]: block 1 of row (1, 2), element 5 -> byte 2, high nibble.
    w = torch.zeros(2, 64, 3)
    w[1, 37, 2] = 1.5
    blocks, scales = mxfp4.pack(w)
    assert blocks.shape == (2, 3, 2, 16) and scales.shape == (2, 3, 2)
    assert blocks.nonzero().tolist() == [[1, 2, 1, 2]]
    assert blocks[1, 2, 1, 2].item() == 7 << 4  # 1.5 = 6 * 2**-2: code 7
    assert scales[1, 2, 1].item() == 127 - 2  # 1.5 <= 6 * 2**-2


def test_in_not_a_multiple_of_32_is_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        mxfp4.pack(torch.zeros(2, 48, 32))
    with pytest.raises(ValueError, match="multiple of 32"):
        mxfp4.quantize_error(torch.zeros(2, 33, 64))
    with pytest.raises(ValueError, match="inf or NaN"):
        mxfp4.pack(torch.full((1, 32, 1), float("nan")))


def test_expert_tensor_names():
    names = mxfp4.expert_tensor_names(2)
    assert names[:4] == [
        "model.layers.0.mlp.experts.gate_up_proj_blocks",
        "model.layers.0.mlp.experts.gate_up_proj_scales",
        "model.layers.0.mlp.experts.down_proj_blocks",
        "model.layers.0.mlp.experts.down_proj_scales",
    ]
    assert len(names) == 8 and names[-1] == "model.layers.1.mlp.experts.down_proj_scales"
    assert len(mxfp4.expert_tensor_names(24)) == 96
