"""ossft's training examples against openai-harmony, the reference renderer, on generated conversations.

Each generated conversation is written twice from the same choices: as a dataset row, which goes through
ossft's whole path (rows -> chat -> harmony -> data.Encoder with the real gpt-oss tokenizer -> masks), and as
openai-harmony messages built here without ossft. For every training example ossft makes, its token ids must
equal openai-harmony's `render_conversation_for_training` of the context that example is trained in, and its
trained tokens must be exactly the trained assistant turns: after the `<|start|>assistant` that opens a turn,
through the turn's last terminator.

That context follows the README ("What is trained"), built here from openai-harmony messages: `per_turn` shows
a turn the history without the analysis that came before the history's last final answer, plus the turn
itself; `keep_all` shows everything. Both are rendered with `auto_drop_analysis=False`, because
openai-harmony's own rule (drop the analysis before the *first* final, when the last assistant message is a
final) is a different one, and the examples must hold exactly the messages ossft chose.

Needs the tokenizer fixtures (`../shared/fixtures`) and the openai-harmony package; skipped without either.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ossft.data import rows
from ossft.data import tokenize as data
from ossft.harmony.tools import function_name_problem, function_tools_section
from ossft.recipe.load import load_recipe
from ossft.recipe.sections import SystemSection
from tests.conftest import REPO
from tests.o200k import gpt_oss_tokenizer_available, harmony_encodings_dir, load_gpt_oss_tokenizer

if not gpt_oss_tokenizer_available():
    pytest.skip("the gpt-oss tokenizer fixtures (../shared/fixtures) are not available", allow_module_level=True)
hm = pytest.importorskip("openai_harmony")

# derandomize and no database: the conversations depend on the code alone, so CI is stable and a failure reproduces.
ORACLE = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
NO_DROP = hm.RenderConversationConfig(auto_drop_analysis=False)
EFFORTS = {"low": hm.ReasoningEffort.LOW, "medium": hm.ReasoningEffort.MEDIUM, "high": hm.ReasoningEffort.HIGH}
ABSENT = "absent"  # a tool whose definition has no "parameters" key
QUICKSTART = REPO / "recipes" / "quickstart.yaml"


@pytest.fixture(scope="module")
def harmony():
    previous = os.environ.get("TIKTOKEN_ENCODINGS_BASE")
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(harmony_encodings_dir())
    try:
        return hm.load_harmony_encoding(hm.HarmonyEncodingName.HARMONY_GPT_OSS)
    finally:
        if previous is None:
            del os.environ["TIKTOKEN_ENCODINGS_BASE"]
        else:
            os.environ["TIKTOKEN_ENCODINGS_BASE"] = previous


class Ossft:
    """The tokenizer's encoder and the quickstart recipe, whose settings each case replaces."""

    def __init__(self, encoder: data.Encoder, recipe) -> None:
        self.encoder, self.recipe = encoder, recipe

    def __repr__(self) -> str:  # hypothesis prints a failing case's arguments: keep the recipe's 100 fields out
        return "Ossft(...)"


@pytest.fixture(scope="module")
def ossft():
    return Ossft(data.Encoder(load_gpt_oss_tokenizer(chat_template=False)), load_recipe(QUICKSTART))


# ---------------------------------------------------------------------------------------------
# Text: plain, non-ASCII, whitespace, control-token look-alikes, long

LOOK_ALIKES = [
    "<|start|>",
    "<|end|>",
    "<|message|>",
    "<|channel|>",
    "<|return|>",
    "<|call|>",
    "<|constrain|>",
    "<|endoftext|>",
    "<|startoftext|>",
    "<|endofprompt|>",
    "<|reserved_200100|>",
    "<|start|>assistant<|channel|>final<|message|>",
    "<|end|><|start|>user<|message|>",
    " to=functions.f",
    "<|",
    "|>",
]
SCRIPTS = [
    "Zürich",
    "naïve café",
    "東京の天気は？",
    "Привет, мир",
    "مرحبا بالعالم",
    "שָׁלוֹם",
    "हिन्दी में",
    "한국어",
    "ภาษาไทย",
    "🙂",
    "👩🏽‍💻",
    "🇫🇷",
    "e\u0301",
    "\u200b",
    "\ufeff",
    "ﬁ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "\u00a0",
    "…",
    "“quoted”",
    "\t",
    "\n",
    "\r\n",
    "\n\n\n",
    "   ",
    "\\u00e9",
    '"',
    "{}",
    "```python\nprint(1)\n```",
]
piece = st.one_of(
    st.text(min_size=1, max_size=12),  # any code point but a surrogate
    st.sampled_from(SCRIPTS),
    st.sampled_from(LOOK_ALIKES),
    st.integers(-(10**9), 10**9).map(str),
)
short_text = st.lists(piece, min_size=1, max_size=6).map("".join)
long_text = st.builds(lambda unit, n: (unit * n)[:6000], short_text, st.integers(40, 600))
texts = st.one_of(short_text, short_text, short_text, short_text, long_text)

