"""Commands about a recipe before any training: validate, schema, plan, init."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from ossft.cli.console import console, errors, note, user_errors, warn
from ossft.cli.options import RecipeArg, SetOpt


@user_errors
def validate(recipe: RecipeArg, set_: SetOpt = None):
    """Check a recipe and that its data can be found; print it resolved, every default filled in.

    Local data paths are resolved as training resolves them (from the current folder); a Hub dataset
    that is not in the local cache is a warning, since training may download it.

    Example: ossft validate recipes/quickstart.yaml --set train.learning_rate=1e-4
    """
    from ossft.data.validate import validate_recipe

    validation = validate_recipe(recipe, set_ or [])
    sys.stdout.write(validation.resolved_yaml)
    for warning in validation.warnings:
        warn(warning)
    errors.print(f"[green]ok:[/] {recipe} is a valid recipe.")


def schema():
    """Print the recipe's JSON schema (for editor completion and checks).

    Example: ossft schema > ossft-recipe.schema.json
    """
    from ossft.recipe.load import recipe_json_schema

    sys.stdout.write(json.dumps(recipe_json_schema(), indent=2) + "\n")


@user_errors
def plan(
    recipe: RecipeArg,
    gpus: Annotated[int | None, typer.Option(min=1, help="GPUs per node (default: the recipe's).")] = None,
    nodes: Annotated[int | None, typer.Option(min=1, help="Nodes (default: the recipe's).")] = None,
    gpu_memory: Annotated[
        float | None,
        typer.Option(min=1, help="Memory of one GPU, GiB (H100 80 GB: 79.6, H200: 140.4); default: the recipe's "
        "launch.gpu_memory_gib, else 80."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON (bytes) instead.")] = False,
    set_: SetOpt = None,
):
    """Estimate the memory per GPU and the disk a recipe needs, and what to change if it won't fit.

    Example: ossft plan recipes/gpt-oss-20b-full-8gpu.yaml --gpus 4 --gpu-memory 80
    """
    from rich.table import Table

    from ossft.launch.plan import plan_report
    from ossft.recipe.load import load_recipe

    report = plan_report(load_recipe(recipe, set_ or []), gpus, nodes, gpu_memory)
    if as_json:
        sys.stdout.write(json.dumps({"recipe": str(recipe), **report.as_json()}, indent=2) + "\n")
        return
    title = f"ossft plan: {recipe.name} on {report.layout.gpus} GPU(s), per GPU"
    table = Table(title=title, show_header=False, title_justify="left")
    for label, value in report.rows():
        table.add_row(label, value)
    console.print(table)
    console.print(report.longest_words(), highlight=False)
    memory = report.gpu_memory
    if report.fits:
        console.print(f"[green]fits[/] on {memory:g} GiB GPUs (estimate, reserved memory per GPU).")
        return
    console.print(f"[red]does not fit[/] on {memory:g} GiB GPUs. Try:")
    for idea in report.suggestions:
        console.print(f"  - {idea}", highlight=False)


@user_errors
def init(
    model: Annotated[str | None, typer.Option(help="20b or 120b (gpt-oss-20b / gpt-oss-120b).")] = None,
    method: Annotated[str | None, typer.Option(help="lora (adapters) or full (every weight trained).")] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs on each node.")] = None,
    nodes: Annotated[int | None, typer.Option(help="Nodes (machines); num_processes becomes gpus x nodes.")] = None,
    out: Annotated[Path | None, typer.Option(help="The recipe file to write.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
):
    """Write a commented recipe for a model, a method and your GPUs, made from the closest shipped recipe.

    In a terminal it asks for what is not given; otherwise it takes 20b, lora, 1 GPU, 1 node, recipe.yaml.

    Example: ossft init --model 120b --method full --gpus 8 --nodes 2 --out recipes/my-120b.yaml
    """
    from ossft.recipe import templates

    given = {"model": model, "method": method, "gpus": gpus, "nodes": nodes, "out": out}
    ask = templates.ask_in_terminal if templates.stdin_is_terminal() else None
    choice, defaulted = templates.resolve_choice(given, ask)
    if defaulted:
        used = ", ".join(f"--{name} {getattr(choice, name)}" for name in defaulted)
        errors.print(f"not a terminal, so nothing was asked; defaults: {used}", highlight=False)
    result = templates.write_recipe(choice, force=force)
    for line in result.notes:
        note(line)
    layout = templates.layout_words(choice.gpus, choice.nodes)
    console.print(
        f"wrote [bold]{result.path}[/] for gpt-oss-{choice.model}, {choice.method}, {layout} "
        f"(from recipes/{result.template.name}). Next: ossft validate {result.path}",
        highlight=False,
    )
