"""The names of what ossft writes and reads on disk, and the sharded safetensors layout.

Model folders are always written in the sharded form (`model-0000x-of-0000N.safetensors` plus an
index), one shard included, so every folder ossft writes reads the same way. A training run's output
folder holds the recipe copy, checkpoint-N folders and, after FSDP, the sharded save.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from ossft.errors import UserError
from ossft.units import GIB

INDEX = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"  # the unsharded form other tools write
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's adapter files
ADAPTER_CONFIG = "adapter_config.json"
GENERATION_CONFIG = "generation_config.json"
RECIPE_COPY = "recipe.yaml"  # the resolved recipe `ossft train` writes into its output folder
TRAINER_STATE = "trainer_state.json"
SUMMARY_FILE = "summary.json"  # what ossft adds to a run's output folder: the summary, the plot, the card
PLOT_FILE = "loss.png"
CARD_FILE = "README.md"
# accelerate's save_fsdp_model under SHARDED_STATE_DICT: one DCP folder, in the run or a checkpoint
FSDP_MODEL_FOLDER = "pytorch_model_fsdp_0"
CHECKPOINT = re.compile(r"checkpoint-(\d+)")  # the Trainer's checkpoint folders
DEFAULT_MAX_SHARD_SIZE = 5 * GIB
# What a server or `from_pretrained` reads besides config.json and the weights, copied along when present.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
)


def shard_names(count: int) -> list[str]:
    return [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]


def write_index(folder: Path, weight_map: dict[str, str], total_size: int) -> None:
    index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def group_into_shards(tensors: list, max_shard_size: int) -> list[list]:
    """Tensors (anything with `nbytes`) in order, a new shard whenever the next would pass the limit;
    a tensor bigger than the limit gets a shard of its own."""
    shards: list[list] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_size:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step}"


def checkpoint_step(folder: Path) -> int | None:
    """N of a `checkpoint-N` folder, else None."""
    match = CHECKPOINT.fullmatch(folder.name)
    return int(match[1]) if match else None


def require_empty_output(out_dir: Path, choose: str = "another --out folder") -> None:
    """ossft never writes over anything: an output folder must not exist or be empty."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"{out_dir} already exists and is not empty. Choose {choose} or delete it first.")


def copy_tokenizer(folders: Iterable[Path], staging: Path) -> Path | None:
    """Every tokenizer file of the first folder that holds a tokenizer, never a mix of two tokenizers;
    returns that folder, or None when none has one."""
    for folder in folders:
        if any((folder / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
            for name in TOKENIZER_FILES:
                if (folder / name).is_file():
                    shutil.copy2(folder / name, staging / name)
            return folder
    return None


def copy_generation_config(folders: Iterable[Path], staging: Path) -> bool:
    """generation_config.json from the first folder that has one."""
    for folder in folders:
        if (folder / GENERATION_CONFIG).is_file():
            shutil.copy2(folder / GENERATION_CONFIG, staging / GENERATION_CONFIG)
            return True
    return False
