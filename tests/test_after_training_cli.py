"""The after-training commands through the CLI: merge-lora, export --mxfp4, and their bad input."""

from __future__ import annotations

import json

import pytest

from ossft.model.load import apply_lora, load_model
from ossft.recipe.load import load_recipe

from .conftest import REPO


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    import torch

    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", [f"model.base_model={tiny_model_dir}"])
    model = apply_lora(load_model(recipe), recipe)
    torch.manual_seed(0)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:  # zero at init: make the merge change something
            parameter.data.normal_(std=0.05)
    folder = tmp_path_factory.mktemp("adapter") / "adapter"
    model.save_pretrained(folder)
    return folder


def test_merge_then_export_through_the_cli(cli, adapter_dir, tmp_path):
    merged, exported = tmp_path / "merged", tmp_path / "mxfp4"
    result = cli("merge-lora", adapter_dir, "--out", merged, "--dtype", "float32")
    assert result.exit_code == 0, result.stderr
    assert "merged LoRA into 12 of 37 tensors" in result.stdout  # q/k/v/o of 2 layers + both experts of 2
    assert json.loads((merged / "model.safetensors.index.json").read_text())["weight_map"]
    result = cli("export", merged, "--mxfp4", "--out", exported)
    assert result.exit_code == 0, result.stderr
    assert "model.layers.1.mlp.experts.down_proj" in result.stdout and "wrote and read back 41 tensors" in result.stdout
    assert json.loads((exported / "config.json").read_text())["quantization_config"]["quant_method"] == "mxfp4"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["merge-lora", "/no/adapter", "--out", "{tmp}/o"], "/no/adapter"),
        (["merge-lora", "{model}", "--out", "{tmp}/o"], "not a LoRA adapter"),
        (["merge-lora", "{adapter}", "--out", "{tmp}/o", "--dtype", "int8"], "Invalid value for '--dtype'"),
        (
            ["merge-lora", "{adapter}", "--out", "{tmp}/o", "--dtype", "int8"],
            "'int8' is not one of 'bfloat16', 'float32'.",
        ),
        (["export", "{model}", "--out", "{tmp}/o"], "--mxfp4 is the one ossft writes"),
        (["export", "{adapter}", "--mxfp4", "--out", "{tmp}/o"], "is a LoRA adapter, not a full model"),
        (["export", "/no/model", "--mxfp4", "--out", "{tmp}/o"], "/no/model"),
    ],
)
def test_bad_input_exits_2(cli, tmp_path, tiny_model_dir, adapter_dir, args, message):
    fill = {"tmp": tmp_path, "model": tiny_model_dir, "adapter": adapter_dir}
    result = cli(*[a.format(**fill) for a in args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.replace("│", " ").split()) and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def _sharded_only(folder, tiny_model_dir, adapter_config=None):
    """What an FSDP (SHARDED_STATE_DICT) run leaves in its output folder or a checkpoint-N: the DCP
    shards, config.json and, for LoRA, adapter_config.json; no weights any loader reads."""
    import shutil

    (folder / "pytorch_model_fsdp_0").mkdir(parents=True)
    for name in (".metadata", "__0_0.distcp", "__1_0.distcp"):
        (folder / "pytorch_model_fsdp_0" / name).write_bytes(b"\0" * 16)
    shutil.copy(tiny_model_dir / "config.json", folder)
    if adapter_config is not None:
        shutil.copy(adapter_config, folder)
    return folder


@pytest.mark.parametrize("kind", ["full", "lora", "lora checkpoint"])
@pytest.mark.parametrize("command", ["generate", "merge-lora", "export"])
def test_a_sharded_save_points_to_merge_shards(cli, tiny_model_dir, adapter_dir, tmp_path, command, kind):
    folder = tmp_path / "run" / ("checkpoint-4" if kind == "lora checkpoint" else "")
    adapter_config = adapter_dir / "adapter_config.json" if kind != "full" else None
    _sharded_only(folder.resolve(), tiny_model_dir, adapter_config)
    args = {"generate": [], "merge-lora": ["--out", tmp_path / "out"], "export": ["--mxfp4", "--out", tmp_path / "out"]}
    result = cli(command, folder, *args[command])
    assert result.exit_code == 2, (result.output, result.exception)
    assert "holds only an FSDP sharded save (pytorch_model_fsdp_0/" in result.stderr
    assert f"ossft merge-shards {folder.resolve()} (it writes {folder.resolve() / 'merged'})" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_a_folder_with_weights_beside_its_shards_is_not_refused(tiny_model_dir, tmp_path):
    import shutil

    from ossft.checkpoints.read import refuse_sharded_save

    folder = _sharded_only(tmp_path / "run", tiny_model_dir)
    shutil.copy(tiny_model_dir / "model.safetensors", folder)  # merged in place, or saved whole as well
    refuse_sharded_save(folder)  # no error: a loader can read this folder
