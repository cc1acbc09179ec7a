"""Malformed data rows, generated: through the real data pipeline, every row ends as a row-level error
naming the file, the row and the field (`on_bad_row: error`) or as a counted skip (`on_bad_row: skip`),
never as a crash in tokenization or training.

The oracle is the generator itself: each row is built either good or with exactly one defect, and
the defect says which field the error must name. Good rows carry everything that is legal but odd:
special-token look-alikes, control characters, huge strings, `thinking` on user messages, content
parts, tool calls matched by id, by name or by order.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ossft.data import prepare
from ossft.errors import UserError
from ossft.harmony.render import SPECIAL_TOKENS
from ossft.recipe.load import load_recipe
from tests.conftest import FIXTURES, REPO

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
HF_CHAT_TEMPLATE = FIXTURES / "gpt-oss-tokenizer" / "chat_template.jinja"
FIX_HINT = ". Fix the row, or set data.on_bad_row: skip to leave such rows out."


def fuzz(examples: int):
    # derandomize: the same examples on every run, so CI is stable and a failure reproduces.
    return settings(max_examples=examples, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


@dataclass
class Row:
    value: object
    fault: str | None = None  # the field the error must name; None for a good row
    refused_by_template: bool = False  # good, but the HF chat template raises on it (see template test)
    tabular: bool = True  # the row and its defect survive a table's fixed columns (csv / parquet)

    def _repr_pretty_(self, printer, cycle) -> None:
        # Hypothesis prints failing examples: huge strings cut, deep schemas elided.
        printer.text(f"Row({_short(self.value)!r}, fault={self.fault!r})")


def _short(value: object, depth: int = 0) -> object:
    if isinstance(value, str) and len(value) > 60:
        return f"{value[:40]}...<{len(value)} chars>"
    if depth > 6 and isinstance(value, (dict, list)):
        return "..."
    if isinstance(value, dict):
        return {k: _short(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_short(v, depth + 1) for v in value]
    return value


# ---------------------------------------------------------------------------------------------
# Text: legal but hostile, and the one thing JSON can carry that no tokenizer takes (a lone surrogate)

LOOK_ALIKES = [*SPECIAL_TOKENS, "<|start|>assistant<|channel|>final<|message|>", "<|channel|>analysis<|message|>"]
plain = st.text(min_size=1, max_size=24)  # hypothesis never draws surrogates here
look_alike = st.lists(st.sampled_from(LOOK_ALIKES) | plain, min_size=1, max_size=4).map("".join)
controls = st.text(
    st.characters(max_codepoint=0x1F) | st.sampled_from("\x7f\x85\u2028\u2029\ufeff\u200b\ufffe\uffff\U0010ffff"),
    min_size=1,
    max_size=8,
)
huge = st.builds(lambda piece, n: piece * n, st.text(min_size=1, max_size=3), st.integers(1000, 6000))
texts = st.one_of(plain, plain, plain, look_alike, controls, huge)
lone_surrogate = st.builds(
    lambda a, c, b: a + c + b,
    st.text(max_size=4),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.text(max_size=4),
)
names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
finite = st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    finite | plain,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
# A wrong type wherever text belongs (never a list of text parts, never None: those are their own cases).
not_text = st.one_of(
    st.integers(), st.floats(), st.booleans(), st.dictionaries(st.text(max_size=4), finite, max_size=2)
)


def content(draw) -> object:
    """Text, or OpenAI content parts that join to non-empty text."""
    text = draw(texts)
    if draw(st.integers(0, 4)) == 0:
        cut = draw(st.integers(0, len(text)))
        return [{"type": "text", "text": text[:cut]}, {"type": "text", "text": text[cut:]}]
    return text


# ---------------------------------------------------------------------------------------------
# Good rows, one strategy per layout


@st.composite
def tool_definitions(draw) -> object:
    schema = st.recursive(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["string", "number", "integer", "boolean"])},
            # A description that is no text is skipped by harmony (as by openai-harmony).
            optional={
                "description": plain | st.integers(),
                "enum": st.lists(finite | plain, max_size=3),
                "default": finite | plain,
            },
        ),
        lambda inner: (
            st.fixed_dictionaries({"type": st.just("array"), "items": inner})
            | st.fixed_dictionaries(
                {"type": st.just("object"), "properties": st.dictionaries(names, inner, max_size=2)}
            )
        ),
        max_leaves=4,
    )
    tools = []
    for name in draw(st.lists(names, max_size=2, unique=True)):
        spec: dict = {"name": name}
        if draw(st.booleans()):
            spec["description"] = draw(texts)
        parameters = draw(st.sampled_from(["absent", "empty", "object"]))
        if parameters == "empty":
            spec["parameters"] = {}
        elif parameters == "object":
            properties = draw(st.dictionaries(names, schema, max_size=3))
            required = draw(st.lists(st.sampled_from(sorted(properties)), unique=True)) if properties else []
            spec["parameters"] = {"type": "object", "properties": properties, "required": required}
        tools.append({"type": "function", "function": spec} if draw(st.booleans()) else spec)
    return json.dumps(tools) if tools and draw(st.booleans()) else tools  # csv-style JSON text too


@st.composite
def tool_calls(draw, n: int) -> list[dict]:
    calls = []
    for index in range(n):
        function: dict = {"name": draw(names)}
        arguments = draw(st.sampled_from(["dict", "text", "absent", "null"]))
        if arguments == "dict":
            function["arguments"] = draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3))
        elif arguments == "text":
            function["arguments"] = json.dumps(draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)))
        elif arguments == "null":
            function["arguments"] = None  # a table stores a missing key as null
        call = {"id": f"call_{index}", "type": "function", "function": function}
        calls.append(call if draw(st.booleans()) else {**function, "id": call["id"]})  # nested or bare
    return calls


@st.composite
def good_messages(draw) -> list[dict]:
    messages: list[dict] = []
    if draw(st.booleans()):
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": content(draw)})
    for _ in range(draw(st.integers(1, 3))):
        user = {"role": "user", "content": content(draw)}
        if draw(st.integers(0, 5)) == 0:
            user["thinking"] = draw(json_values)  # thinking in the wrong place: ignored, as a server would
        messages.append(user)
        if draw(st.booleans()):
            calls = draw(tool_calls(draw(st.integers(1, 2))))
            asking = {"role": "assistant", "tool_calls": calls}
            asking["content"] = draw(st.none() | st.just("") | texts)  # a preamble
            asking["thinking"] = draw(st.none() | st.just("") | texts)
            messages.append(asking)
            for call in calls:
                name = call.get("function", call)["name"]
                answer = {"role": "tool", "content": draw(st.just("") | texts)}
                how = draw(st.sampled_from(["name", "id", "order"]))
                if how == "name":
                    answer["name"] = name
                elif how == "id":
                    answer["tool_call_id"] = call["id"]
                messages.append(answer)
        final = {"role": "assistant", "content": content(draw)}
        thinking = draw(st.sampled_from(["absent", "none", "empty", "text", "only"]))
        if thinking in ("none", "empty"):
            final["thinking"] = None if thinking == "none" else ""
        elif thinking == "text":
            final["thinking"] = draw(texts)
        elif thinking == "only":  # an analysis with no answer yet is still something to train on
            final.update(content=None, thinking=draw(texts))
        messages.append(final)
    return messages


@st.composite
def good_messages_row(draw) -> dict:
    row: dict = {"messages": draw(good_messages())}
    if draw(st.booleans()):
        row["tools"] = draw(tool_definitions())
    if draw(st.booleans()):
        row["reasoning_effort"] = draw(st.sampled_from(["low", "medium", "high", None]))
    if draw(st.integers(0, 4)) == 0:
        row["id"] = draw(json_values)  # unknown columns are ignored
    return row


@st.composite
def good_thinking_row(draw) -> dict:
    """HuggingFaceH4/Multilingual-Thinking's columns; the optional ones absent, null or empty."""
    row = {"user": draw(texts), "final": draw(texts)}
    for column in ("reasoning_language", "developer", "analysis"):
        choice = draw(st.sampled_from(["text", "text", "absent", "null", "empty"]))
        if choice != "absent":
            row[column] = {"text": draw(texts), "null": None, "empty": ""}[choice]
    return row


