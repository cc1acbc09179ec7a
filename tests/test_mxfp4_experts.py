"""model.mxfp4_experts: a LoRA model whose frozen experts stay MXFP4 gives the logits and the LoRA
gradients of the same model with its experts dequantized at load, on the tiny MXFP4 checkpoint, in
float32 and bf16; altering the dequantization or the backward of the autograd function breaks that."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from ossft.errors import UserError  # noqa: E402
from ossft.model import expert_kernels  # noqa: E402
from ossft.model.load import apply_lora, keep_frozen_experts_in_mxfp4, load_model  # noqa: E402
from ossft.model.mxfp4_experts import Mxfp4Experts  # noqa: E402
from ossft.model.tiny import TinySpec, write_tiny_model  # noqa: E402
from ossft.recipe.load import load_recipe  # noqa: E402

from .conftest import REPO  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def mxfp4_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("mx") / "tiny-mxfp4", TinySpec(layers=2, experts=8), mxfp4=True)


def recipe_for(folder, dtype: str, mxfp4_experts: bool | None, experts="all"):
    overrides = [f"model.base_model={folder}", f"model.dtype={dtype}"]
    if mxfp4_experts is not None:  # None: the default for this checkpoint
        overrides.append(f"model.mxfp4_experts={str(mxfp4_experts).lower()}")
    return load_recipe(REPO / "recipes" / "quickstart.yaml", [*overrides, f"lora.experts={experts}"])


def lora_model(folder, dtype: str, mxfp4_experts: bool, experts="all"):
    recipe = recipe_for(folder, dtype, mxfp4_experts, experts)
    torch.manual_seed(0)  # the same lora_A in both models
    model = apply_lora(load_model(recipe), recipe)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero lora_B, so every LoRA factor gets a gradient and changes the logits
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return keep_frozen_experts_in_mxfp4(model, recipe).train()


def logits_and_grads(model, seed=0):
    ids = torch.randint(0, 1000, (2, 48), generator=torch.Generator().manual_seed(seed))
    model.zero_grad()
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach().float(), grads


def differences(a, b) -> tuple[float, float]:
    """(largest logit difference, largest LoRA-gradient difference relative to that gradient's largest value)."""
    (logits_a, grads_a), (logits_b, grads_b) = a, b
    assert grads_a.keys() == grads_b.keys() and any("experts" in n for n in grads_a)
    relative = max(((grads_a[n] - grads_b[n]).abs().max() / grads_a[n].abs().max()).item() for n in grads_a)
    return (logits_a - logits_b).abs().max().item(), relative


def largest_difference(a, b) -> float:
    return max(differences(a, b))


# The backward differs from autograd's own grouped-GEMM backward only in the order of its sums: one
# rounding of the dtype, relative to each gradient's largest value (measured 3.6e-7 in float32, 0 in bf16).
GRADIENT_TOLERANCE = {"float32": 4e-6, "bfloat16": 2e-2}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_mxfp4_experts_give_the_dequantized_paths_logits_and_lora_gradients(mxfp4_dir, dtype):
    dense = lora_model(mxfp4_dir, dtype, False)
    kept = lora_model(mxfp4_dir, dtype, True)
    experts = [m for m in kept.modules() if isinstance(m, Mxfp4Experts)]
    assert len(experts) == 2
    assert experts[0].gate_up_proj_blocks.dtype == torch.uint8 and "gate_up_proj" not in dict(
        experts[0].named_parameters()
    )
    logits, gradients = differences(logits_and_grads(dense), logits_and_grads(kept))
    assert logits == 0.0  # the same values through the same forward operations: bitwise
    assert gradients < GRADIENT_TOLERANCE[dtype]


def test_chunks_of_experts_change_nothing(mxfp4_dir, monkeypatch):
    whole = logits_and_grads(lora_model(mxfp4_dir, "float32", True))
    monkeypatch.setattr(expert_kernels.facts, "DEQUANTIZED_CHUNK_BYTES", 1)  # one expert at a time
    assert largest_difference(whole, logits_and_grads(lora_model(mxfp4_dir, "float32", True))) < 1e-5


def test_layers_without_expert_lora_run_in_mxfp4_too(mxfp4_dir):
    dense = lora_model(mxfp4_dir, "float32", False, experts="[1]")
    kept = lora_model(mxfp4_dir, "float32", True, experts="[1]")
    assert sum(isinstance(m, Mxfp4Experts) for m in kept.modules()) == 2
    assert largest_difference(logits_and_grads(dense), logits_and_grads(kept)) < 1e-5


def saved_expert_weights(model) -> list:
    """Float tensors of an expert weight's shape ([experts, in, out] or its transpose) autograd saved."""
    h, i = model.config.hidden_size, model.config.intermediate_size
    shapes = {(h, 2 * i), (2 * i, h), (i, h), (h, i)}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        logits_and_grads(model)
    return [t for t in saved if t.is_floating_point() and t.dim() == 3 and tuple(t.shape[1:]) in shapes]


def test_the_backward_keeps_nothing_dequantized(mxfp4_dir):
    assert saved_expert_weights(lora_model(mxfp4_dir, "float32", False))  # the control: bf16 weights are saved
    assert saved_expert_weights(lora_model(mxfp4_dir, "float32", True)) == []


# --- mutations: each alters the dequantization or the autograd function, and equality must fail ----


def test_mutation_of_the_dequantization_fails(mxfp4_dir, monkeypatch):
    dense = logits_and_grads(lora_model(mxfp4_dir, "float32", False))
    real = expert_kernels.unpack
    monkeypatch.setattr(expert_kernels, "unpack", lambda b, s, dtype: real(b, s, dtype) * 1.01)
    assert largest_difference(dense, logits_and_grads(lora_model(mxfp4_dir, "float32", True))) > 1e-3


def test_mutation_of_the_backward_fails(mxfp4_dir, monkeypatch):
    dense = logits_and_grads(lora_model(mxfp4_dir, "float32", False))
    real = expert_kernels.dequantized_grouped_matmul

    def halved_input_gradient(x, blocks, scales, counts, dtype, transpose):
        out = real(x, blocks, scales, counts, dtype, transpose)
        return out * 0.5 if transpose else out  # only the backward's product is wrong

    monkeypatch.setattr(expert_kernels, "dequantized_grouped_matmul", halved_input_gradient)
    assert largest_difference(dense, logits_and_grads(lora_model(mxfp4_dir, "float32", True))) > 1e-3


# --- what is refused -------------------------------------------------------------------------------


def test_full_fine_tuning_and_a_dense_checkpoint_are_refused(mxfp4_dir, tiny_model_dir):
    with pytest.raises(UserError, match="full fine-tuning trains the expert weights"):
        load_recipe(
            REPO / "recipes" / "quickstart.yaml",
            [f"model.base_model={mxfp4_dir}", "model.mxfp4_experts=true", "lora=null"],
        )
    with pytest.raises(UserError, match="has no MXFP4 experts"):
        load_model(recipe_for(tiny_model_dir, "float32", True))


@pytest.mark.parametrize(
    ("recipe", "overrides", "expected"),
    [
        ("gpt-oss-20b-lora-1gpu.yaml", [], True),  # LoRA from the released MXFP4 checkpoint, one GPU
        ("gpt-oss-20b-lora-2gpu.yaml", [], True),  # DDP: each GPU holds the whole model anyway
        ("gpt-oss-120b-lora-8gpu.yaml", [], False),  # FSDP2 shards bf16 weights, not MXFP4 buffers
        ("gpt-oss-20b-lora-zero3-8gpu.yaml", [], False),
        ("gpt-oss-20b-full-8gpu.yaml", [], False),  # full fine-tuning trains the experts
        ("gpt-oss-20b-lora-1gpu.yaml", ["model.mxfp4_experts=false"], False),
        ("gpt-oss-20b-lora-1gpu.yaml", ["lora.experts_delta=stacked"], False),
        ("gpt-oss-120b-lora-8gpu.yaml", ["model.mxfp4_experts=true"], True),  # asked for: kept
    ],
)
def test_which_runs_keep_their_experts_in_mxfp4_by_default(recipe, overrides, expected):
    assert load_recipe(REPO / "recipes" / recipe, overrides).experts_in_mxfp4() is expected


def test_a_local_checkpoint_counts_by_its_config(mxfp4_dir, tiny_model_dir):
    assert recipe_for(mxfp4_dir, "float32", None).experts_in_mxfp4() is True
    assert recipe_for(tiny_model_dir, "float32", None).experts_in_mxfp4() is False
