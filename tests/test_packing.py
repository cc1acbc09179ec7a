"""Packing is exact: the tiny gpt-oss, loaded by ossft with eager or ossft_flex attention, gives a packed
row (or a padded batch) the logits and every parameter gradient it gives each document alone, in
float64. The control: the same model without ossft's document masks (transformers' own) does not.
"""

from __future__ import annotations

import warnings

import pytest

torch = pytest.importorskip("torch")

from ossft.model.load import load_model  # noqa: E402
from ossft.model.sink_attention import check_kernel  # noqa: E402

pytestmark = pytest.mark.unit

LENGTHS = [1, 90, 17, 64, 65, 3, 150, 33]  # around the tiny model's window of 64, and a lone token
EXACT = 1e-9


@pytest.fixture(autouse=True)
def flex_backward_on_cpu(monkeypatch):
    # As in tests/test_attention.py: flex's unfused path, with torch's CPU-backward refusal lifted here only.
    import torch.nn.attention.flex_attention as flex

    monkeypatch.setattr(flex, "_validate_device", lambda *tensors: None)
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")


@pytest.fixture(scope="module")
def documents():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 1000, (n,), generator=g) for n in LENGTHS]


def tiny(recipe, tiny_model_dir, attention: str):
    recipe = recipe.model_copy(deep=True)
    recipe.model.base_model = str(tiny_model_dir)
    recipe.model.attn_implementation = attention
    recipe.model.dtype = "float32"
    recipe.model.experts_implementation = "eager"  # grouped_mm has no float64
    return load_model(recipe).double().train()


def logits_and_grads(model, batch: dict, pick, cotangents):
    """Logits of the real tokens (`pick` maps the model's output to one [tokens, vocab] per document)
    and the gradient of every parameter under a fixed cotangent on those logits."""
    model.zero_grad()
    parts = pick(model(**batch).logits)
    sum((part * c).sum() for part, c in zip(parts, cotangents)).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return [p.detach() for p in parts], grads


def alone(model, documents, cotangents):
    model.zero_grad()
    parts = [model(input_ids=d[None]).logits[0] for d in documents]
    sum((part * c).sum() for part, c in zip(parts, cotangents)).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return [p.detach() for p in parts], grads


def split(logits, lengths=LENGTHS):
    return list(logits[0].split(lengths))


def packed_batch(documents, with_cu_seq_lens: bool) -> dict:
    positions = torch.cat([torch.arange(len(d)) for d in documents])[None]
    batch = {"input_ids": torch.cat(documents)[None], "position_ids": positions}
    if with_cu_seq_lens:
        starts = torch.tensor([0, *torch.tensor(LENGTHS).cumsum(0).tolist()], dtype=torch.int32)
        batch |= {
            "cu_seq_lens_q": starts,
            "cu_seq_lens_k": starts,
            "max_length_q": max(LENGTHS),
            "max_length_k": max(LENGTHS),
        }
    return batch


def difference(a, b) -> float:
    logits_a, grads_a = a
    logits_b, grads_b = b
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 0
    return max(
        max((x - y).abs().max().item() for x, y in zip(logits_a, logits_b)),
        max((grads_a[k] - grads_b[k]).abs().max().item() for k in grads_a),
    )


def cotangents_for(lengths, vocab):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(n, vocab, generator=g, dtype=torch.float64) for n in lengths]


@pytest.mark.parametrize("attention", ["eager", "ossft_flex"])
@pytest.mark.parametrize("with_cu_seq_lens", [False, True], ids=["position_ids", "cu_seq_lens"])
def test_a_packed_row_equals_each_document_alone(
    quickstart_recipe, tiny_model_dir, documents, attention, with_cu_seq_lens
):
    model = tiny(quickstart_recipe, tiny_model_dir, attention)
    cotangents = cotangents_for(LENGTHS, model.config.vocab_size)
    want = alone(model, documents, cotangents)
    got = logits_and_grads(model, packed_batch(documents, with_cu_seq_lens), split, cotangents)
    assert difference(got, want) < EXACT


