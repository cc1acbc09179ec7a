"""`ossft generate`: harmony prompt, stop tokens, channel parsing, and the folders it accepts."""

from __future__ import annotations

import json

import pytest

from ossft.harmony.render import SystemBlock
from ossft.model.generate import completion_channels, prompt_ids

from .conftest import FIXTURES
from .o200k import gpt_oss_tokenizer_available, load_gpt_oss_tokenizer


@pytest.mark.skipif(not gpt_oss_tokenizer_available(), reason="the gpt-oss tokenizer fixtures are not available")
def test_channels_of_the_format_guides_36_token_completion():
    ids = [int(t) for t in (FIXTURES / "harmony-vectors" / "docs_reasoning_completion.tokens.txt").read_text().split()]
    assert len(ids) == 36
    assert completion_channels(load_gpt_oss_tokenizer(), ids) == {
        "analysis": 'User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.',
        "final": "2 + 2 = 4.",
    }


def test_prompt_is_harmony_up_to_the_assistant_header(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    system = SystemBlock(model_identity="You are Tiny.", reasoning_effort="low")
    text = tokenizer.decode(prompt_ids(tokenizer, "Hi <|end|>", "Be brief.", system))
    assert text == (
        "<|start|>system<|message|>You are Tiny.\nKnowledge cutoff: 2024-06\n\nReasoning: low\n\n"
        "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
        "<|start|>developer<|message|># Instructions\n\nBe brief.<|end|>"
        "<|start|>user<|message|>Hi <|end|><|end|><|start|>assistant"
    )
    # The user's "<|end|>" is text, so the prompt holds exactly three real <|end|> tokens.
    ids = prompt_ids(tokenizer, "Hi <|end|>", "Be brief.", system)
    assert ids.count(tokenizer.convert_tokens_to_ids("<|end|>")) == 3


def run_json(cli, *args):
    result = cli("generate", *args, "--json", "--max-new-tokens", "6")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_generate_from_a_base_model_folder(cli, tiny_model_dir):
    out = run_json(cli, tiny_model_dir, "--prompt", "What is 2 + 2?", "--reasoning-effort", "high")
    assert set(out) == {"prompt", "completion", "channels", "tokens"}
    assert out["prompt"] == "What is 2 + 2?" and 1 <= out["tokens"] <= 6


def test_generate_from_an_mxfp4_folder_and_an_adapter(cli, tmp_path, tiny_model_dir):
    from ossft.model.load import apply_lora, load_model
    from ossft.recipe.load import load_recipe

    from .conftest import REPO

    mxfp4_dir = tmp_path / "mxfp4"
    assert cli("tiny-model", mxfp4_dir, "--mxfp4").exit_code == 0
    assert run_json(cli, mxfp4_dir)["tokens"] >= 1
    recipe = load_recipe(REPO / "recipes" / "quickstart.yaml", [f"model.base_model={tiny_model_dir}"])
    apply_lora(load_model(recipe), recipe).save_pretrained(tmp_path / "adapter")
    assert run_json(cli, tmp_path / "adapter")["tokens"] >= 1  # base found in adapter_config.json
    small = tmp_path / "small"
    assert cli("tiny-model", small, "--hidden", "32").exit_code == 0
    result = cli("generate", tmp_path / "adapter", "--base", small)
    assert result.exit_code == 2
    assert f"the adapter in {tmp_path / 'adapter'} was not trained on the base {small}" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/folder"], "/no/such/folder: no such folder"),
        (["{tmp}"], "holds neither a model (config.json) nor a LoRA adapter"),
        (["{model}", "--reasoning-effort", "max"], "Invalid value for '--reasoning-effort':"),
        (["{model}", "--reasoning-effort", "max"], "'max' is not one of 'low', 'medium', 'high'."),
    ],
)
def test_bad_generate_input_exits_2(cli, tmp_path, tiny_model_dir, args, message):
    args = [a.format(tmp=tmp_path, model=tiny_model_dir) for a in args]
    result = cli("generate", *args)
    assert result.exit_code == 2 and message in unboxed(result.stderr)


def unboxed(text: str) -> str:
    """stderr without the frame and line wrapping of typer's error box."""
    return " ".join(text.replace("│", " ").split())