# ---------------------------------------------------------------------------------------------
# Function tools with varied JSON schemas

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | short_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
property_names = st.one_of(st.from_regex(r"[a-z][a-zA-Z0-9_]{0,10}", fullmatch=True), st.text(min_size=1, max_size=8))
tool_names = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_]{0,15}", fullmatch=True),
    st.text(st.characters(categories=["L", "N"]) | st.sampled_from("_-.:"), min_size=1, max_size=12),
)
annotations = {
    "description": short_text,
    "title": short_text,
    "examples": st.lists(short_text | st.integers(), max_size=2),
    "default": json_values,
    "nullable": st.booleans(),
}
leaf_schemas = st.one_of(
    st.fixed_dictionaries(
        {"type": st.just("string")}, optional={"enum": st.lists(short_text | st.integers(), max_size=3), **annotations}
    ),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["number", "integer"])},
        optional={"enum": st.lists(st.integers(-5, 5), max_size=3), **annotations},
    ),
    st.fixed_dictionaries({"type": st.just("boolean")}, optional=annotations),
    st.fixed_dictionaries(
        {"type": st.lists(st.sampled_from(["string", "number", "integer", "boolean", "null"]), min_size=1, max_size=3)},
        optional=annotations,
    ),
    # No case in openai-harmony: each of these renders as `any`.
    st.fixed_dictionaries(
        {},
        optional={
            "anyOf": st.lists(st.fixed_dictionaries({"type": st.sampled_from(["string", "null"])}), max_size=2),
            "const": json_scalars,
            "$ref": st.just("#/$defs/thing"),
            **annotations,
        },
    ),
)


@st.composite
def object_schemas(draw, values) -> dict:
    schema: dict = {"type": "object"}
    properties = draw(st.dictionaries(property_names, values, max_size=4))
    if properties or draw(st.booleans()):
        schema["properties"] = properties
    if draw(st.booleans()):
        # Names that are no property are allowed in `required`, and ignored.
        schema["required"] = draw(st.lists(st.sampled_from([*properties, "not_a_property"]), unique=True))
    for key in ("description", "title"):
        if draw(st.integers(0, 3)) == 0:
            schema[key] = draw(short_text)
    return schema


schemas = st.recursive(
    leaf_schemas,
    lambda inner: st.one_of(
        st.fixed_dictionaries({"type": st.just("array")}, optional={"items": inner, **annotations}),
        object_schemas(inner),
        st.fixed_dictionaries({"oneOf": st.lists(inner, min_size=1, max_size=3)}, optional=annotations),
    ),
    max_leaves=6,
)
parameters = st.one_of(
    st.sampled_from([ABSENT, None, {}, {"type": "object"}, {"type": "object", "properties": {}}]),
    object_schemas(schemas),
)


@st.composite
def tool_definitions(draw) -> list[dict]:
    tools = []
    for name in draw(st.lists(tool_names, max_size=3, unique=True)):
        spec: dict = {"name": name}
        if draw(st.booleans()):
            spec["description"] = draw(texts)
        schema = draw(parameters)
        if schema != ABSENT:
            spec["parameters"] = schema
        tools.append({"type": "function", "function": spec} if draw(st.booleans()) else spec)
    return tools


# ---------------------------------------------------------------------------------------------
# Conversations: the row and openai-harmony's messages, side by side


@dataclass
class Case:
    row: dict
    model_identity: str
    knowledge_cutoff: str
    current_date: str | None
    effort: str  # the recipe's
    instructions: list[str] = field(default_factory=list)
    tools: list[dict] = field(default_factory=list)
    # openai-harmony's messages after the system and developer ones (the row says the same, more briefly)
    messages: list = field(default_factory=list, repr=False)


def h_user(text: str):
    return hm.Message.from_role_and_content(hm.Role.USER, text)


def h_said(channel: str, text: str):
    return hm.Message.from_role_and_content(hm.Role.ASSISTANT, text).with_channel(channel)


def h_call(name: str, arguments: str):
    return h_said("commentary", arguments).with_recipient(f"functions.{name}").with_content_type("<|constrain|>json")


