"""`chat_format: template`: render with the tokenizer's own Jinja template, tokens and all.

A template returns one string in which its control tokens and the data's text look alike: a message
saying "<|end|>" would become a real end of message. So every special-token look-alike in the data is
swapped for a private-use character before rendering and swapped back, as plain text, after the
string has been cut at the template's real control tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from jinja2 import TemplateError

from ossft.errors import UserError

# Supplementary Private Use Area-A: 65,534 code points no tokenizer gives meaning to.
_PRIVATE_USE = range(0xF0000, 0xFFFFE)


@dataclass(frozen=True)
class Guarded:
    value: object  # the messages / kwargs with look-alikes replaced
    literals: tuple[str, ...]  # literals[i] stands where chr(base + i) is
    base: int

    def restore(self, text: str) -> str:
        for index, literal in enumerate(self.literals):
            text = text.replace(chr(self.base + index), literal)
        return text


def guard(value: object, specials: list[str]) -> Guarded:
    """Replace every special-token look-alike in the strings of `value` by a private-use character
    that the data does not already contain."""
    strings = list(_strings(value))
    pattern = _alternation(specials)
    count = sum(len(pattern.findall(s)) for s in strings) if pattern else 0
    used = {ord(c) for s in strings for c in s if ord(c) in _PRIVATE_USE}
    base = _PRIVATE_USE.start
    while any(base <= code < base + count for code in used):
        base += count
    literals: list[str] = []

    def swap(match: re.Match) -> str:
        literals.append(match.group(0))
        return chr(base + len(literals) - 1)

    def walk(node: object) -> object:
        if isinstance(node, str):
            return pattern.sub(swap, node) if pattern else node
        if isinstance(node, dict):
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return Guarded(walk(value), tuple(literals), base)


def _strings(node: object):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _alternation(tokens: list[str]) -> re.Pattern | None:
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(set(tokens), key=len, reverse=True)))


class TemplateRenderer:
    """Render template jobs and tokenize them with the tokenizer's own ids for every text run."""

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise UserError(
                "data.chat_format: template renders with the tokenizer's chat template, and this tokenizer has "
                "none. Use data.chat_format: harmony, or a tokenizer (model.tokenizer) that has one."
            )
        self.tokenizer = tokenizer
        decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self.specials = sorted({t.content for t in decoder.values() if t.special} | set(tokenizer.all_special_tokens))
        self.splitter = _alternation(self.specials)

    def render(self, job: dict) -> tuple[str, Guarded]:
        guarded = guard(job, self.specials)
        kwargs = {k: v for k, v in guarded.value.items() if k != "messages"}
        try:
            text = self.tokenizer.apply_chat_template(
                guarded.value["messages"], tokenize=False, add_generation_prompt=False, **kwargs
            )
        except TemplateError:
            raise
        except Exception as exc:
            # The template is the model repository's code run on this row's values: where it fails
            # (gpt-oss's adds a tool parameter's description to a string, so a number raises
            # TypeError), the row is refused, as by the template's own raise_exception.
            raise TemplateError(f"{type(exc).__name__}: {exc}") from exc
        return text, guarded

    def ids(self, job: dict) -> list[int]:
        text, guarded = self.render(job)
        ids: list[int] = []
        position = 0
        for match in self.splitter.finditer(text):
            ids += self._text_ids(guarded.restore(text[position : match.start()]))
            ids.append(self.tokenizer.convert_tokens_to_ids(match.group(0)))
            position = match.end()
        return ids + self._text_ids(guarded.restore(text[position:]))

    def _text_ids(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
