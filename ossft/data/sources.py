"""Where rows come from: files, folders, globs, `save_to_disk` folders and Hub datasets -> plain dicts.

This module knows nothing about chat formats; data.py checks and renders what it returns. Every
source also gets a fingerprint that changes with its content, so tokenized data can be cached.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import random
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
        rows = _disk_dataset(spec, resolved.files[0]).to_list()
        content = _disk_content(spec, resolved.files[0])
    else:
        dataset = _hub_dataset(spec)
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
        content = ["hub", _hub_dataset(spec)._fingerprint]
    return _fingerprint(spec, content)


def check_source(spec: SourceSpec) -> str | None:
    """Find the source as training will, reading no row: raise what training would raise about its
    path; return a warning for a Hub dataset that is not in the local cache, else None.

    Not finding a Hub dataset locally is only a warning: training may run on another machine, or
    online, where `load_dataset` downloads it.
    """
    if _resolve(spec).kind != "hub" or _hub_cached(spec):
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
        return (_parse_jsonl(path, data) if suffix == ".jsonl" else _parse_json(path, data)), digest
    digest = _hash_file(path)
    return _read_with_datasets(path, suffix.lstrip(".")), digest


def _parse_jsonl(path: Path, data: bytes) -> list:
    rows = []
    # Split on \n only: str.splitlines would also split on U+2028, which JSON allows raw inside strings.
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path} line {number}: not UTF-8 text ({exc.reason}). Save the file as UTF-8.") from exc
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path} line {number}: not valid JSON ({exc.msg}, column {exc.colno}). "
                "Each line of a .jsonl file is one JSON object."
            ) from exc
        except (ValueError, RecursionError) as exc:
            raise UserError(f"{path} line {number}: {_too_large(exc)}") from exc
    return rows


def _parse_json(path: Path, data: bytes) -> list:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason}). Save the file as UTF-8.") from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}).") from exc
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{path}: {_too_large(exc)}") from exc
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        lists = [key for key, value in doc.items() if isinstance(value, list)]
        if len(lists) == 1:
            return doc[lists[0]]
        found = f"it has {len(lists)} ({', '.join(lists)})" if lists else "it has none"
        raise UserError(
            f"{path}: a .json dataset must be a list of rows, or an object with exactly one list of rows; "
            f"the top-level object is not, {found}. Keep only the list of rows, or use .jsonl."
        )
    raise UserError(
        f"{path}: a .json dataset must be a list of rows, or an object with exactly one list of rows, "
        f"not a {type(doc).__name__}."
    )


def _too_large(exc: Exception) -> str:
    # Python's JSON reader refuses integers of over 4,300 digits (ValueError) and runs out of stack
    # on arrays or objects nested about a thousand deep (RecursionError).
    what = "a number too long" if isinstance(exc, ValueError) else "nesting too deep"
    return f"JSON that Python cannot read ({what}: {str(exc)[:100]}). Shorten or flatten that value."


def _read_with_datasets(path: Path, builder: str) -> list:
    from datasets import load_dataset

    kwargs: dict = {}
    if builder == "csv":
        columns, has_rows = _csv_shape(path)
        # Every cell as the text it is: no "007" -> 7, no "NA" -> None.
        kwargs = {"converters": {i: str for i in range(columns)}, "keep_default_na": False, "na_filter": False}
    else:
        has_rows = _parquet_has_rows(path)
    if not has_rows:
        # `datasets` refuses a file with no rows ('Instruction "train" corresponds to no data');
        # whether no rows is an error is the caller's call.
        return []
    # A throwaway cache: the rows become Python objects anyway, and a shared cache keyed on the
    # file's path and mtime could hand back stale rows or keep a copy of every file ever read.
    with tempfile.TemporaryDirectory(prefix="ossft-") as cache, quiet_datasets():
        try:
            dataset = load_dataset(builder, data_files=str(path), split="train", cache_dir=cache, **kwargs)
            return dataset.to_list()
        except Exception as exc:  # any failure to parse this one file is the file's
            raise UserError(
                f"{path}: could not be read as {builder.upper()} ({_root_cause(exc)}). "
                f"Check the file, or convert it to .jsonl."
            ) from exc


def _csv_shape(path: Path) -> tuple[int, bool]:
    """(columns in the header, whether any row follows it), reading no further than the first row."""
    import csv

    # The csv module refuses a field over 128 KiB by default; a chat in one cell is often longer.
    limit = csv.field_size_limit(2**31 - 1)
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            records = (record for record in csv.reader(stream) if record)
            header = next(records, None)
            return (len(header), next(records, None) is not None) if header else (0, False)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason}). Save the file as UTF-8.") from exc
    except csv.Error as exc:
        raise UserError(f"{path}: could not be read as CSV ({exc}). Check the file, or convert it to .jsonl.") from exc
    finally:
        csv.field_size_limit(limit)


def _parquet_has_rows(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows > 0  # the footer only
    except Exception:
        return True  # not readable as Parquet: let `datasets` say why


def _disk_dataset(spec: SourceSpec, folder: Path):
    from datasets import DatasetDict, load_from_disk

    split_folder = _disk_split_folder(spec, folder)  # checks the split before anything is loaded
    with quiet_datasets():
        try:
            loaded = load_from_disk(str(folder))
        except Exception as exc:
            raise UserError(
                f"{spec.path}: not a readable datasets.save_to_disk folder ({_root_cause(exc)}). "
                "Save it again with save_to_disk, or point at the data files instead."
            ) from exc
    return loaded[split_folder.name] if isinstance(loaded, DatasetDict) else loaded


def _hub_dataset(spec: SourceSpec):
    from datasets import config, load_dataset

    try:
        return load_dataset(spec.path, spec.name, split=spec.split)
    except (OSError, ValueError) as exc:  # not found, not cached, no network, unknown config or split
        if config.HF_HUB_OFFLINE and isinstance(exc, (ConnectionError, FileNotFoundError)):
            raise UserError(
                f"dataset not found: {spec.path} is neither a local path (relative to {Path.cwd()}) "
                f"nor in the offline Hugging Face cache ({_root_cause(exc)}). Download it on a machine with "
                f"network (datasets.load_dataset('{spec.path}') fills the cache, which you can copy here), "
                "or give a local path."
            ) from exc
        raise UserError(
            f"{spec.path}: not a local path (relative to {Path.cwd()}), and the Hugging Face Hub could not "
            f"provide it ({_root_cause(exc)}). Check the id, data.datasets[].name and split, or give a local path "
            "(with HF_HUB_OFFLINE=1 only the local cache is asked)."
        ) from exc


def _hub_cached(spec: SourceSpec) -> bool:
    # The copy load_dataset falls back to when the Hub cannot be asked: prepared Arrow files under
    # HF_DATASETS_CACHE. Offline it never reads the Hub's download cache, so files there do not count.
    from datasets.load import CachedDatasetModuleFactory

    with quiet_datasets():  # its "Using the latest cached version" notice
        try:
            CachedDatasetModuleFactory(spec.path).get_module()
        except FileNotFoundError:
            return False
    return True


def _root_cause(exc: BaseException) -> str:
    # `datasets` wraps parser errors in DatasetGenerationError, whose own message says nothing.
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {exc}"


@contextlib.contextmanager
def quiet_datasets():
    """No progress bars or logged parser errors while reading a local file: a failure becomes one
    UserError that already carries the cause. Both settings are restored afterwards."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from datasets.utils import logging as datasets_logging

    was_disabled = are_progress_bars_disabled()
    verbosity = datasets_logging.get_verbosity()
    disable_progress_bars()
    datasets_logging.set_verbosity(datasets_logging.CRITICAL)
    try:
        yield
    finally:
        datasets_logging.set_verbosity(verbosity)
        if not was_disabled:
            enable_progress_bars()
