"""The recipe's sections as static classes: what `recipe.data.thinking` is, for a reader, an editor
and a type checker.

`Recipe` is the whole file. Its `train:` is declared as `TrainSectionBase`, the SFTConfig fields
ossft's own code reads; the model that really validates `train:` is generated from the installed TRL
(train_section.py), subclasses it, and sits in the `Recipe` subclass that `load_recipe` validates with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ossft.gptoss.facts import ATTENTION_PROJECTIONS, ATTENTIONS, checkpoint_is_mxfp4
from ossft.harmony.render import KNOWLEDGE_CUTOFF, MODEL_IDENTITY


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelSection(Section):
    base_model: str = Field(description="Local folder or Hub id of a gpt-oss checkpoint.")
    tokenizer: str | None = Field(None, description="Tokenizer folder or id; defaults to base_model.")
    dtype: Literal["bfloat16", "float32", "float16", "auto"] = "bfloat16"
    attn_implementation: Literal[ATTENTIONS] = Field(
        "eager",
        description="eager: any device, O(seq^2) memory; ossft_flex: ossft's flex attention (GPU), exact sinks, "
        "memory linear in seq. Both keep packed documents apart; the others do not (docs/traps.md#trap-2).",
    )
    experts_implementation: Literal["eager", "batched_mm", "grouped_mm"] | None = None
    mxfp4_experts: bool | None = Field(
        None,
        description="Keep the frozen expert weights of a LoRA run in MXFP4 (a quarter of bf16's memory), "
        "dequantized a layer at a time, with the same results (ossft/model/mxfp4_experts.py). Unset: yes for "
        "LoRA from an MXFP4 checkpoint on unsharded GPUs (FSDP2 and ZeRO-3 shard bf16 weights, not MXFP4 buffers).",
    )
    trust_remote_code: bool = False

    @field_validator("attn_implementation", mode="before")
    @classmethod
    def _refuse_sdpa(cls, value: object) -> object:
        if value == "sdpa":
            raise ValueError(
                "sdpa cannot add gpt-oss's per-head attention sinks and would train a different model; "
                "use eager (any device) or ossft_flex (GPU)"
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

    model_identity: str = MODEL_IDENTITY
    knowledge_cutoff: str = KNOWLEDGE_CUTOFF
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
    gpu_memory_gib: float | None = Field(
        None,
        gt=0,
        description="Memory of one GPU of the hardware the recipe is written for, GiB as torch reports it "
        "(H100 80 GB: 79.6, H200: 140.4); `ossft plan` checks against it (default 80).",
    )


class TrainSectionBase(BaseModel):
    """`train:`, TRL's SFTConfig. The model that validates it is generated from the installed TRL and
    subclasses this one (train_section.py); the config here is the generated model's."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True, arbitrary_types_allowed=True)

    if TYPE_CHECKING:
        # The fields ossft's own code reads, for editors and type checkers only: as pydantic fields
        # they would come first in the generated subclass and reorder `ossft schema` and dumped
        # recipes. The generated model declares every field from SFTConfig; tests/test_recipe.py
        # checks these types against it. Enum choices hold their value (use_enum_values): str.
        max_length: int | None
        per_device_train_batch_size: int
        gradient_accumulation_steps: int
        learning_rate: float
        lr_scheduler_type: str
        warmup_steps: float
        max_steps: int
        logging_steps: float
        seed: int
        optim: str
        bf16: bool | None
        fp16: bool
        tf32: bool | None
        activation_checkpointing: bool | None
        gradient_checkpointing: bool | None
        label_smoothing_factor: float
        report_to: str | list[str] | None


class Recipe(Section):
    """A complete fine-tuning run. Absent `lora:` means full fine-tuning."""

    # Validate with train_section.recipe_model() (load_recipe does): this class's own `train:` knows
    # no SFTConfig field.
    model: ModelSection
    lora: LoraSection | None = None
    data: DataSection
    train: TrainSectionBase = Field(default_factory=TrainSectionBase)
    output: OutputSection = Field(default_factory=OutputSection)
    guards: GuardsSection = Field(default_factory=GuardsSection)
    launch: LaunchSection = Field(default_factory=LaunchSection)

    def experts_in_mxfp4(self) -> bool:
        """Whether this run keeps its frozen experts in MXFP4: as model.mxfp4_experts says, else by default
        for LoRA with routed expert LoRA from an MXFP4 checkpoint, launched without FSDP or ZeRO-3 (which
        shard parameters: bf16 experts over 8 GPUs take less per GPU than whole MXFP4 ones)."""
        if self.model.mxfp4_experts is not None:
            return self.model.mxfp4_experts
        if self.lora is None or (self.lora.experts != "none" and self.lora.experts_delta == "stacked"):
            return False
        config = (self.launch.accelerate_config or "ddp").lower()
        return "fsdp" not in config and "zero" not in config and checkpoint_is_mxfp4(self.model.base_model)

    @model_validator(mode="after")
    def _mxfp4_experts_need_frozen_routed_experts(self):
        if not self.model.mxfp4_experts:
            return self
        if self.lora is None:
            raise ValueError(
                "model.mxfp4_experts: full fine-tuning trains the expert weights, which must then be real "
                "tensors; keep MXFP4 experts for LoRA (add a lora: section) or set it to false"
            )
        if self.lora.experts != "none" and self.lora.experts_delta == "stacked":
            raise ValueError(
                "model.mxfp4_experts: lora.experts_delta stacked adds A·B to the whole bf16 expert stack; "
                "use routed (the default)"
            )
        return self
