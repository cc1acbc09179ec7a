"""tests/o200k.py: the real gpt-oss tokenizer, built offline from the shared fixtures.

Pins down ids against tiktoken's o200k_harmony and the fixture anchors, and checks that the HF chat
template of openai/gpt-oss-20b renders TRL's expected strings with it.
"""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest

from tests.o200k import (
    ANCHORS,
    BOS,
    EOS,
    FIXTURES,
    PAD,
    RANKS_CACHE_NAME,
    SPECIAL_IDS,
    SPECIAL_TOKENS_JSON,
    VOCAB_SIZE,
    anchors_from_fixture,
    cache_dir,
    gpt_oss_tokenizer_available,
    load_gpt_oss_tokenizer,
    tiktoken_encoding,
)

pytestmark = pytest.mark.skipif(
    not gpt_oss_tokenizer_available(),
    reason=f"needs tiktoken>=0.11 (pip install tiktoken) and the tokenizer fixtures in {FIXTURES / 'gpt-oss-tokenizer'}",
)

VECTORS = FIXTURES / "harmony-vectors"

# A conversation in harmony format: control tokens, multi-byte text, digits and line breaks.
HARMONY_TEXT = (
    "<|start|>system<|message|>You are ChatGPT.\nReasoning: low<|end|>"
    "<|start|>user<|message|>Combien font 12 × 7 ? Ünïcödé, 日本語, emoji 🙂<|end|>"
    "<|start|>assistant<|channel|>analysis<|message|>12 * 7 = 84.\n\n  Indented.<|end|>"
    "<|start|>assistant to=functions.calc<|channel|>commentary <|constrain|>json<|message|>"
    '{"expr": "12*7"}<|call|>'
    "<|start|>assistant<|channel|>final<|message|>Cela fait 84.<|return|>"
)

# TRL's TestApplyChatTemplateHarmony inputs (see harmony-vectors/INDEX.md, "HF-template vectors").
TRL_MESSAGES = [
    {"role": "system", "content": "Respond in a friendly manner."},
    {"role": "user", "content": "What color is the sky?"},
    {"role": "assistant", "thinking": "The user asks the color of the sky...", "content": "It is blue."},
]
TRL_KWARGS = {"reasoning_effort": "low", "model_identity": "You are HuggingGPT.", "tokenize": False}


@pytest.fixture(scope="module")
def tok():
    return load_gpt_oss_tokenizer()


def vector(name: str) -> str:
    return (VECTORS / name).read_text(encoding="utf-8").rstrip()


def test_ranks_cache_name_is_tiktokens_key_for_the_download_address():
    url = json.loads(SPECIAL_TOKENS_JSON.read_text(encoding="utf-8"))["base_vocab"]["url"]
    assert hashlib.sha1(url.encode()).hexdigest() == RANKS_CACHE_NAME


def test_size_and_hf_special_tokens(tok):
    assert len(tok) == VOCAB_SIZE
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (199998, 200002, 199999)


def test_anchors(tok):
    assert ANCHORS == anchors_from_fixture()
    for text, ids in ANCHORS.items():
        assert tok.encode(text, add_special_tokens=False, split_special_tokens=True) == ids, text
    # Without split_special_tokens, the same text is the control token.
    assert tok.encode("<|start|>", add_special_tokens=False) == [200006]


def test_special_ids(tok):
    for name, i in SPECIAL_IDS.items():
        assert tok.convert_tokens_to_ids(name) == i
        assert tok.convert_ids_to_tokens(i) == name
    fixture = json.loads(SPECIAL_TOKENS_JSON.read_text(encoding="utf-8"))["special_tokens"]
    for entry in fixture:
        assert tok.convert_ids_to_tokens(entry["id"]) == entry["token"]
    # Every id above the BPE ranks is a special token: the named ones, and <|reserved_N|> for the rest.
    names = {i: name for name, i in SPECIAL_IDS.items()}
    added = tok.added_tokens_decoder
    assert sorted(added) == list(range(199_998, VOCAB_SIZE))
    for i, token in added.items():
        assert token.content == names.get(i, f"<|reserved_{i}|>")
        assert token.special, i


