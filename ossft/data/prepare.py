"""A recipe's data, tokenized once: build train / eval datasets, or load them from the on-disk cache.

The cache key covers everything that changes the tokens: each dataset's content fingerprint, the
tokenizer (vocabulary, special tokens, chat template), every `data:` option that affects rendering,
and `train.max_length`. A second run with the same key memory-maps the saved Arrow files.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ossft import __version__
from ossft.data import readers, sources
from ossft.data import tokenize as data
from ossft.errors import UserError

if TYPE_CHECKING:
    from ossft.recipe.sections import Recipe

# Bump when rendering or masking changes, so that no cache made by older code is reused.
CACHE_FORMAT = 2
STATS_FILE = "ossft_stats.json"


@dataclass
class PreparedData:
    train: object  # datasets.Dataset
    eval: object | None
    stats: data.DataStats
    cache_path: Path | None = None
    from_cache: bool = False


def build_examples(
    recipe, tokenizer, on_progress=None
) -> tuple[list[data.Tokenized], list[data.Tokenized], data.DataStats]:
    stats = data.DataStats()
    parsed = data.parsed_rows(recipe, stats)
    train_rows, eval_rows = sources.split_validation(len(parsed), recipe.data.val_set_size, recipe.data.seed)
    system = data.system_block(recipe)

    def examples(positions: list[int]) -> list[data.Tokenized]:
        jobs = [job for p in positions for job in data.jobs_for_row(recipe, *parsed[p], system)]
        tokenized = data.tokenize_jobs(jobs, tokenizer, recipe.data.num_proc, on_progress)
        tokenized = data.drop_failed(tokenized, recipe.data.on_bad_row, stats)
        return data.fit_length(tokenized, recipe.train.max_length, recipe.data.truncation, stats)

    train, evaluation = examples(train_rows), examples(eval_rows)
    if not train:
        raise UserError(
            f"no training example left: {stats.rows} rows read, {stats.rows_skipped} skipped as bad, "
            f"{stats.dropped_too_long} dropped for length (train.max_length={recipe.train.max_length})."
        )
    stats.examples, stats.eval_examples = len(train), len(evaluation)
    stats.tokens = sum(len(e.input_ids) for e in train)
    stats.trained_tokens = sum(sum(e.trained) for e in train)
    stats.length_percentiles = data.percentiles([len(e.input_ids) for e in train])
    return train, evaluation, stats


def to_dataset(examples: list[data.Tokenized]):
    """Arrow columns built from flat arrays: converting millions of Python ints one by one through
    `Dataset.from_dict` took a fifth of the preparation time (BENCHMARKS.md)."""
    import numpy as np
    import pyarrow as pa
    from datasets import Dataset

    lengths = np.fromiter((len(e.input_ids) for e in examples), dtype=np.int64, count=len(examples))
    large = int(lengths.sum()) >= 2**31  # int32 offsets of a plain Arrow list cannot count further
    offsets = pa.array(np.concatenate(([0], np.cumsum(lengths))).astype(np.int64 if large else np.int32))
    list_array = pa.LargeListArray if large else pa.ListArray
    ids = np.fromiter((i for e in examples for i in e.input_ids), dtype=np.int64, count=int(lengths.sum()))
    trained = np.fromiter((t for e in examples for t in e.trained), dtype=bool, count=int(lengths.sum()))
    labels = np.where(trained, ids, data.IGNORE)
    table = pa.table(
        {
            "input_ids": list_array.from_arrays(offsets, pa.array(ids)),
            "labels": list_array.from_arrays(offsets, pa.array(labels)),
        }
    )
    return Dataset(table)


def prepare_data(recipe: Recipe, tokenizer, use_cache: bool = True, on_progress=None) -> PreparedData:
    """`on_progress(done, total)`: examples tokenized so far (train, then eval), for a progress bar."""
    path = cache_root(recipe) / cache_key(recipe, tokenizer) if use_cache else None
    if path is not None and (path / STATS_FILE).is_file():
        return load_cached(path)
    train, evaluation, stats = build_examples(recipe, tokenizer, on_progress)
    prepared = PreparedData(to_dataset(train), to_dataset(evaluation) if evaluation else None, stats)
    if path is not None:
        save_cache(prepared, path)
        prepared.cache_path = path
    return prepared


def cache_root(recipe: Recipe) -> Path:
    root = recipe.data.cache_dir or os.environ.get("OSSFT_CACHE") or Path.home() / ".cache" / "ossft" / "data"
    return Path(root).expanduser()


def cache_key(recipe: Recipe, tokenizer) -> str:
    options = recipe.data.model_dump(mode="json", exclude={"cache_dir", "num_proc"})
    payload = {
        "format": CACHE_FORMAT,
        "ossft": __version__,
        "sources": [sources.source_fingerprint(data.source_spec(s)) for s in recipe.data.datasets],
        "data": options,
        "max_length": recipe.train.max_length,
        "tokenizer": tokenizer_fingerprint(tokenizer),
    }
    if recipe.data.chat_format == "template":
        # The Hugging Face gpt-oss template prints today's date into every render.
        payload["date"] = datetime.date.today().isoformat()
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def tokenizer_fingerprint(tokenizer) -> str:
    digest = hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode())
    digest.update(json.dumps([str(tokenizer.chat_template), tokenizer.all_special_tokens]).encode())
    return digest.hexdigest()


def save_cache(prepared: PreparedData, path: Path) -> None:
    """Written beside its final place and renamed: a cut-short save is never mistaken for a cache."""
    from datasets import DatasetDict

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        splits = {"train": prepared.train} | ({"eval": prepared.eval} if prepared.eval is not None else {})
        with readers.quiet_datasets():  # the tokenizing bar said how far it got; this save takes a blink
            DatasetDict(splits).save_to_disk(str(staging / "datasets"))
        (staging / STATS_FILE).write_text(json.dumps(dataclasses.asdict(prepared.stats), indent=2))
        try:
            staging.rename(path)
        except OSError:  # another process finished the same cache first: theirs is as good
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_cached(path: Path) -> PreparedData:
    from datasets import load_from_disk

    splits = load_from_disk(str(path / "datasets"))
    stats = data.DataStats(**json.loads((path / STATS_FILE).read_text()))
    return PreparedData(splits["train"], splits.get("eval"), stats, path, from_cache=True)
