"""The "# Tools" section of a harmony developer message.

gpt-oss sees function tools as TypeScript-like declarations inside `namespace functions { ... }`, placed in the
developer message after the instructions. This module turns JSON-schema function definitions into that text,
byte for byte as openai-harmony (0.0.8, `json_schema_to_typescript` / `template_tools_section` in
src/encoding.rs) renders them, quirks included, so that a prompt built here matches one built with openai-harmony:

* a property is `name: T,` when listed in `required`, else `name?: T,`; its `title` (`// T` then `//`),
  `description` (`// text`) and string `examples` (`// Examples:` / `// - "x"`) go on comment lines above it,
  and a `default` goes after the comma (`// default: X`: strings are quoted unless the schema is an enum,
  everything else is compact JSON as serde_json writes it, numbers as its reader reads them: at times one double
  away from the value given, see `_as_serde_json_reads`);
* `string` (with `enum`: `"a" | "b"`), `number` and `integer` (both `number`), `boolean`, `array` (`T[]`, or
  `Array<any>` without `items`), nested `object` (its properties indented by four spaces, its own description
  repeated inside), a list of types (`["number", "string"]` gives `number | string`), `nullable: true` (`| null`),
  and `oneOf` (one ` | T // comment` line per variant);
* anything else renders as `any`: openai-harmony has no case for `anyOf`, `allOf`, `$ref`, `const` or
  `type: "null"`, so neither has this module.

Only the outer shape is checked (a name, a description string, parameters that are an object schema); inside the
schema, values of the wrong JSON type are skipped the way openai-harmony skips them. Functions without arguments
follow openai-harmony too: parameters absent or null give `() => any`, `{}` (a schema that allows anything) gives
`(_: any) => any`, and `{"type": "object"}` with no or empty `properties` gives `(_: {\n}) => any`. A model served
by openai-harmony's renderer sees these texts, so training on any other would teach it a prompt it never gets.
Standard library only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["FunctionTool", "function_name_problem", "function_tools_section", "parse_function_tools"]

_OPEN = "# Tools\n\n## functions\n\nnamespace functions {\n\n"
_CLOSE = "} // namespace functions"

# A key that is absent, as opposed to one that is present with the value None (JSON null): openai-harmony tells
# the two apart (`"oneOf": null` still counts as "has oneOf", `"default": null` prints `// default: null`).
_ABSENT = object()


@dataclass(frozen=True)
class FunctionTool:
    """One function tool, whatever dict shape it came in. `parameters` is None when absent or null."""

    name: str
    description: str
    parameters: Mapping[str, Any] | None


def parse_function_tools(tools: Sequence[Any]) -> list[FunctionTool]:
    """Checks and normalises tool dicts (OpenAI chat style, Responses style or bare); ValueError if malformed."""
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ValueError(f"tools must be a list of function definitions, got {type(tools).__name__}")
    parsed: list[FunctionTool] = []
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        item = _parse_tool(tool, index)
        if item.name in seen:
            raise ValueError(f"tool {item.name!r} is defined twice")
        seen.add(item.name)
        parsed.append(item)
    return parsed


def function_tools_section(tools: list[dict]) -> str:
    """The `# Tools` ... `} // namespace functions` text for `tools`; "" when the list is empty.

    Each tool is `{"type": "function", "function": {"name", "description"?, "parameters"?}}` or the bare
    `{"name", "description"?, "parameters"?}`. A tool whose parameters are absent or None becomes
    `type name = () => any;`, one with `"parameters": {}` `type name = (_: any) => any;`. Raises ValueError for a
    malformed tool.
    """
    parsed = parse_function_tools(tools)
    if not parsed:
        return ""
    blocks = []
    for tool in parsed:
        comment = "".join(f"// {line}\n" for line in _rust_lines(tool.description))
        if tool.parameters is None:
            signature = "()"
        else:
            signature = f"(_: {_typescript(tool.parameters, '')})"
        blocks.append(f"{comment}type {tool.name} = {signature} => any;\n\n")
    return _OPEN + "".join(blocks) + _CLOSE


def function_name_problem(name: str) -> str | None:
    """Why `name` cannot be called as `to=functions.{name}` in a message header; None when it can.

    openai-harmony (0.0.8, `parse_header_from_string`) reads a header from its decoded text: it cuts the channel at
    the first `<|channel|>`, puts a space before every `<|constrain|>`, then splits at ASCII whitespace and takes
    the recipient from those words. So a space, tab or newline in a name, or the text `<|channel|>` or
    `<|constrain|>`, makes a call parse as another recipient or not at all. Any whitespace and any `<|` are refused:
    a name that only looks like a control token still teaches the model to write one in a header, where the real
    token (`<|message|>`, say) ends the header early.
    """
    if any(ch.isspace() for ch in name):
        return "contains whitespace"
    if "<|" in name:
        return "contains '<|'"
    return None


# --- the tool dicts ----------------------------------------------------------------------------------------------


def _parse_tool(tool: Any, index: int) -> FunctionTool:
    where = f"tool #{index + 1}"
    if not isinstance(tool, Mapping):
        raise ValueError(f"{where} is a {type(tool).__name__}, not an object")
    kind = tool.get("type")
    if kind is not None and kind != "function":
        raise ValueError(f"{where} has type {kind!r}; only function tools go in the developer message")
    spec = tool
    if "function" in tool:  # OpenAI chat-completions style; otherwise bare or Responses style (name at top level)
        spec = tool["function"]
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: 'function' must be an object")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where} has no name")
    problem = function_name_problem(name)
    if problem:
        raise ValueError(f"tool name {name!r} {problem}")
    where = f"tool {name!r}"
    description = spec.get("description")
    if description is None:
        description = ""
    elif not isinstance(description, str):
        raise ValueError(f"{where}: description must be a string")
    return FunctionTool(name, description, _check_parameters(spec.get("parameters"), where))


def _check_parameters(parameters: Any, where: str) -> Mapping[str, Any] | None:
    if parameters is None:
        return None
    if not isinstance(parameters, Mapping):
        raise ValueError(f"{where}: parameters must be a JSON-schema object, got {type(parameters).__name__}")
    if not parameters:
        # `{}` is a schema that allows anything, and openai-harmony prints it so (`(_: any)`); rendering it as
        # `()` would train on a prompt that no server built with openai-harmony shows the model.
        return parameters
    if parameters.get("type") != "object":
        raise ValueError(f'{where}: parameters must have "type": "object", got {parameters.get("type")!r}')
    properties = parameters.get("properties", {})
    if not isinstance(properties, Mapping):
        raise ValueError(f"{where}: parameters.properties must be an object")
    if any(not isinstance(key, str) for key in properties):
        raise ValueError(f"{where}: property names must be strings")
    required = parameters.get("required", [])
    if isinstance(required, (str, bytes)) or not isinstance(required, Sequence):
        raise ValueError(f"{where}: parameters.required must be a list of property names")
    return parameters


# --- JSON schema -> TypeScript -----------------------------------------------------------------------------------
# Accessors with serde_json's `get(..).and_then(as_*)` semantics: a value of another JSON type counts as missing.


def _field(schema: Any, key: str) -> Any:
    return schema.get(key, _ABSENT) if isinstance(schema, Mapping) else _ABSENT


def _text(schema: Any, key: str) -> str | None:
    value = _field(schema, key)
    return value if isinstance(value, str) else None


def _array(schema: Any, key: str) -> list[Any] | None:
    value = _field(schema, key)
    return list(value) if isinstance(value, (list, tuple)) else None


def _is_enum(schema: Any) -> bool:
    return bool(_array(schema, "enum"))


def _with_null(schema: Any, rendered: str) -> str:
    # openai-harmony tests for the substring "null", so an enum value like "nullable" also suppresses it.
    if _field(schema, "nullable") is True and "null" not in rendered:
        return rendered + " | null"
    return rendered


def _default_note(schema: Any, bare_enum_string: bool) -> str:
    """`default: X` for a schema that has a default. Strings are quoted by hand, without escaping (as upstream).

    Property-level defaults print an enum's string default bare (`default: celsius`); the variants of a
    top-level oneOf print it as JSON instead (`bare_enum_string=False`).
    """
    value = schema["default"]
    if isinstance(value, str):
        if not _is_enum(schema):
            return f'default: "{value}"'
        if bare_enum_string:
            return f"default: {value}"
    return f"default: {_json(value)}"


def _typescript(schema: Any, indent: str) -> str:
    variants = _array(schema, "oneOf")
    if variants is not None:
        out = []
        for variant in variants:
            line = _with_null(variant, _typescript(variant, indent + "   "))
            notes = []
            description = _text(variant, "description")
            if description is not None:
                notes.append(description)
            if _field(variant, "default") is not _ABSENT:
                notes.append(_default_note(variant, bare_enum_string=False))
            if notes:
                line += " // " + " ".join(notes)
            out.append(f"\n{indent} | {line}")
        return "".join(out)

    types = _array(schema, "type")
    if types is not None:
        names = ["number" if t == "integer" else t for t in types if isinstance(t, str)]
        if names:
            return " | ".join(names)

    kind = _text(schema, "type")
    if kind == "object":
        return _object(schema, indent)
    if kind == "string":
        values = [f'"{v}"' for v in _array(schema, "enum") or () if isinstance(v, str)]
        return " | ".join(values) if values else "string"
    if kind in ("number", "integer"):
        return "number"
    if kind == "boolean":
        return "boolean"
    if kind == "array":
        items = _field(schema, "items")
        return "Array<any>" if items is _ABSENT else _typescript(items, indent) + "[]"
    return "any"


def _object(schema: Any, indent: str) -> str:
    out = []
    description = _text(schema, "description")
    if description is not None:
        out.append(f"{indent}// {description}\n")
    out.append("{\n")
    properties = _field(schema, "properties")
    if isinstance(properties, Mapping):
        required = {name for name in _array(schema, "required") or () if isinstance(name, str)}
        for key, value in properties.items():
            out.append(_property(str(key), value, key in required, indent))
    out.append(indent + "}")
    return "".join(out)


def _property(key: str, schema: Any, required: bool, indent: str) -> str:
    out = []
    title = _text(schema, "title")
    if title is not None:
        out.append(f"{indent}// {title}\n{indent}//\n")
    has_one_of = _field(schema, "oneOf") is not _ABSENT
    description = _text(schema, "description")
    if description is not None and not has_one_of:
        out.append(f"{indent}// {description}\n")
    examples = _array(schema, "examples")
    if examples:
        out.append(f"{indent}// Examples:\n")
        out.extend(f'{indent}// - "{example}"\n' for example in examples if isinstance(example, str))
    mark = "" if required else "?"
    has_default = _field(schema, "default") is not _ABSENT

    variants = _array(schema, "oneOf")
    if variants is not None:
        # The property's description goes above it, unless the first variant carries the same text.
        described_above = description is not None and not (
            variants and _text(variants[0], "description") == description
        )
        if described_above:
            out.append(f"{indent}// {description}\n")
        if has_default:
            out.append(f"{indent}// {_default_note(schema, bare_enum_string=True)}\n")
        out.append(f"{indent}{key}{mark}:\n")
        for position, variant in enumerate(variants):
            line = _with_null(variant, _typescript(variant, indent + "   "))
            notes = []
            variant_description = _text(variant, "description")
            if not (position == 0 and described_above) and variant_description not in (None, description):
                notes.append(variant_description)
            if _field(variant, "default") is not _ABSENT:
                notes.append(_default_note(variant, bare_enum_string=True))
            if notes:
                line += " // " + " ".join(notes)
            out.append(f"{indent} | {line}\n")
        out.append(f"{indent},\n")
        return "".join(out)

    line = f"{indent}{key}{mark}: {_with_null(schema, _typescript(schema, indent + '    '))},"
    if has_default and not has_one_of:
        line += f" // {_default_note(schema, bare_enum_string=True)}"
    out.append(line + "\n")
    return "".join(out)


# --- text helpers ------------------------------------------------------------------------------------------------


def _rust_lines(text: str) -> list[str]:
    """Rust's `str::lines`: split at "\\n" or "\\r\\n", no empty last line for a final newline, bare "\\r" kept."""
    pieces = text.split("\n")
    if pieces[-1] == "":
        pieces.pop()
    last = len(pieces) - 1
    ended = text.endswith("\n")
    return [p[:-1] if p.endswith("\r") and (i < last or ended) else p for i, p in enumerate(pieces)]


