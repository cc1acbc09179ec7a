"""The recipe's `train:` section -> TRL's SFTConfig, with what TRL would accept but ossft refuses."""

from __future__ import annotations

import os
from types import SimpleNamespace

from ossft.errors import UserError
from ossft.gptoss.facts import DOCUMENT_AWARE_ATTENTIONS, FLEX_ATTENTION
from ossft.launch.memory import is_packed
from ossft.recipe.train_section import TRAIN_DEFAULTS

# Lengths padded to a multiple of this under ossft_flex: the compiled kernel and its block masks are
# specialised to each length, and packed rows change length every batch. 256 = two flex blocks;
# padding-free pads are one-token documents, so the waste is their MLP work, under 256 tokens a row.
LENGTH_BUCKET = 256


def sft_config(recipe, has_eval: bool = False):
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
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
            # Without a GPU accelerate picks no backend and counts one process, while DeepSpeed runs
            # its own gloo group of all of them: the batch-size check then fails (8 != 8 * 1 * 2).
            values.setdefault("ddp_backend", "gloo")
    # The Trainer asks DDP to search for unused parameters whenever the model is a PeftModel, an extra
    # pass over the autograd graph every step. gpt-oss uses every parameter each step (the experts
    # are stacked into single 3-D tensors, and the router always runs), so nothing is ever unused.
    values.setdefault("ddp_find_unused_parameters", False)
    refuse_packing(values, recipe.model.attn_implementation)
    values = with_packing_lengths(values, recipe.model.attn_implementation)
    if not gpu:
        refuse_gpu_only(recipe, values)
    if values.get("hub_token"):
        # Hub pushes read HF_TOKEN; kept in TrainingArguments the token would be pickled into every
        # checkpoint's training_args.bin.
        os.environ["HF_TOKEN"] = values.pop("hub_token")
    values = with_eval_schedule(values, has_eval)
    try:
        return SFTConfig(output_dir=recipe.output.dir, **values)
    except ValueError as exc:
        raise UserError(f"train: the settings do not fit together: {exc}") from exc


def refuse_packing(values: dict, attention: str) -> None:
    packs = [key for key in ("packing", "padding_free") if values.get(key)]
    if not packs:
        return
    if attention not in DOCUMENT_AWARE_ATTENTIONS:
        # gpt-oss builds its masks without position_ids, so the others let packed examples attend to
        # each other (docs/traps.md#trap-2).
        raise UserError(
            f"train.{packs[0]}: with model.attn_implementation {attention}, examples packed into one row would "
            f"attend to each other and train on a wrong context. Use model.attn_implementation: {FLEX_ATTENTION} "
            "(GPU) or eager, which keep each example to itself, or remove the option."
        )
    if values.get("packing") and values.get("packing_strategy") == "wrapped":
        raise UserError(
            "train.packing_strategy: wrapped cuts examples at row boundaries and lets the pieces attend to one "
            "another. Use bfd (the default), which keeps every example whole and apart."
        )


def with_packing_lengths(values: dict, attention: str) -> dict:
    """What packing needs beyond TRL's defaults."""
    values = dict(values)
    packed = is_packed(SimpleNamespace(**{k: values.get(k) for k in ("padding_free", "packing", "packing_strategy")}))
    if packed and not values.get("packing"):
        # TRL refuses padding_free without packing when max_length is set, since it would not truncate;
        # ossft has already fitted every example to max_length (ossft/data/tokenize.py fit_length).
        values["max_length"] = None
    if attention == FLEX_ATTENTION:
        values.setdefault("pad_to_multiple_of", LENGTH_BUCKET)
    return values


GPU_ONLY_OPTIMIZERS = ("8bit", "bnb", "paged", "apex")  # bitsandbytes and apex kernels are CUDA-only


def refuse_gpu_only(recipe, values: dict) -> None:
    """Options that cannot run without a GPU, refused before the model loads rather than deep inside it."""
    problems = []
    if recipe.model.attn_implementation != "eager":
        problems.append(f"model.attn_implementation: {recipe.model.attn_implementation} needs a GPU (use eager on CPU)")
    optim = str(getattr(values.get("optim"), "value", values.get("optim", "")))
    if any(marker in optim for marker in GPU_ONLY_OPTIMIZERS):
        problems.append(f"train.optim: {optim} needs CUDA (use adamw_torch on CPU)")
    if values.get("fp16"):
        problems.append("train.fp16: fp16 mixed precision needs a GPU (remove it; CPUs train in fp32)")
    if problems:
        raise UserError(
            "no GPU here, and the recipe asks for what only a GPU does: " + "; ".join(problems) + ". "
            "To try this recipe on this machine, run `ossft train RECIPE --smoke`."
        )


def with_eval_schedule(values: dict, has_eval: bool) -> dict:
    """With an eval split and no eval schedule, evaluate whenever a checkpoint is saved."""
    if has_eval and values.get("eval_strategy", "no") == "no":
        values = {
            **values,
            "eval_strategy": values.get("save_strategy", "steps"),
            "eval_steps": values.get("save_steps"),
        }
    return values
