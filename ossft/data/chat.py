"""A checked chat (rows.py) -> a harmony Conversation, or -> messages for a Jinja chat template."""

from __future__ import annotations

import json

from ossft.data.rows import ChatRow
from ossft.harmony.render import Conversation, Message, SystemBlock
from ossft.harmony.tools import function_tools_section


def to_conversation(chat: ChatRow, system: SystemBlock) -> Conversation:
    instructions = [m["content"] for m in chat.messages if m["role"] == "developer"]
    messages: list[Message] = []
    for message in chat.messages:
        if message["role"] == "user":
            messages.append(Message("user", message["content"]))
        elif message["role"] == "tool":
            # A tool answers the assistant on the commentary channel (harmony format guide).
            messages.append(
                Message(
                    "tool",
                    message["content"],
                    channel="commentary",
                    recipient="assistant",
                    author=f"functions.{message['name']}",
                )
            )
        elif message["role"] == "assistant":
            messages += _assistant_messages(message)
    tools = function_tools_section(chat.tools) if chat.tools else None  # checked by rows.py
    if chat.reasoning_effort:
        system = SystemBlock(**{**system.__dict__, "reasoning_effort": chat.reasoning_effort})
    return Conversation(tuple(messages), system, "\n\n".join(instructions) or None, tools)


def _assistant_messages(message: dict) -> list[Message]:
    out = []
    if message["thinking"]:
        out.append(Message("assistant", message["thinking"], channel="analysis"))
    if message["tool_calls"]:
        if message["content"]:  # words before a call are a preamble, shown on the commentary channel
            out.append(Message("assistant", message["content"], channel="commentary"))
        for call in message["tool_calls"]:
            out.append(
                Message(
                    "assistant",
                    call["arguments"],
                    channel="commentary",
                    recipient=f"functions.{call['name']}",
                    content_type="<|constrain|>json",
                )
            )
    elif message["content"]:
        out.append(Message("assistant", message["content"], channel="final"))
    return out


def to_template_messages(chat: ChatRow) -> list[dict]:
    """Messages as Hugging Face chat templates take them (the gpt-oss template reads `thinking`)."""
    out = []
    for message in chat.messages:
        if message["role"] == "developer":
            out.append({"role": "system", "content": message["content"]})
        elif message["role"] == "assistant":
            entry = {"role": "assistant", "content": message["content"] or ""}
            if message["thinking"]:
                entry["thinking"] = message["thinking"]
            if message["tool_calls"]:
                entry["tool_calls"] = [
                    {"type": "function", "function": {"name": c["name"], "arguments": json.loads(c["arguments"])}}
                    for c in message["tool_calls"]
                ]
            out.append(entry)
        else:
            out.append({k: v for k, v in message.items() if k in ("role", "content", "name") and v is not None})
    return out