@st.composite
def good_prompt_row(draw) -> dict:
    if draw(st.booleans()):
        prompt: object = draw(texts)
    else:
        prompt = draw(good_messages())[:-1]  # the history before a final answer: may hold tool calls
    if draw(st.booleans()):
        completion: object = draw(texts)
    else:
        completion = [{"role": "assistant", "content": draw(texts), "thinking": draw(st.none() | texts)}]
    return {"prompt": prompt, "completion": completion}


# ---------------------------------------------------------------------------------------------
# Defects: each breaks one thing in a good row and says which field the error must name


def _indexes(messages: list, test) -> list[int]:
    return [i for i, m in enumerate(messages) if test(m)]


def _is(role: str, calls: bool | None = None):
    def test(message: dict) -> bool:
        if message.get("role") != role:
            return False
        return calls is None or bool(message.get("tool_calls")) == calls

    return test


@st.composite
def broken_messages(draw, where: str) -> tuple[list, str]:
    """(messages, field at fault) with one defect; `where` names the list."""
    messages = copy.deepcopy(draw(good_messages()))
    kinds = ["message", "role", "content", "empty-assistant", "thinking", "late-system", "no-assistant", "orphan-tool"]
    if _indexes(messages, _is("assistant", calls=True)):
        kinds += ["tool-calls", "tool-call", "call-name", "arguments", "tool-name", "tool-content", "extra-tool"]
    kind = draw(st.sampled_from(kinds))
    at = f"{where}[{{}}]".format

    if kind == "message":
        i = draw(st.integers(0, len(messages) - 1))
        messages[i] = draw(st.sampled_from([5, "hi", ["user"], None, True]))
        return messages, at(i)
    if kind == "role":
        i = draw(st.integers(0, len(messages) - 1))
        role = draw(st.sampled_from(["absent", "bot", "", "USER", "Assistant", 5, None, ["user"], "function"]))
        if role == "absent":
            del messages[i]["role"]
        else:
            messages[i]["role"] = role
        return messages, f"{at(i)}.role"
    if kind == "content":
        i = draw(st.sampled_from(_indexes(messages, lambda m: m["role"] in ("system", "developer", "user"))))
        value = draw(
            st.sampled_from(["absent", None, "", [], [{"type": "image_url"}], ["text"], [{"type": "text"}]])
            | not_text
            | lone_surrogate
        )
        if value == "absent":
            del messages[i]["content"]
        else:
            messages[i]["content"] = value
        return messages, f"{at(i)}.content"
    if kind == "empty-assistant":
        i = draw(st.sampled_from(_indexes(messages, _is("assistant", calls=False))))
        messages[i]["content"] = draw(st.sampled_from([None, "", [], [{"type": "text", "text": ""}]]))
        messages[i]["thinking"] = draw(st.sampled_from([None, ""]))
        return messages, at(i)
    if kind == "thinking":
        i = draw(st.sampled_from(_indexes(messages, _is("assistant"))))
        messages[i]["thinking"] = draw(not_text | st.lists(plain, min_size=1, max_size=2) | lone_surrogate)
        return messages, f"{at(i)}.thinking"
    if kind == "late-system":
        first_user = _indexes(messages, _is("user"))[0]
        i = draw(st.integers(first_user + 1, len(messages)))
        messages.insert(i, {"role": draw(st.sampled_from(["system", "developer"])), "content": draw(plain)})
        return messages, at(i)
    if kind == "no-assistant":
        kept = [m for m in messages if m["role"] in ("system", "developer", "user")]
        return kept, where
    if kind == "orphan-tool":
        i = _indexes(messages, _is("user"))[-1] + 1  # right after a user message: no open call
        messages.insert(i, {"role": "tool", "content": draw(texts)})
        return messages, at(i)

    i = draw(st.sampled_from(_indexes(messages, _is("assistant", calls=True))))
    calls = messages[i]["tool_calls"]
    j = draw(st.integers(0, len(calls) - 1))
    function = calls[j].get("function", calls[j])
    if kind == "tool-calls":
        messages[i]["tool_calls"] = draw(st.sampled_from([5, True, "get_weather", {"name": "f"}, {}, 0]))
        return messages, f"{at(i)}.tool_calls"
    if kind == "tool-call":
        calls[j] = draw(st.sampled_from([5, "f", None, ["f"]]))
        return messages, f"{at(i)}.tool_calls[{j}]"
    if kind == "call-name":
        function["name"] = draw(st.sampled_from([None, "", 5, ["f"]]) | lone_surrogate)
        return messages, f"{at(i)}.tool_calls[{j}].function.name"
    if kind == "arguments":
        arguments = draw(
            st.sampled_from(["not json", "{", "[1, 2]", "5", '"text"', "null", "", [1], 7, True])
            # Raw, or as JSON's escape: the template mode renders the parsed value.
            | lone_surrogate.map(lambda s: json.dumps({"q": s}, ensure_ascii=False))
            | lone_surrogate.map(lambda s: json.dumps({"q": s}))
        )
        function["arguments"] = arguments
        return messages, f"{at(i)}.tool_calls[{j}].function.arguments"
    # A tool message that answers no open call, or answers it wrongly.
    answers = [k for k in range(i + 1, len(messages)) if messages[k]["role"] == "tool"]
    if kind == "tool-name":
        k = draw(st.sampled_from(answers))
        messages[k]["name"] = draw(st.sampled_from(["", 5, "never_called_x", ["f"]]))
        return messages, f"{at(k)}.name"
    if kind == "tool-content":
        k = draw(st.sampled_from(answers))
        value = draw(st.sampled_from(["absent", None]) | not_text | lone_surrogate)
        if value == "absent":
            del messages[k]["content"]
        else:
            messages[k]["content"] = value
        return messages, f"{at(k)}.content"
    # extra-tool: one more result than there were calls
    k = answers[-1] + 1
    messages.insert(k, {"role": "tool", "content": draw(texts)})
    return messages, at(k)


