"""Datasets -> tokenized training examples: load, check rows, render, tokenize, mask, fit the length.

The result is a pre-tokenized `datasets.Dataset` with `input_ids` and `labels` (-100 where the loss
does not train), which TRL's SFTTrainer takes as it is. Rendering is harmony/render.py (default) or the
tokenizer's own chat template; masks come from masks.py, the same rule for both.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jinja2 import TemplateError

from ossft.data import chat, rows, sources
from ossft.data.template import TemplateRenderer
from ossft.data.tokenizer import plain_text_tokenizer, special_token_ids
from ossft.errors import UserError
from ossft.harmony import masks
from ossft.harmony import render as harmony

if TYPE_CHECKING:
    from ossft.recipe.sections import DatasetSource, Recipe

IGNORE = -100  # the label value PyTorch's cross-entropy skips


@dataclass
class Job:
    """One training example to tokenize, and where it came from."""

    source: str
    row: int
    train_all_turns: bool
    pieces: list | None = None  # harmony: the rendered pieces
    template: dict | None = None  # template mode: messages and template kwargs


@dataclass
class Tokenized:
    source: str
    row: int
    input_ids: list[int]
    trained: list[bool]
    error: str | None = None  # the chat template refused the row


@dataclass
class DataStats:
    rows: int = 0
    rows_skipped: int = 0
    skipped: list[str] = field(default_factory=list)  # the first few reasons, for the summary
    examples: int = 0
    dropped_too_long: int = 0
    truncated: int = 0
    untrained_cut_turns: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    eval_examples: int = 0
    length_percentiles: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Rows -> jobs


def row_fields(source: DatasetSource) -> rows.Fields:
    return rows.Fields(
        messages=source.field_messages,
        thinking=source.field_thinking,
        tools=source.field_tools,
        reasoning_effort=source.field_reasoning_effort,
        prompt=source.field_prompt,
        completion=source.field_completion,
    )


def source_spec(source: DatasetSource) -> sources.SourceSpec:
    return sources.SourceSpec(path=source.path, name=source.name, split=source.split, sample=source.sample)


def system_block(recipe: Recipe) -> harmony.SystemBlock:
    s = recipe.data.system
    return harmony.SystemBlock(s.model_identity, s.knowledge_cutoff, s.current_date, s.reasoning_effort)


def parsed_rows(recipe: Recipe, stats: DataStats) -> list[tuple[str, int, rows.ChatRow]]:
    """Every usable row of every dataset, checked; bad rows raise or are counted, as the recipe says."""
    kept = []
    for source in recipe.data.datasets:
        loaded = sources.load_rows(source_spec(source), recipe.data.seed)
        fields = row_fields(source)
        for index, row in zip(loaded.indexes, loaded.rows):
            stats.rows += 1
            try:
                kept.append((loaded.source, index, rows.parse_row(row, source.format, fields)))
            except rows.RowError as exc:
                where = f"{loaded.source} row {index}, {exc}"
                if recipe.data.on_bad_row == "error":
                    raise UserError(
                        f"{where}. Fix the row, or set data.on_bad_row: skip to leave such rows out."
                    ) from exc
                stats.rows_skipped += 1
                if len(stats.skipped) < 5:
                    stats.skipped.append(where)
    return kept


def jobs_for_row(recipe: Recipe, source: str, index: int, row: rows.ChatRow, system: harmony.SystemBlock) -> list[Job]:
    data = recipe.data
    if data.chat_format == "harmony":
        conversation = chat.to_conversation(row, system)
        return [
            Job(source, index, example.train_all_turns, pieces=harmony.render_example(example))
            for example in harmony.training_examples(conversation, data.thinking, data.train_on)
        ]
    messages = chat.to_template_messages(row)
    kwargs = {
        "reasoning_effort": row.reasoning_effort or system.reasoning_effort,
        "model_identity": system.model_identity,
    }
    if row.tools:
        kwargs["tools"] = row.tools
    ends = [
        i + 1
        for i, m in enumerate(messages)
        if m["role"] == "assistant" and (i + 1 == len(messages) or messages[i + 1]["role"] != "assistant")
    ]
    if data.thinking == "keep_all" or data.train_on == "last_turn":
        ends = ends[-1:]
    all_turns = data.thinking == "keep_all" and data.train_on == "all_turns"
    return [Job(source, index, all_turns, template={"messages": messages[:end], **kwargs}) for end in ends]


# ---------------------------------------------------------------------------------------------
# Jobs -> token ids and masks


class Encoder:
    """Tokenizes jobs. Control tokens come only from the renderer: text that merely looks like
    `<|start|>` stays text (split_special_tokens), so a data row cannot forge message structure."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special_ids = special_token_ids(tokenizer)
        self.parser = masks.StreamParser(self.special_ids, lambda ids: tokenizer.decode(ids))
        self._templates: TemplateRenderer | None = None
        self._plain_text = None

    def encode_texts(self, texts: list[str]) -> list[list[int]]:
        if not texts:
            return []
        if self._plain_text is None:
            self._plain_text = plain_text_tokenizer(self.tokenizer)
        return [encoding.ids for encoding in self._plain_text.encode_batch(texts, add_special_tokens=False)]

    def run(self, jobs: list[Job]) -> list[Tokenized]:
        # Per-turn examples repeat the conversation before them, and every example the system
        # message: each distinct text is encoded once.
        texts = list(dict.fromkeys(p.text for job in jobs if job.pieces for p in job.pieces if not p.special))
        encoded = dict(zip(texts, self.encode_texts(texts)))
        out = []
        for job in jobs:
            if job.pieces is not None:
                ids = self.piece_ids(job.pieces, encoded)
            else:
                try:
                    ids = self.template_ids(job.template)
                except TemplateError as exc:  # the template's own raise_exception(...) on what it cannot render
                    out.append(Tokenized(job.source, job.row, [], [], error=f"chat template: {exc}"))
                    continue
            out.append(Tokenized(job.source, job.row, ids, masks.trained_mask(ids, self.parser, job.train_all_turns)))
        return out

    def piece_ids(self, pieces, encoded_texts) -> list[int]:
        ids: list[int] = []
        for piece in pieces:
            if piece.special:
                ids.append(self.special_ids[piece.text])
            else:
                ids.extend(encoded_texts[piece.text])
        return ids

    def template_ids(self, template: dict) -> list[int]:
        if self._templates is None:
            self._templates = TemplateRenderer(self.tokenizer)
        return self._templates.ids(template)


