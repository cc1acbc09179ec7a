"""The recipe is typed statically: an editor or type checker follows `recipe.data.thinking` and
`recipe.train.max_length` through sections.py, and what it is told is what a loaded recipe holds."""

from __future__ import annotations

import ast
import enum
import re
import types
import typing
from typing import Literal, get_type_hints

from ossft.harmony import render as harmony
from ossft.recipe import sections
from ossft.recipe.load import load_recipe
from ossft.recipe.sections import DataSection, Recipe, SystemSection, TrainSectionBase
from ossft.recipe.train_section import recipe_model, train_section_model

from .conftest import REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def declared_train_fields() -> dict[str, object]:
    """TrainSectionBase's `if TYPE_CHECKING:` declarations, evaluated as a type checker reads them."""
    tree = ast.parse((REPO / "ossft" / "recipe" / "sections.py").read_text())
    base = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TrainSectionBase")
    block = next(n for n in base.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    return {
        n.target.id: eval(ast.unparse(n.annotation), vars(sections)) for n in block.body if isinstance(n, ast.AnnAssign)
    }


def members(tp: object) -> set:
    """A type as the set of what it can hold: unions flattened, enums and str literals as str."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return set().union(*(members(m) for m in typing.get_args(tp)))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return {str}  # use_enum_values: the section holds the value
    if typing.get_origin(tp) is Literal and all(isinstance(a, str) for a in typing.get_args(tp)):
        return {str}
    return {tp}


def test_recipe_sections_are_static_types():
    hints = get_type_hints(Recipe)
    assert hints["data"] is DataSection
    assert hints["train"] is TrainSectionBase
    assert hints["lora"] == sections.LoraSection | None
    assert get_type_hints(DataSection)["thinking"] == Literal["per_turn", "keep_all"]
    assert get_type_hints(DataSection)["system"] is SystemSection
    assert (
        get_type_hints(sections.DatasetSource)["format"]
        == Literal["auto", "messages", "multilingual_thinking", "prompt_completion"]
    )


def test_load_recipe_returns_the_static_recipe():
    recipe = load_recipe(QUICKSTART)
    assert isinstance(recipe, Recipe)
    assert isinstance(recipe.data, DataSection)
    assert isinstance(recipe.train, TrainSectionBase)
    assert type(recipe) is recipe_model() and type(recipe.train) is train_section_model()
    # The runtime class differs from the static one in `train:` only, and keeps its place.
    runtime = recipe_model().model_fields
    assert list(runtime) == list(Recipe.model_fields)
    for name, field in Recipe.model_fields.items():
        if name != "train":
            assert runtime[name].annotation == field.annotation, name
    assert runtime["train"].annotation is train_section_model()


def test_train_declarations_match_the_generated_section():
    declared = declared_train_fields()
    generated = train_section_model().model_fields
    assert "max_length" in declared
    assert set(declared) <= set(generated), set(declared) - set(generated)
    for name, tp in declared.items():
        assert members(tp) == members(generated[name].annotation), name
    # and the values really held, defaults and a loaded recipe's, have the declared types
    for train in (train_section_model()(), load_recipe(QUICKSTART).train):
        for name, tp in declared.items():
            value = getattr(train, name)
            allowed = tuple(typing.get_origin(m) or m for m in members(tp))
            assert isinstance(value, allowed) or (float in allowed and isinstance(value, int)), (name, value)


def test_train_fields_ossft_reads_are_declared():
    read = set()
    for path in (REPO / "ossft").rglob("*.py"):
        read |= set(re.findall(r"(?<!ossft)\.train\.([a-z_]\w*)\b(?!\()", path.read_text()))
    assert read, "the pattern no longer finds recipe.train.<field>"
    assert read <= set(declared_train_fields()), f"declare in TrainSectionBase: {read - set(declared_train_fields())}"


def test_system_defaults_are_harmony_s():
    system, block = SystemSection(), harmony.SystemBlock()
    assert (system.model_identity, system.knowledge_cutoff) == (block.model_identity, block.knowledge_cutoff)
