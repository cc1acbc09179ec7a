"""The harmony chat format of gpt-oss, rendered as openai-harmony renders it (and vLLM serves it).

Pure Python on purpose (no torch, no transformers): what the model trains on can be read and tested
as text. A conversation becomes a list of `Piece`s, each either a special token or a run of plain
text; `data/tokenize.py` turns pieces into token ids, and `masks.py` decides from those ids what is trained.

Training examples follow what the harmony format guide has a server show the model (see
`training_examples`): a turn's analysis is visible while the turn is being written (tool calls
included) and gone once a final answer has followed it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

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
START, END, MESSAGE, CHANNEL = "<|start|>", "<|end|>", "<|message|>", "<|channel|>"
RETURN, CALL, CONSTRAIN = "<|return|>", "<|call|>", "<|constrain|>"
TERMINATORS = (END, CALL, RETURN)
# Sampling stops at these when the assistant hands control back (openai-harmony's assistant-action stops).
STOP_TOKENS = (RETURN, CALL)

MODEL_IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
CHANNELS = ("analysis", "commentary", "final")


@dataclass(frozen=True)
class Piece:
    text: str
    special: bool = False


@dataclass(frozen=True)
class Message:
    """One harmony message. `author` names a tool ("functions.get_weather") for tool results."""

    role: str  # system | developer | user | assistant | tool
    content: str
    channel: str | None = None
    recipient: str | None = None  # "functions.NAME" for a tool call, "assistant" for a tool result
    content_type: str | None = None  # "<|constrain|>json" for a function call's arguments
    author: str | None = None
    # The format allows the recipient in the channel part too ("<|channel|>commentary to=X"); the
    # model writes it there at times. openai-harmony renders it after the role, our default.
    recipient_in_channel: bool = False

    @property
    def is_tool_call(self) -> bool:
        return self.role == "assistant" and self.recipient is not None

    @property
    def is_final(self) -> bool:
        return self.role == "assistant" and self.channel == "final" and self.recipient is None


@dataclass(frozen=True)
class SystemBlock:
    """The harmony system message: set by the recipe, not by the data (a row may change the effort)."""

    model_identity: str = MODEL_IDENTITY
    knowledge_cutoff: str = KNOWLEDGE_CUTOFF
    current_date: str | None = None  # no date unless asked: a render that changes daily cannot be cached
    reasoning_effort: str = "medium"
    channels: tuple[str, ...] = CHANNELS


@dataclass(frozen=True)
class Conversation:
    """A chat in harmony terms: system block, developer instructions and tools, then the messages."""

    messages: tuple[Message, ...]
    system: SystemBlock = field(default_factory=SystemBlock)
    instructions: str | None = None
    tools_section: str | None = None  # "# Tools\n\n## functions ..." (harmony/tools.py)

    def header_messages(self) -> list[Message]:
        header = [Message("system", system_content(self.system, functions=bool(self.tools_section)))]
        developer = developer_content(self.instructions, self.tools_section)
        if developer is not None:
            header.append(Message("developer", developer))
        return header


def system_content(block: SystemBlock, functions: bool = False) -> str:
    lines = [block.model_identity, f"Knowledge cutoff: {block.knowledge_cutoff}"]
    if block.current_date:
        lines.append(f"Current date: {block.current_date}")
    text = "\n".join(lines) + f"\n\nReasoning: {block.reasoning_effort}\n\n"
    text += f"# Valid channels: {', '.join(block.channels)}. Channel must be included for every message."
    if functions:
        text += "\nCalls to these tools must go to the commentary channel: 'functions'."
    return text


def developer_content(instructions: str | None, tools_section: str | None) -> str | None:
    parts = []
    if instructions:
        parts.append(f"# Instructions\n\n{instructions}")
    if tools_section:
        parts.append(tools_section)
    return "\n\n".join(parts) if parts else None


def render_message(message: Message, terminator: str = END) -> list[Piece]:
    header = message.author or message.role
    recipient = f" to={message.recipient}" if message.recipient else ""
    pieces = [Piece(START, True), Piece(header + ("" if message.recipient_in_channel else recipient))]
    if message.channel:
        channel = message.channel + (recipient if message.recipient_in_channel else "")
        pieces += [Piece(CHANNEL, True), Piece(channel)]
    if message.content_type:
        # "<|constrain|>json" is a special token followed by text; any other type is plain text.
        if message.content_type.startswith(CONSTRAIN):
            pieces += [Piece(" "), Piece(CONSTRAIN, True), Piece(message.content_type[len(CONSTRAIN) :])]
        else:
            pieces.append(Piece(" " + message.content_type))
    pieces += [Piece(MESSAGE, True), Piece(message.content), Piece(terminator, True)]
    return pieces


def terminator_of(message: Message, last: bool) -> str:
    """`<|call|>` ends a tool call; `<|return|>` ends the final answer that closes a training example."""
    if message.is_tool_call:
        return CALL
    if last and message.is_final:
        return RETURN
    return END


def render(messages: Iterable[Message], for_training: bool = False, generation_prompt: bool = False) -> list[Piece]:
    """Pieces for the messages in order. `for_training`: the last final answer ends in `<|return|>`."""
    messages = list(messages)
    pieces: list[Piece] = []
    for index, message in enumerate(messages):
        pieces += render_message(message, terminator_of(message, for_training and index == len(messages) - 1))
    if generation_prompt:
        pieces += [Piece(START, True), Piece("assistant")]
    return _merge(pieces)


def _merge(pieces: Iterable[Piece]) -> list[Piece]:
    """Join neighbouring plain-text pieces, so each text run is tokenized whole."""
    merged: list[Piece] = []
    for piece in pieces:
        if not piece.text:
            continue
        if merged and not piece.special and not merged[-1].special:
            merged[-1] = Piece(merged[-1].text + piece.text)
        else:
            merged.append(piece)
    return merged


def to_text(pieces: Iterable[Piece]) -> str:
    return "".join(p.text for p in pieces)


# ---------------------------------------------------------------------------------------------
# Training examples


def assistant_turns(messages: tuple[Message, ...] | list[Message]) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive assistant messages: a user or tool message ends a turn."""
    turns, start = [], None
    for index, message in enumerate(messages):
        if message.role == "assistant" and start is None:
            start = index
        elif message.role != "assistant" and start is not None:
            turns.append((start, index))
            start = None
    if start is not None:
        turns.append((start, len(messages)))
    return turns


