"""MXFP4 checkpoints load dequantized, and every model ossft saves is read back and checked (docs/traps.md#trap-1)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ossft.checkpoints.verify import VerificationError, digests, verify_model_folder
from ossft.gptoss import mxfp4
from ossft.model.load import load_model
from ossft.model.tiny import write_tiny_model
from ossft.recipe.load import load_recipe
from ossft.train.run import run_training

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


def _dequantized(mxfp4_dir):
    from transformers import AutoModelForCausalLM, Mxfp4Config

    return AutoModelForCausalLM.from_pretrained(
        mxfp4_dir, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32
    )


def test_the_trap_1_save_is_caught(mxfp4_dir, tmp_path):
    # The save that transformers up to 5.23 wrote for a dequantized model (docs/traps.md#trap-1; 5.24 and
    # 5.25 save plain names): the float experts under their MXFP4 names `*_blocks`, and no
    # quantization_config. Built here by hand, so the guard stays tested whatever transformers does.
    model = _dequantized(mxfp4_dir)
    model.save_pretrained(tmp_path / "wrong")
    weights = tmp_path / "wrong" / "model.safetensors"
    tensors = load_file(weights)
    renamed = {(f"{k}_blocks" if k.endswith(EXPERTS) else k): v for k, v in tensors.items()}
    assert len(set(renamed) - set(tensors)) == 4  # both expert weights of both layers
    save_file(renamed, weights, metadata={"format": "pt"})
    assert "quantization_config" not in json.loads((tmp_path / "wrong" / "config.json").read_text())
    with pytest.raises(VerificationError, match="not what the architecture expects") as caught:
        verify_model_folder(tmp_path / "wrong", digests(model.state_dict()))
    assert "model.layers.0.mlp.experts.down_proj" in str(caught.value)  # named among the missing


def test_ossft_forgets_the_mxfp4_layout_before_any_save(mxfp4_dir, tmp_path):
    # Whatever the installed transformers would do with a dequantized model, one loaded through
    # ossft saves plain names and no quantization_config, and reloads with the same experts.
    from transformers import AutoModelForCausalLM

    model = load_model(recipe_for(mxfp4_dir, tmp_path))
    model.save_pretrained(tmp_path / "saved")
    verified = verify_model_folder(tmp_path / "saved", digests(model.state_dict()))
    assert verified.architecture == "GptOssForCausalLM"
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", dtype=torch.float32).state_dict()
    for key in (f"model.layers.{layer}.{name}" for layer in range(2) for name in EXPERTS):
        assert torch.equal(reloaded[key], model.state_dict()[key]), key


@pytest.mark.e2e
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


@pytest.mark.e2e
def test_adapter_save_is_verified(mxfp4_dir, tmp_path):
    recipe = recipe_for(mxfp4_dir, tmp_path, "train.max_steps=2", "lora.experts_r=2")
    messages = []
    run = run_training(recipe, on_status=messages.append)
    assert any(m.startswith("saved and read back: 24 tensors of the LoRA adapter") for m in messages), messages
    adapter = load_file(tmp_path / "out" / "adapter_model.safetensors")
    experts_a = [v for k, v in adapter.items() if "mlp.experts.lora_A" in k]
    assert experts_a and all(t.shape[0] == 2 * 4 for t in experts_a)  # experts_r 2 x 4 experts
    assert run.trainable_params < run.total_params
