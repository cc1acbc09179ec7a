"""Where rows come from: files, folders, globs, `save_to_disk` folders and Hub datasets -> plain dicts.

This module knows nothing about chat formats; data/tokenize.py checks and renders what it returns. Every
source also gets a fingerprint that changes with its content, so tokenized data can be cached.
"""

from __future__ import annotations

import glob
import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from ossft.data import readers
from ossft.errors import UserError

SUPPORTED = (".jsonl", ".json", ".parquet", ".csv")
# Bump when the way rows are read changes, so that caches keyed on a fingerprint are not reused.
FINGERPRINT_VERSION = 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_DISK_MARKERS = ("dataset_dict.json", "dataset_info.json", "state.json")


@dataclass(frozen=True)
class SourceSpec:
    path: str
    name: str | None = None
    split: str = "train"
    sample: float | int | None = None


@dataclass
class LoadedRows:
    source: str
    rows: list
    indexes: list[int]
    fingerprint: str


@dataclass
class _Resolved:
    kind: str  # "files" | "disk" | "hub"
    files: list[Path]  # for "files"; the folder alone for "disk"


def load_rows(spec: SourceSpec, seed: int) -> LoadedRows:
    resolved = _resolve(spec)
    if resolved.kind == "files":
        rows, digests = [], []
        for file in resolved.files:
            file_rows, digest = _read_file(file)
            rows.extend(file_rows)
            digests.append([file.suffix.lower(), digest])
        content = digests
    elif resolved.kind == "disk":
        folder = resolved.files[0]
        rows = readers.disk_dataset(spec, folder, _disk_split_folder(spec, folder)).to_list()
        content = _disk_content(spec, resolved.files[0])
    else:
        dataset = readers.hub_dataset(spec)
        rows = dataset.to_list()
        content = ["hub", dataset._fingerprint]
    indexes = _sample_indexes(len(rows), spec, seed)
    if len(indexes) < len(rows):
        rows = [rows[i] for i in indexes]
    return LoadedRows(spec.path, rows, indexes, _fingerprint(spec, content))


def source_fingerprint(spec: SourceSpec) -> str:
    """The fingerprint load_rows would give, without parsing rows: files are hashed, not read as data."""
    resolved = _resolve(spec)
    if resolved.kind == "files":
        content = [[file.suffix.lower(), _hash_file(file)] for file in resolved.files]
    elif resolved.kind == "disk":
        content = _disk_content(spec, resolved.files[0])
    else:
        # From the cache this memory-maps Arrow files; no row becomes a Python object.
        content = ["hub", readers.hub_dataset(spec)._fingerprint]
    return _fingerprint(spec, content)


def check_source(spec: SourceSpec) -> str | None:
    """Find the source as training will, reading no row: raise what training would raise about its
    path; return a warning for a Hub dataset that is not in the local cache, else None.

    Not finding a Hub dataset locally is only a warning: training may run on another machine, or
    online, where `load_dataset` downloads it.
    """
    if _resolve(spec).kind != "hub" or readers.hub_cached(spec):
        return None
    from datasets import config

    if config.HF_HUB_OFFLINE:
        then = (
            "HF_HUB_OFFLINE is set, so training here would stop: fill the cache on a machine with network "
            f"(datasets.load_dataset('{spec.path}')), or give a local path."
        )
    else:
        then = "training will download it from the Hub (whether the Hub has it is not checked here)."
    return f"{spec.path} is not in the local Hugging Face cache ({config.HF_DATASETS_CACHE}); {then}"


def split_validation(n_rows: int, val_set_size: float | int, seed: int) -> tuple[list[int], list[int]]:
    """(train positions, eval positions), both ascending; the eval ones a seeded random choice."""
    if val_set_size is None or (val_set_size == 0 and not isinstance(val_set_size, bool)):
        return list(range(n_rows)), []
    n_eval = _how_many(val_set_size, n_rows, "val_set_size")
    if n_eval > n_rows:
        raise UserError(
            f"val_set_size {val_set_size} asks for {n_eval} evaluation rows, but the datasets hold {n_rows} rows. "
            "Lower val_set_size, or give a fraction such as 0.05."
        )
    if n_eval == n_rows:
        raise UserError(
            f"val_set_size {val_set_size} takes all {n_rows} rows for evaluation and leaves none to train on. "
            "Lower val_set_size, or set it to 0 for no evaluation."
        )
    chosen = set(random.Random(seed).sample(range(n_rows), n_eval))
    train = [i for i in range(n_rows) if i not in chosen]
    return train, sorted(chosen)


# ---------------------------------------------------------------------------------------------
# Finding the source


