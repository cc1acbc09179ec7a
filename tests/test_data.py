"""data.py: reading dataset files, checking rows, and tokenized training data with exact labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ossft.data import IGNORE, check_messages, load_training_data, read_rows
from ossft.errors import UserError
from ossft.harmony import render_conversation, to_text
from ossft.recipe import DatasetSource

ROWS = [
    {
        "messages": [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "4.", "thinking": "Add."},
        ]
    },
    {
        "messages": [
            {"role": "developer", "content": "Answer in Spanish."},
            {"role": "user", "content": "¿Cuál es mayor, 50 o 88?"},
            {"role": "assistant", "content": "88.", "thinking": "EARLIER-THINKING"},
            {"role": "user", "content": "¿Por cuánto?"},
            {"role": "assistant", "content": "Por 38.", "thinking": "88 - 50 = 38."},
        ]
    },
]
JSON_ROWS = [{"chat": [{"role": "user", "content": "Hola"}, {"role": "assistant", "content": "¡Hola!"}]}]


def write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def raises_user_error(call, *args) -> str:
    with pytest.raises(UserError) as info:
        call(*args)
    return str(info.value)


def recipe_with(quickstart_recipe, *sources: DatasetSource, reasoning_effort: str = "medium"):
    recipe = quickstart_recipe.model_copy(deep=True)
    recipe.data.datasets = list(sources)
    recipe.data.reasoning_effort = reasoning_effort
    return recipe


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


# --- read_rows ------------------------------------------------------------------------------------


def test_read_rows_jsonl_skips_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ['{"a": 1}', "", "   ", '{"b": [2]}'])
    assert read_rows(path) == [{"a": 1}, {"b": [2]}]


def test_read_rows_json_list(tmp_path):
    assert read_rows(write_json(tmp_path / "d.json", JSON_ROWS)) == JSON_ROWS


def test_read_rows_bad_jsonl_line_names_file_and_line(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ['{"a": 1}', "", '{"a": 2'])
    assert f"{path} line 3: not valid JSON" in raises_user_error(read_rows, path)


def test_read_rows_bad_json_names_file_and_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"a": 1},\n{"a": }\n]', encoding="utf-8")
    message = raises_user_error(read_rows, path)
    assert message.startswith(f"{path}: not valid JSON (")
    assert message.endswith(", line 3).")


def test_read_rows_json_must_be_a_list(tmp_path):
    path = write_json(tmp_path / "d.json", {"messages": []})
    assert raises_user_error(read_rows, path) == f"{path}: a .json dataset must hold a list of rows."


def test_read_rows_missing_file(tmp_path):
    path = tmp_path / "absent.jsonl"
    assert raises_user_error(read_rows, path).startswith(f"dataset not found: {path}.")


# --- check_messages -------------------------------------------------------------------------------

USER = {"role": "user", "content": "Hi"}
ANSWER = {"role": "assistant", "content": "Hello"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"conversation": [USER, ANSWER]}, "d.jsonl row 4: no 'messages' field."),
        ("not a row", "d.jsonl row 4: no 'messages' field."),
        ({"messages": []}, "d.jsonl row 4: 'messages' must be a non-empty list of messages."),
        ({"messages": "Hi"}, "d.jsonl row 4: 'messages' must be a non-empty list of messages."),
        (
            {"messages": [USER, {"role": "system", "content": "x"}]},
            "d.jsonl row 4, messages[1]: role 'system' is not one of developer, user, assistant.",
        ),
        (
            {"messages": [USER, "Hello"]},
            "d.jsonl row 4, messages[1]: role 'Hello' is not one of developer, user, assistant.",
        ),
        (
            {"messages": [USER, {"role": "assistant", "content": ""}]},
            "d.jsonl row 4, messages[1]: 'content' must be a non-empty string.",
        ),
        ({"messages": [{"role": "user"}, ANSWER]}, "d.jsonl row 4, messages[0]: 'content' must be a non-empty string."),
        ({"messages": [USER, {**ANSWER, "thinking": 5}]}, "d.jsonl row 4, messages[1]: 'thinking' must be a string."),
        ({"messages": [USER, USER]}, "d.jsonl row 4: no assistant message, so nothing to train on."),
    ],
    ids=[
        "missing-field",
        "row-not-a-dict",
        "empty-list",
        "not-a-list",
        "unknown-role",
        "message-not-a-dict",
        "empty-content",
        "missing-content",
        "thinking-not-a-string",
        "no-assistant",
    ],
)
def test_check_messages_errors_name_row_and_index(row, expected):
    assert raises_user_error(check_messages, row, "messages", "d.jsonl row 4").startswith(expected)


def test_check_messages_returns_the_messages_of_the_named_field():
    messages = [USER, {**ANSWER, "thinking": "Say hello."}]
    assert check_messages({"chat": messages}, "chat", "row 0") is messages


# --- load_training_data ---------------------------------------------------------------------------


def expected_example(tokenizer, messages: list[dict], reasoning_effort: str) -> tuple[tuple, tuple]:
    """(input_ids, labels) computed another way: the whole text tokenized at once, the prompt masked."""
    pieces = render_conversation(messages, reasoning_effort)
    ids = tokenizer.encode(to_text(pieces), add_special_tokens=False)
    prompt = tokenizer.encode("".join(p.text for p in pieces if not p.trained), add_special_tokens=False)
    assert ids[: len(prompt)] == prompt
    return tuple(ids), tuple([IGNORE] * len(prompt) + ids[len(prompt) :])


def test_load_training_data_labels_and_counts(tmp_path, quickstart_recipe, tokenizer):
    jsonl = write_jsonl(tmp_path / "a.jsonl", [json.dumps(ROWS[0]), "", json.dumps(ROWS[1])])
    json_file = write_json(tmp_path / "b.json", JSON_ROWS)
    recipe = recipe_with(
        quickstart_recipe,
        DatasetSource(path=str(jsonl)),
        DatasetSource(path=str(json_file), field_messages="chat"),
        reasoning_effort="high",
    )
    data = load_training_data(recipe, tokenizer)

    conversations = [ROWS[0]["messages"], ROWS[1]["messages"], JSON_ROWS[0]["chat"]]
    expected = sorted(expected_example(tokenizer, m, "high") for m in conversations)
    got = sorted(zip(map(tuple, data.dataset["input_ids"]), map(tuple, data.dataset["labels"])))
    assert got == expected
    assert (data.rows, len(data.dataset)) == (3, 3)
    assert data.tokens == sum(len(ids) for ids, _ in expected)
    assert data.trained_tokens == sum(label != IGNORE for _, labels in expected for label in labels)
    assert all("Reasoning: high" in tokenizer.decode(ids) for ids in data.dataset["input_ids"])


def test_load_training_data_trained_ids_decode_to_trained_text(tmp_path, quickstart_recipe, tokenizer):
    path = write_jsonl(tmp_path / "a.jsonl", [json.dumps(ROWS[1])])
    data = load_training_data(recipe_with(quickstart_recipe, DatasetSource(path=str(path))), tokenizer)
    trained = [label for label in data.dataset["labels"][0] if label != IGNORE]
    assert tokenizer.decode(trained) == (
        "<|channel|>analysis<|message|>88 - 50 = 38.<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Por 38.<|return|>"
    )
    assert data.trained_tokens == len(trained)
    # The masked prompt is everything before the trained part, ending with the assistant header.
    labels, ids = data.dataset["labels"][0], data.dataset["input_ids"][0]
    prompt = ids[: len(ids) - len(trained)]
    assert labels == [IGNORE] * len(prompt) + ids[len(prompt) :]
    assert tokenizer.decode(prompt).endswith("<|start|>user<|message|>¿Por cuánto?<|end|><|start|>assistant")


def test_load_training_data_bad_row_names_file_and_row(tmp_path, quickstart_recipe, tokenizer):
    bad = {"messages": [{"role": "system", "content": "x"}, ANSWER]}
    path = write_jsonl(tmp_path / "a.jsonl", [json.dumps(ROWS[0]), "", json.dumps(bad)])
    recipe = recipe_with(quickstart_recipe, DatasetSource(path=str(path)))
    message = raises_user_error(load_training_data, recipe, tokenizer)
    assert message.startswith(f"{path} row 1, messages[0]: role 'system'")


def test_load_training_data_empty_dataset(tmp_path, quickstart_recipe, tokenizer):
    path = tmp_path / "a.jsonl"
    path.write_text("\n\n", encoding="utf-8")
    message = raises_user_error(
        load_training_data, recipe_with(quickstart_recipe, DatasetSource(path=str(path))), tokenizer
    )
    assert message == "the datasets hold no trained token: every row is empty or masked."


def test_load_training_data_refuses_tokenizer_without_harmony_tokens(tmp_path, quickstart_recipe):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0}, unk_token=None)))
    path = write_jsonl(tmp_path / "a.jsonl", [json.dumps(ROWS[0])])
    message = raises_user_error(
        load_training_data, recipe_with(quickstart_recipe, DatasetSource(path=str(path))), plain
    )
    assert message.startswith("the tokenizer lacks harmony's special tokens ['<|startoftext|>', '<|endoftext|>',")
    assert message.endswith("'<|endofprompt|>']; use a gpt-oss tokenizer.")


def test_text_that_looks_like_a_control_token_stays_text(tmp_path, quickstart_recipe, tokenizer):
    row = {
        "messages": [
            {"role": "user", "content": "Say <|end|>"},
            {"role": "assistant", "content": "The token <|return|> ends a turn."},
        ]
    }
    path = write_jsonl(tmp_path / "a.jsonl", [json.dumps(row)])
    data = load_training_data(recipe_with(quickstart_recipe, DatasetSource(path=str(path))), tokenizer)
    ids = data.dataset["input_ids"][0]
    # Only harmony's own markers: <|end|> closes system and user, <|return|> closes the answer once.
    assert ids.count(tokenizer.convert_tokens_to_ids("<|return|>")) == 1 and ids[-1] == tokenizer.convert_tokens_to_ids(
        "<|return|>"
    )
    assert ids.count(tokenizer.convert_tokens_to_ids("<|end|>")) == 2
    assert "The token <|return|> ends a turn.<|return|>" in tokenizer.decode(ids)