PROGRESS_CHUNK = 2048  # examples per progress update: small enough to move, large enough to batch well


def tokenize_jobs(jobs: list[Job], tokenizer, num_proc: int = 1, on_progress=None) -> list[Tokenized]:
    """Token ids and masks for every job, in order. `on_progress(done, total)` after each chunk."""
    tick = on_progress or (lambda done, total: None)
    done: list[Tokenized] = []
    if num_proc <= 1 or len(jobs) < 2 * num_proc:
        encoder = Encoder(tokenizer)
        for start in range(0, len(jobs), PROGRESS_CHUNK):
            done += encoder.run(jobs[start : start + PROGRESS_CHUNK])
            tick(len(done), len(jobs))
        return done
    # Rust's own thread pool and fork do not mix; the workers are the parallelism here.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    chunk = min(PROGRESS_CHUNK, -(-len(jobs) // (num_proc * 4)))
    parts = [jobs[i : i + chunk] for i in range(0, len(jobs), chunk)]
    with multiprocessing.get_context("fork").Pool(num_proc, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        for part in pool.imap(_run_worker, parts):  # in order, so examples keep their rows' order
            done += part
            tick(len(done), len(jobs))
    return done


_worker_encoder: Encoder | None = None


def _init_worker(tokenizer) -> None:
    global _worker_encoder
    _worker_encoder = Encoder(tokenizer)


def _run_worker(jobs: list[Job]) -> list[Tokenized]:
    return _worker_encoder.run(jobs)


def drop_failed(examples: list[Tokenized], on_bad_row: str, stats: DataStats) -> list[Tokenized]:
    """Rows the chat template could not render: an error, or skipped whole and counted."""
    failed = {(e.source, e.row): e.error for e in examples if e.error}
    for (source, row), error in failed.items():
        where = f"{source} row {row}, {error}"
        if on_bad_row == "error":
            raise UserError(f"{where}. Fix the row, use data.chat_format: harmony, or set data.on_bad_row: skip.")
        stats.rows_skipped += 1
        if len(stats.skipped) < 5:
            stats.skipped.append(where)
    return [e for e in examples if (e.source, e.row) not in failed]


# ---------------------------------------------------------------------------------------------
# Length


def fit_length(examples: list[Tokenized], max_length: int | None, truncation: str, stats: DataStats) -> list[Tokenized]:
    """Drop (default) or cut examples over max_length. A trained turn cut before its terminator is
    left untrained, counted in `untrained_cut_turns`: learning half a turn would teach the model to
    stop mid-answer at the cut. An example left with nothing trained is dropped."""
    kept = []
    for example in examples:
        if max_length is not None and len(example.input_ids) > max_length:
            if truncation == "drop":
                stats.dropped_too_long += 1
                continue
            runs = masks.trained_runs(example.trained)
            trained = example.trained[:max_length]
            for start, end in runs:
                if start < max_length < end:
                    trained[start:max_length] = [False] * (max_length - start)
                    stats.untrained_cut_turns += 1
            example = Tokenized(example.source, example.row, example.input_ids[:max_length], trained)
            stats.truncated += 1
        if not any(example.trained):
            stats.dropped_too_long += 1
            continue
        kept.append(example)
    return kept


def percentiles(lengths: list[int]) -> dict:
    if not lengths:
        return {}
    ordered = sorted(lengths)
    return {f"p{q}": ordered[min(len(ordered) - 1, (len(ordered) * q) // 100)] for q in (50, 90, 99, 100)}
