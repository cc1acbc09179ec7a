"""End to end: the quickstart recipe through the real `ossft` command, as a new user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from ossft.recipe.load import load_recipe

from .conftest import REPO

pytestmark = pytest.mark.e2e  # trains the quickstart recipe and checks its loss and outputs


def ossft(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "ossft", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def quickstart_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "out"
    result = ossft(
        "train",
        REPO / "recipes" / "quickstart.yaml",
        "--set",
        f"model.base_model={tiny_model_dir}",
        "--set",
        f"data.datasets.0.path={REPO / 'examples/data/chat_multilingual.jsonl'}",
        "--set",
        f"output.dir={out}",
        cwd=out.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_loss_falls_by_30_percent(quickstart_run):
    out, _ = quickstart_run
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert state["log_history"][0]["step"] == 1  # the first logged loss is step 1's
    assert state["global_step"] == 304 and len(losses) == 61  # logged at step 1, then every 5
    assert losses[-1] <= 0.7 * losses[0], losses


def test_outputs_are_written(quickstart_run, tiny_model_dir):
    out, result = quickstart_run
    for name in (
        "adapter_model.safetensors",
        "adapter_config.json",
        "trainer_state.json",
        "recipe.yaml",
        "summary.json",
        "tokenizer.json",
        "checkpoint-304/adapter_model.safetensors",
    ):
        assert (out / name).is_file(), name
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert sorted(adapter["target_modules"]) == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert adapter["target_parameters"] == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    copy = load_recipe(out / "recipe.yaml")  # the copy is itself a valid, complete recipe
    assert copy.model.base_model == str(tiny_model_dir) and copy.output.dir == str(out)
    assert yaml.safe_load((out / "recipe.yaml").read_text())["train"]["learning_rate"] == 0.003
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 304 and summary["method"] == "lora"
    # 240 conversations of 2-3 answers: one example per answer, each in the context a server gives it
    assert (summary["rows"], summary["examples"], summary["rows_skipped"]) == (240, 608, 0)
    assert summary["loss_drop"] >= 0.3
    assert "run summary" in result.stdout and "loss drop" in result.stdout


def test_generate_answers_in_harmony_channels(quickstart_run):
    out, _ = quickstart_run
    result = ossft("generate", out, "--prompt", "What is 12 + 7?", "--max-new-tokens", "40", cwd=out.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("user: What is 12 + 7?")
    # After 304 steps the tiny model has learned harmony's shape: it opens with a channel.
    assert "analysis:" in result.stdout or "final:" in result.stdout, result.stdout
