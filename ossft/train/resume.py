"""Which checkpoint a run continues from, and the marker that says a checkpoint is whole.

The Trainer writes `checkpoint-N/` in place, file after file; a run killed halfway leaves a folder
that looks like a checkpoint and is not. So the last thing written for every checkpoint is
`ossft-checkpoint.json`, listing each file with its size and what the run was (model, LoRA shape,
data). A checkpoint counts only when that marker is there and every file still has its size; the
rest are moved aside as `partial-checkpoint-N` (out of the Trainer's `checkpoint-*` rotation) and
reported, never loaded and never overwritten piecemeal by the resumed run.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from ossft.checkpoints.layout import CHECKPOINT
from ossft.errors import UserError
from ossft.files import write_json_atomic

MARKER = "ossft-checkpoint.json"


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    problem: str | None  # None: complete

    @property
    def complete(self) -> bool:
        return self.problem is None


def run_identity(recipe, train_dataset) -> dict:
    """What a checkpoint can only be resumed with: the same base model, the same trainable shape,
    the same token stream. Anything else (learning rate, steps, logging) may change on resume."""
    lora = recipe.lora.model_dump(mode="json") if recipe.lora is not None else None
    return {"base_model": recipe.model.base_model, "lora": lora, "data": dataset_digest(train_dataset)}


def dataset_digest(dataset) -> str:
    """sha256 of the tokenized training set's Arrow buffers: the ids, masks and their order."""
    digest = hashlib.sha256()
    for column in dataset.data.table.columns:
        for chunk in column.chunks:
            for buffer in chunk.buffers():
                if buffer is not None:
                    digest.update(memoryview(buffer))
    return digest.hexdigest()


def write_marker(checkpoint: Path, step: int, identity: dict) -> None:
    files = {
        str(p.relative_to(checkpoint)): p.stat().st_size
        for p in sorted(checkpoint.rglob("*"))
        if p.is_file() and p.name != MARKER
    }
    write_json_atomic(checkpoint / MARKER, {"step": step, "identity": identity, "files": files})


def inspect_checkpoint(path: Path) -> Checkpoint:
    step = int(CHECKPOINT.fullmatch(path.name).group(1)) if CHECKPOINT.fullmatch(path.name) else -1
    marker = path / MARKER
    if not marker.is_file():
        return Checkpoint(path, step, "no completion marker: the save was cut short (or not made by ossft)")
    try:
        files = json.loads(marker.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return Checkpoint(path, step, f"{MARKER} is damaged")
    for name, size in files.items():
        actual = (path / name).stat().st_size if (path / name).is_file() else None
        if actual != size:
            found = "missing" if actual is None else f"{actual:,} bytes, {size:,} written"
            return Checkpoint(path, step, f"{name} is {found}")
    return Checkpoint(path, step, None)


def checkpoints_in(output: Path) -> list[Checkpoint]:
    """Every checkpoint-N folder of `output`, newest first."""
    found = [inspect_checkpoint(p) for p in output.glob("checkpoint-*") if p.is_dir() and CHECKPOINT.fullmatch(p.name)]
    return sorted(found, key=lambda c: c.step, reverse=True)


def marker_identity(checkpoint: Path) -> dict:
    return json.loads((checkpoint / MARKER).read_text()).get("identity", {})


def choose_checkpoint(resume: str, output: Path, identity: dict, on_status=print) -> Path | None:
    """The checkpoint to continue from (None: start at step 0). Partial checkpoints newer than it are
    moved aside so the resumed run cannot mix its files with theirs."""
    if resume == "never":
        return None
    if resume != "auto":
        if not Path(resume).is_dir():
            raise UserError(f"output.resume: {resume} is not a folder. Give a checkpoint-N folder, auto or never.")
        chosen = inspect_checkpoint(Path(resume))
        if not chosen.complete:
            raise UserError(f"output.resume: {resume} cannot be resumed: {chosen.problem}. Pick another checkpoint.")
        check_identity(chosen.path, identity)
        return chosen.path
    chosen = None
    for checkpoint in checkpoints_in(output):
        if checkpoint.complete:
            chosen = checkpoint
            break
        aside = checkpoint.path.with_name(f"partial-{checkpoint.path.name}")
        if aside.exists():
            raise UserError(f"{checkpoint.path} is incomplete ({checkpoint.problem}) and {aside} exists; remove one.")
        checkpoint.path.rename(aside)
        on_status(f"[yellow]skipped {checkpoint.path.name}: {checkpoint.problem}; moved to {aside.name}[/]")
    if chosen is None:
        return None
    check_identity(chosen.path, identity)
    on_status(f"resuming from {chosen.path} (step {chosen.step})")
    return chosen.path


def check_identity(checkpoint: Path, identity: dict) -> None:
    saved = marker_identity(checkpoint)
    changed = [key for key in ("base_model", "lora", "data") if saved.get(key) != identity.get(key)]
    if not changed:
        return
    what = {"base_model": "model.base_model", "lora": "the lora: section", "data": "the training data"}
    details = []
    if "base_model" in changed:
        details.append(f"model.base_model was {saved.get('base_model')}, now {identity.get('base_model')}")
    if "lora" in changed:
        details.append(f"lora was {_short(saved.get('lora'))}, now {_short(identity.get('lora'))}")
    if "data" in changed:
        details.append("the tokenized training set differs (data files, data: options, tokenizer or max_length)")
    raise UserError(
        f"cannot resume from {checkpoint}: {', '.join(what[k] for k in changed)} changed since it was saved "
        f"({'; '.join(details)}). Set output.resume: never (or --set output.resume=never) to start over, "
        "or choose a new output.dir."
    )


def _short(lora: dict | None) -> str:
    if lora is None:
        return "absent (full fine-tuning)"
    return ", ".join(f"{k}={v}" for k, v in lora.items() if k in ("r", "lora_alpha", "target_modules", "experts"))
