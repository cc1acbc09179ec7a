"""The `ossft` command: the Typer app, the --debug option, and its commands in the order `--help` lists them.

Each command parses its flags, calls into the package below, and prints; the commands live in
recipe_commands, train_commands, data_commands, model_commands and convert_commands, their shared
output in console.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ossft.cli import convert_commands, data_commands, model_commands, recipe_commands, train_commands
from ossft.cli.console import state

app = typer.Typer(
    help="Fine-tune OpenAI's gpt-oss models from one YAML recipe.\n\n"
    "Example: ossft tiny-model models/tiny-gpt-oss && ossft train recipes/quickstart.yaml",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks for every error.")] = False):
    state["debug"] = debug


COMMANDS = {
    "validate": recipe_commands.validate,
    "schema": recipe_commands.schema,
    "tiny-model": model_commands.tiny_model,
    "train": train_commands.train,
    "plan": recipe_commands.plan,
    "inspect-data": data_commands.inspect_data,
    "preprocess": data_commands.preprocess,
    "generate": model_commands.generate,
    "export": convert_commands.export,
    "merge-lora": convert_commands.merge_lora,
    "merge-shards": convert_commands.merge_shards,
    "plot": train_commands.plot,
    "init": recipe_commands.init,
}
for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
