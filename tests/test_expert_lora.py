"""expert_lora.py: LoRA on the experts applied per routed token equals PEFT's stacked delta, in the forward,
the gradients and after optimizer steps, and gives way to PEFT wherever it does not apply."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import ParamWrapper
from transformers import AutoModelForCausalLM

from ossft.model import expert_kernels, expert_lora
from ossft.model.expert_lora import RoutedExpertsLora, use_routed_expert_lora
from ossft.model.load import apply_lora
from ossft.model.tiny import TinySpec, write_tiny_model

LAYERS = 2
EXPERTS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


@pytest.fixture(scope="module")
def tiny2_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny2") / "tiny-gpt-oss-2", TinySpec(layers=LAYERS))


def stacked_and_routed(folder, dtype, r=8, experts_implementation="eager"):
    """Two copies of one LoRA model with non-zero B (so the delta counts): PEFT's forward, and routed."""
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, experts_implementation=experts_implementation)
    config = LoraConfig(r=r, lora_alpha=16, target_modules=["q_proj"], target_parameters=EXPERTS)
    stacked = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in stacked.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    routed = copy.deepcopy(stacked)
    assert use_routed_expert_lora(routed) == LAYERS
    return stacked, routed


def batch(seed=0):
    ids = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids}


def lora_grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.mark.parametrize("r", [8, 3])  # 3: the factors are padded with zeros to the aligned rank 8
def test_routed_equals_stacked_in_float64(tiny2_dir, r):
    stacked, routed = stacked_and_routed(tiny2_dir, torch.float64, r=r)
    out_stacked, out_routed = stacked(**batch()), routed(**batch())
    assert torch.allclose(out_routed.logits, out_stacked.logits, rtol=0, atol=1e-12)
    with stacked.disable_adapter():
        base_logits = stacked(batch()["input_ids"]).logits
    assert (out_routed.logits - base_logits).abs().max() > 0.1  # the experts' LoRA matters in this test
    out_stacked.loss.backward()
    out_routed.loss.backward()
    grads = lora_grads(routed)
    assert sum("experts" in name for name in grads) == 4 * LAYERS  # lora_A and lora_B of two weights
    assert max_difference(grads, lora_grads(stacked)) < 1e-12


def test_routed_trains_like_stacked(tiny2_dir):
    stacked, routed = stacked_and_routed(tiny2_dir, torch.float64)
    for model in (stacked, routed):
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for step in range(3):
            model(**batch(step)).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    trained = {n: p.detach() for n, p in routed.named_parameters() if p.requires_grad}
    reference = {n: p.detach() for n, p in stacked.named_parameters() if p.requires_grad}
    assert max_difference(trained, reference) < 1e-10
    assert routed.state_dict().keys() == stacked.state_dict().keys()  # the same adapter files


def test_grouped_gemm_matches_the_per_expert_loop(tiny2_dir, monkeypatch):
    # float32 on CPU takes torch's grouped_mm; the loop is the reference it must agree with.
    _, routed = stacked_and_routed(tiny2_dir, torch.float32)
    experts = routed.get_base_model().model.layers[0].mlp.experts.get_base_layer()
    assert expert_kernels.grouped_mm_usable(experts.gate_up_proj)
    grouped = routed(**batch())
    grouped.loss.backward()
    grouped_grads = {k: v.clone() for k, v in lora_grads(routed).items()}
    routed.zero_grad()
    monkeypatch.setattr(expert_kernels, "grouped_mm_usable", lambda weight: False)
    looped = routed(**batch())
    looped.loss.backward()
    assert torch.allclose(grouped.logits, looped.logits, rtol=0, atol=1e-5)
    assert max_difference(grouped_grads, lora_grads(routed)) < 1e-6


def test_disabled_or_merged_adapters_go_through_peft(tiny2_dir):
    _, routed = stacked_and_routed(tiny2_dir, torch.float64)
    base = AutoModelForCausalLM.from_pretrained(tiny2_dir, dtype=torch.float64, experts_implementation="eager")
    ids = batch()["input_ids"]
    with torch.no_grad():
        with routed.disable_adapter():
            assert torch.equal(routed(ids).logits, base(ids).logits)
        with_lora = routed(ids).logits
        merged = routed.merge_and_unload()
        assert not any(isinstance(m, ParamWrapper) for m in merged.modules())
        assert torch.allclose(merged(ids).logits, with_lora, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("delta", "wrapped"), [("routed", LAYERS), ("stacked", 0)])
def test_recipe_chooses_the_expert_delta(quickstart_recipe, tiny2_dir, delta, wrapped):
    recipe = quickstart_recipe.model_copy(deep=True)
    recipe.model.base_model = str(tiny2_dir)
    recipe.lora.experts_delta = delta
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny2_dir), recipe)
    assert sum(isinstance(m, RoutedExpertsLora) for m in model.modules()) == wrapped
    assert sum(isinstance(m, ParamWrapper) for m in model.modules()) == 2 * LAYERS  # gate_up and down, nested


def test_quickstart_defaults_to_routed(quickstart_recipe):
    assert quickstart_recipe.lora.experts == "all"
    assert quickstart_recipe.lora.experts_delta == "routed"


def test_another_weight_layout_goes_through_peft(tiny2_dir, monkeypatch):
    # Were transformers to store the experts [experts, out, in], the routed product would be wrong: PEFT's
    # forward takes over, and the output stays PEFT's exactly.
    stacked, routed = stacked_and_routed(tiny2_dir, torch.float64)
    for layer in routed.get_base_model().model.layers:
        monkeypatch.setattr(layer.mlp.experts.get_base_layer(), "is_transposed", False)
    monkeypatch.setattr(expert_lora, "routed_experts_forward", None)  # would raise if it were called
    with torch.no_grad():
        assert torch.equal(routed(batch()["input_ids"]).logits, stacked(batch()["input_ids"]).logits)
