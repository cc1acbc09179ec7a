"""ossft's attention against transformers' eager gpt-oss attention, in float64 on CPU.

The reference never uses ossft's mask code: each document runs alone through transformers'
`eager_attention_forward` with a causal (and sliding-window) mask built here. The mutation tests
break the sink factor, the window and the document rule in turn, and show the comparison then fails.

Public `flex_attention` refuses a backward on CPU (torch/nn/attention/flex_attention.py,
`_validate_device`, "TODO: Remove once non cuda/cpu devices support is added"); the fixture below
lifts that check for these tests only, which runs flex's unfused reference path, the same math the
compiled kernel fuses.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from ossft.model import documents, sink_attention  # noqa: E402
from ossft.model.documents import BlockMasks, document_ids  # noqa: E402

pytestmark = pytest.mark.unit

EXACT = 1e-10  # float64: the two paths differ only in the order of their sums


@pytest.fixture(autouse=True)
def flex_backward_on_cpu(monkeypatch):
    import torch.nn.attention.flex_attention as flex

    monkeypatch.setattr(flex, "_validate_device", lambda *tensors: None)
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")


def reference(query, key, value, sinks, lengths, window):
    """transformers' eager gpt-oss attention on each document alone, concatenated."""
    from types import SimpleNamespace

    from transformers.models.gpt_oss.modeling_gpt_oss import eager_attention_forward

    module = SimpleNamespace(sinks=sinks, num_key_value_groups=query.shape[1] // key.shape[1], training=True)
    outputs, start = [], 0
    for length in lengths:
        part = slice(start, start + length)
        i = torch.arange(length)
        allowed = i[:, None] >= i[None, :]
        if window is not None:
            allowed &= i[:, None] - i[None, :] < window
        mask = torch.zeros(length, length, dtype=query.dtype).masked_fill(~allowed, torch.finfo(query.dtype).min)
        out, _ = eager_attention_forward(
            module, query[:, :, part], key[:, :, part], value[:, :, part], mask, scaling=query.shape[-1] ** -0.5
        )
        outputs.append(out)
        start += length
    return torch.cat(outputs, dim=1)


def kernel_error(lengths, window, heads=4, kv_heads=2, head_dim=16, attend=None, seed=0):
    """Largest difference of outputs and of the q, k, v and sink gradients, ossft_flex vs the reference."""
    attend = attend or sink_attention.sink_attention
    g = torch.Generator().manual_seed(seed)
    total = sum(lengths)
    shapes = {"q": (1, heads, total, head_dim), "k": (1, kv_heads, total, head_dim),
              "v": (1, kv_heads, total, head_dim), "sinks": (heads,)}  # fmt: skip
    base = {n: torch.randn(*s, generator=g, dtype=torch.float64) for n, s in shapes.items()}
    cotangent = torch.randn(1, total, heads, head_dim, generator=g, dtype=torch.float64)

    def run(fn):
        leaves = {n: t.clone().requires_grad_() for n, t in base.items()}
        out = fn(leaves)
        (out * cotangent).sum().backward()
        zero = torch.zeros(())
        return out.detach(), {n: (t.grad if t.grad is not None else zero) for n, t in leaves.items()}

    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    mask = BlockMasks().get(document_ids(total, cu_seq_lens=cu), None, window)

    def ours(t):
        from types import SimpleNamespace

        module = SimpleNamespace(sinks=t["sinks"])
        return attend(module, t["q"], t["k"], t["v"], mask, scaling=head_dim**-0.5, s_aux=t["sinks"])[0]

    got, got_grads = run(ours)
    want, want_grads = run(lambda t: reference(t["q"], t["k"], t["v"], t["sinks"], lengths, window))
    errors = [(got - want).abs().max()] + [(got_grads[n] - want_grads[n]).abs().max() for n in base]
    return float(max(errors))


LAYOUTS = {
    "one document": [96],
    "eight documents, 1-150 tokens": [1, 150, 17, 64, 65, 3, 120, 33],
    "shorter than the window, and longer": [5, 300],
}


@pytest.mark.parametrize("lengths", LAYOUTS.values(), ids=LAYOUTS.keys())
@pytest.mark.parametrize("window", [None, 64, 7])
@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (8, 1)])
def test_outputs_and_gradients_equal_eager_per_document(lengths, window, heads, kv_heads):
    assert kernel_error(lengths, window, heads, kv_heads) < EXACT


