"""Free disk space, asked before anything is written: a full disk halfway through a save loses it."""

from __future__ import annotations

import shutil
from pathlib import Path

from ossft.errors import UserError
from ossft.units import GIB


def free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds `path`, or would hold it once created."""
    existing = path if path.exists() else next(p for p in path.parents if p.exists())
    return shutil.disk_usage(existing).free


def ensure_room(out_dir: Path, needed: int, what: str) -> None:
    """Refuse before writing anything when the output filesystem cannot hold `needed` bytes (plus 1 MiB)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    free = free_bytes(out_dir.parent)
    if free < needed + 2**20:
        raise UserError(
            f"not enough disk space in {out_dir.parent}: {what} needs {needed / GIB:.1f} GiB, "
            f"{free / GIB:.1f} GiB are free. Free some space or choose an --out folder on another disk."
        )
