"""model/load.py: expert targets, which parameters LoRA trains, its effect on the forward pass, load errors."""

from __future__ import annotations

import pytest
import torch

from ossft.errors import UserError
from ossft.model.load import apply_lora, expert_targets, load_model, parameter_counts
from ossft.model.tiny import TinySpec, write_tiny_model

LAYERS = 4
PREFIX = "base_model.model.model.layers"
# Token ids inside the tiny vocabulary (1045 ids); 1032 is <|start|>, 1034 <|message|>, 1033 <|end|>.
INPUT_IDS = torch.tensor([[1032, 5, 17, 300, 1034, 42, 99, 1033]])


@pytest.fixture(scope="module")
def tiny4_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("tiny4") / "tiny-gpt-oss-4", TinySpec(layers=LAYERS))


@pytest.fixture
def recipe(quickstart_recipe, tiny4_dir):
    recipe = quickstart_recipe.model_copy(deep=True)
    recipe.model.base_model = str(tiny4_dir)
    recipe.lora.experts = [1]
    return recipe


def trainable_names(model) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT_IDS).logits


# --- expert_targets -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("experts", "expected"),
    [
        ("all", ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]),
        ("none", []),
        ([1], ["layers.1.mlp.experts.gate_up_proj", "layers.1.mlp.experts.down_proj"]),
        (
            [1, 0],
            [
                "layers.1.mlp.experts.gate_up_proj",
                "layers.1.mlp.experts.down_proj",
                "layers.0.mlp.experts.gate_up_proj",
                "layers.0.mlp.experts.down_proj",
            ],
        ),
    ],
)
def test_expert_targets(experts, expected):
    assert expert_targets(experts, 2) == expected


@pytest.mark.parametrize(("experts", "wrong"), [([5], 5), ([0, 2], 2)])
def test_expert_targets_refuses_missing_layer(experts, wrong):
    with pytest.raises(UserError) as info:
        expert_targets(experts, 2)
    assert str(info.value) == f"lora.experts: layer {wrong} does not exist; this model has layers 0..1."


# --- apply_lora -----------------------------------------------------------------------------------


def test_lora_trains_attention_everywhere_and_experts_of_layer_1_only(recipe):
    model = apply_lora(load_model(recipe), recipe)
    attention = {
        f"{PREFIX}.{layer}.self_attn.{proj}.lora_{ab}.default.weight"
        for layer in range(LAYERS)
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj")
        for ab in "AB"
    }
    # PEFT wraps the experts module once per target parameter: the outer wrapper holds down_proj's
    # LoRA and wraps, as base_layer, the one that holds gate_up_proj's.
    experts = {
        f"{PREFIX}.1.mlp.experts.{inner}lora_{ab}.default.weight" for inner in ("base_layer.", "") for ab in "AB"
    }
    assert trainable_names(model) == attention | experts

    wrapper = model.base_model.model.model.layers[1].mlp.experts
    assert (wrapper.parameter_name, wrapper.base_layer.parameter_name) == ("down_proj", "gate_up_proj")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters() if name in experts}
    # Expert LoRA rank is r per expert: 8 * 4 experts = 32; gate_up_proj is [E, H=64, 2I=128].
    assert shapes == {
        f"{PREFIX}.1.mlp.experts.base_layer.lora_A.default.weight": (32, 64),
        f"{PREFIX}.1.mlp.experts.base_layer.lora_B.default.weight": (128, 32),
        f"{PREFIX}.1.mlp.experts.lora_A.default.weight": (32, 64),
        f"{PREFIX}.1.mlp.experts.lora_B.default.weight": (64, 32),
    }
    # attention per layer: q and o 2*8*64, k and v 8*64 + 32*8; experts: 32*64 + 128*32 + 32*64 + 64*32.
    assert parameter_counts(model)[0] == LAYERS * (2 * 1024 + 2 * 768) + 10240


def test_full_fine_tune_returns_the_model_unchanged(recipe):
    recipe.lora = None
    model = load_model(recipe)
    before = trainable_names(model)
    assert apply_lora(model, recipe) is model
    assert trainable_names(model) == before == {name for name, _ in model.named_parameters()}
    assert not any("lora" in name for name in before)


def test_lora_refuses_expert_layer_beyond_the_model(recipe):
    recipe.lora.experts = [7]
    with pytest.raises(UserError, match=r"layer 7 does not exist; this model has layers 0\.\.3\."):
        apply_lora(load_model(recipe), recipe)


@pytest.mark.parametrize(
    "experts",
    [
        pytest.param("none", id="no-experts"),
        # PEFT alone only warns here, since the expert target_parameters match something.
        pytest.param([1], id="experts-layer-1"),
    ],
)
def test_lora_refuses_unknown_target_module(recipe, experts):
    recipe.lora.target_modules = ["nope_proj"]
    recipe.lora.experts = experts
    with pytest.raises(
        UserError, match=r"^lora\.target_modules: 'nope_proj' matches no module of this model\. Did you mean 'o_proj'\?"
    ):
        apply_lora(load_model(recipe), recipe)


# --- forward pass ---------------------------------------------------------------------------------


@pytest.fixture
def base_and_lora(recipe):
    model = load_model(recipe)
    base = logits(model)  # before get_peft_model, which wraps the model's layers in place
    return base, apply_lora(model, recipe)


def test_fresh_lora_leaves_logits_unchanged(base_and_lora):
    base, model = base_and_lora
    assert base.shape == (1, INPUT_IDS.shape[1], 1045)
    assert torch.equal(logits(model), base)


@pytest.mark.parametrize("inner", ["base_layer.", ""], ids=["gate_up_proj", "down_proj"])
def test_expert_lora_b_changes_logits(base_and_lora, inner):
    base, model = base_and_lora
    lora_b = dict(model.named_parameters())[f"{PREFIX}.1.mlp.experts.{inner}lora_B.default.weight"]
    with torch.no_grad():
        lora_b.fill_(0.1)
    assert (logits(model) - base).abs().max().item() > 1e-2


# --- load_model -----------------------------------------------------------------------------------


def test_load_model_sets_up_for_training(recipe):
    model = load_model(recipe)
    assert (model.config.model_type, model.config.num_hidden_layers, model.config.use_cache) == (
        "gpt_oss",
        LAYERS,
        False,
    )
    assert model.dtype == torch.float32


def test_load_model_missing_base_model_says_how_to_make_one(recipe, tmp_path):
    missing = str(tmp_path / "no-such-model")
    recipe.model.base_model = missing
    with pytest.raises(UserError) as info:
        load_model(recipe)
    assert f"no model at '{missing}'" in str(info.value)
    assert str(info.value).endswith(f"ossft tiny-model {missing}")