def test_control_without_document_masks_a_packed_row_is_wrong(quickstart_recipe, tiny_model_dir, documents):
    model = tiny(quickstart_recipe, tiny_model_dir, "eager")
    model.model._ossft_document_masks.remove()  # transformers' own masks: trap 2
    cotangents = cotangents_for(LENGTHS, model.config.vocab_size)
    want = alone(model, documents, cotangents)
    got = logits_and_grads(model, packed_batch(documents, True), split, cotangents)
    assert difference(got, want) > 0.1


@pytest.mark.parametrize("attention", ["eager", "ossft_flex"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_a_padded_batch_equals_each_document_alone(quickstart_recipe, tiny_model_dir, documents, attention, side):
    model = tiny(quickstart_recipe, tiny_model_dir, attention)
    chosen = documents[1:4]
    lengths = [len(d) for d in chosen]
    width = max(lengths)
    ids = torch.zeros(len(chosen), width, dtype=torch.long)
    mask = torch.zeros(len(chosen), width, dtype=torch.long)
    for row, d in enumerate(chosen):
        where = slice(0, len(d)) if side == "right" else slice(width - len(d), width)
        ids[row, where], mask[row, where] = d, 1

    def real_tokens(logits):
        return [logits[row][mask[row].bool()] for row in range(len(chosen))]

    cotangents = cotangents_for(lengths, model.config.vocab_size)
    want = alone(model, chosen, cotangents)
    # Left padding needs positions that start at each row's first real token, as generate gives them.
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    got = logits_and_grads(
        model, {"input_ids": ids, "attention_mask": mask, "position_ids": positions}, real_tokens, cotangents
    )
    assert difference(got, want) < EXACT


@pytest.mark.parametrize("attention", ["eager", "ossft_flex"])
def test_packing_stays_exact_under_activation_checkpointing(quickstart_recipe, tiny_model_dir, documents, attention):
    model = tiny(quickstart_recipe, tiny_model_dir, attention)
    cotangents = cotangents_for(LENGTHS, model.config.vocab_size)
    want = alone(model, documents, cotangents)
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    got = logits_and_grads(model, packed_batch(documents, True), split, cotangents)
    assert difference(got, want) < EXACT


def test_trl_collator_output_through_the_model(quickstart_recipe, tiny_model_dir, documents):
    """TRL's padding-free batch, as the trainer hands it over, gives the padded batch's loss."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    model = tiny(quickstart_recipe, tiny_model_dir, "eager")
    examples = [{"input_ids": d.tolist()} for d in documents[1:5]]
    padded = DataCollatorForLanguageModeling(pad_token_id=0)(examples)
    flat = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)(examples)
    assert "attention_mask" not in flat and flat["input_ids"].shape[0] == 1
    with torch.no_grad():
        loss_padded = model(**padded).loss
        loss_flat = model(**flat).loss
    # transformers' loss casts the logits to float32 (loss_utils.ForCausalLMLoss), so float32's rounding.
    assert loss_flat.item() == pytest.approx(loss_padded.item(), rel=1e-6)
    model.model._ossft_document_masks.remove()  # the control: transformers' masks let the documents mix
    with torch.no_grad():
        assert model(**flat).loss.item() != pytest.approx(loss_padded.item(), rel=1e-3)


def test_the_fallback_leaves_ossft_flex_for_eager_when_the_check_fails(quickstart_recipe, tiny_model_dir, documents):
    from ossft.model.sink_attention import choose_attention
    from tests.test_attention import without_sink

    model = tiny(quickstart_recipe, tiny_model_dir, "ossft_flex")
    verdict = choose_attention(model, device="cpu", attend=without_sink)
    assert model.config._attn_implementation == "eager"
    assert verdict["attention"] == "eager" and not verdict["check"]["passed"]
    assert "falls back to eager" in verdict["note"]
    # ... and the model is still exact on packed rows, now through eager with document masks.
    cotangents = cotangents_for(LENGTHS, model.config.vocab_size)
    want = alone(model, documents, cotangents)
    got = logits_and_grads(model, packed_batch(documents, True), split, cotangents)
    assert difference(got, want) < EXACT
    kept = tiny(quickstart_recipe, tiny_model_dir, "ossft_flex")
    verdict = choose_attention(kept, device="cpu")
    assert kept.config._attn_implementation == "ossft_flex" and verdict["check"]["passed"]
    assert check_kernel("cpu").passed