@st.composite
def bad_messages_row(draw) -> Row:
    kind = draw(st.sampled_from(["messages", "messages", "messages", "row", "list", "tools", "effort", "layout"]))
    row = draw(good_messages_row())
    if kind == "messages":
        row["messages"], fault = draw(broken_messages("messages"))
        return Row(row, fault)
    if kind == "row":
        return Row(draw(st.sampled_from([[row], 5, "row", None, True])), "row", tabular=False)
    if kind == "layout":
        row.pop("messages")
        return Row(row, "row", tabular=False)
    if kind == "list":
        row["messages"] = draw(st.sampled_from([None, 5, "hello", "[not json", "[]", [], {"role": "user"}, True]))
        return Row(row, "messages")
    if kind == "effort":
        row["reasoning_effort"] = draw(st.sampled_from(["max", "LOW", "Medium", 5, ["low"], True]))
        return Row(row, "reasoning_effort")
    row["tools"] = draw(
        st.sampled_from(
            [
                5,
                "not json",
                "[broken",
                {"name": "f"},
                [5],
                ["f"],
                [{"type": "function", "function": {"description": "no name"}}],
                [{"name": "a b"}],
                [{"name": "f", "description": 5}],
                [{"type": "code_interpreter", "name": "f"}],
                [{"name": "f", "parameters": 5}],
                [{"name": "f", "parameters": {"type": "string"}}],
                [{"name": "f", "parameters": {"type": "object", "properties": []}}],
                [{"name": "f", "parameters": {"type": "object", "required": "x"}}],
                [{"name": "f"}, {"name": "f"}],
                [{"name": "f", "description": "\ud800"}],
                # Defaults the section cannot print: JSON allows NaN in Python's reading, and huge integers.
                [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"default": float("nan")}}}}],
                [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"default": 10**400}}}}],
            ]
        )
    )
    return Row(row, "tools")