def _json(value: Any) -> str:
    """Compact JSON as serde_json's `Display` writes it (the default comments print defaults this way)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return str(value)
        # serde_json reads an integer outside i64/u64 as a float
        return _json_float(_as_serde_json_reads(str(value), value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"default {value} is not valid JSON")
        return _json_float(_as_serde_json_reads(repr(value), value))  # repr: the text json.dumps writes
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_json(item) for item in value) + "]"
    if isinstance(value, Mapping):
        if any(not isinstance(key, str) for key in value):
            raise ValueError("object keys in a default must be strings")
        return "{" + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{_json(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"default of type {type(value).__name__} is not JSON")


_U64_MAX = 2**64 - 1
_POW10 = [float(f"1e{power}") for power in range(309)]  # serde_json's table, each entry the nearest double


def _as_serde_json_reads(text: str, value: Any) -> float:
    """The double that serde_json reads from the JSON number `text`, as openai-harmony builds it.

    openai-harmony's Python API hands the schema to Rust as JSON text, and its serde_json lacks the
    `float_roundtrip` feature: the digits are gathered into a u64 (digits past its range are dropped) and then
    multiplied or divided by a power of ten in double arithmetic. Two roundings instead of one, so the result is at
    times a neighbour of the nearest double (2.4176871685187575e63 comes back as 2.417687168518758e63), and the
    prompt shows that neighbour. Follows `parse_integer` .. `f64_from_parts` in serde_json 1.0.140's de.rs.
    """
    mantissa, _, power = text.lstrip("-").lower().partition("e")
    whole, _, fraction = mantissa.partition(".")
    significand, exponent = 0, 0
    for index, digit in enumerate(whole):
        if significand * 10 + int(digit) > _U64_MAX:
            exponent += len(whole) - index  # the rest of the integer part only scales it
            break
        significand = significand * 10 + int(digit)
    for digit in fraction:
        if significand * 10 + int(digit) > _U64_MAX:
            break  # further fraction digits are ignored
        significand = significand * 10 + int(digit)
        exponent -= 1
    exponent += int(power or 0)
    result = float(significand)
    while result != 0 and exponent < -308:  # past the table: divide by 1e308 first
        result /= 1e308
        exponent += 308
    if result != 0:
        if exponent > 308:
            result = math.inf
        elif exponent >= 0:
            result *= _POW10[exponent]
        else:
            result /= _POW10[-exponent]
    if math.isinf(result):  # serde_json refuses the number, and openai-harmony the whole conversation
        raise ValueError(f"default {value} is out of range for openai-harmony's JSON reader")
    return -result if text.startswith("-") else result


def _json_float(value: float) -> str:
    """A finite float the way serde_json prints it (the `ryu` crate): 20.0, 0.0001, 1e16, 1.5e-7."""
    if not math.isfinite(value):
        raise ValueError(f"default {value} is not valid JSON")
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    # repr gives the same shortest round-trip digits as ryu; only the layout differs.
    mantissa, _, exponent = repr(abs(value)).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = (whole + fraction).lstrip("0")
    power = (int(exponent) if exponent else 0) - len(fraction)
    stripped = digits.rstrip("0")
    power += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    point = length + power  # 10**(point - 1) <= value < 10**point
    if power >= 0 and point <= 16:
        text = digits + "0" * power + ".0"
    elif 0 < point <= 16:
        text = digits[:point] + "." + digits[point:]
    elif -5 < point <= 0:
        text = "0." + "0" * -point + digits
    elif length == 1:
        text = f"{digits}e{point - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{point - 1}"
    return sign + text
