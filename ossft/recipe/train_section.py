"""`train:` accepts every field of TRL's `SFTConfig`: its model is generated from the dataclass itself,
so new TRL options work without a change here and a misspelt one still gets "did you mean".

TRL is a heavy import: it happens when a recipe is first validated (or its schema printed), not when
this module is imported.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, Literal

from pydantic import Field, TypeAdapter, create_model

from ossft.recipe.sections import Recipe, TrainSectionBase

# Keys of SFTConfig that another section owns: where they live instead.
OWNED_ELSEWHERE = {"output_dir": "output.dir", "model_init_kwargs": "model"}

# ossft's defaults where they differ from TRL's. bf16 None means "bf16 where the GPU has it".
# transformers 5.2x renamed gradient_checkpointing to activation_checkpointing and warns whenever
# the old name carries a value, which TRL's default True always does.
TRAIN_DEFAULTS: dict[str, object] = {
    "bf16": None,
    "report_to": "none",
    "activation_checkpointing": True,
    "gradient_checkpointing": None,
}

# Ranges TRL only checks at run time, or not at all.
TRAIN_BOUNDS: dict[str, dict[str, float]] = {
    "learning_rate": {"ge": 0},
    "num_train_epochs": {"gt": 0},
    "per_device_train_batch_size": {"ge": 1},
    "per_device_eval_batch_size": {"ge": 1},
    "gradient_accumulation_steps": {"ge": 1},
    "max_steps": {"ge": -1},
    "warmup_steps": {"ge": 0},
    "weight_decay": {"ge": 0},
    "max_grad_norm": {"ge": 0},
    "logging_steps": {"gt": 0},
    "save_steps": {"gt": 0},
    "max_length": {"ge": 1},
    "save_total_limit": {"ge": 1},
    "dataloader_num_workers": {"ge": 0},
}


def _strict_type(tp: Any) -> Any:
    """`SomeEnum | str` -> the enum, so a typo in lr_scheduler_type is caught; unknown types -> Any."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        members = typing.get_args(tp)
        enums = [m for m in members if isinstance(m, type) and issubclass(m, enum.Enum)]
        if enums and str in members:
            kept = [m for m in members if m is not str]
            tp = functools.reduce(lambda a, b: a | b, kept)
    try:
        TypeAdapter(tp).json_schema()
    except Exception:  # a type pydantic cannot describe (accelerate's ParallelismConfig, ...)
        return Any
    return tp


@functools.cache
def train_section_model() -> type[TrainSectionBase]:
    """`TrainSection`: a subclass of TrainSectionBase with one field per SFTConfig field, in its order."""
    from trl import SFTConfig  # heavy import: only when a recipe is really validated

    fields: dict[str, Any] = {}
    for f in dataclasses.fields(SFTConfig):
        if not f.init or f.name in OWNED_ELSEWHERE:
            continue
        if f.name in TRAIN_DEFAULTS:
            default = TRAIN_DEFAULTS[f.name]
        elif f.default is not dataclasses.MISSING:
            default = f.default
        else:
            default = f.default_factory()
        help_text = (f.metadata or {}).get("help")
        choices = (f.metadata or {}).get("choices")
        field_type = Literal[tuple(choices)] if choices and f.type is str else _strict_type(f.type)
        if default is None and field_type is not Any:
            field_type = field_type | None
        fields[f.name] = (field_type, Field(default, description=help_text, **TRAIN_BOUNDS.get(f.name, {})))
    return create_model("TrainSection", __base__=TrainSectionBase, **fields)


@functools.cache
def recipe_model() -> type[Recipe]:
    """The `Recipe` that validates a recipe: the static one, with `train:` the generated TrainSection."""
    TrainSection = train_section_model()
    return create_model(
        "Recipe",
        __base__=Recipe,
        __doc__=Recipe.__doc__,
        train=(TrainSection, Field(default_factory=TrainSection)),
    )
