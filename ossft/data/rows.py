"""Dataset rows in their many layouts -> one checked chat, or a `RowError` naming the field.

Layouts: (a) `messages` (OpenAI / Hugging Face chat, with `thinking`, `tool_calls`, `tool` results,
per-row `tools` and `reasoning_effort`), (b) HuggingFaceH4/Multilingual-Thinking's columns, and
(c) `prompt` / `completion`. The checked chat uses a few plain dicts:

    {"role": "developer", "content": str}                 system / developer instructions
    {"role": "user", "content": str}
    {"role": "assistant", "content": str | None, "thinking": str | None,
     "tool_calls": [{"name": str, "arguments": str}]}     arguments: JSON text, as written
    {"role": "tool", "name": str, "content": str}
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ossft.harmony.tools import function_name_problem, function_tools_section

LAYOUTS = ("auto", "messages", "multilingual_thinking", "prompt_completion")
EFFORTS = ("low", "medium", "high")


class RowError(ValueError):
    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Fields:
    """Column and key names, as the recipe maps them."""

    messages: str = "messages"
    thinking: str = "thinking"
    tools: str = "tools"
    reasoning_effort: str = "reasoning_effort"
    prompt: str = "prompt"
    completion: str = "completion"


@dataclass
class ChatRow:
    messages: list[dict]
    tools: list[dict] | None = None
    reasoning_effort: str | None = None


def parse_row(row: object, layout: str = "auto", fields: Fields = Fields()) -> ChatRow:
    if not isinstance(row, dict):
        raise RowError("row", f"expected an object with named fields, got {type(row).__name__}")
    if layout == "auto":
        layout = detect_layout(row, fields)
    if layout == "messages":
        chat, places = _messages_layout(row, fields)
    elif layout == "multilingual_thinking":
        chat, places = _multilingual_thinking_layout(row)
    else:
        chat, places = _prompt_completion_layout(row, fields)
    chat.tools = _tools(row.get(fields.tools), fields.tools)
    effort = _optional(row, fields.reasoning_effort)
    if effort is not None and effort not in EFFORTS:
        raise RowError(fields.reasoning_effort, f"expected one of {', '.join(EFFORTS)}, got {effort!r}")
    chat.reasoning_effort = effort
    answer_field = {
        "messages": fields.messages,
        "multilingual_thinking": "final",
        "prompt_completion": fields.completion,
    }
    _check_turns(chat.messages, places, answer_field[layout])
    return chat


def detect_layout(row: dict, fields: Fields) -> str:
    if fields.messages in row:
        return "messages"
    if "user" in row and "final" in row:
        return "multilingual_thinking"
    if fields.prompt in row and fields.completion in row:
        return "prompt_completion"
    raise RowError(
        "row",
        f"no known layout: expected a '{fields.messages}' list, Multilingual-Thinking columns "
        f"(user, final, ...), or '{fields.prompt}' and '{fields.completion}' (found: {', '.join(map(str, row)) or 'nothing'})",
    )


def _messages_layout(row: dict, fields: Fields) -> tuple[ChatRow, list[str]]:
    messages = _json_if_text(row.get(fields.messages), fields.messages)
    if not isinstance(messages, list) or not messages:
        raise RowError(fields.messages, "expected a non-empty list of messages")
    places = [f"{fields.messages}[{i}]" for i in range(len(messages))]
    return ChatRow([_message(m, place, fields) for m, place in zip(messages, places)]), places


def _message(message: object, where: str, fields: Fields) -> dict:
    if not isinstance(message, dict):
        raise RowError(where, f"expected a message object, got {type(message).__name__}")
    role = message.get("role")
    if role in ("system", "developer"):
        return {"role": "developer", "content": _text(message.get("content"), f"{where}.content")}
    if role == "user":
        return {"role": "user", "content": _text(message.get("content"), f"{where}.content")}
    if role == "tool":
        content = _text(message.get("content"), f"{where}.content", allow_empty=True)
        name = message.get("name")
        if name is not None and not (isinstance(name, str) and name):
            raise RowError(f"{where}.name", "expected the called function's name")
        if name is not None:
            _unicode(name, f"{where}.name")
        return {"role": "tool", "name": name, "content": content, "tool_call_id": message.get("tool_call_id")}
    if role == "assistant":
        return _assistant(message, where, fields)
    raise RowError(f"{where}.role", f"unknown role {role!r}; expected system, developer, user, assistant or tool")


def _assistant(message: dict, where: str, fields: Fields) -> dict:
    content = message.get("content")
    # No content is None, "" or [] (no content parts): an assistant may only think or call tools.
    content = None if content is None else _text(content, f"{where}.content", allow_empty=True) or None
    thinking = message.get(fields.thinking)
    if thinking is not None and not isinstance(thinking, str):
        raise RowError(f"{where}.{fields.thinking}", f"expected text, got {type(thinking).__name__}")
    if thinking:
        _unicode(thinking, f"{where}.{fields.thinking}")
    calls = message.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise RowError(f"{where}.tool_calls", f"expected a list of tool calls, got {type(calls).__name__}")
    calls = [_tool_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls or [])]
    if content is None and not thinking and not calls:
        raise RowError(where, f"an assistant message needs content, {fields.thinking} or tool_calls")
    return {"role": "assistant", "content": content, "thinking": thinking or None, "tool_calls": calls}


def _tool_call(call: object, where: str) -> dict:
    if not isinstance(call, dict):
        raise RowError(where, "expected an object with a function name and arguments")
    # OpenAI nests {"function": {...}}; some datasets do not. A table (parquet) that holds both
    # shapes stores the missing one as null, so null counts as absent, here and for the arguments.
    function = call.get("function")
    if function is None:
        function = call
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        raise RowError(f"{where}.function.name", "expected the function's name")
    _unicode(name, f"{where}.function.name")
    problem = function_name_problem(name)
    if problem:
        raise RowError(
            f"{where}.function.name", f"{name!r} {problem}, which a harmony header `to=functions.NAME` cannot carry"
        )
    field = f"{where}.function.arguments"
    arguments = function.get("arguments")
    if arguments is None:
        arguments = {}
    if isinstance(arguments, dict):
        arguments = _json_text(arguments, field)
    elif isinstance(arguments, str):
        _unicode(arguments, field)
        parsed = _json_if_text(arguments, field, always=True)
        if not isinstance(parsed, dict):
            raise RowError(field, f"expected a JSON object, got {_json_kind(parsed)}: {arguments[:60]!r}")
        # An escaped "\ud800" reads back as a lone surrogate, and the template mode renders the parsed value.
        _json_text(parsed, field)
    else:
        raise RowError(field, f"expected a JSON object or its text, got {type(arguments).__name__}")
    return {"name": name, "arguments": arguments, "id": call.get("id")}


def _multilingual_thinking_layout(row: dict) -> tuple[ChatRow, list[str]]:
    # The same chat as the dataset's own `messages` column: its system message is
    # "reasoning language: X\n\n<developer>".
    language = _optional(row, "reasoning_language")
    developer = _optional(row, "developer")
    instructions = []
    if language is not None:
        instructions.append(f"reasoning language: {_text(language, 'reasoning_language')}")
    if developer is not None:
        instructions.append(_text(developer, "developer"))
    analysis = row.get("analysis")
    if analysis is not None and not isinstance(analysis, str):
        raise RowError("analysis", f"expected text, got {type(analysis).__name__}")
    if analysis:
        _unicode(analysis, "analysis")
    messages = [{"role": "developer", "content": "\n\n".join(instructions)}] if instructions else []
    messages += [
        {"role": "user", "content": _text(row.get("user"), "user")},
        {
            "role": "assistant",
            "content": _text(row.get("final"), "final"),
            "thinking": analysis or None,
            "tool_calls": [],
        },
    ]
    columns = (["developer"] if instructions else []) + ["user", "final"]
    return ChatRow(messages), columns


def _prompt_completion_layout(row: dict, fields: Fields) -> tuple[ChatRow, list[str]]:
    prompt, completion = row.get(fields.prompt), row.get(fields.completion)
    if isinstance(prompt, list):
        places = [f"{fields.prompt}[{i}]" for i in range(len(prompt))]
        messages = [_message(m, place, fields) for m, place in zip(prompt, places)]
    else:
        places = [fields.prompt]
        messages = [{"role": "user", "content": _text(prompt, fields.prompt)}]
    if isinstance(completion, list):
        answer = [_message(m, f"{fields.completion}[{i}]", fields) for i, m in enumerate(completion)]
        if any(m["role"] != "assistant" for m in answer):
            raise RowError(fields.completion, "a completion holds assistant messages only")
        messages += answer
        places += [f"{fields.completion}[{i}]" for i in range(len(answer))]
    else:
        messages.append(
            {"role": "assistant", "content": _text(completion, fields.completion), "thinking": None, "tool_calls": []}
        )
        places.append(fields.completion)
    return ChatRow(messages), places


def _check_turns(messages: list[dict], places: list[str], field: str) -> None:
    """Instructions first, an assistant to learn from, and every tool result answering a call.
    `places` names each message's field in the row; `field`, the one that should hold an answer."""
    pending: list[dict] = []
    started = False
    for message, place in zip(messages, places):
        role = message["role"]
        if role == "developer" and started:
            raise RowError(place, "a system / developer message must come before the conversation")
        started = started or role != "developer"
        if role == "assistant":
            pending = list(message["tool_calls"]) or pending
        elif role == "tool":
            message["name"] = _answered_call(message, pending, place)
        elif role == "user":
            pending = []
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(field, "no assistant message, so nothing to train on")


