"""The sharded safetensors layout ossft writes: `model-0000x-of-0000N.safetensors` plus an index.

Always the sharded form, one shard included, so every folder ossft writes reads the same way.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ossft.errors import UserError

INDEX = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_SIZE = 5 * 2**30
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


def ensure_room(out_dir: Path, needed: int, what: str) -> None:
    """Refuse before writing anything when the output filesystem cannot hold `needed` bytes (plus 1 MiB)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(out_dir.parent).free
    if free < needed + 2**20:
        raise UserError(
            f"not enough disk space in {out_dir.parent}: {what} needs {needed / 2**30:.1f} GiB, "
            f"{free / 2**30:.1f} GiB are free. Free some space or choose an --out folder on another disk."
        )


def plan_shards(tensors: list, max_shard_size: int) -> list[list]:
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


def local_model_folder(name: str) -> Path | None:
    """A local folder, or a Hub id already in the local cache (never the network: merges and exports
    run where training ran). None when neither: the caller says what to do."""
    folder = Path(name).expanduser()
    if folder.is_dir():
        return folder
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, or not a valid id
        return None
