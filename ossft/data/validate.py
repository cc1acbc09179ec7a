"""`ossft validate`: a recipe checked, and its data found as training would find it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ossft.data.sources import check_source
from ossft.data.tokenize import source_spec
from ossft.errors import UserError
from ossft.recipe.load import dump_recipe, load_recipe_with_origins


@dataclass(frozen=True)
class Validation:
    resolved_yaml: str  # the recipe with every default filled in
    warnings: list[str]  # each prefixed with where the value was written (FILE line N, or --set KEY=VALUE)


def validate_recipe(path: str | Path, overrides: list[str] = ()) -> Validation:
    """Load the recipe and look for each data source without reading a row. Local paths resolve as in
    training (from the current folder); a Hub dataset missing from the local cache is a warning, since
    training may download it. Every source that cannot be found is named in one UserError."""
    resolved, origins = load_recipe_with_origins(path, list(overrides))
    problems, warnings = [], []
    for index, source in enumerate(resolved.data.datasets):
        origin = origins.of(("data", "datasets", index, "path"))
        try:
            warning = check_source(source_spec(source))
        except UserError as exc:  # training's words, so the two never disagree; only the line is added
            problems.append(f"{origin}: {exc}")
            continue
        if warning:
            warnings.append(f"{origin}: {warning}")
    if problems:
        raise UserError("\n".join(problems))
    return Validation(dump_recipe(resolved), warnings)