@st.composite
def bad_thinking_row(draw) -> Row:
    row = draw(good_thinking_row())
    column = draw(st.sampled_from(["user", "final", "analysis", "developer", "reasoning_language", "missing"]))
    if column == "missing":
        row.pop(draw(st.sampled_from(["user", "final"])))
        return Row(row, "row")  # without both, it is no known layout
    if column in ("user", "final"):
        row[column] = draw(st.sampled_from([None, "", [{"type": "image"}]]) | not_text | lone_surrogate)
    else:
        row[column] = draw(not_text | st.lists(plain, min_size=1, max_size=2) | lone_surrogate)
    return Row(row, column)


@st.composite
def bad_prompt_row(draw) -> Row:
    row = draw(good_prompt_row())
    kind = draw(st.sampled_from(["prompt", "completion", "prompt-list", "completion-list", "completion-role"]))
    if kind == "prompt":
        row["prompt"] = draw(st.sampled_from([None, "", {"role": "user"}]) | not_text | lone_surrogate)
        return Row(row, "prompt")
    if kind == "completion":
        row["completion"] = draw(st.sampled_from([None, "", []]) | not_text | lone_surrogate)
        # An empty completion list leaves a plain-text prompt with nothing to train on.
        if row["completion"] == [] and isinstance(row["prompt"], list):
            row["prompt"] = "question"
        return Row(row, "completion")
    if kind == "prompt-list":
        messages, fault = draw(broken_messages("prompt"))
        if fault == "prompt":  # no assistant anywhere: named by the field that should have one
            fault = "completion"
            row["completion"] = []
        row["prompt"] = messages
        return Row(row, fault)
    if kind == "completion-list":
        row["completion"] = [{"role": "assistant", "content": draw(not_text | lone_surrogate)}]
        return Row(row, "completion[0].content")
    row["completion"] = [{"role": draw(st.sampled_from(["user", "tool", "system"])), "content": "x"}]
    return Row(row, "completion")


def template_refuses(row: dict) -> bool:
    """Good rows the HF gpt-oss template raises on: a tool not in OpenAI's nested form or without a
    description (it reads `tool.function.description`), a parameter whose description is no text or
    an enum's default that is no text (it adds them to strings), and an assistant tool call carrying
    both content and thinking."""
    tools = json.loads(row["tools"]) if isinstance(row.get("tools"), str) else row.get("tools")
    for tool in tools or []:
        if "description" not in tool.get("function", {}):
            return True
        for spec in (tool["function"].get("parameters") or {}).get("properties", {}).values():
            if spec.get("description") and not isinstance(spec["description"], str):
                return True
            if "default" in spec and spec.get("enum") and not isinstance(spec["default"], str):
                return True
    messages = [m for key in ("messages", "prompt", "completion") if isinstance(row.get(key), list) for m in row[key]]

    def text(value: object) -> str:
        if isinstance(value, list):
            return "".join(p["text"] for p in value)
        return value or ""

    return any(
        isinstance(m, dict)
        and m.get("role") == "assistant"
        and m.get("tool_calls")
        and text(m.get("content"))
        and m.get("thinking")
        for m in messages
    )