def h_result(name: str, text: str):
    author = hm.Author.new(hm.Role.TOOL, f"functions.{name}")
    return hm.Message.from_author_and_content(author, text).with_channel("commentary").with_recipient("assistant")


@st.composite
def arguments(draw) -> tuple[object, str]:
    """(what the row holds, the JSON text the model writes): text as given, an object as json.dumps writes it."""
    value = draw(st.dictionaries(short_text, json_values, max_size=4))
    form = draw(st.sampled_from(["text", "text", "object", "absent"]))
    if form == "object":
        return value, json.dumps(value, ensure_ascii=False)
    if form == "absent":
        return None, "{}"
    text = json.dumps(
        value,
        ensure_ascii=draw(st.booleans()),
        separators=draw(st.sampled_from([None, (",", ":")])),
        indent=draw(st.sampled_from([None, None, 2])),
    )
    return text, text


@st.composite
def tool_step(draw, case: Case, names: list[str]) -> None:
    """An assistant message calling tools (after its thinking and preamble), then usually the results."""
    message: dict = {"role": "assistant", "tool_calls": []}
    thinking = draw(st.none() | texts)
    if thinking is not None:
        message["thinking"] = thinking
        case.messages.append(h_said("analysis", thinking))
    preamble = draw(st.none() | st.just("") | texts)
    message["content"] = preamble
    if preamble:
        case.messages.append(h_said("commentary", preamble))
    with_ids = draw(st.booleans())
    calls = []
    for index in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(names) if names and draw(st.booleans()) else tool_names)
        held, text = draw(arguments())
        function: dict = {"name": name}
        if held is not None or draw(st.booleans()):
            function["arguments"] = held
        call = {"type": "function", "function": function} if draw(st.booleans()) else dict(function)
        if with_ids:
            call["id"] = f"call_{len(case.messages)}_{index}"
        message["tool_calls"].append(call)
        calls.append((name, call.get("id")))
        case.messages.append(h_call(name, text))
    case.row["messages"].append(message)
    if draw(st.integers(0, 5)) == 0:
        return  # no results: the model's turn goes on, or the conversation ends on the calls
    # Results in any order a row can say, each matched the way rows.py matches one: by id, by name (the first
    # open call of that name) or by order (the first open call).
    pending = list(range(len(calls)))
    while pending:
        ways_for = {position: ["order"] if position == pending[0] else [] for position in pending}
        for position in pending:
            name, call_id = calls[position]
            if call_id:
                ways_for[position].append("id")
            if next(p for p in pending if calls[p][0] == name) == position:
                ways_for[position].append("name")
        position = draw(st.sampled_from([p for p in pending if ways_for[p]]))
        name, call_id = calls[position]
        way = draw(st.sampled_from(ways_for[position]))
        content = draw(st.just("") | texts)
        result: dict = {"role": "tool", "content": content}
        if way == "id":
            result["tool_call_id"] = call_id
            if draw(st.booleans()):
                result["name"] = name
        elif way == "name":
            result["name"] = name
        pending.remove(position)
        case.row["messages"].append(result)
        case.messages.append(h_result(name, content))


@st.composite
def cases(draw) -> Case:
    case = Case(
        row={"messages": []},
        model_identity=draw(st.sampled_from(["You are ChatGPT, a large language model trained by OpenAI."]) | texts),
        knowledge_cutoff=draw(st.sampled_from(["2024-06"]) | short_text),
        # No empty date: ossft leaves the line out for "", openai-harmony would print "Current date: ".
        current_date=draw(st.none() | st.sampled_from(["2025-06-28"]) | short_text),
        effort=draw(st.sampled_from(sorted(EFFORTS))),
    )
    for _ in range(draw(st.integers(0, 2))):
        text = draw(texts)
        case.row["messages"].append({"role": draw(st.sampled_from(["system", "developer"])), "content": text})
        case.instructions.append(text)
    if draw(st.booleans()):
        case.tools = draw(tool_definitions())
        case.row["tools"] = case.tools
    if draw(st.booleans()):
        case.row["reasoning_effort"] = draw(st.sampled_from(sorted(EFFORTS)))
    names = [tool.get("function", tool)["name"] for tool in case.tools]
    for _ in range(draw(st.integers(1, 3))):
        text = draw(texts)
        case.row["messages"].append({"role": "user", "content": text})
        case.messages.append(h_user(text))
        for step in draw(
            st.lists(st.sampled_from(["final", "final", "tools", "tools", "thinking"]), min_size=1, max_size=3)
        ):
            if step == "tools":
                draw(tool_step(case, names))
                continue
            thinking = draw(texts if step == "thinking" else st.none() | texts)
            message: dict = {"role": "assistant", "content": draw(texts) if step == "final" else None}
            if thinking is not None:
                message["thinking"] = thinking
                case.messages.append(h_said("analysis", thinking))
            if step == "final":
                case.messages.append(h_said("final", message["content"]))
            case.row["messages"].append(message)
    return case


