"""`ossft train RECIPE --smoke`: the same recipe on the tiny model, for a few steps, on any machine.

Everything that can stay stays: the data pipeline and its options, the LoRA shape (targets scaled to
the tiny model's layers), the optimizer, the schedule, the batch sizes, the eval split. What cannot
run on a laptop is swapped, and each swap is said out loud: the base model, the dtype, GPU-only
options, a Hub dataset that is not in the local cache (the bundled sample in the same columns), and
a topology of many GPUs or nodes (at most two processes on one machine).
"""

from __future__ import annotations

import os
from pathlib import Path

from ossft.errors import UserError
from ossft.files import EXAMPLES_DIR
from ossft.gptoss.facts import model_shape
from ossft.model.tiny import TinySpec
from ossft.train.config import GPU_ONLY_OPTIMIZERS

SMOKE_STEPS = 3
SMOKE_MAX_LENGTH = 256
SMOKE_PROCESSES = 2  # enough to exercise data parallelism; more only slows a 2-core machine
# Bundled samples in the column layout of each data format (see scripts/make_*sample*.py).
SAMPLES = {
    "multilingual_thinking": EXAMPLES_DIR / "multilingual_thinking_sample.jsonl",
    "messages": EXAMPLES_DIR / "chat_multilingual.jsonl",
    "auto": EXAMPLES_DIR / "chat_multilingual.jsonl",
}
KNOWN_FORMATS = {"HuggingFaceH4/Multilingual-Thinking": "multilingual_thinking"}


def tiny_model_path(mxfp4: bool = False) -> Path:
    root = os.environ.get("OSSFT_CACHE") or Path.home() / ".cache" / "ossft"
    return Path(root) / "smoke" / f"tiny-gpt-oss{'-mxfp4' if mxfp4 else ''}-seed{TinySpec().seed}"


def ensure_tiny_model(mxfp4: bool = False) -> Path:
    """The tiny model the smoke runs train, made once (byte-identical each time it is made); with its
    experts stored as MXFP4 for recipes that keep them so (model.mxfp4_experts)."""
    from ossft.model.tiny import write_tiny_model

    path = tiny_model_path(mxfp4)
    if not (path / "config.json").is_file():
        write_tiny_model(path, mxfp4=mxfp4)
    return path


def smoke_recipe(recipe, tiny_model: Path):
    """A copy of `recipe` that runs on `tiny_model` for SMOKE_STEPS steps; returns (recipe, notes)."""
    smoke = recipe.model_copy(deep=True)
    notes = [f"smoke run: {recipe.model.base_model} -> the tiny model {tiny_model}, {SMOKE_STEPS} steps"]
    real_layers = _layer_count(recipe.model.base_model)
    smoke.model.base_model = str(tiny_model)
    smoke.model.tokenizer = None  # the tiny model's own
    smoke.model.dtype = "float32"  # CPUs train in fp32; bf16 on CPU is slow and inexact
    if smoke.model.attn_implementation not in (None, "eager"):
        notes.append(f"attention {smoke.model.attn_implementation} -> eager (compiled kernels need a GPU; eager keeps packed examples apart too)")
        smoke.model.attn_implementation = "eager"
    if smoke.lora is not None and isinstance(smoke.lora.experts, list):
        scaled = scaled_layers(smoke.lora.experts, real_layers, TinySpec().layers)
        notes.append(
            f"LoRA experts of layers {smoke.lora.experts} (of {real_layers}) -> {scaled} (of the tiny model's)"
        )
        smoke.lora.experts = scaled
    notes += _swap_datasets(smoke.data)
    notes += _cpu_train_settings(smoke.train)
    smoke.output.dir = f"{recipe.output.dir}-smoke"  # never mixes with, or resumes, the real run's folder
    total = smoke.launch.num_processes or 1
    if total > SMOKE_PROCESSES or smoke.launch.num_machines > 1:
        notes.append(
            f"{total} processes on {smoke.launch.num_machines} node(s) -> {min(total, SMOKE_PROCESSES)} on this machine"
        )
    smoke.launch.num_processes = min(total, SMOKE_PROCESSES)
    smoke.launch.num_machines = 1
    return type(recipe).model_validate(smoke.model_dump()), notes


def scaled_layers(layers: list[int], real_layers: int, tiny_layers: int) -> list[int]:
    """Keep each chosen layer's relative depth: layer 23 of 24 is the tiny model's last layer."""
    return sorted({min(tiny_layers - 1, index * tiny_layers // real_layers) for index in layers})


def _layer_count(base_model: str) -> int:
    """Decoder layers of the recipe's model, to scale `lora.experts: [7, 15, 23]` onto the tiny model;
    a model whose shape is unknown here counts as the tiny one (nothing to scale)."""
    try:
        return model_shape(base_model).layers
    except UserError:
        return TinySpec().layers


def _swap_datasets(data_section) -> list[str]:
    notes = []
    for source in data_section.datasets:
        if Path(source.path).exists() or "/" not in source.path or hub_dataset_cached(source.path):
            continue
        layout = source.format if source.format != "auto" else KNOWN_FORMATS.get(source.path, "auto")
        sample = SAMPLES.get(layout)
        if sample is None:
            continue  # no bundled sample in that layout: loading reports the missing dataset clearly
        notes.append(f"dataset {source.path} is not in the local Hugging Face cache -> the bundled sample {sample}")
        source.path, source.format, source.name, source.split = str(sample), layout, None, "train"
    return notes


def hub_dataset_cached(repo_id: str) -> bool:
    """True when `datasets.load_dataset(repo_id)` can work offline: a download in the hub cache or a
    prepared copy in the datasets cache."""
    from datasets import config
    from huggingface_hub import constants

    owner_name = repo_id.split("/")
    hub = Path(constants.HF_HUB_CACHE) / ("datasets--" + "--".join(owner_name))
    prepared = Path(config.HF_DATASETS_CACHE) / "___".join(owner_name)
    return hub.is_dir() or prepared.is_dir()


def _cpu_train_settings(train) -> list[str]:
    notes = []
    train.max_steps = SMOKE_STEPS
    train.logging_steps = 1
    if train.max_length and train.max_length > SMOKE_MAX_LENGTH:
        # Packed rows under CPU eager attention hold [heads, row, row] scores: with rows of 2048 a smoke
        # run took a minute here instead of seconds. The bundled samples' examples (148-216 tokens with
        # the tiny tokenizer) fit this length whole.
        notes.append(f"train.max_length {train.max_length} -> {SMOKE_MAX_LENGTH} (CPU eager attention)")
        train.max_length = SMOKE_MAX_LENGTH
    for key in ("bf16", "fp16", "tf32"):
        if getattr(train, key, None):
            notes.append(f"train.{key} -> off (CPU)")
            setattr(train, key, False if key != "tf32" else None)
    optim = str(getattr(train.optim, "value", train.optim))
    if any(marker in optim for marker in GPU_ONLY_OPTIMIZERS):
        notes.append(f"train.optim {optim} -> adamw_torch (the original needs CUDA)")
        train.optim = "adamw_torch"
    if train.report_to not in (None, "none", [], ["none"]):
        notes.append(f"train.report_to {train.report_to} -> none (a smoke run is not an experiment)")
        train.report_to = "none"
    return notes
