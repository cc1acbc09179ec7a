"""`ossft inspect-data`: show exactly what the model will be trained on."""

from __future__ import annotations

import json
from itertools import islice
from typing import TYPE_CHECKING

from ossft.data import prepare
from ossft.data import tokenize as data
from ossft.harmony import masks

if TYPE_CHECKING:
    from ossft.recipe.sections import Recipe


def example_records(recipe: Recipe, tokenizer, rows: int | None):
    """One record per training example of the first `rows` usable rows (all rows when None)."""
    stats = data.DataStats()
    parsed = data.parsed_rows(recipe, stats)
    system = data.system_block(recipe)
    jobs = [job for row in islice(parsed, rows) for job in data.jobs_for_row(recipe, *row, system)]
    tokenized = data.tokenize_jobs(jobs, tokenizer, recipe.data.num_proc)
    for example in data.drop_failed(tokenized, recipe.data.on_bad_row, stats):
        runs = masks.trained_runs(example.trained)
        yield {
            "row": example.row,
            "source": example.source,
            "tokens": len(example.input_ids),
            "text": tokenizer.decode(example.input_ids),
            "trained": [tokenizer.decode(example.input_ids[s:e]) for s, e in runs],
            "_segments": _segments(tokenizer, example),
        }


def _segments(tokenizer, example: data.Tokenized) -> list[tuple[str, bool]]:
    """(text, trained) pieces in order, for highlighting."""
    segments, start = [], 0
    for index in range(1, len(example.trained) + 1):
        if index == len(example.trained) or example.trained[index] != example.trained[start]:
            segments.append((tokenizer.decode(example.input_ids[start:index]), example.trained[start]))
            start = index
    return segments


def json_lines(records) -> str:
    for record in records:
        public = {k: v for k, v in record.items() if not k.startswith("_")}
        yield json.dumps(public, ensure_ascii=False)


def highlighted(record):
    from rich.text import Text

    text = Text()
    for chunk, trained in record["_segments"]:
        text.append(chunk, style="bold green" if trained else "dim")
    return text


def totals_table(stats: data.DataStats, shown_above: bool = True):
    from rich.table import Table

    title = "data totals (trained text in green above)" if shown_above else "data totals"
    table = Table(title=title, show_header=False, title_justify="left")
    fraction = stats.trained_tokens / stats.tokens if stats.tokens else 0.0
    rows = [
        ("rows read", stats.rows),
        ("rows skipped (bad)", stats.rows_skipped),
        ("training examples", stats.examples),
        ("eval examples", stats.eval_examples),
        ("dropped for length", stats.dropped_too_long),
        ("truncated", stats.truncated),
        ("tokens", stats.tokens),
        ("trained tokens", f"{stats.trained_tokens:,} ({100 * fraction:.1f}%)"),
        ("length percentiles", ", ".join(f"{k} {v}" for k, v in stats.length_percentiles.items())),
    ]
    for name, value in rows:
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    for reason in stats.skipped:
        table.add_row("skipped", reason)
    return table


def full_stats(recipe: Recipe, tokenizer, on_progress=None) -> data.DataStats:
    return prepare.prepare_data(recipe, tokenizer, on_progress=on_progress).stats
