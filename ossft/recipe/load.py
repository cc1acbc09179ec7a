"""The recipe: one YAML file -> validated, typed objects, with errors that point at a line.

Sections say which part of the run a key affects: `model`, `lora`, `data`, `train`, `output`,
`launch`. Keys take Hugging Face's argument names where one exists. `train:` accepts every field of
TRL's `SFTConfig`: its schema is built from the dataclass itself, so new TRL options work without
a change here and a misspelt one still gets "did you mean".
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model, field_validator

from ossft.errors import UserError
from ossft.recipe.yaml_source import YamlDoc, parse_scalar, parse_yaml

ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelSection(Section):
    base_model: str = Field(description="Local folder or Hub id of a gpt-oss checkpoint.")
    tokenizer: str | None = Field(None, description="Tokenizer folder or id; defaults to base_model.")
    dtype: Literal["bfloat16", "float32", "float16", "auto"] = "bfloat16"
    # gpt-oss attention adds a learned sink logit per head; sdpa has no way to express it.
    attn_implementation: Literal["eager", "flex_attention", "kernels-community/vllm-flash-attn3"] = "eager"
    experts_implementation: Literal["eager", "batched_mm", "grouped_mm"] | None = None
    trust_remote_code: bool = False

    @field_validator("attn_implementation", mode="before")
    @classmethod
    def _refuse_sdpa(cls, value: object) -> object:
        if value == "sdpa":
            raise ValueError(
                "sdpa cannot add gpt-oss's per-head attention sinks and would train a different model; "
                "use eager (any device) or flex_attention (GPU)"
            )
        return value


class LoraSection(Section):
    r: int = Field(16, ge=1, description="LoRA rank of the attention projections.")
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(ATTENTION_PROJECTIONS))
    experts: Literal["all", "none"] | list[Annotated[int, Field(ge=0)]] = Field(
        "none", description="LoRA on the expert weights (gate_up_proj, down_proj): all, none, or layer indexes."
    )
    experts_r: int | None = Field(None, ge=1, description="Rank for the experts; defaults to r.")
    experts_delta: Literal["routed", "stacked"] = Field(
        "routed",
        description="How the experts' LoRA is applied: routed, (x·A)·B for each routed token; stacked, PEFT's "
        "own, which adds A·B to the whole expert stack every forward (slower, more memory; ossft/model/expert_lora.py).",
    )

    @field_validator("experts", mode="before")
    @classmethod
    def _experts_shape(cls, value: object) -> object:
        if isinstance(value, str) and value not in ("all", "none"):
            raise ValueError("expected all, none, or a list of layer indexes such as [7, 15, 23]")
        if isinstance(value, list) and len(set(map(str, value))) != len(value):
            raise ValueError("a layer index is listed twice")
        return value

    @field_validator("experts")
    @classmethod
    def _experts_need_no_dropout(cls, value: object, info) -> object:
        if value != "none" and info.data.get("lora_dropout", 0) != 0:
            # PEFT's LoRA on nn.Parameter (target_parameters) has no dropout path.
            raise ValueError("experts are targeted, so lora_dropout must be 0 (PEFT target_parameters has no dropout)")
        return value


class DatasetSource(Section):
    path: str = Field(
        description="A file (.jsonl .json .parquet .csv), a folder, a glob, a save_to_disk folder, or a Hub id."
    )
    name: str | None = Field(None, description="Hub dataset config name.")
    split: str = "train"
    format: Literal["auto", "messages", "multilingual_thinking", "prompt_completion"] = "auto"
    sample: Annotated[float, Field(gt=0, lt=1)] | Annotated[int, Field(ge=1)] | None = Field(
        None, description="Keep a fraction (0..1) or a number of rows, chosen with data.seed."
    )
    field_messages: str = "messages"
    field_thinking: str = "thinking"
    field_tools: str = "tools"
    field_reasoning_effort: str = "reasoning_effort"
    field_prompt: str = "prompt"
    field_completion: str = "completion"


class SystemSection(Section):
    """The harmony system message. No date unless set: renders stay reproducible."""

    model_identity: str = "You are ChatGPT, a large language model trained by OpenAI."
    knowledge_cutoff: str = "2024-06"
    current_date: str | None = None
    reasoning_effort: Literal["low", "medium", "high"] = "medium"


class DataSection(Section):
    datasets: list[DatasetSource] = Field(min_length=1)
    chat_format: Literal["harmony", "template"] = Field(
        "harmony", description="harmony: ossft's renderer (what vLLM serves); template: the tokenizer's Jinja template."
    )
    system: SystemSection = Field(default_factory=SystemSection)
    thinking: Literal["per_turn", "keep_all"] = Field(
        "per_turn",
        description="per_turn: one example per trained turn, as a server shows it; keep_all: one example, every analysis kept.",
    )
    train_on: Literal["all_turns", "last_turn"] = "all_turns"

    @field_validator("thinking")
    @classmethod
    def _keep_all_needs_harmony(cls, value: str, info) -> str:
        if value == "keep_all" and info.data.get("chat_format") == "template":
            # The HF gpt-oss template drops every analysis but the last: earlier turns would be
            # trained as answers given without thinking.
            raise ValueError("keep_all needs chat_format: harmony (the template drops earlier turns' analysis)")
        return value

    on_bad_row: Literal["error", "skip"] = "error"
    truncation: Literal["drop", "right"] = Field(
        "drop", description="Examples longer than train.max_length: drop them (counted) or cut them."
    )
    val_set_size: Annotated[float, Field(ge=0, lt=1)] | Annotated[int, Field(ge=1)] = Field(
        0, description="Eval split: a fraction (0..1) or a number of rows."
    )
    seed: int = 42
    num_proc: int = Field(1, ge=1, description="Processes for tokenization.")
    cache_dir: str | None = Field(
        None, description="Tokenized-data cache; default $OSSFT_CACHE or ~/.cache/ossft/data."
    )


class OutputSection(Section):
    dir: str | None = Field(None, description="Output folder; defaults to outputs/<recipe file name>.")
    resume: str = Field(
        "auto",
        description="auto: continue from the newest complete checkpoint in dir; never: start at step 0; "
        "or the path of a checkpoint-N folder.",
    )


class GuardsSection(Section):
    max_nonfinite_losses: int = Field(
        3, ge=1, description="Stop after this many consecutive steps with a NaN or infinite loss."
    )


class LaunchSection(Section):
    accelerate_config: str | None = None
    num_processes: int | None = Field(None, ge=1)
    num_machines: int = Field(1, ge=1)


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
def train_section_model() -> type[BaseModel]:
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
    config = ConfigDict(extra="forbid", use_enum_values=True, arbitrary_types_allowed=True)
    return create_model("TrainSection", __config__=config, **fields)


@functools.cache
def recipe_model() -> type[BaseModel]:
    """The whole recipe. Built at run time because `train:` mirrors the installed TRL."""
    TrainSection = train_section_model()
    return create_model(
        "Recipe",
        __base__=Section,
        __doc__="A complete fine-tuning run. Absent `lora:` means full fine-tuning.",
        model=(ModelSection, ...),
        lora=(LoraSection | None, None),
        data=(DataSection, ...),
        train=(TrainSection, Field(default_factory=TrainSection)),
        output=(OutputSection, Field(default_factory=OutputSection)),
        guards=(GuardsSection, Field(default_factory=GuardsSection)),
        launch=(LaunchSection, Field(default_factory=LaunchSection)),
    )


# ---------------------------------------------------------------------------------------------
# Loading


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


def load_recipe(path: str | Path, overrides: list[str] = ()) -> BaseModel:
    return load_recipe_with_origins(path, overrides)[0]


def load_recipe_with_origins(path: str | Path, overrides: list[str] = ()) -> tuple[BaseModel, RecipeOrigins]:
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
    Recipe = recipe_model()
    try:
        recipe = Recipe.model_validate(doc.data)
    except ValidationError as exc:
        raise UserError(format_errors(exc, origins, Recipe)) from exc
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


def format_errors(exc: ValidationError, origins: RecipeOrigins, Recipe: type[BaseModel]) -> str:
    messages = []
    for error in exc.errors()[:8]:
        path = _data_path(error["loc"], origins.doc.data)
        dotted = ".".join(map(str, path)) or "(top level)"
        messages.append(f"{origins.of(tuple(path))}: {_describe(error, path, dotted, Recipe)}")
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


def _describe(error: dict, path: list, dotted: str, Recipe: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        key = path[-1]
        if key in OWNED_ELSEWHERE and path[:1] == ["train"]:
            return f"'{dotted}' is not set in train:, it belongs in {OWNED_ELSEWHERE[key]}."
        known = sorted(_fields_at(Recipe, path[:-1]))
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


def dump_recipe(recipe: BaseModel) -> str:
    """The resolved recipe, every default filled in, as YAML."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)


def recipe_json_schema() -> dict:
    return recipe_model().model_json_schema()
