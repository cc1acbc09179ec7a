"""Datasets: read conversation files, check each row, render with harmony.py, tokenize.

The result is a pre-tokenized `datasets.Dataset` with `input_ids` and `labels` (-100 where the loss
does not train), which TRL's SFTTrainer takes as it is: the chat template never touches our data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ossft import harmony
from ossft.errors import UserError

ROLES = ("developer", "user", "assistant")
IGNORE = -100  # the label value PyTorch's cross-entropy skips


@dataclass
class TokenizedData:
    dataset: object  # datasets.Dataset
    rows: int
    tokens: int
    trained_tokens: int


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"dataset not found: {path}. Check data.datasets[].path in the recipe (paths are relative to the current folder)."
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno}).") from exc
        if not isinstance(rows, list):
            raise UserError(f"{path}: a .json dataset must hold a list of rows.")
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path} line {number}: not valid JSON ({exc.msg}). Each line of a .jsonl file is one JSON object."
            ) from exc
    return rows


def check_messages(row: object, field: str, where: str) -> list[dict]:
    """The row's messages, or a UserError naming the row and field that does not fit."""
    if not isinstance(row, dict) or field not in row:
        raise UserError(
            f"{where}: no '{field}' field. Each row needs a list of chat messages there (set field_messages if it has another name)."
        )
    messages = row[field]
    if not isinstance(messages, list) or not messages:
        raise UserError(f"{where}: '{field}' must be a non-empty list of messages.")
    for index, message in enumerate(messages):
        at = f"{where}, {field}[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, dict) else message
            raise UserError(f"{at}: role {role!r} is not one of {', '.join(ROLES)}.")
        if not isinstance(message.get("content"), str) or not message["content"]:
            raise UserError(f"{at}: 'content' must be a non-empty string.")
        if "thinking" in message and not isinstance(message["thinking"], str):
            raise UserError(f"{at}: 'thinking' must be a string.")
    if not any(m["role"] == "assistant" for m in messages):
        raise UserError(f"{where}: no assistant message, so nothing to train on.")
    return messages


def special_token_ids(tokenizer) -> dict[str, int]:
    special_ids = {token: tokenizer.convert_tokens_to_ids(token) for token in harmony.SPECIAL_TOKENS}
    missing = [t for t, i in special_ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise UserError(f"the tokenizer lacks harmony's special tokens {missing}; use a gpt-oss tokenizer.")
    return special_ids


def text_encoder(tokenizer):
    """Plain text -> ids. Text that merely looks like `<|return|>` stays text: only harmony.py
    places control tokens, so a message quoting one cannot end a turn early."""

    def encode_text(text: str) -> list[int]:
        return tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)

    return encode_text


def load_training_data(recipe, tokenizer) -> TokenizedData:
    from datasets import Dataset

    special_ids = special_token_ids(tokenizer)
    encode_text = text_encoder(tokenizer)
    columns: dict[str, list] = {"input_ids": [], "labels": []}
    tokens = trained_tokens = 0
    for source in recipe.data.datasets:
        for index, row in enumerate(read_rows(source.path)):
            messages = check_messages(row, source.field_messages, f"{source.path} row {index}")
            pieces = harmony.render_conversation(messages, recipe.data.reasoning_effort)
            ids, trained = harmony.encode(pieces, encode_text, special_ids)
            columns["input_ids"].append(ids)
            columns["labels"].append([t if keep else IGNORE for t, keep in zip(ids, trained)])
            tokens += len(ids)
            trained_tokens += sum(trained)
    if trained_tokens == 0:
        raise UserError("the datasets hold no trained token: every row is empty or masked.")
    dataset = Dataset.from_dict(columns).shuffle(seed=recipe.data.seed)
    return TokenizedData(dataset, len(dataset), tokens, trained_tokens)