def rows_of(layouts: list[str]):
    good = {"messages": good_messages_row(), "thinking": good_thinking_row(), "prompt": good_prompt_row()}
    bad = {"messages": bad_messages_row(), "thinking": bad_thinking_row(), "prompt": bad_prompt_row()}
    # About as many good rows as bad ones: a file of only bad rows tests less.
    one = st.one_of(
        *[good[name].map(Row) for name in layouts], *[bad[name] for name in layouts], *[good[layouts[0]].map(Row)]
    )
    return st.lists(one, min_size=1, max_size=6)


# ---------------------------------------------------------------------------------------------
# Files


def write_rows(path: Path, rows: list[Row]) -> None:
    values = [row.value for row in rows]
    if path.suffix == ".jsonl":
        path.write_bytes(b"".join(_json_bytes(value) + b"\n" for value in values))
    elif path.suffix == ".json":
        path.write_bytes(b"[" + b",\n".join(_json_bytes(value) for value in values) + b"]")
    elif path.suffix == ".csv":
        import csv

        columns = sorted({key for value in values for key in value})
        with open(path, "w", encoding="utf-8", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(columns)
            writer.writerows([[_cell(value.get(c)) for c in columns] for value in values])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        # Every row with every column: from_pylist takes its columns from the first row alone, and
        # would silently drop a field only later rows have (a bad `tools` with it).
        columns = sorted({key for value in values for key in value})
        values = [{c: value.get(c) for c in columns} for value in values]
        try:
            table = pa.Table.from_pylist(values)  # nested structs, as Hugging Face datasets store chats
            # Parquet has no struct without fields: a column where every value is {} (e.g. every
            # tool call's `arguments`) builds in Arrow and fails only here.
            pq.write_table(table, path)
        except (pa.ArrowException, OverflowError, UnicodeEncodeError):  # mixed types, surrogates: JSON text
            table = pa.Table.from_pylist(
                [{k: _cell(v) if v is not None else None for k, v in r.items()} for r in values]
            )
            pq.write_table(table, path)


def _json_bytes(value: object) -> bytes:
    text = json.dumps(value, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: only JSON's \ud800 escape can carry it
        return json.dumps(value).encode("ascii")


def _cell(value: object) -> str:
    """A table cell: text as it is, anything else as JSON text (how csv files carry chats)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------------------------------
# The pipeline


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("row-fuzz")


@pytest.fixture(scope="module")
def recipe_for(tiny_model_dir, workdir):
    """The quickstart recipe pointed at one data file, with the overrides a user would --set."""
    cache: dict = {}

    def recipe(data_file: Path, on_bad_row: str, *extra: str):
        key = (data_file, on_bad_row, extra)
        if key not in cache:
            overrides = [
                f"model.base_model={tiny_model_dir}",
                f"data.datasets=[{{path: '{data_file}'}}]",
                f"data.on_bad_row={on_bad_row}",
                "train.max_length=null",  # huge strings are not what is tested here: nothing is dropped for length
                *extra,
            ]
            cache[key] = load_recipe(QUICKSTART, overrides)
        return cache[key]

    return recipe


def check_pipeline(recipe_for, tokenizer, path: Path, rows: list[Row], *extra: str, template: bool = False) -> None:
    """Both on_bad_row settings on the same file, against what the generator knows of each row."""
    bad = [i for i, row in enumerate(rows) if row.fault or (template and row.refused_by_template)]

    # skip: never raises for a row; the skipped count is exactly the bad rows.
    try:
        stats = prepare.prepare_data(recipe_for(path, "skip", *extra), tokenizer, use_cache=False).stats
    except UserError as exc:
        assert len(bad) == len(rows), (str(exc), [r.fault for r in rows])
        assert str(exc).startswith(f"no training example left: {len(rows)} rows read, {len(bad)} skipped as bad, "), exc
    else:
        assert (stats.rows, stats.rows_skipped) == (len(rows), len(bad)), (stats.skipped, [r.fault for r in rows])
        assert stats.examples >= 1

    # error: the first bad row stops the run, named by file, row and field. Every row is checked
    # before any is rendered, so a row the chat template refuses comes after every badly formed one.
    try:
        prepare.prepare_data(recipe_for(path, "error", *extra), tokenizer, use_cache=False)
    except UserError as exc:
        message = str(exc)
        faults = [i for i, row in enumerate(rows) if row.fault]
        if faults:
            first = rows[faults[0]]
            assert message.startswith(f"{path} row {faults[0]}, {first.fault}: "), (message, first.value)
            assert message.endswith(FIX_HINT), message
        else:
            assert bad, message
            assert message.startswith(f"{path} row {bad[0]}, chat template: "), message
        assert len(message) < 1000, message
    else:
        assert not bad, [r.fault for r in rows]


# ---------------------------------------------------------------------------------------------
# The fuzz tests: 300 + 100 + 80 + 100 = 580 generated files, each run in both modes


@pytest.mark.e2e
@fuzz(300)
@given(rows=rows_of(["messages", "thinking", "prompt"]))
def test_jsonl_rows_of_every_layout(recipe_for, tokenizer, workdir, rows):
    path = workdir / "rows.jsonl"
    write_rows(path, rows)
    check_pipeline(recipe_for, tokenizer, path, rows)


@pytest.mark.e2e
@fuzz(100)
@given(rows=rows_of(["messages", "thinking", "prompt"]), thinking=st.sampled_from(["per_turn", "keep_all"]))
def test_json_rows_with_keep_all_and_last_turn(recipe_for, tokenizer, workdir, rows, thinking):
    path = workdir / "rows.json"
    write_rows(path, rows)
    check_pipeline(recipe_for, tokenizer, path, rows, f"data.thinking={thinking}", "data.train_on=last_turn")


@pytest.mark.e2e
@fuzz(80)
@given(rows=rows_of(["messages"]), suffix=st.sampled_from([".csv", ".parquet"]))
def test_table_rows(recipe_for, tokenizer, workdir, rows, suffix):
    """csv and parquet hold one layout per file, in fixed columns: nested fields as JSON text (csv,
    and parquet where the types differ between rows) or as structs (parquet)."""
    rows = [row for row in rows if row.tabular]
    if not rows:
        return
    path = workdir / f"rows{suffix}"
    write_rows(path, rows)
    check_pipeline(recipe_for, tokenizer, path, rows)


@pytest.fixture(scope="module")
def template_tokenizer(tiny_model_dir):
    if not HF_CHAT_TEMPLATE.is_file():
        pytest.skip(f"{HF_CHAT_TEMPLATE} is missing")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = HF_CHAT_TEMPLATE.read_text(encoding="utf-8")
    return tokenizer


@pytest.mark.e2e
@fuzz(100)
@given(rows=rows_of(["messages", "prompt"]))
def test_template_mode_rows(recipe_for, template_tokenizer, workdir, rows):
    """chat_format: template adds the template's own refusals, which are skipped or reported too."""
    for row in rows:
        row.refused_by_template = row.fault is None and template_refuses(row.value)
    path = workdir / "template.jsonl"
    write_rows(path, rows)
    check_pipeline(recipe_for, template_tokenizer, path, rows, "data.chat_format=template", template=True)


# ---------------------------------------------------------------------------------------------
# Through the command line: exit 2 and one short message, no traceback


def write_recipe(folder: Path, model_dir: Path, data_file: Path, on_bad_row: str) -> Path:
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["model"]["base_model"] = str(model_dir)
    doc["data"] = {"datasets": [{"path": str(data_file)}], "on_bad_row": on_bad_row, "cache_dir": str(folder / "cache")}
    path = folder / f"recipe-{on_bad_row}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


GOOD = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
CLI_BAD_ROWS = [
    (
        {"messages": [{"role": "user", "content": "a\ud800"}, {"role": "assistant", "content": "x"}]},
        "messages[0].content",
    ),
    (
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "tool_calls": 5}]},
        "messages[1].tool_calls",
    ),
    ({"user": "Hi", "final": "Hello", "analysis": 7}, "analysis"),
    ({"prompt": "Hi", "completion": ["x"]}, "completion[0]"),
]


