"""From data files and a recipe to training examples: exact trained text for every row layout, template
mode against TRL's vectors, the tokenized-data cache, eval split, bad rows, and the data commands."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from ossft.data import prepare
from ossft.data.inspect import example_records
from ossft.errors import UserError
from ossft.recipe.load import load_recipe
from tests.conftest import FIXTURES, REPO
from tests.o200k import gpt_oss_tokenizer_available, load_gpt_oss_tokenizer

VECTORS = FIXTURES / "harmony-vectors"
MULTILINGUAL_SAMPLE = REPO / "examples" / "data" / "multilingual_thinking_sample.jsonl"

SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def write_recipe(folder: Path, model_dir: Path, rows: list | None = None, train: dict | None = None, **data) -> Path:
    """A recipe in `folder` on the tiny model; `rows` go to folder/rows.jsonl, the cache to folder/cache."""
    folder.mkdir(parents=True, exist_ok=True)
    if rows is not None:
        write_jsonl(folder / "rows.jsonl", rows)
    data.setdefault("datasets", [{"path": str(folder / "rows.jsonl")}])
    doc = {
        "model": {"base_model": str(model_dir)},
        "data": {"cache_dir": str(folder / "cache"), **data},
        "train": train or {},
        "output": {"dir": str(folder / "out")},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return path


def make_recipe(folder: Path, model_dir: Path, rows: list | None = None, train: dict | None = None, **data):
    return load_recipe(write_recipe(folder, model_dir, rows, train, **data))


def records(recipe, tokenizer) -> list[dict]:
    return list(example_records(recipe, tokenizer, None))


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(content: str | None, thinking: str | None = None, **extra) -> dict:
    return {"role": "assistant", "content": content, "thinking": thinking, **extra}


def final(text: str, end: str = "<|return|>") -> str:
    return f"<|start|>assistant<|channel|>final<|message|>{text}{end}"


def trained_turn(answer: str, thinking: str | None = None, end: str = "<|return|>") -> str:
    """A trained assistant turn as decoded: it starts after the opening `<|start|>assistant`."""
    if thinking is None:
        return f"<|channel|>final<|message|>{answer}{end}"
    return f"<|channel|>analysis<|message|>{thinking}<|end|>{final(answer, end)}"


# ---------------------------------------------------------------------------------------------
# Exact trained text, harmony mode

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Gets the weather.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city."}},
            "required": ["city"],
        },
    },
}
WEATHER_CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
TOOL_ROW = {
    "messages": [
        {"role": "system", "content": "Use tools."},
        user("Weather in Paris?"),
        assistant(None, "Need weather.", tool_calls=[WEATHER_CALL]),
        {"role": "tool", "name": "get_weather", "content": '{"temp": 20}'},
        assistant("20 C.", "It is 20."),
    ],
    "tools": [WEATHER_TOOL],
}
TOOLS_HEADER = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.\n"
    "Calls to these tools must go to the commentary channel: 'functions'.<|end|>"
    "<|start|>developer<|message|># Instructions\n\nUse tools.\n\n"
    "# Tools\n\n## functions\n\nnamespace functions {\n\n"
    "// Gets the weather.\ntype get_weather = (_: {\n// The city.\ncity: string,\n}) => any;\n\n"
    "} // namespace functions<|end|>"
    "<|start|>user<|message|>Weather in Paris?<|end|>"
)
CALL_TURN = (
    "<|channel|>analysis<|message|>Need weather.<|end|>"
    "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
    '<|message|>{"city": "Paris"}<|call|>'
)
TOOL_RESULT = '<|start|>functions.get_weather to=assistant<|channel|>commentary<|message|>{"temp": 20}<|end|>'
TWO_TURNS = {"messages": [user("Q1"), assistant("A1", "T1"), user("Q2"), assistant("A2", "T2")]}

# case: (row, data options, [trained runs of each example], [full text of each example] or None)
MASK_CASES = {
    "single_turn_thinking": (
        {"messages": [user("Hi"), assistant("Hello!", "Greet.")]},
        {},
        [[trained_turn("Hello!", "Greet.")]],
        [f"{SYSTEM}<|start|>user<|message|>Hi<|end|><|start|>assistant{trained_turn('Hello!', 'Greet.')}"],
    ),
    "multi_turn_per_turn": (
        TWO_TURNS,
        {},
        [[trained_turn("A1", "T1")], [trained_turn("A2", "T2")]],
        [
            f"{SYSTEM}<|start|>user<|message|>Q1<|end|><|start|>assistant{trained_turn('A1', 'T1')}",
            # The first turn's analysis is gone once it has ended in a final answer.
            f"{SYSTEM}<|start|>user<|message|>Q1<|end|>{final('A1', '<|end|>')}"
            f"<|start|>user<|message|>Q2<|end|><|start|>assistant{trained_turn('A2', 'T2')}",
        ],
    ),
    "multi_turn_keep_all": (
        TWO_TURNS,
        {"thinking": "keep_all"},
        [[trained_turn("A1", "T1", "<|end|>"), trained_turn("A2", "T2")]],
        [
            f"{SYSTEM}<|start|>user<|message|>Q1<|end|><|start|>assistant{trained_turn('A1', 'T1', '<|end|>')}"
            f"<|start|>user<|message|>Q2<|end|><|start|>assistant{trained_turn('A2', 'T2')}"
        ],
    ),
    "multi_turn_last_turn": (
        TWO_TURNS,
        {"thinking": "keep_all", "train_on": "last_turn"},
        [[trained_turn("A2", "T2")]],
        None,
    ),
    "tool_call_per_turn": (
        TOOL_ROW,
        {},
        [[CALL_TURN], [trained_turn("20 C.", "It is 20.")]],
        [
            f"{TOOLS_HEADER}<|start|>assistant{CALL_TURN}",
            # The calling turn keeps its analysis: no final answer has followed it yet.
            f"{TOOLS_HEADER}<|start|>assistant{CALL_TURN}{TOOL_RESULT}"
            f"<|start|>assistant{trained_turn('20 C.', 'It is 20.')}",
        ],
    ),
    "tool_call_keep_all": (
        TOOL_ROW,
        {"thinking": "keep_all"},
        [[CALL_TURN, trained_turn("20 C.", "It is 20.")]],
        None,
    ),
    "multilingual_thinking_columns": (
        {
            "reasoning_language": "English",
            "developer": "You are a calculator assistant. Keep answers to one sentence.",
            "user": "¿Cuánto es 85 + 12?",
            "analysis": "The user wants 85 + 12. Working it out in steps: 85 + 10 = 95, 95 + 2 = 97. The answer is 97.",
            "final": "85 + 12 es igual a 97.",
        },
        {},
        [
            [
                trained_turn(
                    "85 + 12 es igual a 97.",
                    "The user wants 85 + 12. Working it out in steps: 85 + 10 = 95, 95 + 2 = 97. The answer is 97.",
                )
            ]
        ],
        [
            f"{SYSTEM}<|start|>developer<|message|># Instructions\n\nreasoning language: English\n\n"
            "You are a calculator assistant. Keep answers to one sentence.<|end|>"
            "<|start|>user<|message|>¿Cuánto es 85 + 12?<|end|><|start|>assistant"
            + trained_turn(
                "85 + 12 es igual a 97.",
                "The user wants 85 + 12. Working it out in steps: 85 + 10 = 95, 95 + 2 = 97. The answer is 97.",
            )
        ],
    ),
    "prompt_completion": (
        {"prompt": "Capital of Peru?", "completion": "Lima."},
        {},
        [[trained_turn("Lima.")]],
        [f"{SYSTEM}<|start|>user<|message|>Capital of Peru?<|end|><|start|>assistant{trained_turn('Lima.')}"],
    ),
}


@pytest.mark.parametrize("case", list(MASK_CASES))
def test_trained_text_is_exact(tmp_path, tiny_model_dir, tokenizer, case):
    row, options, expected_runs, expected_texts = MASK_CASES[case]
    found = records(make_recipe(tmp_path, tiny_model_dir, [row], **options), tokenizer)
    assert [r["trained"] for r in found] == expected_runs
    if expected_texts is not None:
        assert [r["text"] for r in found] == expected_texts
    assert [(r["row"], r["source"]) for r in found] == [(0, str(tmp_path / "rows.jsonl"))] * len(expected_runs)


def test_tools_become_a_functions_namespace_in_the_developer_message(tmp_path, tiny_model_dir, tokenizer):
    [first, _] = records(make_recipe(tmp_path, tiny_model_dir, [TOOL_ROW]), tokenizer)
    developer = first["text"].split("<|start|>developer<|message|>", 1)[1].split("<|end|>", 1)[0]
    assert "namespace functions {" in developer
    assert developer.startswith("# Instructions\n\nUse tools.\n\n# Tools\n\n## functions\n\n")


def test_a_row_effort_overrides_the_recipe(tmp_path, tiny_model_dir, tokenizer):
    row = {"messages": [user("Hi"), assistant("Hello!")], "reasoning_effort": "high"}
    [record] = records(make_recipe(tmp_path, tiny_model_dir, [row], system={"reasoning_effort": "low"}), tokenizer)
    assert record["text"].startswith(SYSTEM.replace("Reasoning: medium", "Reasoning: high"))


@pytest.mark.skipif(not MULTILINGUAL_SAMPLE.is_file(), reason=f"{MULTILINGUAL_SAMPLE} is missing")
def test_multilingual_sample_reads_the_same_from_its_columns_and_its_messages(tmp_path, tiny_model_dir, tokenizer):
    def texts(fmt: str) -> list[tuple[str, list[str]]]:
        source = {"path": str(MULTILINGUAL_SAMPLE), "format": fmt}
        recipe = make_recipe(tmp_path / fmt, tiny_model_dir, datasets=[source])
        return [(r["text"], r["trained"]) for r in records(recipe, tokenizer)]

    from_columns = texts("multilingual_thinking")
    assert texts("auto") == from_columns  # auto reads the `messages` column
    rows = [json.loads(line) for line in MULTILINGUAL_SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(from_columns) == len(rows)
    for (text, trained), row in zip(from_columns, rows):
        assert trained == [trained_turn(row["final"], row["analysis"])]
        assert f"# Instructions\n\nreasoning language: {row['reasoning_language']}\n\n{row['developer']}<|end|>" in text


# ---------------------------------------------------------------------------------------------
# Template mode: the real gpt-oss tokenizer and its Hugging Face chat template, against TRL's vectors


def vector(name: str) -> str:
    today = datetime.date.today().strftime("%Y-%m-%d")
    return (VECTORS / name).read_text(encoding="utf-8").replace("{CURRENT_DATE}", today).rstrip()


@pytest.mark.skipif(
    not (gpt_oss_tokenizer_available() and (VECTORS / "hftemplate_trl_completion.txt").is_file()),
    reason="the gpt-oss tokenizer fixtures or the HF-template vectors are not available",
)
def test_template_mode_matches_trl_vectors(tmp_path, tiny_model_dir):
    # The vector's thinking text, as written in the fixture files.
    assert "<|channel|>analysis<|message|>The user asks the color of the sky...<|end|>" in vector(
        "hftemplate_trl_completion.txt"
    )
    row = {
        "messages": [
            {"role": "system", "content": "Respond in a friendly manner."},
            user("What color is the sky?"),
            assistant("It is blue.", "The user asks the color of the sky..."),
        ]
    }
    system = {"reasoning_effort": "low", "model_identity": "You are HuggingGPT."}
    recipe = make_recipe(tmp_path, tiny_model_dir, [row], chat_format="template", system=system)
    [record] = records(recipe, load_gpt_oss_tokenizer())
    assert record["text"] == vector("hftemplate_trl_language_modeling.txt")
    assert record["trained"] == [vector("hftemplate_trl_completion.txt")]
    (prefix, prefix_trained), (_, trained) = record["_segments"]
    assert (prefix, prefix_trained, trained) == (vector("hftemplate_trl_prompt_only.txt"), False, True)


@pytest.fixture(scope="module")
def template_tokenizer(tiny_model_dir):
    """The tiny tokenizer carrying the real Hugging Face gpt-oss chat template."""
    from transformers import AutoTokenizer

    template = FIXTURES / "gpt-oss-tokenizer" / "chat_template.jinja"
    if not template.is_file():
        pytest.skip(f"{template} is missing")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = template.read_text(encoding="utf-8")
    return tokenizer


def test_template_mode_per_turn_gives_one_example_per_assistant_turn(tmp_path, tiny_model_dir, template_tokenizer):
    recipe = make_recipe(tmp_path, tiny_model_dir, [TWO_TURNS], chat_format="template")
    assert [r["trained"] for r in records(recipe, template_tokenizer)] == [
        [trained_turn("A1", "T1")],
        [trained_turn("A2", "T2")],
    ]


def test_template_mode_refuses_keep_all(tmp_path, tiny_model_dir):
    # The HF template drops every analysis but the last: earlier turns would train without thinking.
    with pytest.raises(UserError, match="keep_all needs chat_format: harmony"):
        make_recipe(tmp_path, tiny_model_dir, [TWO_TURNS], chat_format="template", thinking="keep_all")


# ---------------------------------------------------------------------------------------------
# The tokenized-data cache

ROWS = [{"messages": [user(f"What is {i} + {i}?"), assistant(f"{2 * i}.", f"Add {i} to itself.")]} for i in range(6)]


def cache_entries(recipe) -> list[str]:
    root = prepare.cache_root(recipe)
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def dataset_columns(dataset) -> tuple[list, list]:
    return dataset["input_ids"], dataset["labels"]


def test_second_prepare_loads_the_cache(tmp_path, tiny_model_dir, tokenizer):
    recipe = make_recipe(tmp_path, tiny_model_dir, ROWS)
    first = prepare.prepare_data(recipe, tokenizer)
    second = prepare.prepare_data(recipe, tokenizer)
    key = prepare.cache_key(recipe, tokenizer)
    assert (first.from_cache, second.from_cache) == (False, True)
    assert first.cache_path == second.cache_path == tmp_path / "cache" / key
    assert dataset_columns(second.train) == dataset_columns(first.train)
    assert dataclasses.asdict(second.stats) == dataclasses.asdict(first.stats)
    assert (first.eval, second.eval) == (None, None)
    # Complete, and no staging folder left beside it.
    assert cache_entries(recipe) == [key]
    assert sorted(p.name for p in first.cache_path.iterdir()) == ["datasets", prepare.STATS_FILE]
    # Labels: the trained ids, -100 elsewhere.
    input_ids, labels = dataset_columns(second.train)
    assert len(input_ids) == 6 and all(len(i) == len(x) for i, x in zip(input_ids, labels))
    trained = [t for t in labels[3] if t != -100]
    assert tokenizer.decode(trained) == trained_turn("6.", "Add 3 to itself.")
    assert [t for t, x in zip(input_ids[3], labels[3]) if x != -100] == trained
    assert (first.stats.rows, first.stats.examples, first.stats.tokens) == (6, 6, sum(map(len, input_ids)))
    assert first.stats.trained_tokens == sum(x != -100 for row in labels for x in row)


def test_no_cache_when_asked(tmp_path, tiny_model_dir, tokenizer):
    recipe = make_recipe(tmp_path, tiny_model_dir, ROWS)
    prepared = prepare.prepare_data(recipe, tokenizer, use_cache=False)
    assert (prepared.cache_path, prepared.from_cache, cache_entries(recipe)) == (None, False, [])


@pytest.mark.parametrize(
    ("overrides", "same"),
    [
        (["train.max_length=64"], False),
        (["data.thinking=keep_all"], False),
        (["data.system.reasoning_effort=high"], False),
        (["data.num_proc=2"], True),
        (["data.cache_dir=/elsewhere"], True),
    ],
    ids=["max_length", "thinking", "reasoning_effort", "num_proc", "cache_dir"],
)
def test_cache_key_follows_the_options_that_change_tokens(tmp_path, tiny_model_dir, tokenizer, overrides, same):
    path = write_recipe(tmp_path, tiny_model_dir, ROWS)
    base = prepare.cache_key(load_recipe(path), tokenizer)
    assert (prepare.cache_key(load_recipe(path, overrides), tokenizer) == base) is same


def test_cache_key_follows_the_data_and_the_tokenizer(tmp_path, tiny_model_dir, tokenizer):
    from transformers import AutoTokenizer

    recipe = make_recipe(tmp_path, tiny_model_dir, ROWS)
    base = prepare.cache_key(recipe, tokenizer)
    assert prepare.cache_key(recipe, AutoTokenizer.from_pretrained(str(tiny_model_dir))) == base
    write_jsonl(tmp_path / "rows.jsonl", ROWS[:-1])
    assert prepare.cache_key(recipe, tokenizer) != base
    write_jsonl(tmp_path / "rows.jsonl", ROWS)
    assert prepare.cache_key(recipe, tokenizer) == base
    more_tokens = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    more_tokens.add_tokens(["zebra"])
    templated = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    templated.chat_template = "{{ messages }}"
    keys = {base, prepare.cache_key(recipe, more_tokens), prepare.cache_key(recipe, templated)}
    assert len(keys) == 3


def test_cache_is_reused_across_num_proc_and_rebuilt_for_new_data(tmp_path, tiny_model_dir, tokenizer):
    path = write_recipe(tmp_path, tiny_model_dir, ROWS)
    first = prepare.prepare_data(load_recipe(path), tokenizer)
    parallel = prepare.prepare_data(load_recipe(path, ["data.num_proc=2"]), tokenizer)
    assert (parallel.from_cache, parallel.cache_path) == (True, first.cache_path)
    write_jsonl(tmp_path / "rows.jsonl", ROWS[:4])
    changed = prepare.prepare_data(load_recipe(path), tokenizer)
    assert (changed.from_cache, changed.stats.examples) == (False, 4)
    assert changed.cache_path != first.cache_path
    assert cache_entries(load_recipe(path)) == sorted([first.cache_path.name, changed.cache_path.name])


# ---------------------------------------------------------------------------------------------
# Eval split, bad rows, nothing to train


def question_numbers(dataset, tokenizer) -> list[int]:
    texts = [tokenizer.decode(ids) for ids in dataset["input_ids"]]
    return [int(re.search(r"Question (\d+)\?", text).group(1)) for text in texts]


@pytest.mark.parametrize("val_set_size", [3, 0.3])
def test_val_set_size_splits_rows_not_examples(tmp_path, tiny_model_dir, tokenizer, val_set_size):
    rows = [
        {"messages": [user(f"Question {i}?"), assistant(f"A{i}"), user("And then?"), assistant("Then more.")]}
        for i in range(10)
    ]
    recipe = make_recipe(tmp_path, tiny_model_dir, rows, val_set_size=val_set_size)
    prepared = prepare.prepare_data(recipe, tokenizer)
    stats = prepared.stats
    assert (stats.rows, stats.examples, stats.eval_examples) == (10, 14, 6)
    assert (len(prepared.train), len(prepared.eval)) == (14, 6)
    train_rows, eval_rows = question_numbers(prepared.train, tokenizer), question_numbers(prepared.eval, tokenizer)
    # Both examples of a row (one per assistant turn) land in the same split.
    assert sorted(Counter(eval_rows).values()) == [2, 2, 2]
    assert sorted(Counter(train_rows).values()) == [2] * 7
    assert sorted(set(train_rows) | set(eval_rows)) == list(range(10))
    assert set(train_rows).isdisjoint(eval_rows)
    # Totals count the training split only.
    assert stats.tokens == sum(len(ids) for ids in prepared.train["input_ids"])


GOOD = {"messages": [user("Hi"), assistant("Hello!")]}
BAD_ROWS = [
    ({"messages": [user("Hi")]}, "messages: no assistant message, so nothing to train on"),
    (
        {"messages": [user("Hi"), {"role": "bot", "content": "x"}]},
        "messages[1].role: unknown role 'bot'; expected system, developer, user, assistant or tool",
    ),
    ({"messages": [user(None), assistant("x")]}, "messages[0].content: missing"),
    (
        {"text": "plain"},
        "row: no known layout: expected a 'messages' list, Multilingual-Thinking columns (user, final, ...), "
        "or 'prompt' and 'completion' (found: text)",
    ),
    (
        {"messages": [user("Hi"), assistant("x")], "reasoning_effort": "max"},
        "reasoning_effort: expected one of low, medium, high, got 'max'",
    ),
    ({"messages": [user("Hi"), assistant("x", 7)]}, "messages[1].thinking: expected text, got int"),
]


def test_on_bad_row_skip_counts_and_lists_the_skipped_rows(tmp_path, tiny_model_dir, tokenizer):
    rows = [GOOD] + [row for row, _ in BAD_ROWS] + [GOOD]
    recipe = make_recipe(tmp_path, tiny_model_dir, rows, on_bad_row="skip")
    stats = prepare.prepare_data(recipe, tokenizer).stats
    source = tmp_path / "rows.jsonl"
    assert (stats.rows, stats.rows_skipped, stats.examples) == (8, 6, 2)
    # The first five reasons, each naming the source, the row and the field.
    assert stats.skipped == [f"{source} row {i + 1}, {reason}" for i, (_, reason) in enumerate(BAD_ROWS[:5])]


def test_on_bad_row_skip_also_skips_rows_with_malformed_tools(tmp_path, tiny_model_dir, tokenizer):
    bad = {"messages": [user("Hi"), assistant("x")], "tools": [{"type": "function", "function": {"description": "?"}}]}
    recipe = make_recipe(tmp_path, tiny_model_dir, [GOOD, bad, GOOD], on_bad_row="skip")
    stats = prepare.prepare_data(recipe, tokenizer).stats
    assert (stats.rows, stats.rows_skipped, stats.examples) == (3, 1, 2)
    assert stats.skipped == [f"{tmp_path / 'rows.jsonl'} row 1, tools: tool #1 has no name"]


@pytest.mark.parametrize(("row", "reason"), BAD_ROWS[:3])
def test_on_bad_row_error_names_source_row_and_field(tmp_path, tiny_model_dir, tokenizer, row, reason):
    recipe = make_recipe(tmp_path, tiny_model_dir, [GOOD, GOOD, row])
    with pytest.raises(UserError) as info:
        prepare.prepare_data(recipe, tokenizer)
    assert str(info.value) == (
        f"{tmp_path / 'rows.jsonl'} row 2, {reason}. Fix the row, or set data.on_bad_row: skip to leave such rows out."
    )
    assert cache_entries(recipe) == []


@pytest.mark.parametrize("truncation", ["drop", "right"])
def test_nothing_left_to_train_is_a_user_error(tmp_path, tiny_model_dir, tokenizer, truncation):
    recipe = make_recipe(tmp_path, tiny_model_dir, [GOOD, GOOD], train={"max_length": 20}, truncation=truncation)
    with pytest.raises(UserError) as info:
        prepare.prepare_data(recipe, tokenizer)
    assert str(info.value) == (
        "no training example left: 2 rows read, 0 skipped as bad, 2 dropped for length (train.max_length=20)."
    )


# ---------------------------------------------------------------------------------------------
# The commands


CLI_ROWS = [TWO_TURNS, GOOD, {"prompt": "Capital of Peru?", "completion": "Lima."}]


def squeezed(text: str) -> str:
    """Output without whitespace: rich wraps long paths at the console width."""
    return re.sub(r"\s+", "", text)


def test_inspect_data_json_has_one_object_per_training_example(tmp_path, tiny_model_dir, cli):
    path = write_recipe(tmp_path, tiny_model_dir, CLI_ROWS)
    result = cli("inspect-data", path, "--json")
    assert result.exit_code == 0, result.output
    objects = [json.loads(line) for line in result.stdout.splitlines()]
    assert [sorted(o) for o in objects] == [["row", "source", "text", "tokens", "trained"]] * 4
    assert [(o["row"], o["source"]) for o in objects] == [(r, str(tmp_path / "rows.jsonl")) for r in (0, 0, 1, 2)]
    assert [o["trained"] for o in objects] == [
        [trained_turn("A1", "T1")],
        [trained_turn("A2", "T2")],
        [trained_turn("Hello!")],
        [trained_turn("Lima.")],
    ]
    assert objects[3]["text"] == (
        f"{SYSTEM}<|start|>user<|message|>Capital of Peru?<|end|><|start|>assistant{trained_turn('Lima.')}"
    )
    assert all(o["tokens"] > 0 for o in objects)
    assert cli("inspect-data", path, "--json", "--rows", "1").stdout.count("\n") == 2  # row 0's two examples


def test_inspect_data_prints_examples_and_totals(tmp_path, tiny_model_dir, tokenizer, cli, monkeypatch):
    rows = [*CLI_ROWS, {"prompt": "Capital of Chile?", "completion": "Santiago."}]
    # A short relative path: rich cuts a rule title longer than the console (80 columns here).
    monkeypatch.chdir(tmp_path)
    path = write_recipe(tmp_path, tiny_model_dir, rows, datasets=[{"path": "rows.jsonl"}])
    expected = records(load_recipe(path), tokenizer)
    result = cli("inspect-data", path)
    assert result.exit_code == 0, result.output
    # The examples of the first 3 rows (by default), each under a rule naming its row and length.
    shown = re.findall(r"rows\.jsonl row (\d+) \((\d+) tokens\)", result.stdout)
    assert [(int(row), int(n)) for row, n in shown] == [(r["row"], r["tokens"]) for r in expected[:4]]
    assert "Lima.<|return|>" in squeezed(result.stdout) and "Santiago." not in result.stdout
    # Then the totals of all rows.
    lines = {re.sub(r"[\s│|]+", " ", line).strip() for line in result.stdout.splitlines()}
    total = sum(r["tokens"] for r in expected)
    for row in ("rows read 4", "rows skipped (bad) 0", "training examples 5", "eval examples 0", f"tokens {total}"):
        assert row in lines
    assert "data totals (trained text in green above)" in result.stdout


def test_preprocess_caches_then_says_already_cached(tmp_path, tiny_model_dir, tokenizer, cli):
    path = write_recipe(tmp_path, tiny_model_dir, CLI_ROWS)
    cache = prepare.cache_root(load_recipe(path)) / prepare.cache_key(load_recipe(path), tokenizer)
    first = cli("preprocess", path)
    assert first.exit_code == 0, first.output
    assert f"cached:{cache}" in squeezed(first.stdout) and "alreadycached" not in squeezed(first.stdout)
    assert (cache / prepare.STATS_FILE).is_file()
    second = cli("preprocess", path)
    assert second.exit_code == 0, second.output
    assert f"alreadycached:{cache}" in squeezed(second.stdout)


@pytest.mark.parametrize("key", ["packing", "padding_free"])
def test_train_refuses_packing_where_the_attention_mixes_documents(tmp_path, tiny_model_dir, cli, key):
    path = write_recipe(tmp_path, tiny_model_dir, CLI_ROWS)
    result = cli("train", path, "--set", f"train.{key}=true", "--set", "model.attn_implementation=flex_attention")
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert message.startswith(f"error: train.{key}: with model.attn_implementation flex_attention, examples packed")
    assert "Use model.attn_implementation: ossft_flex (GPU) or eager" in message
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


def test_train_refuses_wrapped_packing(tmp_path, tiny_model_dir, cli):
    path = write_recipe(tmp_path, tiny_model_dir, CLI_ROWS)
    result = cli("train", path, "--set", "train.packing=true", "--set", "train.packing_strategy=wrapped")
    assert result.exit_code == 2
    assert " ".join(result.stderr.split()).startswith("error: train.packing_strategy: wrapped cuts examples")


@pytest.mark.parametrize("num_proc", [1, 2])
def test_progress_counts_every_example_in_order(tokenizer, tiny_model_dir, num_proc, monkeypatch):
    from ossft.data import tokenize as data

    monkeypatch.setattr(data, "PROGRESS_CHUNK", 100)  # several updates on the 608 sample examples
    recipe = load_recipe(
        REPO / "recipes" / "quickstart.yaml", [f"model.base_model={tiny_model_dir}", f"data.num_proc={num_proc}"]
    )
    seen: list[tuple[int, int]] = []
    prepared = prepare.prepare_data(recipe, tokenizer, use_cache=False, on_progress=lambda d, t: seen.append((d, t)))
    total = seen[-1][1]
    assert seen[-1] == (total, total) and total == prepared.stats.examples == 608
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) >= 4
    alone = prepare.prepare_data(recipe, tokenizer, use_cache=False)
    assert alone.train["input_ids"] == prepared.train["input_ids"]  # progress changes nothing


def test_packing_settings_reach_trl(quickstart_recipe):
    from ossft.train.config import LENGTH_BUCKET, sft_config, with_packing_lengths

    recipe = quickstart_recipe.model_copy(deep=True)
    recipe.train.padding_free = True
    flat = sft_config(recipe)
    # TRL would refuse padding_free without packing under a max_length; ossft has cut the examples already.
    assert flat.padding_free and flat.max_length is None and flat.pad_to_multiple_of is None
    recipe.train.padding_free, recipe.train.packing = False, True
    packed = sft_config(recipe)
    assert packed.packing and packed.max_length == 512  # the length of the packed rows
    # ossft_flex (GPU only, so checked on the values) buckets lengths unless the recipe chose its own.
    assert with_packing_lengths({"packing": True}, "ossft_flex")["pad_to_multiple_of"] == LENGTH_BUCKET
    assert with_packing_lengths({"packing": True, "pad_to_multiple_of": 64}, "ossft_flex")["pad_to_multiple_of"] == 64
    assert "pad_to_multiple_of" not in with_packing_lengths({"packing": True}, "eager")
