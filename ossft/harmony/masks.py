"""Which tokens the loss trains on, read from the structure of the token stream itself.

One rule for every chat format (harmony/render.py's renders and a Jinja template's alike), so both are
masked the same way: an assistant turn is a run of consecutive assistant messages; its opening
`<|start|>assistant` is written by the server and not trained; every token after it is, through the
turn's last terminator (`<|end|>`, `<|call|>`, `<|return|>`), inner `<|start|>assistant` headers
included. System, developer, user and tool messages are never trained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ossft.harmony.render import MESSAGE, START, TERMINATORS


@dataclass(frozen=True)
class ParsedMessage:
    start: int  # index of <|start|>
    body: int  # first index after the role name: where an assistant turn's training begins
    end: int  # index of the terminator (or the last index, if the stream stops mid-message)
    assistant: bool
    terminated: bool


class StreamParser:
    """Finds messages in token ids. `decode` turns header ids into text (to read the role)."""

    def __init__(self, special_ids: dict[str, int], decode: Callable[[list[int]], str]):
        self.start = special_ids[START]
        self.message = special_ids[MESSAGE]
        self.terminators = frozenset(special_ids[t] for t in TERMINATORS)
        self.decode = decode
        self._roles: dict[tuple[int, ...], tuple[str, int]] = {}

    def messages(self, ids: list[int]) -> list[ParsedMessage]:
        found = []
        position, n = 0, len(ids)
        while position < n:
            if ids[position] != self.start:
                position += 1
                continue
            cursor = position + 1
            while cursor < n and ids[cursor] not in (self.message, self.start):
                cursor += 1
            role, role_length = self._role(tuple(ids[position + 1 : cursor]))
            while cursor < n and ids[cursor] not in self.terminators and ids[cursor] != self.start:
                cursor += 1
            terminated = cursor < n and ids[cursor] in self.terminators
            end = cursor if terminated else cursor - 1
            found.append(ParsedMessage(position, position + 1 + role_length, end, role == "assistant", terminated))
            position = end + 1
        return found

    def _role(self, header: tuple[int, ...]) -> tuple[str, int]:
        """The role name of a header and how many of its ids spell it (`assistant` may be several)."""
        if header not in self._roles:
            text = self.decode(list(header))
            role = text.split("<|", 1)[0].split(" ", 1)[0]
            length = len(header)
            for count in range(1, len(header) + 1):
                if len(self.decode(list(header[:count]))) >= len(role):
                    length = count
                    break
            self._roles[header] = (role, length)
        return self._roles[header]


def assistant_turn_spans(messages: list[ParsedMessage]) -> list[tuple[int, int]]:
    """[first, last] trained index of each assistant turn."""
    spans: list[tuple[int, int]] = []
    previous: ParsedMessage | None = None
    for message in messages:
        if not message.assistant:
            previous = None
            continue
        if previous is not None:
            spans[-1] = (spans[-1][0], message.end)
        else:
            spans.append((message.body, message.end))
        previous = message
    return spans


def trained_mask(ids: list[int], parser: StreamParser, all_turns: bool = True) -> list[bool]:
    spans = assistant_turn_spans(parser.messages(ids))
    if not all_turns:
        spans = spans[-1:]
    mask = [False] * len(ids)
    for first, last in spans:
        mask[first : last + 1] = [True] * (last + 1 - first)
    return mask


def trained_runs(mask: list[bool]) -> list[tuple[int, int]]:
    """[start, end) of each contiguous run of trained positions."""
    runs, start = [], None
    for index, trained in enumerate(mask + [False]):
        if trained and start is None:
            start = index
        elif not trained and start is not None:
            runs.append((start, index))
            start = None
    return runs