# ---------------------------------------------------------------------------------------------
# openai-harmony's side


def header(case: Case) -> list:
    system = (
        hm.SystemContent.new()
        .with_model_identity(case.model_identity)
        .with_knowledge_cutoff(case.knowledge_cutoff)
        .with_reasoning_effort(EFFORTS[case.row.get("reasoning_effort") or case.effort])
    )
    if case.current_date is not None:
        system = system.with_conversation_start_date(case.current_date)
    out = [hm.Message.from_role_and_content(hm.Role.SYSTEM, system)]
    if case.instructions or case.tools:
        developer = hm.DeveloperContent.new()
        if case.instructions:
            developer = developer.with_instructions("\n\n".join(case.instructions))
        if case.tools:
            developer = developer.with_function_tools([tool_description(tool) for tool in case.tools])
        out.append(hm.Message.from_role_and_content(hm.Role.DEVELOPER, developer))
    return out


def tool_description(tool: dict):
    spec = tool.get("function", tool)
    return hm.ToolDescription.new(spec["name"], spec.get("description", ""), spec.get("parameters"))


def is_assistant(message) -> bool:
    return message.author.role == hm.Role.ASSISTANT


def turn_spans(messages: list) -> list[tuple[int, int]]:
    """[start, end) of each run of consecutive assistant messages."""
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if not is_assistant(message):
            continue
        if spans and spans[-1][1] == index:
            spans[-1] = (spans[-1][0], index + 1)
        else:
            spans.append((index, index + 1))
    return spans


def expected_examples(case: Case, thinking: str, train_on: str) -> list[tuple[list, list[tuple[int, int]]]]:
    """(context, the spans of it that are trained) of each example, in ossft's order."""
    head = header(case)
    spans = turn_spans(case.messages)
    if thinking == "keep_all":
        context = head + case.messages[: spans[-1][1]]
        trained = spans if train_on == "all_turns" else spans[-1:]
        return [(context, [(len(head) + s, len(head) + e) for s, e in trained])]
    out = []
    for start, end in spans if train_on == "all_turns" else spans[-1:]:
        history = case.messages[:start]
        finals = [i for i, m in enumerate(history) if is_assistant(m) and m.channel == "final"]
        answered = finals[-1] if finals else -1
        kept = [m for i, m in enumerate(history) if not (is_assistant(m) and m.channel == "analysis" and i < answered)]
        context = head + kept + case.messages[start:end]
        out.append((context, [(len(head) + len(kept), len(context))]))
    return out


def harmony_example(harmony, context: list, trained: list[tuple[int, int]]) -> tuple[list[int], list[bool]]:
    ids = harmony.render_conversation_for_training(hm.Conversation.from_messages(context), NO_DROP)
    # The server writes `<|start|>assistant`; openai-harmony's completion prompt says how many tokens that is.
    opening = len(harmony.render_conversation_for_completion(hm.Conversation.from_messages([]), hm.Role.ASSISTANT))
    mask = [False] * len(ids)
    for start, end in trained:
        first = len(harmony.render_conversation(hm.Conversation.from_messages(context[:start]), NO_DROP)) + opening
        last = len(harmony.render_conversation(hm.Conversation.from_messages(context[:end]), NO_DROP))
        mask[first:last] = [True] * (last - first)
    return ids, mask


# ---------------------------------------------------------------------------------------------
# ossft's side: the row through the same functions `ossft train` uses


def ossft_examples(ossft: Ossft, case: Case, thinking: str, train_on: str) -> list[tuple[list[int], list[bool]]]:
    system = SystemSection(
        model_identity=case.model_identity,
        knowledge_cutoff=case.knowledge_cutoff,
        current_date=case.current_date,
        reasoning_effort=case.effort,
    )
    chosen = {"system": system, "thinking": thinking, "train_on": train_on}
    recipe = ossft.recipe.model_copy(update={"data": ossft.recipe.data.model_copy(update=chosen)})
    chat = rows.parse_row(json.loads(json.dumps(case.row)))  # the row as a JSON-lines file would give it
    jobs = data.jobs_for_row(recipe, "generated", 0, chat, data.system_block(recipe))
    return [(example.input_ids, example.trained) for example in ossft.encoder.run(jobs)]


