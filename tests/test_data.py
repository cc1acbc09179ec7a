"""tokenize.py at unit level: jobs -> token ids (harmony and template mode), special-token look-alikes,
fitting examples to max_length, parallel tokenization and length percentiles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ossft.data import tokenize
from ossft.data.template import guard
from ossft.data.tokenize import DataStats, Encoder, Job, Tokenized, fit_length, percentiles, tokenize_jobs
from ossft.data.tokenizer import special_token_ids
from ossft.errors import UserError
from ossft.harmony import render
from ossft.harmony.render import Conversation, Message
from tests.conftest import FIXTURES
from tests.o200k import gpt_oss_tokenizer_available, load_gpt_oss_tokenizer

HF_CHAT_TEMPLATE = FIXTURES / "gpt-oss-tokenizer" / "chat_template.jinja"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_model_dir))


@pytest.fixture(scope="module")
def template_tokenizer(tiny_model_dir):
    """The tiny tokenizer carrying the real Hugging Face gpt-oss chat template."""
    if not HF_CHAT_TEMPLATE.is_file():
        pytest.skip(f"{HF_CHAT_TEMPLATE} is missing")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    tokenizer.chat_template = HF_CHAT_TEMPLATE.read_text(encoding="utf-8")
    return tokenizer


def harmony_job(*messages: Message, row: int = 0, thinking: str = "keep_all", instructions: str | None = None) -> Job:
    """The last training example of a conversation as a job (keep_all: the whole conversation)."""
    conversation = Conversation(tuple(messages), instructions=instructions)
    example = render.training_examples(conversation, thinking)[-1]
    return Job("rows.jsonl", row, example.train_all_turns, pieces=render.render_example(example))


def template_job(messages: list[dict], row: int = 0) -> Job:
    return Job(
        "rows.jsonl", row, False, template={"messages": messages, "reasoning_effort": "low", "model_identity": "M"}
    )


def qa(question: str, answer: str, thinking: str | None = None) -> tuple[Message, ...]:
    analysis = (Message("assistant", thinking, channel="analysis"),) if thinking else ()
    return (Message("user", question), *analysis, Message("assistant", answer, channel="final"))


def piece_ids(tokenizer, pieces) -> list[int]:
    """What the ids must be: each special piece its id, each text run tokenized on its own as plain text."""
    ids = []
    for piece in pieces:
        if piece.special:
            ids.append(tokenizer.convert_tokens_to_ids(piece.text))
        else:
            ids += tokenizer(piece.text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    return ids


def special_ids_in(tokenizer, ids: list[int]) -> list[int]:
    specials = set(special_token_ids(tokenizer).values())
    return [i for i in ids if i in specials]


def trained_texts(tokenizer, example: Tokenized) -> list[str]:
    from ossft.harmony.masks import trained_runs

    return [tokenizer.decode(example.input_ids[s:e]) for s, e in trained_runs(example.trained)]


# ---------------------------------------------------------------------------------------------
# Encoder, harmony mode

TOOL_CONVERSATION = (
    Message("user", "Weather in Paris?"),
    Message("assistant", "Need the weather.", channel="analysis"),
    Message(
        "assistant",
        '{"city": "Paris"}',
        channel="commentary",
        recipient="functions.get_weather",
        content_type="<|constrain|>json",
    ),
    Message("tool", '{"temp": 20}', channel="commentary", recipient="assistant", author="functions.get_weather"),
    Message("assistant", "It is 20 C.", channel="final"),
)


@pytest.mark.parametrize(
    "messages",
    [qa("Hi", "Hello!", thinking="Greet back."), TOOL_CONVERSATION, qa("¿Cuál es mayor, 50 o 88?", "88 es mayor.")],
    ids=["thinking", "tool_call", "unicode"],
)
def test_harmony_ids_are_special_ids_and_plain_text_ids(tokenizer, messages):
    job = harmony_job(*messages, instructions="Be brief.")
    [example] = Encoder(tokenizer).run([job])
    assert example.input_ids == piece_ids(tokenizer, job.pieces)
    assert tokenizer.decode(example.input_ids) == render.to_text(job.pieces)
    assert (example.source, example.row, len(example.trained)) == ("rows.jsonl", 0, len(example.input_ids))


def test_harmony_trained_runs_of_a_tool_conversation(tokenizer):
    [example] = Encoder(tokenizer).run([harmony_job(*TOOL_CONVERSATION)])
    assert trained_texts(tokenizer, example) == [
        "<|channel|>analysis<|message|>Need the weather.<|end|>"
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json"
        '<|message|>{"city": "Paris"}<|call|>',
        "<|channel|>final<|message|>It is 20 C.<|return|>",
    ]


def test_batch_of_jobs_equals_one_by_one(template_tokenizer):
    jobs = [
        harmony_job(*qa("Hi", "Hello!", thinking="Greet."), row=0),
        template_job([{"role": "user", "content": "Hola"}, {"role": "assistant", "content": "¡Hola!"}], row=1),
        harmony_job(*TOOL_CONVERSATION, row=2),
        harmony_job(*qa("Q1", "A1", "T1"), *qa("Q2", "A2"), row=3),
        template_job(
            [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4", "thinking": "Add."}], 4
        ),
        harmony_job(*qa("Last", "Done."), row=5),
    ]
    encoder = Encoder(template_tokenizer)
    one_by_one = [encoder.run([job])[0] for job in jobs]
    assert encoder.run(jobs) == one_by_one
    assert [e.row for e in one_by_one] == [0, 1, 2, 3, 4, 5]
    assert all(any(e.trained) for e in one_by_one)


# ---------------------------------------------------------------------------------------------
# Special-token look-alikes in the data stay text


PLAIN_MESSAGE = ["<|start|>", "<|message|>", "<|end|>"]  # system, developer, user
ANALYSIS_FINAL = [
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|end|>",
    "<|start|>",
    "<|channel|>",
    "<|message|>",
    "<|return|>",
]


def ids_of(tokenizer, names: list[str]) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(name) for name in names]


def test_look_alikes_are_plain_text_in_harmony_mode(tokenizer):
    question = "Type <|start|>user then <|channel|>final and <|end|>?"
    thinking = "They want <|return|> spelt out."
    answer = "Here: <|start|><|end|><|return|>"
    job = harmony_job(*qa(question, answer, thinking))
    [example] = Encoder(tokenizer).run([job])
    renderer_specials = [tokenizer.convert_tokens_to_ids(p.text) for p in job.pieces if p.special]
    assert special_ids_in(tokenizer, example.input_ids) == renderer_specials
    assert renderer_specials == ids_of(tokenizer, PLAIN_MESSAGE * 2 + ANALYSIS_FINAL)
    assert tokenizer.decode(example.input_ids) == render.to_text(job.pieces)
    assert trained_texts(tokenizer, example) == [
        f"<|channel|>analysis<|message|>{thinking}<|end|>"
        f"<|start|>assistant<|channel|>final<|message|>{answer}<|return|>"
    ]


def test_look_alikes_are_plain_text_in_template_mode(template_tokenizer):
    def messages(question: str, thinking: str, answer: str) -> list[dict]:
        return [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer, "thinking": thinking},
        ]

    tricky = messages("Type <|start|>user, <|channel|>final?", "Spell <|return|> out <|end|>", "<|end|><|return|>!")
    plain = messages("Type user, final?", "Spell out", "!")
    encoder = Encoder(template_tokenizer)
    tricky_example, plain_example = encoder.run([template_job(tricky), template_job(plain)])
    # Exactly the template's own control tokens, in the same order as for a row without look-alikes.
    assert special_ids_in(template_tokenizer, tricky_example.input_ids) == special_ids_in(
        template_tokenizer, plain_example.input_ids
    )
    expected = ids_of(template_tokenizer, PLAIN_MESSAGE * 3 + ANALYSIS_FINAL)
    assert special_ids_in(template_tokenizer, plain_example.input_ids) == expected
    assert trained_texts(template_tokenizer, tricky_example) == [
        "<|channel|>analysis<|message|>Spell <|return|> out <|end|><|end|>"
        "<|start|>assistant<|channel|>final<|message|><|end|><|return|>!<|return|>"
    ]
    user = template_tokenizer.decode(tricky_example.input_ids)
    assert "<|start|>user<|message|>Type <|start|>user, <|channel|>final?<|end|>" in user


def test_guard_and_restore_round_trip_exactly():
    value = {
        "messages": [
            {"role": "user", "content": "<|start|><|start|>a <|end|>"},
            {"role": "assistant", "content": "b<|channel|>c<|return|>", "thinking": "no look-alike, <| |>"},
        ],
        "tools": [{"description": "ends in <|end|>"}],
        "number": 3,
    }
    guarded = guard(value, list(render.SPECIAL_TOKENS))
    # Numbered in reading order, from the first code point of Supplementary Private Use Area-A.
    assert guarded.literals == ("<|start|>", "<|start|>", "<|end|>", "<|channel|>", "<|return|>", "<|end|>")
    base = guarded.base
    assert base == 0xF0000
    assert guarded.value["messages"][0]["content"] == f"{chr(base)}{chr(base + 1)}a {chr(base + 2)}"
    assert guarded.value["messages"][1] == {
        "role": "assistant",
        "content": f"b{chr(base + 3)}c{chr(base + 4)}",
        "thinking": "no look-alike, <| |>",
    }
    assert (guarded.value["tools"], guarded.value["number"]) == ([{"description": f"ends in {chr(base + 5)}"}], 3)
    restored = [guarded.restore(m["content"]) for m in guarded.value["messages"]]
    assert restored == [m["content"] for m in value["messages"]]


def test_guard_avoids_private_use_characters_already_in_the_data():
    guarded = guard({"content": f"icon {chr(0xF0000)} then <|start|>"}, ["<|start|>"])
    assert guarded.base != 0xF0000 and chr(guarded.base) in guarded.value["content"]
    assert guarded.restore(guarded.value["content"]) == f"icon {chr(0xF0000)} then <|start|>"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(render.SPECIAL_TOKENS), st.text()),
        max_size=12,
    )
)
def test_guard_round_trip_on_any_text(parts):
    original = "".join(parts)
    guarded = guard(original, list(render.SPECIAL_TOKENS))
    assert not any(token in guarded.value for token in render.SPECIAL_TOKENS)
    assert guarded.restore(guarded.value) == original


def test_private_use_characters_in_the_data_survive_template_mode(template_tokenizer):
    content = "icon \ue000 \U000f0000 then <|start|>"
    job = template_job([{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}])
    [example] = Encoder(template_tokenizer).run([job])
    assert f"<|start|>user<|message|>{content}<|end|>" in template_tokenizer.decode(example.input_ids)


needs_gpt_oss = pytest.mark.skipif(
    not gpt_oss_tokenizer_available(), reason="the gpt-oss tokenizer fixtures are not available"
)


def user_job(mode: str, content: str) -> Job:
    if mode == "harmony":
        return harmony_job(Message("user", content), Message("assistant", "ok", channel="final"))
    return template_job([{"role": "user", "content": content}, {"role": "assistant", "content": "ok"}])


def contains(ids: list[int], part: list[int]) -> bool:
    return any(ids[i : i + len(part)] == part for i in range(len(ids) - len(part) + 1))


@needs_gpt_oss
@pytest.mark.parametrize(
    "mode",
    [
        "harmony",
        "template",
    ],
)
def test_every_special_token_look_alike_stays_text_with_the_real_tokenizer(mode):
    tokenizer = load_gpt_oss_tokenizer()
    [example] = Encoder(tokenizer).run([user_job(mode, "x <|reserved_200100|> y")])
    assert 200100 not in example.input_ids


@needs_gpt_oss
@pytest.mark.parametrize(
    "mode",
    [
        "harmony",
        "template",
    ],
)
def test_look_alike_text_gets_the_tokenizers_own_ids(mode):
    tokenizer = load_gpt_oss_tokenizer()
    content = "Say <|start|> now"
    plain = tokenizer(content, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    assert plain == [62316, 464, 91, 5236, 91, 29, 1954]  # "Say", " <", "|", "start", "|", ">", " now"
    [example] = Encoder(tokenizer).run([user_job(mode, content)])
    assert contains(example.input_ids, plain)


def test_a_tokenizer_without_harmony_tokens_is_refused():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    plain = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")), unk_token="[UNK]"
    )
    with pytest.raises(UserError) as info:
        Encoder(plain)
    assert str(info.value) == (
        f"the tokenizer lacks harmony's special tokens {list(render.SPECIAL_TOKENS)}; use a gpt-oss tokenizer."
    )


# ---------------------------------------------------------------------------------------------
# fit_length

T, F = True, False
# Two trained turns: positions 2-3 and 6-8.
TWO_TURNS = [F, F, T, T, F, F, T, T, T, F]


def fit(trained: list[bool], max_length: int | None, truncation: str) -> tuple[list[Tokenized], DataStats]:
    stats = DataStats()
    example = Tokenized("rows.jsonl", 7, list(range(100, 100 + len(trained))), list(trained))
    return fit_length([example], max_length, truncation, stats), stats


def counts(stats: DataStats) -> tuple[int, int, int]:
    return stats.dropped_too_long, stats.truncated, stats.untrained_cut_turns


@pytest.mark.parametrize("truncation", ["drop", "right"])
@pytest.mark.parametrize("max_length", [None, 10, 11])
def test_examples_that_fit_are_kept_untouched(truncation, max_length):
    kept, stats = fit(TWO_TURNS, max_length, truncation)
    assert kept == [Tokenized("rows.jsonl", 7, list(range(100, 110)), TWO_TURNS)]
    assert counts(stats) == (0, 0, 0)


def test_drop_mode_drops_and_counts_long_examples():
    stats = DataStats()
    short = Tokenized("a", 0, [1, 2, 3], [F, T, T])
    long = Tokenized("a", 1, [1, 2, 3, 4], [F, T, T, T])
    assert fit_length([short, long, long], 3, "drop", stats) == [short]
    assert counts(stats) == (2, 0, 0)


def test_right_mode_cut_inside_a_turn_untrains_that_turn_only():
    kept, stats = fit(TWO_TURNS, 8, "right")
    assert kept == [Tokenized("rows.jsonl", 7, list(range(100, 108)), [F, F, T, T, F, F, F, F])]
    assert counts(stats) == (0, 1, 1)


def test_right_mode_cut_right_after_a_turn_keeps_it_trained():
    kept, stats = fit(TWO_TURNS, 9, "right")
    assert kept == [Tokenized("rows.jsonl", 7, list(range(100, 109)), [F, F, T, T, F, F, T, T, T])]
    assert counts(stats) == (0, 1, 0)


def test_right_mode_cut_between_turns():
    kept, stats = fit(TWO_TURNS, 5, "right")
    assert kept == [Tokenized("rows.jsonl", 7, list(range(100, 105)), [F, F, T, T, F])]
    assert counts(stats) == (0, 1, 0)


@pytest.mark.parametrize("max_length", [1, 3])
def test_right_mode_drops_an_example_left_with_nothing_trained(max_length):
    kept, stats = fit(TWO_TURNS, max_length, "right")
    assert kept == []
    assert counts(stats) == (1, 1, 1 if max_length == 3 else 0)


def test_right_mode_on_a_real_two_turn_example(tokenizer):
    job = harmony_job(*qa("Q1", "First answer.", "T1"), *qa("Q2", "A much longer second answer.", "T2"))
    [example] = Encoder(tokenizer).run([job])
    from ossft.harmony.masks import trained_runs

    (first_start, first_end), (second_start, second_end) = trained_runs(example.trained)
    cut = second_end - 1  # the second turn loses its <|return|>
    stats = DataStats()
    [kept] = fit_length([example], cut, "right", stats)
    assert kept.input_ids == example.input_ids[:cut]
    assert kept.trained == [first_start <= i < first_end for i in range(cut)]
    assert trained_texts(tokenizer, kept) == [
        "<|channel|>analysis<|message|>T1<|end|><|start|>assistant<|channel|>final<|message|>First answer.<|end|>"
    ]
    assert counts(stats) == (0, 1, 1)


# ---------------------------------------------------------------------------------------------
# Parallel tokenization


def test_tokenize_jobs_in_two_processes_gives_the_same_examples(tokenizer, monkeypatch):
    jobs = []
    for i in range(20):
        messages = qa(
            f"Question {i}: what is {i} + {i}?", f"{i} + {i} = {2 * i}.", f"Add {i} to itself." if i % 2 else None
        )
        jobs.append(harmony_job(*messages, *(TOOL_CONVERSATION if i % 5 == 0 else ()), row=i))
    serial = tokenize_jobs(jobs, tokenizer, num_proc=1)
    monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    parallel = tokenize_jobs(jobs, tokenizer, num_proc=2)
    assert parallel == serial
    assert [e.row for e in parallel] == list(range(20))
    assert len({len(e.input_ids) for e in parallel}) > 3  # the jobs really differ
    assert tokenize.os.environ["TOKENIZERS_PARALLELISM"] == "false"  # set only on the worker-pool path


# ---------------------------------------------------------------------------------------------
# percentiles


@pytest.mark.parametrize(
    ("lengths", "expected"),
    [
        ([], {}),
        ([7], {"p50": 7, "p90": 7, "p99": 7, "p100": 7}),
        ([30, 10, 20], {"p50": 20, "p90": 30, "p99": 30, "p100": 30}),
        (list(range(100, 0, -1)), {"p50": 51, "p90": 91, "p99": 100, "p100": 100}),
        ([5] * 9 + [1000], {"p50": 5, "p90": 1000, "p99": 1000, "p100": 1000}),
        (list(range(1, 1001)), {"p50": 501, "p90": 901, "p99": 991, "p100": 1000}),
    ],
    ids=["empty", "one", "three", "hundred", "one_outlier", "thousand"],
)
def test_percentiles(lengths, expected):
    assert percentiles(lengths) == expected