@pytest.mark.parametrize("command", ["preprocess", "inspect-data"])
@pytest.mark.parametrize(("row", "field"), CLI_BAD_ROWS)
def test_commands_stop_on_a_bad_row_with_exit_2(cli, tmp_path, tiny_model_dir, command, row, field):
    data_file = tmp_path / "rows.jsonl"
    data_file.write_bytes(b"".join(_json_bytes(r) + b"\n" for r in [GOOD, row, GOOD]))
    result = cli(command, write_recipe(tmp_path, tiny_model_dir, data_file, "error"))
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    message = re.sub(r"\s+", " ", result.stderr).strip()  # rich wraps long paths
    assert message.startswith(f"error: {data_file} row 1, {field}: "), message
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.parametrize("command", ["preprocess", "inspect-data"])
def test_commands_skip_and_count_bad_rows(cli, tmp_path, tiny_model_dir, command):
    data_file = tmp_path / "rows.jsonl"
    data_file.write_bytes(b"".join(_json_bytes(r) + b"\n" for r in [GOOD] + [row for row, _ in CLI_BAD_ROWS]))
    result = cli(command, write_recipe(tmp_path, tiny_model_dir, data_file, "skip"))
    assert result.exit_code == 0, (result.output, result.exception)
    totals = re.sub(r"[\s│┃]+", " ", result.stdout)
    assert "rows read 5 " in totals and "rows skipped (bad) 4 " in totals, totals


def test_a_message_quoting_markup_is_printed_as_text(cli, tmp_path, tiny_model_dir):
    data_file = tmp_path / "rows.jsonl"
    data_file.write_bytes(_json_bytes({"messages": [{"role": "user", "content": "Hi"}, {"role": "[/]"}]}) + b"\n")
    result = cli("preprocess", write_recipe(tmp_path, tiny_model_dir, data_file, "error"))
    assert result.exit_code == 2, (result.output, result.exception)
    assert f"{data_file} row 0, messages[1].role: unknown role '[/]'" in re.sub(r"\s+", " ", result.stderr)