def test_the_padding_mask_hides_padded_keys():
    documents_ = document_ids(48, batch=1)
    padding = torch.ones(1, 48, dtype=torch.bool)
    padding[0, 40:] = False  # right padding: keys 40..47 are padding
    dense = documents.dense_allowed(documents_, padding, window=None)[0, 0]
    assert not dense[:, 40:].any()
    assert torch.equal(dense[:40, :40], torch.ones(40, 40, dtype=torch.bool).tril())
    assert dense[40:, :40].equal(torch.ones(8, 40, dtype=torch.bool))  # padded queries see the real keys only


def test_documents_come_from_position_resets_or_cu_seq_lens():
    positions = torch.tensor([[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]])
    from_positions = document_ids(10, position_ids=positions)
    assert from_positions.tolist() == [[0, 0, 0, 1, 1, 2, 3, 3, 3, 3]]
    cu = torch.tensor([0, 3, 5, 6, 10], dtype=torch.int32)
    assert document_ids(10, cu_seq_lens=cu).tolist() == from_positions.tolist()
    # HF generate's left padding (position 1 on the pads, then 0, 1, 2, ...) is one document after the pads.
    assert document_ids(5, position_ids=torch.tensor([[1, 1, 0, 1, 2]])).tolist() == [[0, 1, 2, 2, 2]]


# --- mutations: each breaks one rule, and the comparison above must then fail --------------------


def without_sink(module, q, k, v, mask, scaling=None, s_aux=None, **kwargs):
    return sink_attention.sink_attention(module, q, k, v, mask, scaling=scaling, s_aux=None)


def test_mutation_without_the_sink_factor_fails():
    assert kernel_error(LAYOUTS["eight documents, 1-150 tokens"], 64, attend=without_sink) > 0.1


def test_mutation_without_the_window_fails(monkeypatch):
    real = documents.allowed_keys
    monkeypatch.setattr(documents, "allowed_keys", lambda docs, padding=None, window=None: real(docs, padding, None))
    assert kernel_error(LAYOUTS["shorter than the window, and longer"], 64) > 0.1


def test_mutation_without_the_document_rule_fails(monkeypatch):
    real = documents.allowed_keys
    monkeypatch.setattr(
        documents, "allowed_keys", lambda docs, padding=None, window=None: real(torch.zeros_like(docs), padding, window)
    )
    assert kernel_error(LAYOUTS["eight documents, 1-150 tokens"], None) > 0.1


def test_mutation_with_the_lse_rounded_to_bf16_is_measurably_worse():
    """transformers' flex path casts the lse to bf16 before the sink factor; in float64 that shows."""
    from torch.nn.attention.flex_attention import AuxRequest, flex_attention

    def bf16_lse(module, q, k, v, mask, scaling=None, s_aux=None, **kwargs):
        out, aux = flex_attention(
            q, k, v, block_mask=mask, scale=scaling, enable_gqa=True, return_aux=AuxRequest(lse=True)
        )
        lse = aux.lse.to(torch.bfloat16).to(q.dtype)
        return (out * torch.sigmoid(lse - s_aux.view(1, -1, 1)).unsqueeze(-1)).transpose(1, 2), None

    assert kernel_error(LAYOUTS["one document"], None, attend=bf16_lse) > 1e-4


# --- the self-check a GPU run does before it trusts the compiled kernel ---------------------------


def test_the_self_check_passes_the_kernel_and_fails_a_broken_one():
    good = sink_attention.check_kernel("cpu")
    assert good.passed, good.describe()
    assert good.output_error < sink_attention.CHECK_TOLERANCE["output"] / 2
    broken = sink_attention.check_kernel("cpu", attend=without_sink)
    assert not broken.passed
    assert broken.output_error > 0.3 and "differs from" in broken.describe()


def test_block_masks_are_reused_per_layout_and_the_oldest_dropped():
    masks = BlockMasks(kept=2)
    cu = torch.tensor([0, 100, 256], dtype=torch.int32)
    first = masks.get(document_ids(256, cu_seq_lens=cu), None, 64)
    assert masks.get(document_ids(256, cu_seq_lens=cu.clone()), None, 64) is first  # same layout, new tensors
    other_window = masks.get(document_ids(256, cu_seq_lens=cu), None, None)
    assert other_window is not first
    other_documents = masks.get(document_ids(256, cu_seq_lens=torch.tensor([0, 101, 256], dtype=torch.int32)), None, 64)
    assert other_documents is not first and len(masks.masks) == 2
    assert masks.get(document_ids(256, cu_seq_lens=cu), None, 64) is not first  # dropped, built again
