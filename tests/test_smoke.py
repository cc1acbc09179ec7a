"""`ossft train RECIPE --smoke` for every shipped recipe: the tiny model, a few steps, on this CPU, with
the recipe's own data pipeline, LoRA shape and schedule; the recipe's own FSDP2 or ZeRO-3 over gloo (ZeRO-3
only where deepspeed is installed), and for FSDP2 the sharded save made loadable by merge-shards."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from ossft.recipe.load import load_recipe
from ossft.train.smoke import SMOKE_PROCESSES, SMOKE_STEPS, scaled_layers
from tests.conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))


def smoke_run(recipe, out):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "ossft", "train", str(recipe), "--smoke", "--set", f"output.dir={out}"]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_smoke_runs(recipe, tmp_path):
    original = load_recipe(recipe)
    result = smoke_run(recipe, tmp_path / "out")
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    log = " ".join((result.stdout + result.stderr).split())  # rich wraps long lines at the terminal width
    out = tmp_path / "out-smoke"  # a smoke run never writes into the real run's folder
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == SMOKE_STEPS
    assert summary["processes"] == min(original.launch.num_processes or 1, SMOKE_PROCESSES)
    assert summary["method"] == ("full" if original.lora is None else "lora")
    assert "smoke run: " in log and " -> the tiny model " in log
    hub = [d.path for d in original.data.datasets if not (REPO / d.path).exists()]
    for path in hub:  # the tests run offline with an empty Hub cache
        assert f"dataset {path} is not in the local Hugging Face cache -> the bundled sample" in log
    config = original.launch.accelerate_config
    if config in ("fsdp2", "fsdp2-offload"):
        assert f"no GPU here: {config} runs as real FSDP2 over gloo on the CPU" in log
        distributed = summary["distributed"]  # read off the prepared model: every parameter a DTensor
        sharded, total = map(int, distributed.split(": ")[1].split(" parameters")[0].split(" of "))
        assert distributed.startswith("FSDP2 over 2 processes (gloo): ") and sharded == total > 0
        assert f"trained with {distributed}" in log
        assert_shards_merge_into_a_model(out, original.lora is not None, tmp_path / "merged")
    if config in ("zero3", "zero3-offload"):  # DeepSpeed runs on CPU over gloo, when installed
        fallback = f"{config} runs as plain data parallel (ddp.yaml) instead"
        assert (fallback in log) == (importlib.util.find_spec("deepspeed") is None)
    if original.lora is not None and isinstance(original.lora.experts, list):
        config = json.loads((out / "adapter_config.json").read_text())
        layers = scaled_layers(original.lora.experts, 24 if "20b" in recipe.name else 36, 2)
        assert sorted(config["target_parameters"]) == sorted(
            f"layers.{i}.mlp.experts.{name}" for i in layers for name in ("gate_up_proj", "down_proj")
        )


def assert_shards_merge_into_a_model(out, lora: bool, merged):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ossft.convert.merge_shards import merge_shards

    assert (out / "pytorch_model_fsdp_0" / ".metadata").is_file()
    report = merge_shards(out, merged)
    assert report.adapter == lora
    base = load_recipe(out / "recipe.yaml").model.base_model  # the tiny model the smoke run trained
    if lora:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), merged)
        assert any("lora_B" in name for name, _ in model.named_parameters())
    else:
        assert AutoModelForCausalLM.from_pretrained(merged).num_parameters() > 0


def test_scaled_layers_keep_relative_depth():
    assert scaled_layers([7, 15, 23], 24, 2) == [0, 1]
    assert scaled_layers([7, 15, 23], 24, 4) == [1, 2, 3]
    assert scaled_layers([0, 35], 36, 2) == [0, 1]
