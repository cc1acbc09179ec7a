"""The harmony chat format of gpt-oss: a conversation -> pieces of text, each marked trained or not.

Pure Python on purpose (no torch, no transformers): what the model trains on can be read and tested
as text. `data.py` turns pieces into token ids with whatever tokenizer the model has.

What the model writes in a turn is everything after the prompt's `<|start|>assistant`, up to and
including the token that ends the turn (`<|return|>` for the final answer). That is the trained part.
Earlier assistant turns are context only and appear as a served model would see them: the final
answer alone, since harmony drops an answered turn's analysis from later prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

# gpt-oss's special tokens in id order (199998..200018 in the real o200k_harmony vocabulary).
SPECIAL_TOKENS = (
    "<|startoftext|>",
    "<|endoftext|>",
    "<|reserved_200000|>",
    "<|reserved_200001|>",
    "<|return|>",
    "<|constrain|>",
    "<|reserved_200004|>",
    "<|channel|>",
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|reserved_200009|>",
    "<|reserved_200010|>",
    "<|reserved_200011|>",
    "<|call|>",
    "<|reserved_200013|>",
    "<|reserved_200014|>",
    "<|reserved_200015|>",
    "<|reserved_200016|>",
    "<|reserved_200017|>",
    "<|endofprompt|>",
)
START, END, MESSAGE, CHANNEL, RETURN, CALL = (
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|return|>",
    "<|call|>",
)
# Sampling stops at these when the assistant hands control back (openai-harmony's assistant-action stops).
STOP_TOKENS = (RETURN, CALL)

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"


@dataclass(frozen=True)
class Piece:
    text: str
    special: bool = False
    trained: bool = False


def system_message(reasoning_effort: str = "medium", current_date: str | None = None) -> str:
    # No date unless asked: a render that changes daily cannot be cached or compared.
    date = f"\nCurrent date: {current_date}" if current_date else ""
    return (
        f"{MODEL_IDENTITY}\nKnowledge cutoff: {KNOWLEDGE_CUTOFF}{date}\n\n"
        f"Reasoning: {reasoning_effort}\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message."
    )


def _message(role: str, content: str, channel: str | None = None, end: str = END, trained: bool = False) -> list[Piece]:
    header = [Piece(START, True, False), Piece(role, False, False)]
    body = []
    if channel:
        body += [Piece(CHANNEL, True, trained), Piece(channel, False, trained)]
    body += [Piece(MESSAGE, True, trained), Piece(content, False, trained), Piece(end, True, trained)]
    return header + body


def render_conversation(messages: list[dict], reasoning_effort: str = "medium") -> list[Piece]:
    """Harmony pieces for a chat whose last message is the assistant answer to learn.

    `messages`: dicts with `role` (developer, user, assistant) and `content`; assistant messages may
    carry `thinking`. Only the last assistant message is trained.
    """
    last_assistant = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    pieces = _message("system", system_message(reasoning_effort))
    for index, message in enumerate(messages[: last_assistant + 1]):
        role = message["role"]
        if role == "developer":
            pieces += _message("developer", "# Instructions\n\n" + message["content"])
        elif role == "user":
            pieces += _message("user", message["content"])
        elif index < last_assistant:
            pieces += _message("assistant", message["content"], channel="final")
        else:
            pieces += _assistant_answer(message)
    return _merge(pieces)


def _assistant_answer(message: dict) -> list[Piece]:
    # The prompt ends at `<|start|>assistant`; the model writes the rest, the second header included.
    pieces = [Piece(START, True), Piece("assistant")]
    if message.get("thinking"):
        pieces += _message("assistant", message["thinking"], channel="analysis", trained=True)[2:]
        pieces += [Piece(START, True, True), Piece("assistant", False, True)]
    pieces += _message("assistant", message["content"], channel="final", end=RETURN, trained=True)[2:]
    return pieces


def render_prompt(messages: list[dict], reasoning_effort: str = "medium") -> list[Piece]:
    """Pieces that ask the model for its next assistant turn (for generation)."""
    pieces = _message("system", system_message(reasoning_effort))
    for message in messages:
        content = message["content"]
        if message["role"] == "developer":
            content = "# Instructions\n\n" + content
        channel = "final" if message["role"] == "assistant" else None
        pieces += _message(message["role"], content, channel=channel)
    return _merge(pieces + [Piece(START, True), Piece("assistant")])


def _merge(pieces: Iterable[Piece]) -> list[Piece]:
    """Join neighbouring plain-text pieces with the same mask, so each text run is tokenized whole."""
    merged: list[Piece] = []
    for piece in pieces:
        if merged and not piece.special and not merged[-1].special and merged[-1].trained == piece.trained:
            merged[-1] = Piece(merged[-1].text + piece.text, False, piece.trained)
        else:
            merged.append(piece)
    return merged


def to_text(pieces: Iterable[Piece]) -> str:
    return "".join(p.text for p in pieces)


def encode(
    pieces: Iterable[Piece], encode_text: Callable[[str], list[int]], special_ids: dict[str, int]
) -> tuple[list[int], list[bool]]:
    """Token ids and, per id, whether the loss trains on it."""
    ids: list[int] = []
    trained: list[bool] = []
    for piece in pieces:
        piece_ids = [special_ids[piece.text]] if piece.special else encode_text(piece.text)
        ids += piece_ids
        trained += [piece.trained] * len(piece_ids)
    return ids, trained


def parse_completion(text: str) -> dict[str, str]:
    """Split a generated assistant turn (special tokens kept) into its channels' texts."""
    channels: dict[str, str] = {}
    for message in text.split(START):
        if CHANNEL not in message or MESSAGE not in message:
            continue
        header, _, body = message.partition(MESSAGE)
        channel = header.split(CHANNEL, 1)[1].split()[0] if header.split(CHANNEL, 1)[1].split() else ""
        for stop in (END, RETURN, CALL):
            body = body.split(stop, 1)[0]
        channels[channel] = channels.get(channel, "") + body
    return channels
