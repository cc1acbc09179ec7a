"""The recipe: one YAML file -> a validated, typed `Recipe`, with errors that point at a line.

Sections say which part of the run a key affects: `model`, `lora`, `data`, `train`, `output`,
`guards`, `launch` (sections.py). Keys take Hugging Face's argument names where one exists. `train:`
accepts every field of TRL's `SFTConfig` (train_section.py).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ossft.errors import UserError
from ossft.recipe.sections import Recipe
from ossft.recipe.train_section import OWNED_ELSEWHERE, recipe_model
from ossft.recipe.yaml_source import YamlDoc, parse_scalar, parse_yaml


@dataclasses.dataclass
class RecipeOrigins:
    """Where each value of a loaded recipe was written: a line of the file, or a --set."""

    doc: YamlDoc
    overridden: dict[tuple, str]

    def of(self, path: tuple) -> str:
        """`FILE line N` or `--set KEY=VALUE`, for a message about the value at `path`."""
        text = next((t for p, t in self.overridden.items() if p == tuple(path[: len(p)])), None)
        if text is not None:
            return f"--set {text}"
        line = self.doc.line_of(tuple(path))
        return f"{self.doc.source} line {line}" if line else self.doc.source


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    return load_recipe_with_origins(path, overrides)[0]


def load_recipe_with_origins(path: str | Path, overrides: list[str] = ()) -> tuple[Recipe, RecipeOrigins]:
    """The recipe, and where its values were written, for checks made after loading."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe not found: {path}. Pass the path of a YAML recipe, e.g. recipes/quickstart.yaml.")
    doc = parse_yaml(path.read_text(encoding="utf-8"), source=str(path))
    if not isinstance(doc.data, dict):
        kind = type(doc.data).__name__
        raise UserError(
            f"{path} line 1: the recipe must be a mapping of sections (model:, data:, train:, ...), "
            f"but the file holds a {kind}."
        )
    origins = RecipeOrigins(doc, apply_overrides(doc.data, overrides))
    model = recipe_model()
    try:
        recipe = model.model_validate(doc.data)
    except ValidationError as exc:
        raise UserError(format_errors(exc, origins, model)) from exc
    if recipe.output.dir is None:
        recipe.output.dir = str(Path("outputs") / path.stem)
    return recipe, origins


def apply_overrides(data: dict, overrides: list[str]) -> dict[tuple, str]:
    """Apply `a.b.c=value` overrides in place; return {path: original text} for error messages."""
    applied: dict[tuple, str] = {}
    for text in overrides:
        key, sep, raw = text.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {text!r}: expected KEY=VALUE, for example --set train.learning_rate=1e-4.")
        parts: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
        node: Any = data
        for depth, part in enumerate(parts):
            if isinstance(node, list) and not (isinstance(part, int) and part < len(node)):
                raise UserError(f"--set {text}: index {part} is outside the list ({len(node)} items).")
            if not isinstance(node, (dict, list)):
                where = ".".join(map(str, parts[:depth]))
                raise UserError(f"--set {text}: '{where}' is a value, not a section, so it has no key '{part}'.")
            if depth == len(parts) - 1:
                node[part] = parse_scalar(raw)
            else:
                if isinstance(node, dict) and node.get(part) is None:
                    node[part] = {}
                node = node[part]
        applied[tuple(parts)] = text
    return applied


def format_errors(exc: ValidationError, origins: RecipeOrigins, model: type[BaseModel]) -> str:
    messages = []
    for error in exc.errors()[:8]:
        path = _data_path(error["loc"], origins.doc.data)
        dotted = ".".join(map(str, path)) or "(top level)"
        messages.append(f"{origins.of(tuple(path))}: {_describe(error, path, dotted, model)}")
    if len(exc.errors()) > 8:
        messages.append(f"... and {len(exc.errors()) - 8} more problems.")
    return "\n".join(messages)


def _data_path(loc: tuple, data: object) -> list[str | int]:
    """The part of pydantic's error location that names real keys (it adds union-member tags)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part.isidentifier() and "[" not in part:
            node = None  # a missing key: still name it
        else:
            continue
        path.append(part)
    return path


def _describe(error: dict, path: list, dotted: str, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = path[-1]
        if key in OWNED_ELSEWHERE and path[:1] == ["train"]:
            return f"'{dotted}' is not set in train:, it belongs in {OWNED_ELSEWHERE[key]}."
        known = sorted(_fields_at(model, path[:-1]))
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        section = ".".join(map(str, path[:-1])) or "the top level"
        return f"unknown key '{dotted}'.{hint} Valid keys in {section} are listed by `ossft schema`."
    if kind == "missing":
        return f"'{dotted}' is required but missing. Add it (see recipes/quickstart.yaml)."
    given = error.get("input")
    shown = repr(given) if not isinstance(given, (dict, list)) else type(given).__name__
    reason = error["msg"].removeprefix("Value error, ").replace("Input should be", "expected")
    return f"'{dotted}' = {shown}: {reason}."


def _fields_at(model: type[BaseModel], path: list) -> list[str]:
    """Field names of the section found at `path` (list indexes skipped)."""
    for part in path:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        model = next(
            (t for t in _flatten(annotation) if isinstance(t, type) and issubclass(t, BaseModel)),
            None,
        )
        if model is None:
            return []
    return list(model.model_fields)


def _flatten(annotation: Any) -> list:
    args = typing.get_args(annotation)
    return [t for a in args for t in _flatten(a)] if args else [annotation]


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe, every default filled in, as YAML."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)


def recipe_json_schema() -> dict:
    return recipe_model().model_json_schema()
