"""FSDP2 SHARDED_STATE_DICT saves, found and read with torch.distributed.checkpoint (DCP), one batch at a time.

Where they are (accelerate 1.15 `save_fsdp_model` / `save_fsdp_optimizer`, transformers 5.23 `_save_checkpoint`):
  RUN/checkpoint-N/pytorch_model_fsdp_0/   DCP: `.metadata` (the index) + one `__{rank}_0.distcp` per rank,
                                           holding the state dict `{"model": ...}` (so every key is `model.<name>`)
  RUN/checkpoint-N/optimizer_0/            DCP of `{"optimizer": ...}`; never read here
  RUN/checkpoint-N/scheduler.pt, rng_state_{rank}.pth, trainer_state.json
  RUN/pytorch_model_fsdp_0/                the same, from `save_fsdp_model(..., RUN)` (`accelerator.save_state(RUN)`)
No config.json, tokenizer or adapter_config.json: with SHARDED_STATE_DICT, `Trainer.save_model` writes nothing.
The names inside are what `get_model_state_dict` gives for a full model (`model.layers.0...`, `lm_head.weight`), or,
for a PEFT model, what `get_peft_model_state_dict` gives (the Trainer saves adapters only: PEFT's own file names,
`base_model.model....lora_A.weight`); `accelerator.save_state` saves a PEFT model whole instead
(`...q_proj.base_layer.weight` beside `...q_proj.lora_A.default.weight`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ossft.checkpoints.layout import ADAPTER_WEIGHTS, CHECKPOINT, FSDP_MODEL_FOLDER, INDEX, SINGLE_FILE
from ossft.errors import UserError

STATE_KEY = "model"  # accelerate saves {"model": state_dict}; DCP flattens it to "model.<name>"


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: object  # torch.dtype


def find_sharded_save(path: Path) -> Path:
    """The folder holding `pytorch_model_fsdp_0/`: `path` itself (a final save or a checkpoint-N; or its parent,
    given that folder), or else the newest `checkpoint-N` in it. An interrupted save is refused, never skipped
    for an older one: which weights to publish is the user's call."""
    if not path.is_dir():
        raise UserError(f"{path} is not a folder. Pass the output folder of an FSDP run, or one of its checkpoint-N.")
    if path.name == FSDP_MODEL_FOLDER:  # the DCP folder itself: its parent is the save
        path = path.parent
    newest = max(_checkpoints(path), key=lambda p: int(CHECKPOINT.fullmatch(p.name)[1]), default=None)
    folder = path if (path / FSDP_MODEL_FOLDER).is_dir() else newest
    if folder is None:
        raise UserError(f"{path} holds no FSDP sharded save: {_what_is_there(path)}")
    if not (folder / FSDP_MODEL_FOLDER / ".metadata").is_file():
        raise UserError(
            f"{folder / FSDP_MODEL_FOLDER} has no .metadata: the save was interrupted (DCP writes it last). "
            "Pass an earlier checkpoint-N folder instead."
        )
    return folder


def _checkpoints(path: Path) -> list[Path]:
    return [p for p in path.iterdir() if CHECKPOINT.fullmatch(p.name) and (p / FSDP_MODEL_FOLDER).is_dir()]


def _what_is_there(path: Path) -> str:
    if any((path / name).is_file() for name in (ADAPTER_WEIGHTS, SINGLE_FILE, INDEX)):
        return "it already holds a Hugging Face model or adapter, which needs no merging."
    if (path / "pytorch_model_fsdp.bin").is_file():
        return "pytorch_model_fsdp.bin is a FULL_STATE_DICT save; its folder holds the model already."
    return (
        f"no {FSDP_MODEL_FOLDER}/ in it nor in a checkpoint-N/ folder. Pass the output.dir of a run trained with "
        "FSDP and fsdp_state_dict_type: SHARDED_STATE_DICT, or one of its checkpoint-N folders."
    )


