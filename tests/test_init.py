"""The shipped recipes, and `ossft init`, which writes a recipe from them for a model, a method and a layout."""

from __future__ import annotations

from itertools import takewhile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ossft.recipe import templates
from ossft.recipe.load import load_recipe

from .conftest import REPO

RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
# The layout (GPUs per node, nodes) each template is sized for, as its launch: section says.
TEMPLATE_LAYOUTS = {
    "gpt-oss-20b-lora-1gpu.yaml": (1, 1),
    "gpt-oss-20b-full-8gpu.yaml": (8, 1),
    "gpt-oss-120b-lora-8gpu.yaml": (8, 1),
    "gpt-oss-120b-full-2node-h100.yaml": (8, 2),
}
COMBINATIONS = [(model, method) for model in ("20b", "120b") for method in ("lora", "full")]


def opening_comment(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_validates(cli, recipe):
    result = cli("validate", recipe)
    assert result.exit_code == 0, result.stderr
    assert "is a valid recipe" in result.stderr


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_opens_with_hardware_and_launch(recipe):
    header = opening_comment(recipe)
    assert any(line.startswith("# Hardware: ") for line in header), header
    start = next(i for i, line in enumerate(header) if line.startswith("# Launch:   "))
    launch = [header[start]] + list(takewhile(lambda line: line.startswith("#           "), header[start + 1 :]))
    assert f"ossft train recipes/{recipe.name}" in " ".join(launch), header


def test_every_template_is_shipped():
    assert set(templates.TEMPLATES.values()) == set(TEMPLATE_LAYOUTS)
    assert set(TEMPLATE_LAYOUTS) <= {p.name for p in RECIPES}


@pytest.mark.parametrize("name", TEMPLATE_LAYOUTS)
def test_init_for_a_templates_own_layout_writes_the_template(name):
    """Keeps the shipped recipes and init in step: launch section, batch comment, header Launch lines."""
    (model, method) = next(key for key, value in templates.TEMPLATES.items() if value == name)
    gpus, nodes = TEMPLATE_LAYOUTS[name]
    choice = templates.InitChoice(model, method, gpus, nodes, Path("recipes") / name)
    rendered = templates.render_recipe(choice)
    lines = rendered.text.splitlines()
    assert lines[1] == (
        f"# Written by `ossft init --model {model} --method {method} --gpus {gpus} --nodes {nodes}` from recipes/{name}."
    )
    assert lines[:1] + lines[2:] == (REPO / "recipes" / name).read_text(encoding="utf-8").splitlines()
    assert rendered.notes == []


@pytest.mark.parametrize(("model", "method"), COMBINATIONS)
@pytest.mark.parametrize(("gpus", "nodes"), [(1, 1), (4, 1), (8, 3)])
def test_init_writes_a_valid_recipe_for_each_model_and_method(cli, tmp_path, model, method, gpus, nodes):
    out = tmp_path / f"my-{model}-{method}.yaml"
    result = cli("init", "--model", model, "--method", method, "--gpus", gpus, "--nodes", nodes, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    assert cli("validate", out).exit_code == 0

    recipe = load_recipe(out)
    assert recipe.model.base_model == f"openai/gpt-oss-{model}"
    assert (recipe.lora is not None) == (method == "lora")
    assert recipe.launch.num_processes == gpus * nodes
    assert recipe.launch.num_machines == nodes
    # FSDP2 for both; the 120b full template offloads (its fp32 shards fit no GPU) and keeps that.
    sharded = "fsdp2-offload" if (model, method) == ("120b", "full") else "fsdp2"
    expected_config = None if gpus * nodes == 1 else sharded
    assert recipe.launch.accelerate_config == expected_config
    assert recipe.output.dir == f"outputs/my-{model}-{method}"

    header = opening_comment(out)
    assert header[0].startswith(f"# gpt-oss-{model}: ")
    assert any(line.startswith("# Hardware: ") for line in header)
    assert any(line.startswith("# Memory:   ") for line in header)
    assert any(f"ossft train {out}" in line for line in header if "Launch" in line or "each node" in line)
    if nodes > 1:
        assert f"# Launch:   on each node: ossft train {out}" in header
        assert f"#           --nnodes {nodes} --node-rank <0..{nodes - 1}> --master-addr <node 0's address>" in header


def test_init_keeps_the_templates_global_batch_where_it_can(cli, tmp_path):
    """Template: 4 per device x 4 accumulation on 1 GPU = 16 sequences per optimizer step."""
    two = tmp_path / "two.yaml"
    assert cli("init", "--model", "20b", "--method", "lora", "--gpus", 2, "--out", two).exit_code == 0
    assert load_recipe(two).train.gradient_accumulation_steps == 2
    assert "  gradient_accumulation_steps: 2      # 16 sequences per optimizer step over 2 GPUs" in two.read_text()

    eight = tmp_path / "eight.yaml"
    result = cli("init", "--model", "20b", "--method", "lora", "--gpus", 8, "--out", eight)
    assert load_recipe(eight).train.gradient_accumulation_steps == 1
    assert "32 sequences per optimizer step, as near as 8 GPUs get to the template's 16" in result.stderr


def test_init_notes_a_layout_whose_weights_do_not_fit(cli, tmp_path):
    result = cli("init", "--model", "120b", "--method", "lora", "--gpus", 1, "--out", tmp_path / "r.yaml")
    assert result.exit_code == 0, result.stderr
    assert "about 234 GB per GPU before activations, more than an 80 GB H100 holds" in result.stderr

    result = cli("init", "--model", "120b", "--method", "lora", "--gpus", 8, "--out", tmp_path / "r8.yaml")
    assert "H100 holds" not in result.stderr


def test_without_a_terminal_missing_values_take_defaults_and_say_so(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = cli("init")
    assert result.exit_code == 0, result.stderr
    assert "defaults: --model 20b, --method lora, --gpus 1, --nodes 1, --out recipe.yaml" in result.stderr
    recipe = load_recipe(tmp_path / "recipe.yaml")
    assert recipe.model.base_model == "openai/gpt-oss-20b"
    assert recipe.lora is not None and recipe.lora.experts == [7, 15, 23]
    assert recipe.launch.num_processes == 1

    given = cli("init", "--model", "120b", "--method", "full", "--gpus", 8, "--nodes", 2, "--out", "r.yaml")
    assert "defaults" not in given.stderr


def test_an_existing_file_is_kept_unless_forced(cli, tmp_path):
    out = tmp_path / "recipe.yaml"
    out.write_text("mine\n")
    refused = cli("init", "--out", out)
    assert refused.exit_code == 2
    assert f"{out} already exists; pass --force to overwrite it" in refused.stderr
    assert out.read_text() == "mine\n"

    forced = cli("init", "--out", out, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert load_recipe(out).model.base_model == "openai/gpt-oss-20b"
    assert [p.name for p in tmp_path.iterdir()] == ["recipe.yaml"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "30b"], "--model 30b: expected one of 20b, 120b"),
        (["--method", "qlora"], "--method qlora: expected lora (adapters) or full"),
        (["--gpus", "0"], "--gpus 0: expected the number of GPUs on each node, 1 or more"),
        (["--nodes", "-1"], "--nodes -1: expected the number of nodes (machines), 1 or more"),
    ],
)
def test_bad_values_exit_2_with_a_message(cli, tmp_path, args, message):
    out = tmp_path / "recipe.yaml"
    result = cli("init", *args, "--out", out)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not out.exists()


def test_out_must_not_be_a_folder(cli, tmp_path):
    result = cli("init", "--out", tmp_path)
    assert result.exit_code == 2
    assert "is a folder" in result.stderr


@pytest.fixture
def terminal(monkeypatch):
    """Make init believe a person sits at the terminal; answers come from CliRunner's `input`."""
    monkeypatch.setattr(templates, "stdin_is_terminal", lambda: True)

    from ossft.cli import app

    return lambda args, answers: CliRunner().invoke(app, ["init", *map(str, args)], input="".join(answers))


def test_in_a_terminal_it_asks_for_what_is_missing(terminal, tmp_path):
    out = tmp_path / "asked.yaml"
    # A wrong answer is asked again.
    result = terminal([], ["30b\n", "120b\n", "full\n", "0\n", "8\n", "2\n", f"{out}\n"])
    assert result.exit_code == 0, result.output
    for question in ("Model", "Method", "GPUs per node", "Nodes", "Write the recipe to"):
        assert question in result.stdout
    assert "'30b' is not one of" in result.output
    assert "defaults" not in result.output
    recipe = load_recipe(out)
    assert recipe.model.base_model == "openai/gpt-oss-120b"
    assert recipe.lora is None
    assert (recipe.launch.num_processes, recipe.launch.num_machines) == (16, 2)


def test_in_a_terminal_given_values_are_not_asked(terminal, tmp_path):
    out = tmp_path / "half.yaml"
    result = terminal(["--model", "20b", "--gpus", 4, "--out", out], ["\n", "\n"])  # Enter takes the default
    assert result.exit_code == 0, result.output
    assert "Model" not in result.stdout and "GPUs per node" not in result.stdout
    assert "Method" in result.stdout and "Nodes" in result.stdout
    recipe = load_recipe(out)
    assert recipe.lora is not None
    assert (recipe.launch.num_processes, recipe.launch.num_machines) == (4, 1)


def test_a_bad_option_is_refused_before_anything_is_asked(terminal, tmp_path):
    result = terminal(["--model", "30b"], [])
    assert result.exit_code == 2
    assert "Method" not in result.stdout
