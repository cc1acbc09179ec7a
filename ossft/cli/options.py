"""Arguments and options that several commands take, spelled once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

RecipeArg = Annotated[Path, typer.Argument(help="The YAML recipe.", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one key, typed as YAML: --set train.learning_rate=1e-4 (repeatable)."),
]
