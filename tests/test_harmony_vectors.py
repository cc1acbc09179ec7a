"""The renderer against openai-harmony's own test vectors and its format guide, byte for byte.

Vectors for built-in browser / python tools are left out: they describe the system message of a
served model with those tools, which no training row of ossft produces.
"""

from __future__ import annotations

import pytest

from ossft.harmony.render import Message, SystemBlock, render, system_content, to_text, visible_history

from .conftest import FIXTURES

VECTORS = FIXTURES / "harmony-vectors"
pytestmark = pytest.mark.skipif(not VECTORS.is_dir(), reason=f"harmony test vectors not found at {VECTORS}")

USER_2_PLUS_2 = Message("user", "What is 2 + 2?")
WEATHER_CALL = Message(
    "assistant",
    '{"location": "San Francisco"}',
    channel="commentary",
    recipient="functions.lookup_weather",
    content_type="<|constrain|>json",
)


def vector(name: str) -> str:
    return (VECTORS / name).read_text(encoding="utf-8").rstrip()


def system(**kwargs) -> Message:
    functions = kwargs.pop("functions", False)
    return Message("system", system_content(SystemBlock(**kwargs), functions=functions))


def prompt(messages) -> str:
    return to_text(render(messages, generation_prompt=True)).rstrip()


@pytest.mark.parametrize(
    ("name", "messages"),
    [
        ("test_no_tools.txt", [system(current_date="2025-06-28")]),
        ("test_reasoning_system_message.txt", [system(channels=("analysis", "final")), USER_2_PLUS_2]),
        (
            "test_reasoning_system_message_no_instruction.txt",
            [
                system(reasoning_effort="high", channels=("analysis", "final")),
                Message("user", "What is the best place to eat candy in the world?"),
            ],
        ),
        (
            "test_reasoning_system_message_with_dates.txt",
            [
                system(current_date="2021-01-01", knowledge_cutoff="2021-01", channels=("analysis", "final")),
                Message("user", "What is 42 * pi?"),
            ],
        ),
    ],
)
def test_system_block_vectors(name, messages):
    assert prompt(messages) == vector(name)


ARITHMETIC = [
    USER_2_PLUS_2,
    Message("assistant", "User asks: “What is 2 + 2?” Simple arithmetic. Provide answer.", channel="analysis"),
    Message("assistant", "2 + 2 equals 4.", channel="final"),
    Message("user", "What about 9 / 2?"),
]


def test_answered_analysis_is_dropped_from_history():
    assert prompt(visible_history(ARITHMETIC)) == vector("test_dropping_cot_by_default.txt")


def test_history_can_keep_analysis():
    thinking = Message("assistant", 'User asks a simple question: "What is 2 + 2?" The answer: 4.', channel="analysis")
    assert prompt([ARITHMETIC[0], thinking, *ARITHMETIC[2:]]) == vector("test_preserve_cot.txt")


def test_analysis_of_an_unfinished_tool_turn_stays():
    messages = [
        Message("user", "What is the weather in SF?"),
        Message(
            "assistant",
            "User asks: “What is the weather in SF?” We need to use lookup_weather tool.",
            channel="analysis",
        ),
        WEATHER_CALL,
        Message("tool", '{"temperature": 20, "description": "sunny"}', author="functions.lookup_weather"),
    ]
    assert prompt(visible_history(messages)) == vector("test_does_not_drop_if_ongoing_analysis.txt")


def test_analysis_before_a_later_final_is_kept():
    messages = [
        USER_2_PLUS_2,
        Message("assistant", "thinking 2+2", channel="analysis"),
        Message("assistant", "4", channel="final"),
        Message("user", "What is 3 + 5?"),
        Message("assistant", "thinking 3+5", channel="analysis"),
        Message("assistant", "8", channel="final"),
    ]
    history = visible_history(messages[:4]) + messages[4:]
    assert to_text(render(history)) == vector("test_keep_analysis_between_finals.txt")


def test_training_completion_ends_in_return():
    messages = [
        USER_2_PLUS_2,
        Message("assistant", 'User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.', channel="analysis"),
        Message("assistant", "2 + 2 = 4.", channel="final"),
    ]
    text = to_text(render(messages, for_training=True))
    assert text.endswith(vector("docs_reasoning_completion.txt"))
    assert text.startswith("<|start|>user<|message|>What is 2 + 2?<|end|><|start|>assistant<|channel|>analysis")


def test_tool_call_completion_in_the_guide_style():
    call = Message(
        "assistant",
        '{"location":"San Francisco"}',
        channel="commentary",
        recipient="functions.get_weather",
        content_type="<|constrain|>json",
        recipient_in_channel=True,
    )
    messages = [Message("assistant", "Need to use function get_weather.", channel="analysis"), call]
    text = to_text(render(messages, for_training=True))
    assert text == "<|start|>assistant" + vector("docs_tool_call_completion.txt")
