"""harmony.py: exact rendered text, what is trained, token alignment, and parsing of completions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ossft import harmony
from ossft.harmony import Piece, encode, parse_completion, render_conversation, render_prompt, system_message, to_text

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "harmony-vectors"

SYSTEM_TEXT = (
    "You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n\n"
    "Reasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message."
)
# The thinking of openai/harmony's docs example (straight quotes, as in docs_reasoning_completion.txt).
DOCS_THINKING = 'User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.'


def system_block(reasoning_effort: str = "medium") -> str:
    return f"<|start|>system<|message|>{system_message(reasoning_effort)}<|end|>"


def trained_text(pieces: list[Piece]) -> str:
    return "".join(p.text for p in pieces if p.trained)


def untrained_text(pieces: list[Piece]) -> str:
    return "".join(p.text for p in pieces if not p.trained)


def vector(name: str) -> str:
    # openai/harmony's own tests compare against the file with trailing whitespace stripped.
    if not VECTORS.is_dir():
        pytest.skip(f"harmony test vectors not found at {VECTORS}")
    return (VECTORS / name).read_text(encoding="utf-8").rstrip()


def chat(user: str, content: str, thinking: str | None = None) -> list[dict]:
    answer = {"role": "assistant", "content": content}
    if thinking is not None:
        answer["thinking"] = thinking
    return [{"role": "user", "content": user}, answer]


# --- system message -------------------------------------------------------------------------------


def test_system_message_default_is_exact_and_has_no_date():
    assert system_message() == SYSTEM_TEXT
    assert "Current date" not in system_message()


def test_system_message_reasoning_effort():
    assert system_message("high") == SYSTEM_TEXT.replace("Reasoning: medium", "Reasoning: high")


def test_system_message_current_date_follows_knowledge_cutoff():
    lines = system_message(current_date="2025-06-28").split("\n")
    assert lines[:4] == [
        "You are ChatGPT, a large language model trained by OpenAI.",
        "Knowledge cutoff: 2024-06",
        "Current date: 2025-06-28",
        "",
    ]


def test_system_message_with_date_matches_public_vector():
    prompt = f"<|start|>system<|message|>{system_message(current_date='2025-06-28')}<|end|><|start|>assistant"
    assert prompt == vector("test_no_tools.txt")


# --- render_conversation --------------------------------------------------------------------------


def test_one_turn_with_thinking_renders_exactly():
    pieces = render_conversation(chat("Hi there", "Hello!", thinking="Greet back."))
    assert to_text(pieces) == (
        f"<|start|>system<|message|>{SYSTEM_TEXT}<|end|>"
        "<|start|>user<|message|>Hi there<|end|>"
        "<|start|>assistant<|channel|>analysis<|message|>Greet back.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Hello!<|return|>"
    )
    assert trained_text(pieces) == (
        "<|channel|>analysis<|message|>Greet back.<|end|><|start|>assistant<|channel|>final<|message|>Hello!<|return|>"
    )
    # The trained part is one run at the very end: the prompt is everything before it.
    assert untrained_text(pieces) + trained_text(pieces) == to_text(pieces)


def test_one_turn_without_thinking_trains_only_the_final_channel():
    pieces = render_conversation(chat("Hi", "Hello!"))
    assert trained_text(pieces) == "<|channel|>final<|message|>Hello!<|return|>"
    assert untrained_text(pieces) == f"{system_block()}<|start|>user<|message|>Hi<|end|><|start|>assistant"


def test_trained_part_matches_public_docs_completion():
    pieces = render_conversation(chat("What is 2 + 2?", "2 + 2 = 4.", thinking=DOCS_THINKING))
    assert trained_text(pieces) == vector("docs_reasoning_completion.txt")


def test_multi_turn_trains_only_last_answer_and_drops_earlier_thinking():
    messages = [
        {"role": "developer", "content": "Answer briefly."},
        *chat("What is 2 + 2?", "4.", thinking="EARLIER-THINKING"),
        *chat("And 3 + 5?", "8.", thinking="Add them."),
    ]
    pieces = render_conversation(messages)
    assert untrained_text(pieces) == (
        f"{system_block()}"
        "<|start|>developer<|message|># Instructions\n\nAnswer briefly.<|end|>"
        "<|start|>user<|message|>What is 2 + 2?<|end|>"
        "<|start|>assistant<|channel|>final<|message|>4.<|end|>"
        "<|start|>user<|message|>And 3 + 5?<|end|>"
        "<|start|>assistant"
    )
    assert trained_text(pieces) == (
        "<|channel|>analysis<|message|>Add them.<|end|><|start|>assistant<|channel|>final<|message|>8.<|return|>"
    )
    assert "EARLIER-THINKING" not in to_text(pieces)


def test_earlier_turns_match_public_cot_dropping_vector():
    messages = [
        *chat(
            "What is 2 + 2?",
            "2 + 2 equals 4.",
            thinking="User asks: “What is 2 + 2?” Simple arithmetic. Provide answer.",
        ),
        *chat("What about 9 / 2?", "4.5"),
    ]
    pieces = render_conversation(messages)
    assert untrained_text(pieces) == system_block() + vector("test_dropping_cot_by_default.txt")


def test_render_conversation_reasoning_effort():
    text = to_text(render_conversation(chat("Hi", "Hello!"), reasoning_effort="high"))
    assert text.startswith(system_block("high"))
    assert "\nReasoning: high\n" in text
    assert "Reasoning: medium" not in text


# --- render_prompt --------------------------------------------------------------------------------


def test_render_prompt_ends_at_assistant_header_and_trains_nothing():
    messages = [*chat("What is 2 + 2?", "4.", thinking="EARLIER-THINKING"), {"role": "user", "content": "And 3 + 5?"}]
    pieces = render_prompt(messages)
    assert to_text(pieces) == (
        f"{system_block()}"
        "<|start|>user<|message|>What is 2 + 2?<|end|>"
        "<|start|>assistant<|channel|>final<|message|>4.<|end|>"
        "<|start|>user<|message|>And 3 + 5?<|end|>"
        "<|start|>assistant"
    )
    assert [p for p in pieces if p.trained] == []


ROBOT = "Answer the user's questions like a robot."
CAPITAL = "What is the capital of the largest country in the world?"


@pytest.mark.parametrize(
    ("name", "effort", "messages"),
    [
        ("test_simple_convo.txt", "medium", [{"role": "user", "content": "What is 2 + 2?"}]),
        *[
            (
                f"test_simple_convo_{effort}_effort.txt",
                effort,
                [{"role": "developer", "content": ROBOT}, {"role": "user", "content": CAPITAL}],
            )
            for effort in ("low", "medium", "high")
        ],
        *[
            (f"test_simple_convo_{effort}_effort_no_instruction.txt", effort, [{"role": "user", "content": CAPITAL}])
            for effort in ("low", "medium", "high")
        ],
    ],
)
def test_render_prompt_matches_public_vectors(name, effort, messages):
    assert to_text(render_prompt(messages, reasoning_effort=effort)) == vector(name)


# --- encode ---------------------------------------------------------------------------------------

SPECIAL_IDS = {"<|start|>": 1, "<|message|>": 2, "<|end|>": 3, "<|channel|>": 4, "<|return|>": 5}


def char_codes(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_encode_aligns_ids_and_mask():
    pieces = [
        Piece("<|start|>", special=True),
        Piece("ab"),
        Piece("<|message|>", special=True, trained=True),
        Piece("cd", trained=True),
        Piece("<|return|>", special=True, trained=True),
    ]
    ids, mask = encode(pieces, char_codes, SPECIAL_IDS)
    assert ids == [1, 97, 98, 2, 99, 100, 5]
    assert mask == [False, False, False, True, True, True, True]


def test_every_control_token_is_a_special_piece():
    rendered = render_conversation(chat("Hi", "Hello!", thinking="Greet.")) + render_prompt(
        [{"role": "user", "content": "Hi"}]
    )
    leaked = [p.text for p in rendered if not p.special and any(token in p.text for token in harmony.SPECIAL_TOKENS)]
    assert leaked == []


# --- parse_completion -----------------------------------------------------------------------------


def test_parse_completion_splits_channels():
    text = (
        "<|start|>assistant<|channel|>analysis<|message|>A<|end|>"
        "<|start|>assistant<|channel|>final<|message|>B<|return|>"
    )
    assert parse_completion(text) == {"analysis": "A", "final": "B"}


def test_parse_completion_joins_messages_of_the_same_channel():
    text = "<|channel|>analysis<|message|>A<|end|><|start|>assistant<|channel|>analysis<|message|>B<|end|>"
    assert parse_completion(text) == {"analysis": "AB"}


def test_parse_completion_without_channel_is_empty():
    assert parse_completion("just some text<|return|>") == {}


def test_parse_completion_of_unfinished_turn_keeps_the_text():
    assert parse_completion("<|channel|>final<|message|>cut off mid") == {"final": "cut off mid"}


def test_parse_completion_of_public_completions():
    assert parse_completion(vector("docs_reasoning_completion.txt")) == {
        "analysis": DOCS_THINKING,
        "final": "2 + 2 = 4.",
    }
    assert parse_completion(vector("docs_tool_call_completion.txt")) == {
        "analysis": "Need to use function get_weather.",
        "commentary": '{"location":"San Francisco"}',
    }