def _answered_call(message: dict, pending: list[dict], where: str) -> str:
    if not pending:
        raise RowError(where, "a tool result with no tool call before it")
    call_id = message.get("tool_call_id")
    by_id = [c for c in pending if call_id and c.get("id") == call_id]
    if call_id and not by_id:
        # Falling back to the name or the order would pair the result with a call it does not answer.
        open_ids = [c.get("id") for c in pending if c.get("id")]
        known = f"the open calls' ids are {open_ids}" if open_ids else "no open call has an id"
        raise RowError(f"{where}.tool_call_id", f"{call_id!r} matches no open tool call ({known})")
    by_name = [c for c in pending if c["name"] == message.get("name")]
    call = (by_id or by_name or pending)[0]
    if by_id and message.get("name") and message["name"] != call["name"]:
        raise RowError(
            f"{where}.name",
            f"'{message['name']}' disagrees with tool_call_id '{message['tool_call_id']}', a call of '{call['name']}'",
        )
    if message.get("name") and message["name"] != call["name"]:
        raise RowError(
            f"{where}.name", f"'{message['name']}' was not called; the open calls are {[c['name'] for c in pending]}"
        )
    pending.remove(call)
    return call["name"]


def _tools(value: object, field: str) -> list[dict] | None:
    value = _json_if_text(value, field)
    if value in (None, "", []):  # "": an empty csv cell
        return None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise RowError(field, "expected a list of function definitions (JSON schema)")
    _json_text(value, field)
    try:
        # Rendered here, not only parsed: a default the section cannot print (NaN, an integer
        # beyond a float) or a schema nested past Python's recursion limit is this row's fault.
        function_tools_section(value)
    except ValueError as exc:
        raise RowError(field, str(exc)) from exc
    except RecursionError:
        raise RowError(field, "a parameter schema nested too deeply to render") from None
    return value