def _resolve(spec: SourceSpec) -> _Resolved:
    if spec.sample is not None:
        _how_many(spec.sample, 0, "sample")  # a bad value is reported before anything is read
    path = Path(spec.path)
    # An existing path wins over every other reading, even one with glob characters in its name.
    if path.is_file():
        _check_extension(path)
        return _Resolved("files", [path])
    if path.is_dir():
        if any((path / marker).is_file() for marker in _DISK_MARKERS):
            return _Resolved("disk", [path])
        files = [p for p in sorted(path.iterdir()) if _is_data_file(p)]
        if not files:
            raise UserError(
                f"{spec.path}: the folder holds no {_supported()} file (subfolders are not searched). "
                "Point data.datasets[].path at a file, a glob such as data/*.jsonl, or a folder of such files."
            )
        return _Resolved("files", files)
    if any(c in spec.path for c in "*?["):
        matches = [Path(p) for p in sorted(glob.glob(spec.path, recursive=True))]
        files = [p for p in matches if _is_data_file(p)]
        if not files:
            found = f"it matches {len(matches)} paths, none a {_supported()} file" if matches else "it matches nothing"
            raise UserError(
                f"{spec.path}: {found}. Check the pattern in data.datasets[].path "
                f"(relative to the current folder, {Path.cwd()})."
            )
        return _Resolved("files", files)
    if _HUB_ID.match(spec.path) and ".." not in spec.path and path.suffix.lower() not in SUPPORTED:
        return _Resolved("hub", [])
    raise UserError(
        f"dataset not found: {spec.path}. Check data.datasets[].path in the recipe "
        f"(paths are relative to the current folder, {Path.cwd()}; Hub datasets are named owner/name)."
    )


def _is_data_file(path: Path) -> bool:
    # Hidden files include macOS's "._train.jsonl" resource forks, which are not data.
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in SUPPORTED


def _check_extension(path: Path) -> None:
    if path.suffix.lower() not in SUPPORTED:
        raise UserError(
            f"{path}: unsupported file type '{path.suffix or '(none)'}'. Supported: {_supported()} "
            "(rename the file, or convert it to one of these)."
        )


def _supported() -> str:
    return ", ".join(SUPPORTED)


def _how_many(value: object, n: int, key: str) -> int:
    """A fraction in (0, 1) of n rows (at least 1 when n > 0), or a whole count >= 1."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, float) and 0 < value < 1:
        return max(1, round(value * n)) if n else 0
    raise UserError(
        f"{key}: {value!r} is neither a fraction between 0 and 1 (exclusive) nor a whole count of rows >= 1. "
        f"Write e.g. {key}: 0.1 or {key}: 500."
    )


def _sample_indexes(n: int, spec: SourceSpec, seed: int) -> list[int]:
    if spec.sample is None:
        return list(range(n))
    k = _how_many(spec.sample, n, "sample")
    if k > n:
        raise UserError(
            f"{spec.path}: sample: {spec.sample} asks for {k} rows, but the dataset has {n} rows. "
            "Lower data.datasets[].sample, or give a fraction such as 0.5."
        )
    # Sorted: the kept rows stay in the dataset's own order, only fewer of them.
    return sorted(random.Random(seed).sample(range(n), k))


# ---------------------------------------------------------------------------------------------
# Fingerprints


def _fingerprint(spec: SourceSpec, content: list) -> str:
    # The seed is not part of it (source_fingerprint has none): a cache key that covers `sample`
    # must add the seed itself.
    key = {
        "version": FINGERPRINT_VERSION,
        "content": content,
        "name": spec.name,
        "split": spec.split,
        "sample": spec.sample,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _disk_content(spec: SourceSpec, folder: Path) -> list:
    # state.json holds the fingerprint `datasets` saved with the data (and the stored format).
    # load_from_disk's own _fingerprint differs from it: it re-applies the format, which re-hashes.
    state = _disk_split_folder(spec, folder) / "state.json"
    if not state.is_file():
        raise UserError(
            f"{spec.path}: looks like a datasets.save_to_disk folder but has no {state.name}. "
            "Save it again with Dataset.save_to_disk, or point at the data files instead."
        )
    return ["disk", json.loads(state.read_text(encoding="utf-8"))]


def _disk_split_folder(spec: SourceSpec, folder: Path) -> Path:
    dict_file = folder / "dataset_dict.json"
    if not dict_file.is_file():
        return folder  # a single Dataset: `split` has nothing to choose from
    splits = json.loads(dict_file.read_text(encoding="utf-8")).get("splits", [])
    if spec.split not in splits:
        raise UserError(
            f"{spec.path}: no split '{spec.split}' in this DatasetDict folder; it has {', '.join(splits) or 'none'}. "
            "Set data.datasets[].split to one of them."
        )
    return folder / spec.split


# ---------------------------------------------------------------------------------------------
# Reading


def _read_file(path: Path) -> tuple[list, str]:
    """Rows of one file, and the sha256 of the very bytes they were parsed from (where we parse)."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        return (readers.parse_jsonl(path, data) if suffix == ".jsonl" else readers.parse_json(path, data)), digest
    digest = _hash_file(path)
    return readers.read_with_datasets(path, suffix.lstrip(".")), digest
