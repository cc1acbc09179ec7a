"""Reading the rows of one source: JSON and JSON Lines by hand (exact line numbers in errors), CSV and
Parquet through `datasets`, `save_to_disk` folders and Hub datasets. Every failure is a UserError that
names the file and the cause. `spec` is a sources.SourceSpec."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

from ossft.errors import UserError


def parse_jsonl(path: Path, data: bytes) -> list:
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


def parse_json(path: Path, data: bytes) -> list:
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


def read_with_datasets(path: Path, builder: str) -> list:
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
                f"{path}: could not be read as {builder.upper()} ({root_cause(exc)}). "
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


def disk_dataset(spec, folder: Path, split_folder: Path):
    """A `save_to_disk` folder's rows; `split_folder` is the split chosen (and checked) beforehand."""
    from datasets import DatasetDict, load_from_disk

    with quiet_datasets():
        try:
            loaded = load_from_disk(str(folder))
        except Exception as exc:
            raise UserError(
                f"{spec.path}: not a readable datasets.save_to_disk folder ({root_cause(exc)}). "
                "Save it again with save_to_disk, or point at the data files instead."
            ) from exc
    return loaded[split_folder.name] if isinstance(loaded, DatasetDict) else loaded


def hub_dataset(spec):
    from datasets import config, load_dataset

    try:
        return load_dataset(spec.path, spec.name, split=spec.split)
    except (OSError, ValueError) as exc:  # not found, not cached, no network, unknown config or split
        if config.HF_HUB_OFFLINE and isinstance(exc, (ConnectionError, FileNotFoundError)):
            raise UserError(
                f"dataset not found: {spec.path} is neither a local path (relative to {Path.cwd()}) "
                f"nor in the offline Hugging Face cache ({root_cause(exc)}). Download it on a machine with "
                f"network (datasets.load_dataset('{spec.path}') fills the cache, which you can copy here), "
                "or give a local path."
            ) from exc
        raise UserError(
            f"{spec.path}: not a local path (relative to {Path.cwd()}), and the Hugging Face Hub could not "
            f"provide it ({root_cause(exc)}). Check the id, data.datasets[].name and split, or give a local path "
            "(with HF_HUB_OFFLINE=1 only the local cache is asked)."
        ) from exc


def hub_cached(spec) -> bool:
    # The copy load_dataset falls back to when the Hub cannot be asked: prepared Arrow files under
    # HF_DATASETS_CACHE. Offline it never reads the Hub's download cache, so files there do not count.
    from datasets.load import CachedDatasetModuleFactory

    with quiet_datasets():  # its "Using the latest cached version" notice
        try:
            CachedDatasetModuleFactory(spec.path).get_module()
        except FileNotFoundError:
            return False
    return True


def root_cause(exc: BaseException) -> str:
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