def _optional(row: dict, key: str) -> object:
    """An optional column: null, absent and "" (an empty csv cell) all mean not given."""
    value = row.get(key)
    return None if value == "" else value


def _json_if_text(value: object, field: str, always: bool = False) -> object:
    """csv and some parquet files store nested fields as JSON text."""
    if isinstance(value, str) and (always or value[:1] in ("[", "{")):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            if always:
                raise RowError(field, f"not valid JSON ({exc.msg}): {value[:60]!r}") from exc
            raise RowError(field, f"looks like JSON but does not parse ({exc.msg})") from exc
        except (ValueError, RecursionError) as exc:  # an integer of over 4,300 digits; nesting past the stack
            raise RowError(field, f"JSON too large to read ({type(exc).__name__}: {str(exc)[:80]})") from exc
    return value


def _json_text(value: object, field: str) -> str:
    """`value` as JSON text, checked to be valid Unicode (the tokenizer takes nothing else)."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (ValueError, RecursionError) as exc:
        raise RowError(field, f"cannot be written as JSON ({type(exc).__name__})") from exc
    return _unicode(text, field, position=False)  # a place in our JSON text would mean nothing to the user


def _json_kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _unicode(value: str, field: str, position: bool = True) -> str:
    """JSON's \\ud800 escapes can put a lone UTF-16 surrogate in a string; no tokenizer takes one."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = f" at character {exc.start}" if position else ""
        raise RowError(
            field,
            f"not valid Unicode: a lone surrogate {value[exc.start]!r}{where} "
            "(a \\ud800-\\udfff escape in JSON must be one of a high-low pair)",
        ) from None
    return value


def _text(value: object, field: str, allow_empty: bool = False) -> str:
    if isinstance(value, list):  # content parts: [{"type": "text", "text": ...}, ...]
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
            raise RowError(field, "only text content parts are supported")
        value = "".join(p["text"] for p in value)
    if value is None:
        raise RowError(field, "missing")
    if not isinstance(value, str):
        raise RowError(field, f"expected text, got {type(value).__name__}")
    if not value and not allow_empty:
        raise RowError(field, "empty")
    return _unicode(value, field)
