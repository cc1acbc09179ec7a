"""Writing files and folders so that a crash never leaves a half-written one behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

# The repository's own folders, beside the package (ossft runs from a clone: scripts/setup.sh).
REPO = Path(__file__).resolve().parents[1]
RECIPES_DIR = REPO / "recipes"
ACCELERATE_CONFIGS_DIR = REPO / "accelerate_configs"
EXAMPLES_DIR = REPO / "examples" / "data"


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, then rename over it (atomic on POSIX filesystems)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: object) -> Path:
    return write_text_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def staged_folder(out_dir: Path):
    """Yield a temporary folder beside `out_dir` to fill; when the block ends without an error it is
    renamed to `out_dir` (an empty `out_dir` is replaced). On any error, or a crash, no `out_dir`
    appears: a half-written model never looks like a finished one."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield staging
        if out_dir.exists():
            out_dir.rmdir()  # callers refuse a non-empty out_dir before they start
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
