"""The recipe's `train:` section -> TRL SFTConfig, then SFTTrainer on the model and the data."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from ossft import data, model
from ossft.errors import UserError
from ossft.files import write_text_atomic
from ossft.recipe import TRAIN_DEFAULTS, dump_recipe

RECIPE_COPY = "recipe.yaml"


@dataclass
class TrainingRun:
    recipe: object
    trainer: object
    data: data.TokenizedData
    trainable_params: int
    total_params: int
    wall_seconds: float

    @property
    def output_dir(self) -> Path:
        return Path(self.recipe.output.dir)


def sft_config(recipe):
    import torch
    from trl import SFTConfig

    # Only ossft's own defaults and what the recipe changes: passing the deprecated alias
    # gradient_checkpointing, even at its default value, makes transformers warn.
    chosen = recipe.train.model_dump()
    values = {k: chosen[k] for k in TRAIN_DEFAULTS if chosen[k] is not None or k == "bf16"}
    values.update(recipe.train.model_dump(exclude_defaults=True))
    gpu = torch.cuda.is_available()
    if values.get("bf16") is None:
        values["bf16"] = gpu and torch.cuda.is_bf16_supported()
    if not gpu:
        values.setdefault("dataloader_pin_memory", False)  # pinning needs an accelerator
    try:
        return SFTConfig(output_dir=recipe.output.dir, **values)
    except ValueError as exc:
        raise UserError(f"train: the settings do not fit together: {exc}") from exc


def prepare_trainer(recipe, on_status=print):
    """Everything up to the first step: tokenizer, data, model, LoRA, trainer."""
    from trl import SFTTrainer

    args = sft_config(recipe)
    tokenizer = model.load_tokenizer(recipe)
    tokenized = data.load_training_data(recipe, tokenizer)
    on_status(
        f"data: {tokenized.rows} conversations, {tokenized.tokens:,} tokens, {tokenized.trained_tokens:,} trained"
    )
    network = model.apply_lora(model.load_model(recipe), recipe)
    trainable, total = model.parameter_counts(network)
    on_status(f"model: {total:,} parameters, {trainable:,} trainable ({100 * trainable / total:.2f}%)")
    trainer = SFTTrainer(model=network, args=args, train_dataset=tokenized.dataset, processing_class=tokenizer)
    return trainer, tokenized, trainable, total


def run_training(recipe, on_status=print) -> TrainingRun:
    trainer, tokenized, trainable, total = prepare_trainer(recipe, on_status)
    output = Path(recipe.output.dir)
    write_text_atomic(output / RECIPE_COPY, dump_recipe(recipe))
    started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - started
    trainer.save_model(str(output))
    trainer.save_state()
    return TrainingRun(recipe, trainer, tokenized, trainable, total, wall)