# ---------------------------------------------------------------------------------------------
# What the fuzzers found, each as the row that showed it. Before the fixes each one crashed with a
# traceback (TypeError in the tokenizer or the template, ValueError in the tools section, csv.Error,
# ValueError / RecursionError in the JSON reader), or refused a good row, or named the wrong field.

HI = {"role": "user", "content": "Hi"}
HELLO = {"role": "assistant", "content": "Hello!"}
SURROGATE = "(a \\ud800-\\udfff escape in JSON must be one of a high-low pair)"


def prepare_rows(tmp_path, recipe_for, tokenizer, rows: list, on_bad_row: str = "error", *extra, suffix=".jsonl"):
    path = tmp_path / f"rows{suffix}"
    write_rows(path, [Row(row) for row in rows])
    return path, prepare.prepare_data(recipe_for(path, on_bad_row, *extra), tokenizer, use_cache=False)


BAD_ROWS = [
    # Lone surrogates: JSON's \udXXX escape reads into a str the Rust tokenizer refuses (TypeError).
    (
        {"user": "X=\x07É\udd65", "final": "\ufeff\x1c\x15", "reasoning_language": None, "developer": "Óab"},
        f"user: not valid Unicode: a lone surrogate '\\udd65' at character 4 {SURROGATE}",
    ),
    (
        {"messages": [HI, {"role": "assistant", "content": "x", "thinking": "hm\udc00"}]},
        f"messages[1].thinking: not valid Unicode: a lone surrogate '\\udc00' at character 2 {SURROGATE}",
    ),
    (
        # Escaped in the arguments text: the template mode renders the parsed value.
        {"messages": [HI, {"role": "assistant", "tool_calls": [{"name": "f", "arguments": '{"q": "\\ud891"}'}]}]},
        f"messages[1].tool_calls[0].function.arguments: not valid Unicode: a lone surrogate '\\ud891' {SURROGATE}",
    ),
    (
        {"messages": [HI, HELLO], "tools": [{"name": "f", "description": "\ud800"}]},
        f"tools: not valid Unicode: a lone surrogate '\\ud800' {SURROGATE}",
    ),
    # tool_calls of the wrong type: an int was iterated (TypeError), a string blamed on tool_calls[0].
    (
        {"messages": [HI, {"role": "assistant", "tool_calls": 5, "content": "", "thinking": "t"}]},
        "messages[1].tool_calls: expected a list of tool calls, got int",
    ),
    (
        {"messages": [HI, {"role": "assistant", "content": "x", "tool_calls": "get_weather"}]},
        "messages[1].tool_calls: expected a list of tool calls, got str",
    ),
    # Tools the harmony section cannot print raised ValueError while rendering, after the row was accepted.
    (
        {
            "messages": [HI, HELLO],
            "tools": [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"default": float("nan")}}}}],
        },
        "tools: default nan is not valid JSON",
    ),
    # Arguments as text that is JSON but no object were accepted; the same value as JSON was not.
    (
        {"messages": [HI, {"role": "assistant", "tool_calls": [{"name": "f", "arguments": "[1, 2]"}]}]},
        "messages[1].tool_calls[0].function.arguments: expected a JSON object, got an array: '[1, 2]'",
    ),
    # A tool result misplaced in a prompt list was named completion[1].
    (
        {"prompt": [HI, {"role": "tool", "content": "42"}], "completion": "Hello!"},
        "prompt[1]: a tool result with no tool call before it",
    ),
]


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS)
def test_found_bad_rows_are_row_errors(tmp_path, recipe_for, tokenizer, row, problem):
    with pytest.raises(UserError) as info:
        prepare_rows(tmp_path, recipe_for, tokenizer, [GOOD, row])
    assert str(info.value) == f"{tmp_path / 'rows.jsonl'} row 1, {problem}{FIX_HINT}"
    _, prepared = prepare_rows(tmp_path, recipe_for, tokenizer, [GOOD, row], "skip")
    assert (prepared.stats.rows, prepared.stats.rows_skipped, prepared.stats.examples) == (2, 1, 1)


def test_a_tool_schema_nested_past_the_stack_is_a_row_error():
    from ossft.data.rows import RowError, parse_row

    schema: dict = {"type": "string"}
    for _ in range(2000):
        schema = {"type": "object", "properties": {"x": schema}}
    with pytest.raises(RowError) as info:
        parse_row({"messages": [HI, HELLO], "tools": [{"name": "f", "parameters": schema}]})
    # json.dumps or the TypeScript printer runs out of stack first, depending on the Python.
    assert str(info.value) in (
        "tools: cannot be written as JSON (RecursionError)",
        "tools: a parameter schema nested too deeply to render",
    )


