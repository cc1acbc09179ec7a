"""MXFP4 checkpoints load dequantized, and every model ossft saves is read back and checked (trap 1)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ossft import mxfp4
from ossft.model import load_model
from ossft.recipe import load_recipe
from ossft.tiny import write_tiny_model
from ossft.trainer import run_training
from ossft.verify import VerificationError, digests, verify_model_folder

from .conftest import REPO

EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")


@pytest.fixture(scope="module")
def mxfp4_dir(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("mxfp4") / "tiny", mxfp4=True)


def recipe_for(base, tmp_path, *overrides, lora=True):
    text = (REPO / "recipes" / "quickstart.yaml").read_text()
    if not lora:
        head, _, rest = text.partition("\nlora:\n")
        text = head + "\n" + rest[rest.index("\ndata:") :]
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return load_recipe(
        path,
        [
            f"model.base_model={base}",
            f"data.datasets.0.path={REPO / 'examples/data/chat_multilingual.jsonl'}",
            f"output.dir={tmp_path / 'out'}",
            *overrides,
        ],
    )


def test_mxfp4_checkpoint_holds_packed_experts(mxfp4_dir, tiny_model_dir):
    config = json.loads((mxfp4_dir / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "mxfp4"
    assert config["architectures"] == ["GptOssForCausalLM"]
    packed, plain = load_file(mxfp4_dir / "model.safetensors"), load_file(tiny_model_dir / "model.safetensors")
    assert set(packed) - set(plain) == set(mxfp4.expert_tensor_names(2))
    blocks, scales = mxfp4.pack(plain["model.layers.1.mlp.experts.down_proj"])
    assert torch.equal(packed["model.layers.1.mlp.experts.down_proj_blocks"], blocks)
    assert torch.equal(packed["model.layers.1.mlp.experts.down_proj_scales"], scales)


def test_mxfp4_loads_through_the_recipe_with_the_packed_values(mxfp4_dir, tiny_model_dir, tmp_path):
    model = load_model(recipe_for(mxfp4_dir, tmp_path))
    plain = load_file(tiny_model_dir / "model.safetensors")
    for layer in range(2):
        for name in EXPERTS:
            key = f"model.layers.{layer}.{name}"
            expected = mxfp4.unpack(*mxfp4.pack(plain[key]), dtype=torch.float32)
            assert torch.equal(model.state_dict()[key], expected), key
    assert torch.equal(model.state_dict()["model.embed_tokens.weight"], plain["model.embed_tokens.weight"])
    assert not hasattr(model.config, "quantization_config") and model.config.use_cache is False


def test_naive_save_of_a_dequantized_model_is_caught(mxfp4_dir, tmp_path):
    # transformers' own save writes the bf16 experts back under *_blocks names (design.md trap 1).
    from transformers import AutoModelForCausalLM, Mxfp4Config

    model = AutoModelForCausalLM.from_pretrained(
        mxfp4_dir, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32
    )
    model.save_pretrained(tmp_path / "naive")
    with pytest.raises(VerificationError, match="not what the architecture expects"):
        verify_model_folder(tmp_path / "naive", digests(model.state_dict()))


def test_full_fine_tune_of_the_mxfp4_model_saves_what_it_trained(mxfp4_dir, tmp_path):
    recipe = recipe_for(mxfp4_dir, tmp_path, "train.max_steps=3", "train.learning_rate=1e-2", lora=False)
    run = run_training(recipe, on_status=lambda line: None)
    trained = {k: v.detach().clone() for k, v in run.trainer.model.state_dict().items()}
    out = tmp_path / "out"
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["GptOssForCausalLM"] and "quantization_config" not in config
    saved = load_file(out / "model.safetensors")
    assert set(saved) == set(trained)  # plain names: no *_blocks left from the MXFP4 source
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    assert all(torch.equal(reloaded[key], tensor) for key, tensor in trained.items())
    base = load_model(recipe_for(mxfp4_dir, tmp_path)).state_dict()
    changed = [key for key in trained if key.endswith(EXPERTS) and not torch.equal(trained[key], base[key])]
    assert len(changed) == 4  # both expert weights of both layers were trained, and saved as trained


def test_adapter_save_is_verified(mxfp4_dir, tmp_path):
    recipe = recipe_for(mxfp4_dir, tmp_path, "train.max_steps=2", "lora.experts_r=2")
    messages = []
    run = run_training(recipe, on_status=messages.append)
    assert any(m.startswith("saved and read back: 24 tensors of the LoRA adapter") for m in messages), messages
    adapter = load_file(tmp_path / "out" / "adapter_model.safetensors")
    experts_a = [v for k, v in adapter.items() if "mlp.experts.lora_A" in k]
    assert experts_a and all(t.shape[0] == 2 * 4 for t in experts_a)  # experts_r 2 x 4 experts
    assert run.trainable_params < run.total_params