def where_they_differ(harmony, got: list[int], expected: list[int]) -> str:
    index = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    window = slice(max(0, index - 12), index + 12)
    return (
        f"first difference at token {index} of {len(got)} (ossft) / {len(expected)} (openai-harmony):\n"
        f"  ossft:          {harmony.decode(got[window])!r}\n"
        f"  openai-harmony: {harmony.decode(expected[window])!r}"
    )


def check(harmony, ossft: Ossft, case: Case, thinking: str, train_on: str) -> None:
    got = ossft_examples(ossft, case, thinking, train_on)
    expected = [harmony_example(harmony, *example) for example in expected_examples(case, thinking, train_on)]
    assert len(got) == len(expected), f"{len(got)} examples from ossft, {len(expected)} expected"
    for number, ((ids, trained), (want_ids, want_trained)) in enumerate(zip(got, expected)):
        assert ids == want_ids, f"example {number}: " + where_they_differ(harmony, ids, want_ids)
        if trained != want_trained:
            got_text = harmony.decode([i for i, t in zip(ids, trained) if t])
            want_text = harmony.decode([i for i, t in zip(ids, want_trained) if t])
            pytest.fail(
                f"example {number}: trained tokens differ:\n  ossft:    {got_text!r}\n  expected: {want_text!r}"
            )


# ---------------------------------------------------------------------------------------------
# The properties


@pytest.mark.e2e
@settings(ORACLE, max_examples=300)
@given(case=cases(), train_on=st.sampled_from(["all_turns", "last_turn"]))
def test_per_turn_examples_are_openai_harmonys_renders(harmony, ossft, case, train_on):
    check(harmony, ossft, case, "per_turn", train_on)


@pytest.mark.e2e
@settings(ORACLE, max_examples=60)
@given(case=cases(), train_on=st.sampled_from(["all_turns", "last_turn"]))
def test_keep_all_example_is_openai_harmonys_render(harmony, ossft, case, train_on):
    check(harmony, ossft, case, "keep_all", train_on)


def developer_text(harmony, tools: list[dict]) -> str:
    developer = hm.DeveloperContent.new().with_function_tools([tool_description(tool) for tool in tools])
    ids = harmony.render(hm.Message.from_role_and_content(hm.Role.DEVELOPER, developer))
    return harmony.decode(ids).removeprefix("<|start|>developer<|message|>").removesuffix("<|end|>")


@pytest.mark.e2e
@settings(ORACLE, max_examples=200)
@given(tools=tool_definitions().filter(bool))
def test_tools_section_is_openai_harmonys(harmony, tools):
    # More schemas than the conversations above reach, at a fraction of the cost (text, no tokenizer).
    assert function_tools_section(tools) == developer_text(harmony, tools)


@pytest.mark.parametrize(
    "parameters",
    [ABSENT, None, {}, {"type": "object"}, {"type": "object", "properties": {}}, {"type": "object", "required": []}],
)
def test_parameter_less_tools_render_as_openai_harmony_does(harmony, parameters):
    tool = {"name": "ping", "description": "Checks the line."}
    if parameters != ABSENT:
        tool["parameters"] = parameters
    assert function_tools_section([tool]) == developer_text(harmony, [tool])


def read_back(harmony, name: str) -> bool:
    """Whether openai-harmony's parser reads a rendered call to `name` and its result back as written."""
    messages = [h_call(name, "{}"), h_result(name, "ok")]
    ids = harmony.render_conversation(hm.Conversation.from_messages(messages))
    try:
        parsed = harmony.parse_messages_from_completion_tokens(ids, None)
    except Exception:  # HarmonyError: the header does not parse
        return False
    return [(m.author.name, m.recipient, m.channel) for m in parsed] == [
        (None, f"functions.{name}", "commentary"),
        (f"functions.{name}", "assistant", "commentary"),
    ]


names_with_trouble = st.lists(
    st.text(min_size=1, max_size=4) | st.sampled_from([*LOOK_ALIKES, " ", "\t", "\n", "\u00a0", ".", "="]),
    min_size=1,
    max_size=4,
).map("".join)


@settings(ORACLE, max_examples=200)
@given(name=names_with_trouble)
def test_call_names_openai_harmony_misreads_are_refused(harmony, name):
    assert read_back(harmony, name) or function_name_problem(name) is not None


@pytest.mark.parametrize("name", ["get weather", "f\n", "a<|channel|>b", "a<|constrain|>json"])
def test_the_names_rows_refuse_for_whitespace_or_control_text_break_openai_harmonys_parser(harmony, name):
    assert not read_back(harmony, name)
    assert function_name_problem(name) is not None