@dataclass(frozen=True)
class Example:
    """Messages to render for training, and whether every assistant turn in it is trained or the last."""

    messages: tuple[Message, ...]
    train_all_turns: bool


def training_examples(
    conversation: Conversation, thinking: str = "per_turn", train_on: str = "all_turns"
) -> list[Example]:
    """The training examples of one conversation.

    thinking "per_turn": one example per trained assistant turn, in the context the format guide
      gives it: analysis that came before a final answer is gone, the trained turn keeps all of its
      own (so does an unfinished tool-calling turn before it). openai-harmony's `auto_drop_analysis`
      is narrower: it drops only the analysis before the *first* final, and only when the last
      assistant message is a final, which would strip a one-turn example of its reasoning.
    thinking "keep_all": one example, every turn with its analysis (cheaper: each token once).
    train_on "all_turns" or "last_turn": which assistant turns are trained.
    """
    messages = conversation.messages
    turns = assistant_turns(messages)
    if not turns:
        return []
    header = tuple(conversation.header_messages())
    if thinking == "keep_all":
        end = turns[-1][1]
        return [Example(header + tuple(messages[:end]), train_all_turns=train_on == "all_turns")]
    chosen = turns if train_on == "all_turns" else turns[-1:]
    return [Example(header + _context_for_turn(messages, start, end), train_all_turns=False) for start, end in chosen]


def _context_for_turn(messages: tuple[Message, ...], start: int, end: int) -> tuple[Message, ...]:
    return tuple(visible_history(messages[:start])) + messages[start:end]


def visible_history(messages: Iterable[Message]) -> list[Message]:
    """What the format guide has a server show the model of earlier messages: analysis that a final
    answer followed is gone; analysis of a turn still calling tools stays."""
    messages = list(messages)
    return [
        m
        for i, m in enumerate(messages)
        if not (m.role == "assistant" and m.channel == "analysis" and any(n.is_final for n in messages[i + 1 :]))
    ]


def render_example(example: Example) -> list[Piece]:
    return render(example.messages, for_training=True)


# ---------------------------------------------------------------------------------------------
# Encoding and parsing


def encode(pieces: Iterable[Piece], encode_text: Callable[[str], list[int]], special_ids: dict[str, int]) -> list[int]:
    ids: list[int] = []
    for piece in pieces:
        ids += [special_ids[piece.text]] if piece.special else encode_text(piece.text)
    return ids


def parse_completion(text: str) -> dict[str, str]:
    """Split a generated assistant turn (special tokens kept as text) into its channels' texts."""
    channels: dict[str, str] = {}
    for message in text.split(START):
        header, sep, body = message.partition(MESSAGE)
        if not sep or CHANNEL not in header:
            continue
        words = header.split(CHANNEL, 1)[1].split()
        channel = words[0] if words else ""
        for stop in TERMINATORS:
            body = body.split(stop, 1)[0]
        channels[channel] = channels.get(channel, "") + body
    return channels


def with_effort(conversation: Conversation, effort: str | None) -> Conversation:
    return (
        conversation
        if effort is None
        else replace(conversation, system=replace(conversation.system, reasoning_effort=effort))
    )
