"""The developer message's "# Tools" section, checked against openai-harmony's own vectors and outputs.

The vector tests rebuild the exact tools of openai/harmony's tests (tests/test_harmony.py, src/tests.rs) and of
docs/format.md. The fixture-free expectations marked "openai-harmony 0.0.8" were produced by that package's
renderer (`DeveloperContent.new().with_function_tools(...)`) and copied here verbatim.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ossft.harmony.tools import FunctionTool, _json_float, function_tools_section, parse_function_tools

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "harmony-vectors"
needs_vectors = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"harmony vectors not found at {VECTORS}")

# --- the tools of openai/harmony's tests -------------------------------------------------------------------------

GET_LOCATION = {"name": "get_location", "description": "Gets the location of the user."}

GET_CURRENT_WEATHER = {
    "name": "get_current_weather",
    "description": "Gets the current weather in the provided location.",
    "parameters": {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        },
        "required": ["location"],
    },
}

GET_MULTIPLE_WEATHERS = {
    "name": "get_multiple_weathers",
    "description": "Gets the current weather in the provided list of locations.",
    "parameters": {
        "type": "object",
        "properties": {
            "locations": {
                "type": "array",
                "items": {"type": "string"},
                "description": 'List of city and state, e.g. ["San Francisco, CA", "New York, NY"]',
            },
            "format": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        },
        "required": ["locations"],
    },
}

KITCHENSINK = {
    "name": "kitchensink",
    "description": "A function with various complex schemas.",
    "parameters": {
        "description": "params object",
        "type": "object",
        "properties": {
            "string": {"type": "string", "title": "STRING", "description": "A string", "examples": ["hello", "world"]},
            "string_nullable": {
                "type": "string",
                "nullable": True,
                "description": "A nullable string",
                "default": "the default",
            },
            "string_enum": {"type": "string", "enum": ["a", "b", "c"]},
            "oneof_string_or_number": {
                "oneOf": [
                    {"type": "string", "default": "default_string_in_oneof"},
                    {"type": "number", "description": "numbers can happen too"},
                ],
                "description": "a oneof",
                "default": 20,
            },
        },
    },
}

LOOKUP_WEATHER = {
    "name": "lookup_weather",
    "description": (
        "Use this tool to lookup the weather in a given location. Call it with the parameter 'location', "
        "can be any textual description of a location."
    ),
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
}


def openai_style(tool: dict) -> dict:
    return {"type": "function", "function": dict(tool)}


def developer_message(vector: str) -> str:
    """The text of the developer message in a vector file (trailing whitespace stripped, as upstream does)."""
    text = (VECTORS / vector).read_text(encoding="utf-8").rstrip()
    head = "<|start|>developer<|message|>"
    start = text.index(head) + len(head)
    return text[start : text.index("<|end|>", start)]


@needs_vectors
@pytest.mark.parametrize(
    ("vector", "instructions", "tools"),
    [
        (
            "test_render_functions_with_parameters.txt",
            "Always respond in riddles",
            [GET_LOCATION, GET_CURRENT_WEATHER, GET_MULTIPLE_WEATHERS, KITCHENSINK],
        ),
        (
            "docs_function_definitions_prompt.txt",
            "Use a friendly tone.",
            [GET_LOCATION, GET_CURRENT_WEATHER, GET_MULTIPLE_WEATHERS],
        ),
        ("test_browser_and_function_tool.txt", None, [LOOKUP_WEATHER]),
    ],
)
@pytest.mark.parametrize("shape", ["bare", "openai"])
def test_vectors(vector, instructions, tools, shape):
    if shape == "openai":
        tools = [openai_style(tool) for tool in tools]
    section = function_tools_section(tools)
    expected = developer_message(vector)
    # The developer message is "# Instructions\n\n{text}\n\n{tools section}", or the section alone.
    prefix = "" if instructions is None else f"# Instructions\n\n{instructions}\n\n"
    assert expected.startswith(prefix + "# Tools\n\n## functions\n\nnamespace functions {\n\n")
    assert expected.endswith("} // namespace functions")
    assert section == expected[len(prefix) :]


# --- shapes of the tool dicts ------------------------------------------------------------------------------------

NO_ARGS = (
    "# Tools\n\n## functions\n\nnamespace functions {\n\n// Says hi.\ntype f = () => any;\n\n} // namespace functions"
)


def test_tool_shapes_give_the_same_text():
    bare = {
        "name": "f",
        "description": "Says hi.",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
    }
    chat = {"type": "function", "function": bare}
    responses = {"type": "function", **bare, "strict": True}
    untyped = {"function": bare}
    texts = {function_tools_section([tool]) for tool in (bare, chat, responses, untyped)}
    assert texts == {
        "# Tools\n\n## functions\n\nnamespace functions {\n\n// Says hi.\ntype f = (_: {\nx?: number,\n}) => any;\n\n"
        "} // namespace functions"
    }


@pytest.mark.parametrize(
    ("parameters", "signature"),
    [
        ("absent", "()"),
        (None, "()"),  # JSON null: openai-harmony's Python API drops None fields, so the same as absent
        ({}, "(_: any)"),  # a schema that allows anything, not "no arguments"
        ({"type": "object"}, "(_: {\n})"),
        ({"type": "object", "properties": {}}, "(_: {\n})"),
        ({"type": "object", "properties": {}, "required": []}, "(_: {\n})"),
        ({"type": "object", "description": "Nothing."}, "(_: // Nothing.\n{\n})"),
    ],
)
def test_parameter_less_tools(parameters, signature):  # openai-harmony 0.0.8
    tool = {"name": "f", "description": "Says hi."}
    if parameters != "absent":
        tool["parameters"] = parameters
    expected = NO_ARGS.replace("()", signature)
    assert function_tools_section([tool]) == expected
    assert function_tools_section([openai_style(tool)]) == expected


def test_empty_tool_list():
    assert function_tools_section([]) == ""


@pytest.mark.parametrize(
    ("description", "comment"),
    [
        ("", ""),
        ("one line", "// one line\n"),
        ("two\nlines\n", "// two\n// lines\n"),
        ("crlf\r\nline", "// crlf\n// line\n"),
        ("gap\n\nafter", "// gap\n// \n// after\n"),
        ("bare cr\r", "// bare cr\r\n"),  # Rust's str::lines keeps a final "\r" that no "\n" follows
    ],
)
def test_description_lines(description, comment):  # openai-harmony 0.0.8
    section = function_tools_section([{"name": "f", "description": description}])
    assert (
        section
        == f"# Tools\n\n## functions\n\nnamespace functions {{\n\n{comment}type f = () => any;\n\n}} // namespace functions"
    )


def test_parse_function_tools():
    tools = parse_function_tools([openai_style(GET_CURRENT_WEATHER), {"name": "g"}])
    assert tools == [
        FunctionTool("get_current_weather", GET_CURRENT_WEATHER["description"], GET_CURRENT_WEATHER["parameters"]),
        FunctionTool("g", "", None),
    ]


# --- JSON schema -> TypeScript, beyond the vectors (expected texts from openai-harmony 0.0.8) ----------------------


def body(section: str) -> str:
    head = "# Tools\n\n## functions\n\nnamespace functions {\n\n"
    tail = "\n\n} // namespace functions"
    assert section.startswith(head) and section.endswith(tail)
    return section[len(head) : -len(tail)]


def test_nested_objects_arrays_and_scalars():
    tool = {
        "name": "create_event",
        "description": "Create a calendar event.",
        "parameters": {
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "attendees": {
                    "type": "array",
                    "description": "People to invite",
                    "items": {
                        "type": "object",
                        "properties": {"email": {"type": "string"}, "optional": {"type": "boolean", "default": False}},
                        "required": ["email"],
                    },
                },
                "when": {
                    "type": "object",
                    "description": "Start and end",
                    "properties": {
                        "start": {"type": "string", "description": "ISO 8601"},
                        "minutes": {"type": "integer", "default": 30},
                    },
                    "required": ["start"],
                },
                "priority": {"type": "integer", "enum": [1, 2, 3]},
                "tags": {"type": "array"},
                "ratio": {"type": "number", "default": 0.5},
                "note": {"type": ["string", "null"]},
            },
            "required": ["title", "when"],
        },
    }
    assert body(function_tools_section([tool])) == (
        "// Create a calendar event.\n"
        "type create_event = (_: {\n"
        "title: string,\n"
        "// People to invite\n"
        "attendees?: {\n"
        "    email: string,\n"
        "    optional?: boolean, // default: false\n"
        "    }[],\n"
        "// Start and end\n"
        "when:     // Start and end\n"
        "{\n"
        "    // ISO 8601\n"
        "    start: string,\n"
        "    minutes?: number, // default: 30\n"
        "    },\n"
        "priority?: number,\n"
        "tags?: Array<any>,\n"
        "ratio?: number, // default: 0.5\n"
        "note?: string | null,\n"
        "}) => any;"
    )


def test_anyof_title_and_null_default():
    # openai-harmony has no anyOf case: a pydantic-style Optional renders as `any`.
    tool = {
        "name": "search",
        "description": "Search.\nSecond line.",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"title": "Query", "type": "string"},
                "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None, "title": "Limit"},
            },
            "required": ["query"],
        },
    }
    assert body(function_tools_section([tool])) == (
        "// Search.\n// Second line.\n"
        "type search = (_: {\n"
        "// Query\n//\nquery: string,\n"
        "// Limit\n//\nlimit?: any, // default: null\n"
        "}) => any;"
    )


def test_oneof_enum_nullable_quirks():
    tool = {
        "name": "pick",
        "parameters": {
            "type": "object",
            "properties": {
                "mode": {
                    "description": "How",
                    "oneOf": [
                        {"type": "string", "enum": ["fast", "slow"], "description": "How", "default": "fast"},
                        {"type": "object", "properties": {"level": {"type": "integer"}}, "required": ["level"]},
                    ],
                },
                "flag": {"type": "string", "enum": ["null", "x"], "nullable": True, "default": "x"},
                "anything": {"default": {"a": [1, 2.5, None]}},
            },
            "required": ["mode"],
        },
    }
    assert body(function_tools_section([tool])) == (
        "type pick = (_: {\n"
        "mode:\n"
        ' | "fast" | "slow" // default: fast\n'
        " | {\n"
        "   level: number,\n"
        "   }\n"
        ",\n"
        'flag?: "null" | "x", // default: x\n'
        'anything?: any, // default: {"a":[1,2.5,null]}\n'
        "}) => any;"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (20.0, "20.0"),
        (0.5, "0.5"),
        (1e16, "1e16"),
        (1e15, "1000000000000000.0"),
        (1.5e-7, "1.5e-7"),
        (0.0001, "0.0001"),
        (0.00001, "0.00001"),
        (1e-6, "1e-6"),
        (-0.0, "-0.0"),
        (123456.789, "123456.789"),
        (1e22, "1e22"),
        (3e21, "3e21"),
        (-2.5e-300, "-2.5e-300"),
    ],
)
def test_float_defaults_print_like_serde_json(value, text):
    assert _json_float(value) == text
    section = function_tools_section(
        [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number", "default": value}}}}]
    )
    assert f"x?: number, // default: {text}\n" in section


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.4176871685187575e63, "2.417687168518758e63"),
        (6.509344730398537e-301, "6.5093447303985365e-301"),
        (9.071301334386506e-302, "9.071301334386507e-302"),
        (0.1, "0.1"),  # most numbers come back as they went in
    ],
)
def test_float_defaults_print_as_openai_harmonys_json_reader_reads_them(value, text):  # openai-harmony 0.0.8
    # Its serde_json reads a number with two roundings, so a default can come back one double away.
    section = function_tools_section(
        [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"default": value}}}}]
    )
    assert f"x?: any, // default: {text}\n" in section


def test_integer_defaults():
    properties = {"small": {"default": -3}, "big": {"default": 2**64 - 1}, "huge": {"default": 2**70}}
    section = function_tools_section([{"name": "f", "parameters": {"type": "object", "properties": properties}}])
    assert "small?: any, // default: -3\n" in section
    assert f"big?: any, // default: {2**64 - 1}\n" in section
    assert "huge?: any, // default: 1.1805916207174113e21\n" in section  # serde_json reads it as a float


# --- malformed tools ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ("get_weather", "must be a list"),
        ({"name": "f"}, "must be a list"),
        (["f"], "not an object"),
        ([{"description": "no name"}], "has no name"),
        ([{"type": "function", "function": {"description": "no name"}}], "has no name"),
        ([{"name": ""}], "has no name"),
        ([{"name": 7}], "has no name"),
        ([{"name": "get weather"}], "whitespace"),
        ([{"name": "get\u00a0weather"}], "whitespace"),
        ([{"name": "a<|channel|>b"}], "contains '<|'"),
        ([{"name": "f<|"}], "contains '<|'"),
        ([{"type": "browser", "name": "search"}], "only function tools"),
        ([{"type": "function", "function": "f"}], "'function' must be an object"),
        ([{"name": "f", "description": 3}], "description must be a string"),
        ([{"name": "f", "parameters": ["x"]}], "parameters must be a JSON-schema object"),
        ([{"name": "f", "parameters": {"type": "string"}}], '"type": "object"'),
        ([{"name": "f", "parameters": {"properties": {"x": {"type": "string"}}}}], '"type": "object"'),
        ([{"name": "f", "parameters": {"type": "object", "properties": ["x"]}}], "properties must be an object"),
        ([{"name": "f", "parameters": {"type": "object", "properties": {1: {}}}}], "property names must be strings"),
        ([{"name": "f", "parameters": {"type": "object", "required": "x"}}], "required must be a list"),
        ([{"name": "f"}, {"type": "function", "function": {"name": "f"}}], "defined twice"),
        (
            [{"name": "f", "parameters": {"type": "object", "properties": {"x": {"default": math.nan}}}}],
            "not valid JSON",
        ),
        ([{"name": "f", "parameters": {"type": "object", "properties": {"x": {"default": {1, 2}}}}}], "not JSON"),
    ],
)
def test_malformed_tools(tools, message):
    with pytest.raises(ValueError, match=message):
        function_tools_section(tools)
