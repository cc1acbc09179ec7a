"""Commands on a recipe's data: inspect-data (what training sees) and preprocess (fill the cache)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ossft.cli.console import console, count_progress, user_errors
from ossft.cli.options import RecipeArg, SetOpt


@user_errors
def inspect_data(
    recipe: RecipeArg,
    rows: Annotated[int | None, typer.Option(min=1, help="Rows to show (default: 3; with --json, all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per training example.")] = False,
    set_: SetOpt = None,
):
    """Show the rendered examples with the trained spans highlighted, then the data totals.

    Example: ossft inspect-data recipes/quickstart.yaml --rows 2
    """
    from ossft.data import inspect as show
    from ossft.model.load import load_tokenizer
    from ossft.recipe.load import load_recipe

    resolved = load_recipe(recipe, set_ or [])
    tokenizer = load_tokenizer(resolved)
    if as_json:
        for line in show.json_lines(show.example_records(resolved, tokenizer, rows)):
            sys.stdout.write(line + "\n")
        return
    for record in show.example_records(resolved, tokenizer, rows or 3):
        console.print(f"[bold]── {record['source']} row {record['row']} ({record['tokens']} tokens)[/]")
        console.print(show.highlighted(record), highlight=False)
    with count_progress("tokenizing examples") as tick:
        stats = show.full_stats(resolved, tokenizer, on_progress=tick)
    console.print(show.totals_table(stats))


@user_errors
def preprocess(recipe: RecipeArg, set_: SetOpt = None):
    """Tokenize the recipe's data into the cache now (e.g. once before a multi-node run).

    Example: ossft preprocess recipes/quickstart.yaml --set data.num_proc=8
    """
    from ossft.data import inspect as show
    from ossft.data.prepare import prepare_data
    from ossft.model.load import load_tokenizer
    from ossft.recipe.load import load_recipe

    resolved = load_recipe(recipe, set_ or [])
    tokenizer = load_tokenizer(resolved)
    with count_progress("tokenizing examples") as tick:
        prepared = prepare_data(resolved, tokenizer, on_progress=tick)
    console.print(show.totals_table(prepared.stats, shown_above=False))
    state = "already cached" if prepared.from_cache else "cached"
    console.print(f"{state}: [bold]{prepared.cache_path}[/]")