def test_endofprompt_has_one_name(tok):
    # tiktoken's o200k_harmony maps both names to 200018; HF (like the hub tokenizer) only knows <|endofprompt|>.
    assert tiktoken_encoding().encode_single_token("<|reserved_200018|>") == 200018
    assert tok.convert_ids_to_tokens(200018) == "<|endofprompt|>"
    assert 200018 not in tok.encode("<|reserved_200018|>", add_special_tokens=False)


def test_harmony_round_trip(tok):
    ids = tok.encode(HARMONY_TEXT, add_special_tokens=False)
    assert ids == tiktoken_encoding().encode(HARMONY_TEXT, allowed_special="all")
    assert tok.decode(ids) == HARMONY_TEXT
    control = [i for i in ids if i >= 199_998]
    assert control[:2] == [200006, 200008]  # <|start|>system<|message|>
    assert control.count(200007) == 3 and control[-1] == 200002
    assert 200012 in control and 200003 in control


def test_docs_reasoning_completion_tokens(tok):
    ids = [int(x) for x in vector("docs_reasoning_completion.tokens.txt").split()]
    text = vector("docs_reasoning_completion.txt")
    assert tok.encode(text, add_special_tokens=False) == ids
    assert tok.decode(ids) == text


def test_matches_tiktoken_on_long_text(tok):
    text = vector("harmony_docs_format.md")  # code, tables, unicode, special tokens written as text
    assert tok.encode(text, add_special_tokens=False) == tiktoken_encoding().encode(text, allowed_special="all")


def _render_matches(render, expected_file: str) -> None:
    # The template stamps today's date; accept either side of a midnight during the render.
    before = datetime.date.today().strftime("%Y-%m-%d")
    got = render().rstrip()
    after = datetime.date.today().strftime("%Y-%m-%d")
    template = vector(expected_file)
    assert got in {template.replace("{CURRENT_DATE}", before), template.replace("{CURRENT_DATE}", after)}


def test_chat_template_renders_trl_language_modeling_vector(tok):
    _render_matches(
        lambda: tok.apply_chat_template(TRL_MESSAGES, add_generation_prompt=False, **TRL_KWARGS),
        "hftemplate_trl_language_modeling.txt",
    )


def test_chat_template_renders_trl_prompt_only_vector(tok):
    _render_matches(
        lambda: tok.apply_chat_template(TRL_MESSAGES[:2], add_generation_prompt=True, **TRL_KWARGS),
        "hftemplate_trl_prompt_only.txt",
    )


def test_chat_template_completion_is_the_rest(tok):
    whole = tok.apply_chat_template(TRL_MESSAGES, add_generation_prompt=False, **TRL_KWARGS)
    prompt = tok.apply_chat_template(TRL_MESSAGES[:2], add_generation_prompt=True, **TRL_KWARGS)
    assert whole == prompt + vector("hftemplate_trl_completion.txt")


def test_in_process_cache(tok):
    assert tok.chat_template
    assert load_gpt_oss_tokenizer() is tok
    assert load_gpt_oss_tokenizer(chat_template=True) is tok


def test_without_chat_template_comes_from_the_disk_cache(tok, monkeypatch):
    import tests.o200k as o200k

    assert (cache_dir() / "hf" / "tokenizer.json").is_file()

    def no_build():
        raise AssertionError("rebuilt although the disk cache exists")

    monkeypatch.setattr(o200k, "_build", no_build)
    plain = o200k._load.__wrapped__(False)  # bypass the in-process cache: a second load, from disk
    assert plain is not tok
    assert plain.chat_template is None
    assert len(plain) == VOCAB_SIZE
    assert plain.encode("hello world", add_special_tokens=False) == [24912, 2375]