def run_folder(save: Path) -> Path:
    """The run's output folder: where recipe.yaml and the final save live."""
    return save.parent if CHECKPOINT.fullmatch(save.name) else save


def read_model_tensors(dcp_dir: Path) -> dict[str, TensorInfo]:
    """Every model tensor's name (without the `model.` prefix), shape and dtype, from `.metadata` alone, after
    checking that each `.distcp` file it points into is there and long enough."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    try:
        metadata = FileSystemReader(str(dcp_dir)).read_metadata()
        entries = metadata.state_dict_metadata.items()
    except Exception as exc:  # a pickle cut short or overwritten: whatever it raises, the index is unreadable
        raise UserError(
            f"cannot read {dcp_dir}/.metadata ({type(exc).__name__}: {exc}); the file is damaged. Copy it again "
            "from the training machine, or pass an earlier checkpoint-N folder."
        ) from None
    _check_storage_files(dcp_dir, metadata.storage_data)
    tensors = {}
    for key, entry in entries:
        if key.startswith(f"{STATE_KEY}.") and isinstance(entry, TensorStorageMetadata):
            _check_chunks_cover(dcp_dir, key, entry)
            tensors[key.removeprefix(f"{STATE_KEY}.")] = TensorInfo(tuple(entry.size), entry.properties.dtype)
    if not tensors:
        found = sorted({key.split(".", 1)[0] for key, _ in entries})
        raise UserError(
            f"{dcp_dir} holds no model tensors (top-level keys: {found}); accelerate saves the model under "
            f"'{STATE_KEY}'. Is this an optimizer folder?"
        )
    return tensors


def _check_chunks_cover(dcp_dir: Path, key: str, entry) -> None:
    # Reading fills preallocated tensors: a part no chunk covers would be written out as whatever memory held.
    covered = sum(math.prod(chunk.sizes) for chunk in entry.chunks)
    if covered != math.prod(entry.size):
        raise UserError(
            f"{dcp_dir}/.metadata is inconsistent: the chunks of {key} hold {covered:,} of its "
            f"{math.prod(entry.size):,} values. Copy the save again, or pass an earlier checkpoint-N."
        )


def _check_storage_files(dcp_dir: Path, storage_data: dict) -> None:
    needed: dict[str, int] = {}
    for info in storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    missing = sorted(name for name in needed if not (dcp_dir / name).is_file())
    if missing:
        raise UserError(
            f"{dcp_dir} lacks {', '.join(missing)} ({len(missing)} of {len(needed)} .distcp files; each rank "
            "writes its own). Copy the whole folder from the training machine, or pass an earlier checkpoint-N."
        )
    for name, size in sorted(needed.items()):
        found = (dcp_dir / name).stat().st_size
        if found < size:
            raise UserError(
                f"{dcp_dir / name} is truncated: {found:,} bytes, the checkpoint's .metadata needs {size:,}. The save "
                "or the copy was cut short; copy it again, or pass an earlier checkpoint-N."
            )


def load_tensors(dcp_dir: Path, targets: dict[str, object], on_bytes: Callable[[int], None] | None = None) -> None:
    """Fill `targets` (name -> preallocated tensor, any floating dtype: DCP casts while copying) from the save.

    Only these keys are planned and read, one rank's chunk at a time, so memory stays at `targets` plus a chunk.
    """
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        # no_dist=True is the point: one process reads what many wrote.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load(
            {f"{STATE_KEY}.{name}": tensor for name, tensor in targets.items()},
            storage_reader=dcp.FileSystemReader(str(dcp_dir)),
            planner=_progress_planner(on_bytes),
            no_dist=True,
        )


def _progress_planner(on_bytes: Callable[[int], None] | None):
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class ProgressPlanner(DefaultLoadPlanner):
        """DCP calls `commit_tensor` after copying each chunk in: the one place that sees reading progress."""

        def commit_tensor(self, read_item, tensor) -> None:
            super().commit_tensor(read_item, tensor)
            if on_bytes:
                on_bytes(tensor.numel() * tensor.element_size())

    return ProgressPlanner()