GOOD_ROWS = [
    # null is absent: parquet stores a key that only some rows have as null in every other row.
    {"messages": [HI, {"role": "assistant", "tool_calls": [{"name": "f", "arguments": None, "function": None}]}]},
    # No content is None, "" or no content parts at all.
    {"messages": [HI, {"role": "assistant", "content": [], "tool_calls": [{"name": "f"}]}]},
    # "" in an optional column is an empty csv cell, not text to check.
    {"user": "Hi", "final": "Hello!", "developer": "", "reasoning_language": "", "reasoning_effort": "", "tools": ""},
]


@pytest.mark.parametrize("row", GOOD_ROWS)
def test_found_good_rows_are_kept(tmp_path, recipe_for, tokenizer, row):
    _, prepared = prepare_rows(tmp_path, recipe_for, tokenizer, [row])
    assert (prepared.stats.rows, prepared.stats.rows_skipped, prepared.stats.examples) == (1, 0, 1)


def test_csv_with_empty_optional_cells_and_a_chat_over_128_kib(tmp_path, recipe_for, tokenizer):
    # csv.reader refuses a field over 128 KiB by default (csv.Error: field larger than field limit).
    long = {"messages": [HI, {"role": "assistant", "content": "y" * 200_000}], "tools": [], "reasoning_effort": None}
    _, prepared = prepare_rows(tmp_path, recipe_for, tokenizer, [long, {"messages": [HI, HELLO]}], suffix=".csv")
    assert (prepared.stats.rows, prepared.stats.rows_skipped, prepared.stats.examples) == (2, 0, 2)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b'{"prompt": "Hi", "completion": "' + b"9" * 10 + b'", "n": ' + b"9" * 5000 + b"}", "a number too long"),
        (b"[" * 100_000 + b"]" * 100_000, "nesting too deep"),
    ],
)
def test_json_python_cannot_read_is_a_file_error(tmp_path, recipe_for, tokenizer, text, problem):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_json_bytes(GOOD) + b"\n" + text + b"\n")
    with pytest.raises(UserError) as info:
        prepare.prepare_data(recipe_for(path, "skip"), tokenizer, use_cache=False)
    assert str(info.value).startswith(f"{path} line 2: JSON that Python cannot read ({problem}: ")
    assert str(info.value).endswith("). Shorten or flatten that value.")


def test_csv_that_is_not_utf8_is_a_file_error(tmp_path, recipe_for, tokenizer):
    path = tmp_path / "rows.csv"
    path.write_bytes(b"prompt,completion\n\xff\xfe,x\n")
    with pytest.raises(UserError) as info:
        prepare.prepare_data(recipe_for(path, "skip"), tokenizer, use_cache=False)
    assert str(info.value) == f"{path}: not UTF-8 text (invalid start byte). Save the file as UTF-8."


def test_json_text_cell_python_cannot_read_is_a_row_error(tmp_path, recipe_for, tokenizer):
    row = {"messages": '[{"role": "user", "content": "Hi", "n": ' + "9" * 5000 + "}]"}
    with pytest.raises(UserError) as info:
        prepare_rows(tmp_path, recipe_for, tokenizer, [GOOD, row], suffix=".csv")
    assert str(info.value).startswith(f"{tmp_path / 'rows.csv'} row 1, messages: JSON too large to read (ValueError: ")


# A parameter description that is no text: harmony skips it; the HF template adds it to a string.
TEMPLATE_TYPE_ERROR = {
    "messages": [HI, HELLO],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "f",
                "description": "d",
                "parameters": {"type": "object", "properties": {"x": {"type": "string", "description": 5}}},
            },
        }
    ],
}


def test_a_template_failing_on_a_row_refuses_that_row(tmp_path, recipe_for, template_tokenizer):
    extra = "data.chat_format=template"
    with pytest.raises(UserError) as info:
        prepare_rows(tmp_path, recipe_for, template_tokenizer, [GOOD, TEMPLATE_TYPE_ERROR], "error", extra)
    assert str(info.value) == (
        f'{tmp_path / "rows.jsonl"} row 1, chat template: TypeError: can only concatenate str (not "int") to str. '
        "Fix the row, use data.chat_format: harmony, or set data.on_bad_row: skip."
    )
    _, prepared = prepare_rows(tmp_path, recipe_for, template_tokenizer, [GOOD, TEMPLATE_TYPE_ERROR], "skip", extra)
    assert (prepared.stats.rows, prepared.stats.rows_skipped, prepared.stats.examples) == (2, 1, 1)


def test_template_mode_with_a_tokenizer_without_a_template(tmp_path, recipe_for, tokenizer):
    assert not tokenizer.chat_template  # the tiny model's tokenizer has none
    with pytest.raises(UserError) as info:
        prepare_rows(tmp_path, recipe_for, tokenizer, [GOOD], "error", "data.chat_format=template")
    assert str(info.value).startswith("data.chat_format: template renders with the tokenizer's chat template")
